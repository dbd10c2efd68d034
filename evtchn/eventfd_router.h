// Eventfd routes: an eventfd signalled by a device model, vfio or another thread becomes an
// event on a guest port or PIRQ (the user-space analogue of KVM's irqfd with
// KVM_IRQ_ROUTING_XEN_EVTCHN). One epoll thread per router reads the eventfds and raises
// through the engine's non-blocking path, which defers to the engine's worker when a guest
// page is unmapped.
//
// Threads: Add*/Remove from any thread (routes_mutex_); the router thread owns the epoll loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>

#include "abi/result.h"
#include "abi/sync.h"
#include "evtchn/engine.h"

namespace xenkvm::evtchn {

class EventfdRouter {
 public:
  explicit EventfdRouter(Engine& engine);
  ~EventfdRouter();
  EventfdRouter(const EventfdRouter&) = delete;
  EventfdRouter& operator=(const EventfdRouter&) = delete;

  // The caller keeps ownership of `eventfd` and must Remove it before closing it.
  Result<> AddPortRoute(int eventfd, Port port);
  Result<> AddPirqRoute(int eventfd, uint32_t pirq);
  Result<> Remove(int eventfd);

  // Signals handled so far (each read of an eventfd counts once, however many writes it held).
  uint64_t signals_handled() const { return signals_handled_.load(std::memory_order_acquire); }

 private:
  struct Route {
    bool is_pirq;
    uint32_t target;  // port or PIRQ
  };
  Result<> Add(int eventfd, Route route);
  void Loop();

  Engine& engine_;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd of our own that ends the loop
  Mutex routes_mutex_;
  std::map<int, Route> routes_ XENKVM_GUARDED_BY(routes_mutex_);
  std::atomic<uint64_t> signals_handled_{0};
  std::thread thread_;
};

}  // namespace xenkvm::evtchn
