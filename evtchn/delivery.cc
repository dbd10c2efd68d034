// Delivery's cold parts: the worker and its replay of deferred events, selector shadows,
// pollers and the pending-bit half of a close; see delivery.h.
#include "evtchn/delivery.h"

#include <bit>
#include <chrono>

namespace xenkvm::evtchn {

Delivery::Delivery(mem::GuestMemory& memory, PortTable& ports)
    : memory_(memory),
      ports_(ports),
      two_level_64_(memory),
      two_level_compat_(memory),
      fifo_(memory) {}

Delivery::~Delivery() {
  if (!worker_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  KickWorker();
  worker_.join();
}

void Delivery::StartWorker() {
  worker_ = std::thread([this] { WorkerLoop(); });
}

void Delivery::WorkerLoop() {
  if (trace::Recorder* t = trace::Active()) t->NameThread("evtchn worker");
  auto retry_delay = std::chrono::microseconds(100);
  while (!stopping_.load(std::memory_order_acquire)) {
    const uint32_t seen = work_seq_.load(std::memory_order_acquire);
    if (RunDeferredWork()) {
      retry_delay = std::chrono::microseconds(100);
      work_seq_.wait(seen, std::memory_order_acquire);
    } else {
      // A page is unbacked mid layout change; poll until it is back (rare, bounded backoff).
      std::this_thread::sleep_for(retry_delay);
      retry_delay = std::min(retry_delay * 2, std::chrono::microseconds(20000));
    }
  }
}

bool Delivery::RunDeferredWork() {
  MutexLock lock(deferred_mutex_);
  bool complete = true;
  auto guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* shared_info = MapSharedInfo();
  const uint32_t words = (ports_.max_ports() + 63) / 64;
  for (uint32_t w = 0; w < kDeferredWords; ++w) {
    if (deferred_[w].load(std::memory_order_acquire) == 0) continue;
    if (w >= words) {  // the port limit shrank: those ports are gone
      deferred_[w].store(0, std::memory_order_release);
      continue;
    }
    if (!shared_info && !fifo()) {
      complete = false;
      continue;
    }
    uint64_t bits = deferred_[w].exchange(0, std::memory_order_acq_rel);
    while (bits) {
      const Port port = w * 64 + uint32_t(std::countr_zero(bits));
      bits &= bits - 1;
      PortEntry* entry = ports_.Find(port);
      if (!entry) continue;
      const Binding binding = PortTable::BindingOf(*entry);
      if (IsDeliverable(binding.state))
        DeliverLocked(port, *entry, binding, shared_info, /*count=*/false);
    }
  }
  ports_.ForEachVcpu([&](VcpuState& vcpu) {
    if (!SyncLocked(vcpu)) complete = false;
  });
  return complete;
}

bool Delivery::SyncLocked(VcpuState& vcpu) {
  if (vcpu.shadow_sel.load(std::memory_order_acquire) == 0) return true;
  uint8_t* vcpu_info = MapVcpuInfo(vcpu);
  if (!vcpu_info) return false;
  if (fifo())
    fifo_.SyncShadow(vcpu, vcpu_info);
  else
    two_level().SyncShadow(vcpu, vcpu_info);
  return true;
}

void Delivery::ClearClosed(std::span<const Port> ports) {
  if (ports.empty()) return;
  memory_.WaitForReaders();
  auto guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* shared_info = MapSharedInfo();
  for (Port port : ports) {
    deferred_[port / 64].fetch_and(~(uint64_t(1) << (port % 64)), std::memory_order_acq_rel);
    if (fifo())
      fifo_.ClearPending(port);
    else if (shared_info)
      two_level().ClearPending(port, shared_info);
  }
}

bool Delivery::UpcallPending(VcpuState& vcpu) {
  auto guard = mem::LayoutGuard::Acquire(memory_);
  uint8_t* vcpu_info = MapVcpuInfo(vcpu);
  if (!vcpu_info) return vcpu.shadow_sel.load(std::memory_order_acquire) != 0;
  return mem::GuestAtomic<uint8_t>(vcpu_info + abi::Layout64::kUpcallPending)
             .load(std::memory_order_acquire) != 0;
}

void Delivery::AddPoller(VcpuState& vcpu, std::span<const Port> ports) {
  vcpu.poll_port.store(ports.size() == 1 ? int64_t(ports[0]) : 0, std::memory_order_seq_cst);
  pollers_.fetch_add(1, std::memory_order_seq_cst);
}

void Delivery::RemovePoller(VcpuState& vcpu) {
  if (vcpu.poll_port.exchange(-1, std::memory_order_acq_rel) == -1) return;
  pollers_.fetch_sub(1, std::memory_order_acq_rel);
}

bool Delivery::IsPendingLocked(Port port) {
  if (!ports_.Find(port)) return false;
  if (fifo()) return fifo_.IsPending(port);
  uint8_t* shared_info = MapSharedInfo();
  return shared_info && two_level().IsPending(port, shared_info);
}

void Delivery::WakePollersSlow(Port port) {
  ports_.ForEachVcpu([&](VcpuState& vcpu) {
    const int64_t polled = vcpu.poll_port.load(std::memory_order_seq_cst);
    if (polled == 0 || polled == int64_t(port)) vcpu.sink->WakePoller();
  });
}

namespace {
const char* OutcomeName(RaiseOutcome outcome) {
  switch (outcome) {
    case RaiseOutcome::kDelivered:
      return "delivered";
    case RaiseOutcome::kCoalesced:
      return "coalesced";
    case RaiseOutcome::kMasked:
      return "masked";
    case RaiseOutcome::kDropped:
      return "dropped";
    case RaiseOutcome::kParked:
      return "parked";
    case RaiseOutcome::kShadowed:
      return "shadowed";
    case RaiseOutcome::kRetry:
      return "retry";
  }
  return "?";
}
}  // namespace

void Delivery::TraceDeliver(trace::Recorder* t, Port port, const char* path, RaiseOutcome outcome) {
  t->Instant("deliver", {"port", port}, {"path", 0, path}, {"outcome", 0, OutcomeName(outcome)});
}

std::vector<Port> Delivery::DeferredPorts() const {
  std::vector<Port> ports;
  for (uint32_t w = 0; w < kDeferredWords; ++w) {
    uint64_t bits = deferred_[w].load(std::memory_order_acquire);
    while (bits) {
      ports.push_back(w * 64 + uint32_t(std::countr_zero(bits)));
      bits &= bits - 1;
    }
  }
  return ports;
}

void Delivery::RestoreDeferred(std::span<const Port> ports) {
  for (auto& word : deferred_) word.store(0, std::memory_order_relaxed);
  for (Port port : ports)
    deferred_[port / 64].fetch_or(uint64_t(1) << (port % 64), std::memory_order_release);
  if (!ports.empty()) KickWorker();
}

}  // namespace xenkvm::evtchn
