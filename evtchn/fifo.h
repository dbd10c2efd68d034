// FIFO event delivery (xen/include/public/event_channel.h: event words with PENDING, MASKED,
// LINKED, BUSY and a 17-bit LINK; per-vCPU control blocks with READY and 16 queue heads),
// behaving as Xen's xen/common/event_fifo.c: the engine keeps each queue's tail, the guest its
// head, and a newly pending unmasked event is linked behind the tail with compare-and-exchange.
//
// Threads and locks (lock order: Engine table mutex -> FifoQueue::lock (two queue locks of a
// port move: lower address first) -> LayoutGuard). Raise runs on any thread under a
// non-blocking LayoutGuard and only ever try-locks a queue (bounded spin): when a page is not
// mapped or a queue stays busy it answers kRetry and the engine defers the event.
// Setup (init_control, expand_array, reset) runs under the engine's table mutex.
//
// Every guest word is hostile: the engine never follows a LINK, it only reads and
// compare-and-exchanges the word of its own recorded tail, so a corrupt or cyclic list costs
// the guest its own events and nothing else.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/port_ops.h"
#include "evtchn/port_table.h"
#include "evtchn/vcpu_state.h"
#include "mem/guest_memory.h"
#include "mem/page_cache.h"

namespace xenkvm::evtchn {

inline constexpr uint32_t kFifoQueues = EVTCHN_FIFO_MAX_QUEUES;  // priorities 0 (high)..15
inline constexpr uint32_t kFifoWordsPerPage = abi::kPageSize / sizeof(event_word_t);
inline constexpr uint32_t kFifoMaxArrayPages = EVTCHN_FIFO_NR_CHANNELS / kFifoWordsPerPage;
inline constexpr uint32_t kFifoPending = 1u << EVTCHN_FIFO_PENDING;
inline constexpr uint32_t kFifoMasked = 1u << EVTCHN_FIFO_MASKED;
inline constexpr uint32_t kFifoLinked = 1u << EVTCHN_FIFO_LINKED;
inline constexpr uint32_t kFifoBusy = 1u << EVTCHN_FIFO_BUSY;
inline constexpr uint32_t kFifoLinkMask = EVTCHN_FIFO_LINK_MASK;

// A queue lock that delivery only try-locks (Xen's per-queue spinlock). Held for a handful of
// atomic operations on guest words, never across anything that blocks.
class XENKVM_CAPABILITY("mutex") QueueLock {
 public:
  bool try_lock() XENKVM_TRY_ACQUIRE(true) {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  // Blocking paths (reset, save) only.
  void lock() XENKVM_ACQUIRE();
  void unlock() XENKVM_RELEASE() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

struct FifoQueue {
  QueueLock lock;
  Port tail XENKVM_GUARDED_BY(lock) = 0;  // 0: empty (port 0 is never bound)
};

// One vCPU's FIFO state: where its control block is and its 16 queues. Created with the vCPU,
// never freed before the engine (senders hold pointers without a lock).
struct FifoVcpu {
  mem::CachedMapping control{sizeof(evtchn_fifo_control_block_t)};
  std::array<FifoQueue, kFifoQueues> queues;
};

// Everything FIFO keeps, as plain values: what a snapshot saves and a restore puts back.
struct FifoSnapshot {
  bool enabled = false;
  std::vector<uint64_t> array_gpas;  // event array pages, in port order
  struct Vcpu {
    uint32_t xen_id = 0;
    uint64_t control_gpa = mem::CachedMapping::kNoGpa;
    std::array<Port, kFifoQueues> tails{};
  };
  std::vector<Vcpu> vcpus;
  struct PortState {
    Port port = 0;
    uint8_t priority = EVTCHN_FIFO_PRIORITY_DEFAULT;
    uint32_t last_queue = 0;  // PortEntry::fifo_last_queue
  };
  std::vector<PortState> ports;  // ports whose priority or last queue is not the default
  std::vector<Port> parked;      // pending, waiting for their event array page
};

class Fifo final {
 public:
  explicit Fifo(const mem::GuestMemory& memory);

  // ---- setup (engine table mutex held) ----
  void AddVcpu(uint32_t xen_vcpu_id);
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  void SetEnabled(bool on) { enabled_.store(on, std::memory_order_release); }
  bool HasControlBlock(uint32_t xen_vcpu_id) const;
  void SetControlBlock(uint32_t xen_vcpu_id, uint64_t gpa);
  // Adds the next event array page; -ENOSPC when all 2^17 ports have one.
  Result<> AddArrayPage(uint64_t gpa);
  uint32_t ports_with_words() const { return words_.load(std::memory_order_acquire); }
  // Ports parked in [first, end) (raised before their page existed), cleared as returned.
  std::vector<Port> TakeParked(Port first, Port end);
  void Unpark(Port port);
  // Back to no FIFO state at all (EVTCHNOP_reset, a failed first init_control). Caller has
  // drained senders (GuestMemory::WaitForReaders) after switching delivery away from FIFO.
  void Clear();
  FifoSnapshot Save(std::span<PortEntry* const> entries) const;
  // Puts a saved state back into a Fifo with no state (Clear()ed or new) whose vCPUs exist;
  // the engine validated `s` (vCPUs, gfns, ports) and `entries` covers every port it names.
  void Restore(const FifoSnapshot& s, std::span<PortEntry* const> entries);

  // ---- delivery (LayoutGuard held; never blocks) ----
  // Xen's evtchn_fifo_set_pending for `port` bound to `vcpu`.
  [[gnu::always_inline]] RaiseOutcome Raise(Port port, PortEntry& entry, VcpuState& vcpu) {
    uint8_t* page = PageOf(port);
    if (page == nullptr) {
      if (port < ports_with_words()) return RaiseOutcome::kRetry;  // page moving
      Park(port);
      return RaiseOutcome::kParked;
    }
    // Xen drops events for a vCPU without a control block: a guest must not unmask before
    // it has initialised one.
    FifoVcpu& fifo_vcpu = *vcpus_[vcpu.xen_id].load(std::memory_order_acquire);
    if (fifo_vcpu.control.gpa() == mem::CachedMapping::kNoGpa) return RaiseOutcome::kDropped;
    auto word = WordAt(page, port);
    // Masked, or pending and still LINKED: nothing to link, so one fetch_or(PENDING) and no
    // queue lock (the guest's unmask re-raises; a linked event is still on its queue).
    // seq_cst: pairs with SCHEDOP_poll registering before it looks (see Engine::BeginPoll).
    const uint32_t seen = word.load(std::memory_order_relaxed);
    if ((seen & kFifoMasked) ||
        (seen & (kFifoPending | kFifoLinked)) == (kFifoPending | kFifoLinked)) {
      const uint32_t old = word.fetch_or(kFifoPending, std::memory_order_seq_cst);
      if (old & kFifoMasked)
        return old & kFifoPending ? RaiseOutcome::kCoalesced : RaiseOutcome::kMasked;
      if ((old & (kFifoPending | kFifoLinked)) == (kFifoPending | kFifoLinked))
        return RaiseOutcome::kCoalesced;
      // The guest changed the word in between: link it as Xen would, PENDING already set.
      return Link(port, entry, vcpu, fifo_vcpu, word, /*pending_set=*/true, old);
    }
    // A new event: PENDING and LINKED are set together under the queue lock (Link).
    return Link(port, entry, vcpu, fifo_vcpu, word, /*pending_set=*/false, 0);
  }
  // EVTCHNOP_unmask: clear MASKED; whether the word is pending (the engine re-raises it).
  bool ClearMask(Port port);
  void ClearPending(Port port);
  bool IsPending(Port port) const;
  bool IsLinked(Port port) const;
  // vcpu_info moved or was unmapped when an upcall was due: mark upcall pending now.
  void SyncShadow(VcpuState& vcpu, uint8_t* vcpu_info);

 private:
  [[gnu::always_inline]] uint8_t* PageOf(Port port) const {
    if (port >= ports_with_words()) return nullptr;
    const mem::CachedMapping& page = *pages_[port / kFifoWordsPerPage];
    uint8_t* host = page.Get(memory_);
    return host ? host : const_cast<mem::CachedMapping&>(page).TryRefresh(memory_);
  }
  static std::atomic_ref<uint32_t> WordAt(uint8_t* page, Port port) {
    return mem::GuestAtomic<uint32_t>(page + (port % kFifoWordsPerPage) * sizeof(event_word_t));
  }
  void Park(Port port) {
    parked_[port / 64].fetch_or(uint64_t(1) << (port % 64), std::memory_order_acq_rel);
  }
  // Takes the queue lock(s) and links `port`. pending_set: Raise already set PENDING and
  // `old_word` is what the word held before; otherwise PENDING is set here, with LINKED in the
  // same compare-and-exchange when the word is unmasked.
  RaiseOutcome Link(Port port, PortEntry& entry, VcpuState& vcpu, FifoVcpu& fifo_vcpu,
                    std::atomic_ref<uint32_t> word, bool pending_set, uint32_t old_word);
  // Sets PENDING, and LINKED if the word is unmasked, in one step; returns the old word.
  // A guest that keeps changing the word gets Xen's two steps instead (bounded).
  static uint32_t SetPendingAndLinked(std::atomic_ref<uint32_t> word);
  static bool SetLink(std::atomic_ref<uint32_t> tail_word, Port port);
  static bool MarkUpcallPending(VcpuState& vcpu, const mem::GuestMemory& memory);

  const mem::GuestMemory& memory_;
  std::atomic<bool> enabled_{false};
  std::atomic<uint32_t> words_{0};  // ports that have an event word (pages * 1024)
  std::array<std::unique_ptr<mem::CachedMapping>, kFifoMaxArrayPages> pages_;
  std::array<std::atomic<FifoVcpu*>, 128> vcpus_{};  // published under the table mutex
  std::vector<std::unique_ptr<FifoVcpu>> vcpu_storage_;
  std::array<std::atomic<uint64_t>, EVTCHN_FIFO_NR_CHANNELS / 64> parked_{};
};

}  // namespace xenkvm::evtchn
