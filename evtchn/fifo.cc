// FIFO event delivery: the link protocol of Xen's event_fifo.c (see fifo.h for threads/locks).
#include "evtchn/fifo.h"

#include <bit>
#include <cstddef>
#include <thread>

#include "evtchn/sink.h"

namespace xenkvm::evtchn {

namespace {

// A queue lock is held for a few atomic operations; past this many tries the holder is
// descheduled and the event is better deferred than spun on.
constexpr int kLockSpins = 128;
constexpr size_t kReadyOffset = offsetof(evtchn_fifo_control_block_t, ready);
constexpr size_t kHeadOffset = offsetof(evtchn_fifo_control_block_t, head);
static_assert(abi::Layout64::kUpcallPending == abi::LayoutCompat::kUpcallPending);

bool TryLockSpin(QueueLock& lock) XENKVM_TRY_ACQUIRE(true, lock) {
  for (int i = 0; i < kLockSpins; ++i) {
    if (lock.try_lock()) return true;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  return false;
}

// Releases what Fifo::Link holds: its queue and, if different, the port's previous queue.
void UnlockPair(FifoQueue* q, FifoQueue* old_q) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
  if (old_q != q) old_q->lock.unlock();
  q->lock.unlock();
}

uint32_t PackQueue(uint32_t xen_vcpu_id, uint32_t priority) { return xen_vcpu_id << 8 | priority; }

}  // namespace

void QueueLock::lock() {
  while (!try_lock()) std::this_thread::yield();
}

Fifo::Fifo(const mem::GuestMemory& memory) : memory_(memory) {
  for (auto& page : pages_) page = std::make_unique<mem::CachedMapping>(abi::kPageSize);
}

void Fifo::AddVcpu(uint32_t xen_vcpu_id) {
  vcpu_storage_.push_back(std::make_unique<FifoVcpu>());
  vcpus_[xen_vcpu_id].store(vcpu_storage_.back().get(), std::memory_order_release);
}

bool Fifo::HasControlBlock(uint32_t xen_vcpu_id) const {
  const FifoVcpu* v = vcpus_[xen_vcpu_id].load(std::memory_order_acquire);
  return v && v->control.gpa() != mem::CachedMapping::kNoGpa;
}

void Fifo::SetControlBlock(uint32_t xen_vcpu_id, uint64_t gpa) {
  vcpus_[xen_vcpu_id].load(std::memory_order_acquire)->control.SetGpa(gpa);
}

Result<> Fifo::AddArrayPage(uint64_t gpa) {
  const uint32_t words = ports_with_words();
  if (words / kFifoWordsPerPage >= kFifoMaxArrayPages)
    return Fail(XEN_ENOSPC, "FIFO event array is full");
  pages_[words / kFifoWordsPerPage]->SetGpa(gpa);
  // Publish the page before the ports that use it (Xen's smp_wmb before num_evtchns).
  words_.store(words + kFifoWordsPerPage, std::memory_order_release);
  return {};
}

std::vector<Port> Fifo::TakeParked(Port first, Port end) {
  std::vector<Port> ports;
  for (Port w = first / 64; w < (end + 63) / 64 && w < parked_.size(); ++w) {
    uint64_t bits = parked_[w].exchange(0, std::memory_order_acq_rel);
    while (bits) {
      ports.push_back(w * 64 + uint32_t(std::countr_zero(bits)));
      bits &= bits - 1;
    }
  }
  return ports;
}

void Fifo::Unpark(Port port) {
  parked_[port / 64].fetch_and(~(uint64_t(1) << (port % 64)), std::memory_order_acq_rel);
}

void Fifo::Clear() {
  SetEnabled(false);
  words_.store(0, std::memory_order_release);
  for (auto& page : pages_) page->SetGpa(mem::CachedMapping::kNoGpa);
  for (auto& v : vcpu_storage_) {
    v->control.SetGpa(mem::CachedMapping::kNoGpa);
    for (FifoQueue& q : v->queues) {
      q.lock.lock();
      q.tail = 0;
      q.lock.unlock();
    }
  }
  for (auto& word : parked_) word.store(0, std::memory_order_release);
}

FifoSnapshot Fifo::Save(std::span<PortEntry* const> entries) const {
  FifoSnapshot s;
  s.enabled = enabled();
  for (uint32_t i = 0; i < ports_with_words() / kFifoWordsPerPage; ++i)
    s.array_gpas.push_back(pages_[i]->gpa());
  for (uint32_t id = 0; id < vcpus_.size(); ++id) {
    FifoVcpu* v = vcpus_[id].load(std::memory_order_acquire);
    if (!v) continue;
    FifoSnapshot::Vcpu& out = s.vcpus.emplace_back();
    out.xen_id = id;
    out.control_gpa = v->control.gpa();
    for (uint32_t p = 0; p < kFifoQueues; ++p) {
      FifoQueue& q = v->queues[p];
      q.lock.lock();
      out.tails[p] = q.tail;
      q.lock.unlock();
    }
  }
  for (Port port = 0; port < entries.size(); ++port) {
    const PortEntry* e = entries[port];
    if (!e) continue;
    const uint8_t priority = e->priority.load(std::memory_order_relaxed);
    const uint32_t last = e->fifo_last_queue.load(std::memory_order_relaxed);
    if (priority != EVTCHN_FIFO_PRIORITY_DEFAULT || last != 0)
      s.ports.push_back({port, priority, last});
  }
  for (Port w = 0; w < parked_.size(); ++w) {
    uint64_t bits = parked_[w].load(std::memory_order_acquire);
    while (bits) {
      s.parked.push_back(w * 64 + uint32_t(std::countr_zero(bits)));
      bits &= bits - 1;
    }
  }
  return s;
}

void Fifo::Restore(const FifoSnapshot& s, std::span<PortEntry* const> entries) {
  for (size_t i = 0; i < s.array_gpas.size(); ++i) pages_[i]->SetGpa(s.array_gpas[i]);
  words_.store(uint32_t(s.array_gpas.size()) * kFifoWordsPerPage, std::memory_order_release);
  for (const FifoSnapshot::Vcpu& saved : s.vcpus) {
    FifoVcpu& v = *vcpus_[saved.xen_id].load(std::memory_order_acquire);
    v.control.SetGpa(saved.control_gpa);
    for (uint32_t p = 0; p < kFifoQueues; ++p) {
      FifoQueue& q = v.queues[p];
      q.lock.lock();
      q.tail = saved.tails[p];
      q.lock.unlock();
    }
  }
  for (const FifoSnapshot::PortState& port : s.ports) {
    entries[port.port]->priority.store(port.priority, std::memory_order_relaxed);
    entries[port.port]->fifo_last_queue.store(port.last_queue, std::memory_order_relaxed);
  }
  for (Port port : s.parked) Park(port);
  SetEnabled(s.enabled);
}

// ---- delivery ----

// Xen's evtchn_fifo_set_link: set the tail's LINK to `port` only while the tail is still
// LINKED. The guest may meanwhile set/clear MASKED, clear PENDING or clear LINKED; BUSY keeps
// its unmask off the word, so the exchange fails at most a few times. Returns whether the tail
// now links to `port` (false: the queue had drained, the caller makes `port` the head).
bool Fifo::SetLink(std::atomic_ref<uint32_t> tail_word, Port port) {
  auto try_set = [&](uint32_t& w) -> int {
    if (!(w & kFifoLinked)) return 0;
    const uint32_t desired = (w & ~(kFifoBusy | kFifoLinkMask)) | port;
    return tail_word.compare_exchange_strong(w, desired, std::memory_order_acq_rel) ? 1 : -1;
  };
  uint32_t w = tail_word.load(std::memory_order_acquire);
  int ret = try_set(w);
  if (ret >= 0) return ret == 1;
  tail_word.fetch_or(kFifoBusy, std::memory_order_acq_rel);
  w = tail_word.load(std::memory_order_acquire);
  for (int attempt = 0; attempt < 4; ++attempt) {
    ret = try_set(w);
    if (ret == 1) return true;  // the new word has BUSY clear
    if (ret == 0) {
      tail_word.fetch_and(~kFifoBusy, std::memory_order_acq_rel);
      return false;
    }
  }
  // A guest that keeps changing the word: give up as Xen does (the event counts as linked).
  tail_word.fetch_and(~kFifoBusy, std::memory_order_acq_rel);
  return true;
}

bool Fifo::MarkUpcallPending(VcpuState& vcpu, const mem::GuestMemory& memory) {
  uint8_t* vcpu_info = vcpu.vcpu_info.Get(memory);
  if (vcpu_info == nullptr) vcpu_info = vcpu.vcpu_info.TryRefresh(memory);
  if (vcpu_info == nullptr) {
    vcpu.shadow_sel.fetch_or(1, std::memory_order_acq_rel);  // SyncShadow marks it later
    return false;
  }
  auto upcall_pending = mem::GuestAtomic<uint8_t>(vcpu_info + abi::Layout64::kUpcallPending);
  if (upcall_pending.exchange(1, std::memory_order_acq_rel) == 0) vcpu.sink->InjectUpcall();
  return true;
}

void Fifo::SyncShadow(VcpuState& vcpu, uint8_t* vcpu_info) {
  if (vcpu.shadow_sel.exchange(0, std::memory_order_acq_rel) == 0) return;
  auto upcall_pending = mem::GuestAtomic<uint8_t>(vcpu_info + abi::Layout64::kUpcallPending);
  if (upcall_pending.exchange(1, std::memory_order_acq_rel) == 0) vcpu.sink->InjectUpcall();
}

// The locked half of Xen's evtchn_fifo_set_pending: PENDING is set and the word was unmasked.
// Locks the port's queue and, if it was last linked elsewhere, that queue too (lower address
// first); the analysis cannot follow a lock chosen at run time, hence no annotation here.
uint32_t Fifo::SetPendingAndLinked(std::atomic_ref<uint32_t> word) {
  uint32_t w = word.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 4; ++attempt) {
    const uint32_t add = w & kFifoMasked ? kFifoPending : kFifoPending | kFifoLinked;
    // seq_cst: this sets PENDING (see Raise).
    if (word.compare_exchange_weak(w, w | add, std::memory_order_seq_cst)) return w;
  }
  w = word.fetch_or(kFifoPending, std::memory_order_seq_cst);
  if (!(w & kFifoMasked)) w |= word.fetch_or(kFifoLinked, std::memory_order_acq_rel) & kFifoLinked;
  return w;
}

