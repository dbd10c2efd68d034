// Echo backend; see echo_backend.h.
#include "vmm/echo_backend.h"

#include "trace/trace.h"

namespace xenkvm::vmm {

EchoBackend::EchoBackend(evtchn::Engine& engine, size_t max_queued)
    : engine_(engine), max_queued_(std::max<size_t>(max_queued, 1)), thread_([this] { Loop(); }) {}

EchoBackend::~EchoBackend() {
  {
    MutexLock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EchoBackend::OnGuestSend(evtchn::Port guest_port) {
  {
    MutexLock lock(mutex_);
    // Already queued: its answer is one pending bit either way.
    if (std::find(queue_.begin(), queue_.end(), guest_port) != queue_.end()) return;
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      return;
    }
    queue_.push_back(guest_port);
  }
  cv_.notify_one();
}

uint64_t EchoBackend::dropped() {
  MutexLock lock(mutex_);
  return dropped_;
}

void EchoBackend::Loop() {
  if (trace::Recorder* t = trace::Active()) t->NameThread("echo backend");
  MutexLock lock(mutex_);
  while (!stop_) {
    if (queue_.empty()) {
      cv_.wait(lock.native());
      continue;
    }
    evtchn::Port port = queue_.front();
    queue_.pop_front();
    lock.native().unlock();
    engine_.RaisePort(port);
    lock.native().lock();
  }
}

}  // namespace xenkvm::vmm
