// Per-vCPU timers; see timers.h.
#include "vmm/timers.h"

#include <algorithm>

#include "trace/trace.h"

namespace xenkvm::vmm {

Timers::Timers(uint32_t vcpus, Clock now, Expire expire)
    : now_(std::move(now)),
      expire_(std::move(expire)),
      deadlines_(vcpus, 0),
      periods_(vcpus, 0),
      thread_([this] { Loop(); }) {}

Timers::~Timers() {
  {
    MutexLock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Timers::Set(uint32_t vcpu, uint64_t deadline_ns, uint64_t period_ns) {
  {
    MutexLock lock(mutex_);
    if (vcpu >= deadlines_.size()) return;
    deadlines_[vcpu] = deadline_ns;
    periods_[vcpu] = deadline_ns == 0 ? 0 : period_ns;
  }
  cv_.notify_all();
}

std::pair<uint64_t, uint64_t> Timers::Get(uint32_t vcpu) {
  MutexLock lock(mutex_);
  if (vcpu >= deadlines_.size()) return {0, 0};
  return {deadlines_[vcpu], periods_[vcpu]};
}

void Timers::Pause() {
  MutexLock lock(mutex_);
  paused_ = true;
  while (firing_) cv_.wait(lock.native());  // expiries already taken are delivered first
}

void Timers::Resume() {
  {
    MutexLock lock(mutex_);
    paused_ = false;
  }
  cv_.notify_all();
}

uint64_t Timers::Expiries() {
  MutexLock lock(mutex_);
  return expiries_;
}

void Timers::Loop() {
  if (trace::Recorder* t = trace::Active()) t->NameThread("timers");
  MutexLock lock(mutex_);
  std::vector<uint32_t> due;
  while (!stop_) {
    if (paused_) {
      cv_.wait(lock.native());
      continue;
    }
    const uint64_t now = now_();
    uint64_t earliest = UINT64_MAX;
    due.clear();
    for (uint32_t v = 0; v < deadlines_.size(); ++v) {
      if (deadlines_[v] == 0) continue;
      if (deadlines_[v] <= now) {
        due.push_back(v);
        // Saturate: now + a huge period would wrap into the past and fire continuously.
        const uint64_t period = periods_[v];
        deadlines_[v] = period == 0 ? 0 : (period > UINT64_MAX - now ? UINT64_MAX : now + period);
      }
      if (deadlines_[v] != 0) earliest = std::min(earliest, deadlines_[v]);
    }
    if (!due.empty()) {
      expiries_ += due.size();
      firing_ = true;
      lock.native().unlock();
      for (uint32_t v : due) {
        if (trace::Recorder* t = trace::Active()) [[unlikely]]
          t->Instant("timer expiry", {"vcpu", v});
        expire_(v);
      }
      lock.native().lock();
      firing_ = false;
      cv_.notify_all();
      continue;
    }
    if (earliest == UINT64_MAX) {
      cv_.wait(lock.native());
    } else {
      cv_.wait_for(lock.native(), WaitSlice(earliest - now));
    }
  }
}

}  // namespace xenkvm::vmm
