// Event tracing for `xenkvm run --trace FILE`: events land in a ring per host thread and are
// written once, at the end, as Chrome trace-event JSON (the format Perfetto and
// chrome://tracing open: one track per thread, "X" slices and "i" instants, times in µs).
//
// Off costs one relaxed load and a not-taken branch at each trace point (Active() is null);
// building with -DXENKVM_TRACE=OFF makes Active() a constant null and removes them.
//
// Threads: any thread records into its own ring (single producer, no lock on the hot path);
// Recorder::WriteJson may run while others still record (it reads each ring's published
// prefix). Lock: mutex_ guards the list of rings (taken once per thread, on its first event).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "abi/sync.h"

namespace xenkvm::trace {

// A named argument: a number, or (str != nullptr) a static string (both JSON values).
struct Arg {
  const char* key = nullptr;
  int64_t value = 0;
  const char* str = nullptr;
};

// Names, keys and string values must be string literals (stored as pointers, written as is).
struct Event {
  uint64_t ts_ns = 0;
  uint64_t dur_ns = 0;  // 'X' only
  const char* name = nullptr;
  char phase = 'i';  // 'X' complete slice, 'i' instant
  uint8_t nargs = 0;
  Arg args[3];
};

// One thread's events: the first `capacity` are kept, later ones only counted (dropped).
class Ring {
 public:
  Ring(uint32_t tid, uint32_t capacity)
      : tid_(tid), capacity_(capacity), events_(std::make_unique<Event[]>(capacity)) {}
  void Push(const Event& e) {
    const uint32_t n = count_.load(std::memory_order_relaxed);
    if (n == capacity_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    events_[n] = e;
    count_.store(n + 1, std::memory_order_release);  // publishes the event to WriteJson
  }
  uint32_t tid() const { return tid_; }
  uint32_t count() const { return count_.load(std::memory_order_acquire); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  const Event& at(uint32_t i) const { return events_[i]; }

 private:
  const uint32_t tid_;
  const uint32_t capacity_;
  std::unique_ptr<Event[]> events_;
  std::atomic<uint32_t> count_{0};
  std::atomic<uint64_t> dropped_{0};
};

class Recorder {
 public:
  // Keeps at most `events_per_thread` events per thread (about 96 bytes each, allocated on a
  // thread's first event).
  explicit Recorder(uint32_t events_per_thread = 1u << 16);
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Any thread: an instant event now, or a slice that began at start_ns and ends now.
  void Instant(const char* name, Arg a = {}, Arg b = {}, Arg c = {});
  void Slice(const char* name, uint64_t start_ns, Arg a = {}, Arg b = {}, Arg c = {});
  // Any thread: the calling thread's track name ("vCPU 0", "timers", ...).
  void NameThread(std::string name);

  // The trace so far as one JSON object {"traceEvents": [...], "otherData": {...}}; dropped
  // events are reported per thread in otherData and as an instant on that thread's track.
  void WriteJson(std::FILE* out);
  uint64_t Dropped();

 private:
  struct Track {
    std::unique_ptr<Ring> ring;
    std::string name;
  };
  Ring& ThisThreadRing();
  void Record(const Event& e) { ThisThreadRing().Push(e); }

  const uint64_t id_;  // tells this recorder's thread-local ring cache from an older one's
  const uint32_t capacity_;
  const uint64_t start_ns_;  // timestamps are written relative to this
  Mutex mutex_;
  std::vector<Track> tracks_ XENKVM_GUARDED_BY(mutex_);
};

// CLOCK_MONOTONIC in ns (the clock every event uses).
uint64_t NowNs();

#ifndef XENKVM_TRACE_DISABLED
namespace detail {
inline std::atomic<Recorder*> active{nullptr};
}
// The recorder in use, or null (tracing off).
inline Recorder* Active() { return detail::active.load(std::memory_order_relaxed); }
// Install before the threads that record start; uninstall after they stopped recording.
inline void SetActive(Recorder* r) { detail::active.store(r, std::memory_order_release); }
#else
constexpr Recorder* Active() { return nullptr; }
inline void SetActive(Recorder*) {}
#endif

}  // namespace xenkvm::trace
