// PV console ring backend; see console_ring.h.
#include "backends/console_ring.h"

#include <vector>

extern "C" {
#include <xen/io/console.h>
}

#include "backends/ring_bytes.h"

namespace xenkvm::backends {

ConsoleRing::ConsoleRing(mem::GuestMemory& memory, uint64_t ring_gpa, Sink sink, Notify notify)
    : memory_(memory), ring_gpa_(ring_gpa), sink_(std::move(sink)), notify_(std::move(notify)) {}

void ConsoleRing::SetNotify(Notify notify) {
  MutexLock lock(mutex_);
  notify_ = std::move(notify);
}

size_t ConsoleRing::Input(std::span<const char> bytes) {
  Notify notify;
  size_t take;
  {
    MutexLock lock(mutex_);
    take = std::min(bytes.size(), kMaxPendingInput - input_.size());
    input_.insert(input_.end(), bytes.begin(), bytes.begin() + ptrdiff_t(take));
    if (ServiceLocked()) notify = notify_;
  }
  if (notify) notify();
  return take;
}

bool ConsoleRing::Service() {
  Notify notify;
  bool moved;
  {
    MutexLock lock(mutex_);
    moved = ServiceLocked();
    if (moved) notify = notify_;
  }
  if (notify) notify();  // outside the lock: the guest may answer at once
  return moved;
}

size_t ConsoleRing::PendingInput() {
  MutexLock lock(mutex_);
  return input_.size();
}

ConsoleRing::Counters ConsoleRing::counters() {
  MutexLock lock(mutex_);
  return counters_;
}

bool ConsoleRing::ServiceLocked() {
  std::vector<char> out;
  bool moved = false;
  {
    mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
    auto host = memory_.TranslateGuarded(ring_gpa_, sizeof(xencons_interface));
    if (!host) return false;
    auto* ring = reinterpret_cast<xencons_interface*>(*host);

    // Output: the guest produces, we consume.
    const uint32_t out_prod = LoadIndex(&ring->out_prod);
    uint32_t out_cons = LoadIndex(&ring->out_cons);
    if (out_prod - out_cons > sizeof(ring->out)) {
      // Wild indexes: take the last ring's worth, as if the guest had just filled it.
      ++counters_.bad_indexes;
      out_cons = out_prod - uint32_t(sizeof(ring->out));
    }
    if (out_prod != out_cons) {
      out.resize(out_prod - out_cons);
      CopyFromRing(ring->out, out_cons, out);
      StoreIndex(&ring->out_cons, out_prod);
      counters_.out_bytes += out.size();
      moved = true;
    }

    // Input: we produce, the guest consumes.
    const uint32_t in_cons = LoadIndex(&ring->in_cons);
    const uint32_t in_prod = LoadIndex(&ring->in_prod);
    const uint32_t used = in_prod - in_cons;
    if (used > sizeof(ring->in)) {
      ++counters_.bad_indexes;  // no room we could trust: wait for the guest to fix its index
    } else if (!input_.empty() && used < sizeof(ring->in)) {
      const size_t n = std::min<size_t>(sizeof(ring->in) - used, input_.size());
      std::vector<char> chunk(input_.begin(), input_.begin() + ptrdiff_t(n));
      CopyToRing(ring->in, in_prod, chunk);
      StoreIndex(&ring->in_prod, in_prod + uint32_t(n));
      input_.erase(input_.begin(), input_.begin() + ptrdiff_t(n));
      counters_.in_bytes += n;
      moved = true;
    }
  }
  if (!out.empty() && sink_) sink_(out);  // under mutex_: output stays in order
  if (moved && notify_) ++counters_.notifies;
  return moved;
}

}  // namespace xenkvm::backends