RaiseOutcome Fifo::Link(Port port, PortEntry& entry, VcpuState& vcpu, FifoVcpu& fifo_vcpu,
                        std::atomic_ref<uint32_t> word, bool pending_set,
                        uint32_t old_word) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
  uint8_t* control = fifo_vcpu.control.Get(memory_);
  if (control == nullptr) control = fifo_vcpu.control.TryRefresh(memory_);
  if (control == nullptr) return RaiseOutcome::kRetry;
  const uint32_t priority = entry.priority.load(std::memory_order_relaxed) % kFifoQueues;
  FifoQueue* q = &fifo_vcpu.queues[priority];
  FifoQueue* old_q = nullptr;
  for (int attempt = 0;; ++attempt) {
    if (attempt == 3) return RaiseOutcome::kRetry;  // moving under us: let the worker finish
    const uint32_t last = entry.fifo_last_queue.load(std::memory_order_acquire);
    FifoVcpu* last_vcpu = vcpus_[(last >> 8) % vcpus_.size()].load(std::memory_order_acquire);
    old_q = last_vcpu ? &last_vcpu->queues[last % kFifoQueues] : q;
    FifoQueue* first = std::min(q, old_q);
    FifoQueue* second = std::max(q, old_q);
    if (!TryLockSpin(first->lock)) return RaiseOutcome::kRetry;
    if (first != second && !TryLockSpin(second->lock)) {
      first->lock.unlock();
      return RaiseOutcome::kRetry;
    }
    if (entry.fifo_last_queue.load(std::memory_order_acquire) == last) break;
    if (first != second) second->lock.unlock();
    first->lock.unlock();
  }
  // The tail's page must be usable before this port is marked LINKED.
  uint8_t* tail_page = nullptr;
  if (q->tail != 0 && (tail_page = PageOf(q->tail)) == nullptr) {
    UnlockPair(q, old_q);
    return RaiseOutcome::kRetry;
  }
  bool linked = true;  // nothing to announce unless this port starts a queue
  bool was_pending, masked, newly_linked;
  if (pending_set) {
    // Xen's order: PENDING was set before the lock; LINKED now, unless masked meanwhile.
    was_pending = old_word & kFifoPending;
    masked = word.load(std::memory_order_acquire) & kFifoMasked;
    newly_linked =
        !masked && !(word.fetch_or(kFifoLinked, std::memory_order_acq_rel) & kFifoLinked);
  } else {
    const uint32_t w = SetPendingAndLinked(word);
    was_pending = w & kFifoPending;
    masked = w & kFifoMasked;
    newly_linked = !masked && !(w & kFifoLinked);
  }
  if (masked) {
    UnlockPair(q, old_q);
    return was_pending ? RaiseOutcome::kCoalesced : RaiseOutcome::kMasked;
  }
  RaiseOutcome outcome = was_pending ? RaiseOutcome::kCoalesced : RaiseOutcome::kDelivered;
  if (newly_linked) {
    outcome = RaiseOutcome::kDelivered;
    // This port was its old queue's tail: that queue is empty now, and must not link to it.
    if (old_q->tail == port) old_q->tail = 0;
    if (old_q != q) {
      entry.fifo_last_queue.store(PackQueue(vcpu.xen_id, priority), std::memory_order_release);
      old_q->lock.unlock();
      old_q = q;
    }
    linked = q->tail != 0 && SetLink(WordAt(tail_page, q->tail), port);
    if (!linked)
      mem::GuestAtomic<uint32_t>(control + kHeadOffset + priority * sizeof(uint32_t))
          .store(port, std::memory_order_release);
    q->tail = port;
  }
  UnlockPair(q, old_q);
  if (!linked) {
    const uint32_t ready_bit = 1u << priority;
    if (!(mem::GuestAtomic<uint32_t>(control + kReadyOffset)
              .fetch_or(ready_bit, std::memory_order_acq_rel) &
          ready_bit) &&
        !MarkUpcallPending(vcpu, memory_))
      return RaiseOutcome::kShadowed;
  }
  return outcome;
}

bool Fifo::ClearMask(Port port) {
  uint8_t* page = PageOf(port);
  if (!page) return false;
  return WordAt(page, port).fetch_and(~kFifoMasked, std::memory_order_acq_rel) & kFifoPending;
}

void Fifo::ClearPending(Port port) {
  Unpark(port);
  if (uint8_t* page = PageOf(port))
    WordAt(page, port).fetch_and(~kFifoPending, std::memory_order_acq_rel);
}

bool Fifo::IsPending(Port port) const {
  uint8_t* page = PageOf(port);
  return page && (WordAt(page, port).load(std::memory_order_seq_cst) & kFifoPending);
}

bool Fifo::IsLinked(Port port) const {
  uint8_t* page = PageOf(port);
  return page && (WordAt(page, port).load(std::memory_order_acquire) & kFifoLinked);
}

}  // namespace xenkvm::evtchn
