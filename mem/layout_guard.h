// LayoutGuard: holds a GuestMemory's layout still while a thread uses translations made under
// it, at almost no cost to readers. Each thread owns a ReaderRecord naming the memory it is
// reading; a reader only stores to its own record and loads the writer flag. A layout change
// raises the flag, issues a process-wide barrier (membarrier(2), PRIVATE_EXPEDITED) so every
// thread either has made its record visible or will see the flag, then waits for records that
// name the memory to clear. Without membarrier (or under TSan) readers use seq_cst operations.
//
// Threads: any. Records are never freed; a thread's record is reused after the thread exits.
#pragma once

#include <atomic>
#include <cstdint>

namespace xenkvm::mem {

class GuestMemory;

struct alignas(64) ReaderRecord {             // a cache line of its own: only its thread writes it
  std::atomic<const void*> reading{nullptr};  // the GuestMemory this thread holds a guard on
  std::atomic<bool> in_use{false};            // owned by a live thread
  uint32_t depth = 0;                         // nested guards; owner thread only
  ReaderRecord* next = nullptr;               // immutable once published
};

namespace detail {
extern thread_local constinit ReaderRecord* this_thread_reader;
ReaderRecord& RegisterThisThread();  // once per thread
// membarrier(2) is registered for this process (set before main; false under TSan).
extern const bool asymmetric_barrier;
inline bool UseAsymmetricBarrier() { return asymmetric_barrier; }

inline ReaderRecord& ThisThreadReader() {
  ReaderRecord* record = this_thread_reader;
  return record ? *record : RegisterThisThread();
}
}  // namespace detail

class LayoutGuard {
 public:
  // Never blocks: fails while a layout change is in flight.
  static LayoutGuard TryAcquire(const GuestMemory& memory);
  // Waits for an in-flight layout change to finish.
  static LayoutGuard Acquire(const GuestMemory& memory);

  LayoutGuard(LayoutGuard&& other) noexcept : record_(other.record_) { other.record_ = nullptr; }
  LayoutGuard& operator=(LayoutGuard&&) = delete;
  ~LayoutGuard() {
    if (record_ && --record_->depth == 0)
      record_->reading.store(nullptr, std::memory_order_release);
  }
  explicit operator bool() const { return record_ != nullptr; }

 private:
  friend class GuestMemory;
  explicit LayoutGuard(ReaderRecord* record) : record_(record) {}

  // The reader side of the protocol, on `memory` with its writer flag. Returns this thread's
  // record on success.
  static ReaderRecord* TryAcquireFor(const void* memory,
                                     const std::atomic<uint32_t>& writer_active) {
    ReaderRecord& record = detail::ThisThreadReader();
    if (record.depth > 0) {
      // Nested guard on this thread: the layout is already held for us.
      if (record.reading.load(std::memory_order_relaxed) != memory) return nullptr;
      ++record.depth;
      return &record;
    }
    bool writer_seen;
    if (detail::UseAsymmetricBarrier()) {
      record.reading.store(memory, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the writer's membarrier pairs here
      writer_seen = writer_active.load(std::memory_order_acquire) != 0;
    } else {
      record.reading.store(memory, std::memory_order_seq_cst);
      writer_seen = writer_active.load(std::memory_order_seq_cst) != 0;
    }
    if (!writer_seen) {
      record.depth = 1;
      return &record;
    }
    record.reading.store(nullptr, std::memory_order_release);
    return nullptr;
  }

  ReaderRecord* record_;  // this thread's record while held
};

// The writer side: called by GuestMemory with its writer mutex held and writer_active raised.
void WaitForReadersToLeave(const void* memory);

}  // namespace xenkvm::mem
