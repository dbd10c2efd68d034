// Xenstore ring backend; see xenstore_ring.h. Index checks and error codes follow xenstored's
// domain.c (check_indexes, readchn/writechn) and core.c (handle_input).
#include "backends/xenstore_ring.h"

#include <cstdio>

#include "backends/ring_bytes.h"

namespace xenkvm::backends {

namespace {

// The ring whose Pump runs on this thread: a watch event fired by our own request must not try
// to take mutex_ again.
thread_local const XenstoreRing* pumping_on_this_thread = nullptr;

// Upper bound on passes per Pump: a guest that keeps feeding from another vCPU can't hold this
// thread forever; what's left is handled at its next notification.
constexpr int kMaxPasses = 256;

xenstore_domain_interface* MapRing(mem::GuestMemory& memory, uint64_t gpa) {
  auto host = memory.TranslateGuarded(gpa, sizeof(xenstore_domain_interface));
  return host ? reinterpret_cast<xenstore_domain_interface*>(*host) : nullptr;
}

}  // namespace

XenstoreRing::XenstoreRing(mem::GuestMemory& memory, uint64_t ring_gpa, xenstore::Store& store,
                           xenstore::DomId domid, Notify notify,
                           xenstore::WireConnection::Limits limits)
    : memory_(memory), ring_gpa_(ring_gpa), notify_(std::move(notify)) {
  ResetPage();
  wire_ = std::make_unique<xenstore::WireConnection>(store, domid, limits, [this] { Pump(); });
}

void XenstoreRing::ResetPage() {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  if (auto* ring = MapRing(memory_, ring_gpa_)) {
    std::memset(ring, 0, sizeof(*ring));
    ring->server_features = XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR;
  }
}

XenstoreRing::~XenstoreRing() {
  wire_->Detach();  // waits for a watch event in flight (it may be pumping through wire_)
  wire_.reset();
}

void XenstoreRing::SetNotify(Notify notify) {
  MutexLock lock(mutex_);
  notify_ = std::move(notify);
}

XenstoreRing::Counters XenstoreRing::counters() {
  MutexLock lock(mutex_);
  return counters_;
}

void XenstoreRing::Pump() {
  pending_.store(true, std::memory_order_seq_cst);
  if (pumping_on_this_thread == this) return;  // our holder loops once more
  // Whoever holds mutex_ re-checks pending_ after releasing it, so leaving is safe.
  int passes = 0;
  while (passes < kMaxPasses && pending_.load(std::memory_order_seq_cst)) {
    if (!mutex_.try_lock()) return;
    bool notify = false;
    Notify notify_fn;
    {
      mutex_.AssertHeld();
      pumping_on_this_thread = this;
      // Until a pass moves nothing (replies make room for requests and the reverse).
      while (passes++ < kMaxPasses && pending_.exchange(false, std::memory_order_seq_cst))
        if (ServiceLocked(notify)) pending_.store(true, std::memory_order_seq_cst);
      pumping_on_this_thread = nullptr;
      if (notify) {
        ++counters_.notifies;
        notify_fn = notify_;
      }
    }
    mutex_.unlock();
    if (notify_fn) notify_fn();
  }
}

void XenstoreRing::FailLocked(uint32_t error) {
  // xenstored's ignore_connection: report in the page, forget the connection's state.
  failed_ = true;
  ++counters_.errors;
  std::fprintf(stderr, "xenstore ring: connection error %u, stopped until reconnection\n", error);
  wire_->Reset();
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  if (auto* ring = MapRing(memory_, ring_gpa_))
    mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(&ring->error))
        .store(error, std::memory_order_release);
}

bool XenstoreRing::ServiceLocked(bool& notify) {
  bool moved = false;
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
  auto* ring = MapRing(memory_, ring_gpa_);
  if (!ring) return false;

  // A reconnection request (only the guest sets 1): reset everything, report 0, notify.
  if (LoadIndex(&ring->connection) == XENSTORE_RECONNECT) {
    wire_->Reset();
    failed_ = false;
    ++counters_.reconnections;
    StoreIndex(&ring->req_cons, 0);
    StoreIndex(&ring->req_prod, 0);
    StoreIndex(&ring->rsp_cons, 0);
    StoreIndex(&ring->rsp_prod, 0);
    StoreIndex(&ring->error, XENSTORE_ERROR_NONE);
    StoreIndex(&ring->connection, XENSTORE_CONNECTED);
    notify = true;
    return true;
  }
  if (failed_) return false;

  // Replies first: they free the outstanding-request budget for the input side.
  const uint32_t rsp_cons = LoadIndex(&ring->rsp_cons);
  const uint32_t rsp_prod = LoadIndex(&ring->rsp_prod);
  if (rsp_prod - rsp_cons > XENSTORE_RING_SIZE) {
    FailLocked(XENSTORE_ERROR_RINGIDX);
    return false;
  }
  const uint32_t space = XENSTORE_RING_SIZE - (rsp_prod - rsp_cons);
  if (space > 0 && wire_->OutputBytes() > 0) {
    char chunk[XENSTORE_RING_SIZE];
    const size_t n = wire_->CopyOutput(std::span(chunk, space));
    CopyToRing(ring->rsp, rsp_prod, std::span<const char>(chunk, n));
    StoreIndex(&ring->rsp_prod, rsp_prod + uint32_t(n));
    counters_.reply_bytes += n;
    moved = moved || n > 0;
  }

  // Requests.
  const uint32_t req_cons = LoadIndex(&ring->req_cons);
  const uint32_t req_prod = LoadIndex(&ring->req_prod);
  if (req_prod - req_cons > XENSTORE_RING_SIZE) {
    FailLocked(XENSTORE_ERROR_RINGIDX);
    return false;
  }
  if (req_prod != req_cons) {
    char chunk[XENSTORE_RING_SIZE];
    const size_t available = req_prod - req_cons;
    CopyFromRing(ring->req, req_cons, std::span(chunk, available));
    auto taken = wire_->ConsumeInput(std::span<const char>(chunk, available));
    if (!taken) {
      FailLocked(XENSTORE_ERROR_PROTO);
      return false;
    }
    if (*taken > 0) {
      StoreIndex(&ring->req_cons, req_cons + uint32_t(*taken));
      counters_.requests_bytes += *taken;
      moved = true;
    }
  }
  notify = notify || moved;
  return moved;
}

}  // namespace xenkvm::backends
