// EventfdRouter: epoll loop turning eventfd signals into port/PIRQ events (see header).
#include "evtchn/eventfd_router.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace xenkvm::evtchn {

EventfdRouter::EventfdRouter(Engine& engine, PirqTable* pirqs) : engine_(engine), pirqs_(pirqs) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // Out of file descriptors at start-up is a host failure, not a guest's doing.
  if (epoll_fd_ < 0 || stop_fd_ < 0) std::abort();
  epoll_event ev{.events = EPOLLIN, .data = {.fd = stop_fd_}};
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd_, &ev);
  thread_ = std::thread([this] { Loop(); });
}

EventfdRouter::~EventfdRouter() {
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(stop_fd_);
  close(epoll_fd_);
}

Result<> EventfdRouter::AddPortRoute(int eventfd, Port port) {
  return Add(eventfd, Route{Kind::kPort, port});
}

Result<> EventfdRouter::AddPirqRoute(int eventfd, uint32_t pirq) {
  return Add(eventfd, Route{Kind::kPirq, pirq});
}

Result<> EventfdRouter::AddRouteBinding(int eventfd, uint32_t route_id) {
  return Add(eventfd, Route{Kind::kRoute, route_id});
}

Result<> EventfdRouter::SetRoute(uint32_t route_id, RouteTarget target) {
  if (route_id >= kMaxRoutes) return Fail(XEN_EINVAL, "route id out of range");
  if (target.vcpu >= kMaxRouteVcpus) return Fail(XEN_EINVAL, "route vcpu out of range");
  if (target.priority > EVTCHN_FIFO_PRIORITY_MIN) return Fail(XEN_EINVAL, "route priority");
  if (target.is_pirq && target.pirq >= uint32_t(PirqTable::kNrPirqs))
    return Fail(XEN_EINVAL, "route pirq");
  MutexLock lock(routes_mutex_);
  targets_[route_id] = target;
  fast_[route_id].store(
      kRouteValid | (target.is_pirq ? kRoutePirq | target.pirq : uint64_t(target.port)),
      std::memory_order_release);
  return {};
}

Result<> EventfdRouter::RemoveRoute(uint32_t route_id) {
  MutexLock lock(routes_mutex_);
  if (!targets_.erase(route_id)) return Fail(XEN_ENOENT, "no such route");
  fast_[route_id].store(0, std::memory_order_release);
  return {};
}

Result<EventfdRouter::RouteTarget> EventfdRouter::GetRoute(uint32_t route_id) const {
  MutexLock lock(routes_mutex_);
  auto it = targets_.find(route_id);
  if (it == targets_.end()) return Fail(XEN_ENOENT, "no such route");
  return it->second;
}

Result<> EventfdRouter::Add(int fd, Route route) {
  MutexLock lock(routes_mutex_);
  if (routes_.count(fd)) return Fail(XEN_EEXIST, "eventfd already routed");
  epoll_event ev{.events = EPOLLIN, .data = {.fd = fd}};
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return Fail(XEN_EINVAL, "not pollable");
  routes_[fd] = route;
  return {};
}

Result<> EventfdRouter::Remove(int fd) {
  MutexLock lock(routes_mutex_);
  if (!routes_.erase(fd)) return Fail(XEN_ENOENT, "eventfd not routed");
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  return {};
}

bool EventfdRouter::RaiseRoute(uint32_t route_id) {
  if (route_id >= kMaxRoutes) return false;
  // One atomic load: a route changed concurrently is delivered either as it was or as it is.
  const uint64_t word = fast_[route_id].load(std::memory_order_acquire);
  if (!(word & kRouteValid)) return false;
  Raise(Route{word & kRoutePirq ? Kind::kPirq : Kind::kPort, uint32_t(word)});
  return true;
}

// Outside routes_mutex_: the engine's raise never blocks (it defers to its worker while guest
// memory is being remapped).
void EventfdRouter::Raise(const Route& route) {
  if (route.kind == Kind::kPirq && pirqs_ != nullptr)
    pirqs_->RaiseMsi(route.target);
  else if (route.kind == Kind::kPirq)
    engine_.RaisePirq(route.target);
  else
    engine_.RaisePort(route.target);
}

void EventfdRouter::Loop() {
  epoll_event events[16];
  for (;;) {
    int n = epoll_wait(epoll_fd_, events, 16, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == stop_fd_) return;
      reads_started_.fetch_add(1, std::memory_order_seq_cst);
      struct Done {  // however this signal ends: raised, dropped, or nothing read
        std::atomic<uint64_t>& done;
        ~Done() { done.fetch_add(1, std::memory_order_seq_cst); }
      } done{reads_done_};
      uint64_t count;
      if (read(fd, &count, sizeof(count)) != sizeof(count)) continue;  // raced with another read
      Route route;
      {
        MutexLock lock(routes_mutex_);
        auto it = routes_.find(fd);
        if (it == routes_.end()) continue;  // removed meanwhile
        route = it->second;
      }
      if (route.kind == Kind::kRoute) {
        if (!RaiseRoute(route.target)) {  // route removed: dropped, as KVM does
          signals_dropped_.fetch_add(1, std::memory_order_release);
          continue;
        }
      } else {
        Raise(route);
      }
      signals_handled_.fetch_add(1, std::memory_order_release);
    }
  }
}

}  // namespace xenkvm::evtchn
