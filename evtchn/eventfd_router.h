// Eventfd routes: an eventfd signalled by a device model, vfio or another thread becomes an
// event on a guest port or PIRQ (the user-space analogue of KVM's irqfd with
// KVM_IRQ_ROUTING_XEN_EVTCHN). One epoll thread per router reads the eventfds and raises
// through the engine's non-blocking path, which defers to the engine's worker when a guest
// page is unmapped.
//
// Routes (KVM_IRQ_ROUTING_XEN_EVTCHN's analogue): a route id names {port, Xen vCPU, priority};
// an eventfd bound to a route delivers to whatever the route says at the time of the signal, so
// routes can be changed or removed while their eventfds fire (a signal on a removed route is
// dropped, as KVM drops an irqfd whose routing entry is gone).
//
// Threads: Add*/Set*/Remove*/Bind from any thread; the router thread owns the epoll loop.
// Locks: routes_mutex_ (a leaf below the engine's delivery path) guards the fd and route maps.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "abi/result.h"
#include "abi/sync.h"
#include "evtchn/engine.h"
#include "evtchn/pirq_table.h"

namespace xenkvm::evtchn {

class EventfdRouter {
 public:
  // With `pirqs`, PIRQ routes raise through it (a PIRQ raised before its port is bound is kept).
  explicit EventfdRouter(Engine& engine, PirqTable* pirqs = nullptr);
  ~EventfdRouter();
  EventfdRouter(const EventfdRouter&) = delete;
  EventfdRouter& operator=(const EventfdRouter&) = delete;

  // The caller keeps ownership of `eventfd` and must Remove it before closing it.
  Result<> AddPortRoute(int eventfd, Port port);
  Result<> AddPirqRoute(int eventfd, uint32_t pirq);
  Result<> Remove(int eventfd);

  // A route's target. The event goes to `port` as the guest bound it (Xen semantics: the guest's
  // EVTCHNOP_bind_vcpu decides the vCPU); `vcpu` and `priority` are what the host expects and
  // are checked when the route is set: vcpu a Xen vCPU id below kMaxRouteVcpus, priority a FIFO
  // priority (0 highest .. 15 lowest).
  struct RouteTarget {
    bool is_pirq = false;  // true: raise `pirq` (an MSI with vector 0), not `port`
    uint32_t pirq = 0;
    Port port = 0;
    uint32_t vcpu = 0;
    uint32_t priority = 7;  // EVTCHN_FIFO_PRIORITY_DEFAULT
  };
  static constexpr uint32_t kMaxRouteVcpus = 4096;
  static constexpr uint32_t kMaxRoutes = 4096;  // route ids 0..4095 (KVM_MAX_IRQ_ROUTES)
  // Add or change a route; -EINVAL for a bad id, vcpu or priority.
  Result<> SetRoute(uint32_t route_id, RouteTarget target);
  // -ENOENT if there is no such route. Eventfds bound to it stay bound; their signals are
  // dropped until the route is set again.
  Result<> RemoveRoute(uint32_t route_id);
  Result<RouteTarget> GetRoute(uint32_t route_id) const;
  // Deliver through a route now, as a signal on its eventfd would (any thread, never blocks):
  // false if there is no such route.
  bool RaiseRoute(uint32_t route_id);
  // Bind an eventfd to a route id (the route may be set later). Unbind with Remove(eventfd).
  Result<> AddRouteBinding(int eventfd, uint32_t route_id);

  // Signals handled so far (each read of an eventfd counts once, however many writes it held).
  uint64_t signals_handled() const { return signals_handled_.load(std::memory_order_acquire); }
  // Signals on an eventfd whose route id had no route at the time.
  uint64_t signals_dropped() const { return signals_dropped_.load(std::memory_order_acquire); }
  // No signal read from an eventfd and not yet raised. With the eventfd found empty, what was
  // written to it before has been raised (a device that reports "all delivered" waits for it).
  bool Settled() const {
    return reads_done_.load(std::memory_order_seq_cst) ==
           reads_started_.load(std::memory_order_seq_cst);
  }

 private:
  enum class Kind : uint8_t { kPort, kPirq, kRoute };
  struct Route {
    Kind kind;
    uint32_t target;  // port, PIRQ or route id
  };
  Result<> Add(int eventfd, Route route);
  void Raise(const Route& route);
  void Loop();

  Engine& engine_;
  PirqTable* pirqs_;
  int epoll_fd_ = -1;
  int stop_fd_ = -1;  // an eventfd of our own that ends the loop
  mutable Mutex routes_mutex_;
  std::map<int, Route> routes_ XENKVM_GUARDED_BY(routes_mutex_);              // by eventfd
  std::map<uint32_t, RouteTarget> targets_ XENKVM_GUARDED_BY(routes_mutex_);  // by route id
  // What RaiseRoute reads without the lock: per route id, kRouteValid | kRoutePirq? | target.
  // Written under routes_mutex_ together with targets_.
  static constexpr uint64_t kRouteValid = uint64_t(1) << 63;
  static constexpr uint64_t kRoutePirq = uint64_t(1) << 62;
  std::unique_ptr<std::atomic<uint64_t>[]> fast_ =
      std::make_unique<std::atomic<uint64_t>[]>(kMaxRoutes);
  std::atomic<uint64_t> signals_handled_{0};
  std::atomic<uint64_t> signals_dropped_{0};
  std::atomic<uint64_t> reads_started_{0};  // Settled(): bumped before a read, done after its raise
  std::atomic<uint64_t> reads_done_{0};
  std::thread thread_;
};

}  // namespace xenkvm::evtchn
