// Locks the compiler checks: a Mutex and its scoped MutexLock carry Clang's thread-safety
// attributes, so members marked XENKVM_GUARDED_BY(mutex_) and functions marked
// XENKVM_REQUIRES(mutex_) are verified by `-Wthread-safety` (the `clang` preset). Under GCC the
// attributes expand to nothing and these are a plain std::mutex and std::unique_lock.
//
// Condition variables wait on MutexLock::native() (a std::unique_lock<std::mutex>); the analysis
// cannot see the wait release and retake the lock, which is harmless: it holds again on return.
#pragma once

#include <mutex>

#if defined(__clang__)
#define XENKVM_TSA(x) __attribute__((x))
#else
#define XENKVM_TSA(x)
#endif

#define XENKVM_CAPABILITY(name) XENKVM_TSA(capability(name))
#define XENKVM_SCOPED_CAPABILITY XENKVM_TSA(scoped_lockable)
#define XENKVM_GUARDED_BY(m) XENKVM_TSA(guarded_by(m))
#define XENKVM_PT_GUARDED_BY(m) XENKVM_TSA(pt_guarded_by(m))
#define XENKVM_REQUIRES(...) XENKVM_TSA(requires_capability(__VA_ARGS__))
#define XENKVM_EXCLUDES(...) XENKVM_TSA(locks_excluded(__VA_ARGS__))
#define XENKVM_ACQUIRE(...) XENKVM_TSA(acquire_capability(__VA_ARGS__))
#define XENKVM_RELEASE(...) XENKVM_TSA(release_capability(__VA_ARGS__))
#define XENKVM_TRY_ACQUIRE(...) XENKVM_TSA(try_acquire_capability(__VA_ARGS__))
#define XENKVM_ACQUIRED_BEFORE(...) XENKVM_TSA(acquired_before(__VA_ARGS__))
#define XENKVM_ACQUIRED_AFTER(...) XENKVM_TSA(acquired_after(__VA_ARGS__))
#define XENKVM_ASSERT_HELD(m) XENKVM_TSA(assert_capability(m))
#define XENKVM_RETURN_CAPABILITY(m) XENKVM_TSA(lock_returned(m))
#define XENKVM_NO_THREAD_SAFETY_ANALYSIS XENKVM_TSA(no_thread_safety_analysis)

namespace xenkvm {

class XENKVM_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() XENKVM_ACQUIRE() { mutex_.lock(); }
  void unlock() XENKVM_RELEASE() { mutex_.unlock(); }
  bool try_lock() XENKVM_TRY_ACQUIRE(true) { return mutex_.try_lock(); }
  // Tells the analysis the caller holds this lock (a runtime no-op: std::mutex has no owner).
  void AssertHeld() const XENKVM_ASSERT_HELD(this) {}

  std::mutex& native() { return mutex_; }

 private:
  std::mutex mutex_;
};

// Holds a Mutex for its scope; native() feeds std::condition_variable::wait.
class XENKVM_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) XENKVM_ACQUIRE(mutex) : lock_(mutex.native()) {}
  ~MutexLock() XENKVM_RELEASE() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace xenkvm
