// ReaderRecord registry and the writer side of LayoutGuard (see layout_guard.h).
#include "mem/layout_guard.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <thread>

namespace xenkvm::mem {
namespace detail {

namespace {
std::atomic<ReaderRecord*> all_readers{nullptr};  // lock-free push-only list

bool RegisterMembarrier() {
#if defined(__SANITIZE_THREAD__)
  return false;  // TSan cannot see the barrier; use the seq_cst protocol it understands
#else
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#endif
}

// Frees this thread's record for reuse when the thread exits.
struct RecordReleaser {
  ~RecordReleaser() {
    if (this_thread_reader) this_thread_reader->in_use.store(false, std::memory_order_release);
  }
};
thread_local RecordReleaser record_releaser;
}  // namespace

thread_local constinit ReaderRecord* this_thread_reader = nullptr;
const bool asymmetric_barrier = RegisterMembarrier();

ReaderRecord& RegisterThisThread() {
  (void)&record_releaser;  // instantiate the releaser for this thread
  for (ReaderRecord* r = all_readers.load(std::memory_order_acquire); r; r = r->next) {
    bool free = false;
    if (r->in_use.compare_exchange_strong(free, true, std::memory_order_acq_rel)) {
      this_thread_reader = r;
      return *r;
    }
  }
  auto* record = new ReaderRecord;  // never freed: reused by later threads
  record->in_use.store(true, std::memory_order_relaxed);
  record->next = all_readers.load(std::memory_order_relaxed);
  while (!all_readers.compare_exchange_weak(record->next, record, std::memory_order_acq_rel)) {
  }
  this_thread_reader = record;
  return *record;
}

}  // namespace detail

void WaitForReadersToLeave(const void* memory) {
  if (detail::UseAsymmetricBarrier()) {
    // After this, every thread has either published its record or will see writer_active.
    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
  }
  for (ReaderRecord* r = detail::all_readers.load(std::memory_order_acquire); r; r = r->next) {
    // Readers hold guards for a few instructions (never across a blocking call), so spin.
    while (r->reading.load(std::memory_order_seq_cst) == memory) std::this_thread::yield();
  }
}

}  // namespace xenkvm::mem
