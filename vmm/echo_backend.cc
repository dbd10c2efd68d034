// Echo backend; see echo_backend.h.
#include "vmm/echo_backend.h"

namespace xenkvm::vmm {

EchoBackend::EchoBackend(evtchn::Engine& engine) : engine_(engine), thread_([this] { Loop(); }) {}

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
    queue_.push_back(guest_port);
  }
  cv_.notify_one();
}

void EchoBackend::Loop() {
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
