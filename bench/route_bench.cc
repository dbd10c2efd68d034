// Route delivery (EventfdRouter, the KVM_IRQ_ROUTING_XEN_EVTCHN analogue) against a direct
// Engine::RaisePort on the same port: RaiseRoute (route lookup + raise, the router thread's work
// per signal) for a port route and a PIRQ route, and the whole eventfd path (write, epoll
// wake-up, read, raise). Each BM_Raw_<Case>
// is the direct call, the baseline of the other entry with that case (bench/ratios.py).
#include <benchmark/benchmark.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "bench/engine_fixture.h"
#include "evtchn/engine.h"
#include "evtchn/eventfd_router.h"
#include "evtchn/pirq_table.h"

namespace xenkvm::evtchn {
namespace {

// The shared engine plus a router: route 1 -> the engine's port; route 2 -> PIRQ kPirq, which
// the guest bound to a second port (a device MSI with vector 0).
struct Setup : bench::EngineFixture {
  static constexpr uint32_t kPirq = 100;
  Setup() {
    pirqs = std::make_unique<PirqTable>(*engine, 1);
    router = std::make_unique<EventfdRouter>(*engine, pirqs.get());
    (void)router->SetRoute(1,
                           {.is_pirq = false, .pirq = 0, .port = port, .vcpu = 0, .priority = 7});
    evtchn_bind_pirq bind{.pirq = kPirq, .flags = 0, .port = 0};
    (void)pirqs->Bind(bind);
    pirq_port = bind.port;
    (void)router->SetRoute(2,
                           {.is_pirq = true, .pirq = kPirq, .port = 0, .vcpu = 0, .priority = 7});
  }
  ~Setup() { router.reset(); }  // before the engine goes
  std::unique_ptr<PirqTable> pirqs;
  std::unique_ptr<EventfdRouter> router;
  Port pirq_port = 0;
};

void DirectLoop(benchmark::State& state) {
  auto s = std::make_unique<Setup>();
  for (auto _ : state) {
    s->engine->RaisePort(s->port);
    s->Consume();
  }
  if (s->sink.injects.load() != uint64_t(state.iterations())) state.SkipWithError("lost events");
}
void BM_Raw_RaiseRoute(benchmark::State& state) { DirectLoop(state); }
void BM_Route_RaiseRoute(benchmark::State& state) {
  auto s = std::make_unique<Setup>();
  for (auto _ : state) {
    s->router->RaiseRoute(1);
    s->Consume();
  }
  if (s->sink.injects.load() != uint64_t(state.iterations())) state.SkipWithError("lost events");
}
// A PIRQ route: route lookup, the PIRQ table (an MSI PIRQ), the PIRQ's port.
void BM_Raw_RaisePirqRoute(benchmark::State& state) { DirectLoop(state); }
void BM_Route_RaisePirqRoute(benchmark::State& state) {
  auto s = std::make_unique<Setup>();
  for (auto _ : state) {
    s->router->RaiseRoute(2);
    s->Consume();
  }
  if (s->sink.injects.load() != uint64_t(state.iterations())) state.SkipWithError("lost events");
}
void BM_Raw_Eventfd(benchmark::State& state) { DirectLoop(state); }
// One event in flight: signal, wait until the router has raised it, consume.
void BM_Route_Eventfd(benchmark::State& state) {
  auto s = std::make_unique<Setup>();
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  (void)s->router->AddRouteBinding(fd, 1);
  uint64_t expected = 0;
  for (auto _ : state) {
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) != sizeof(one)) std::abort();
    ++expected;
    while (s->sink.injects.load(std::memory_order_acquire) < expected) std::this_thread::yield();
    s->Consume();
  }
  (void)s->router->Remove(fd);
  close(fd);
}

}  // namespace

BENCHMARK(BM_Raw_RaiseRoute);
BENCHMARK(BM_Route_RaiseRoute);
BENCHMARK(BM_Raw_RaisePirqRoute);
BENCHMARK(BM_Route_RaisePirqRoute);
BENCHMARK(BM_Raw_Eventfd)->UseRealTime();
BENCHMARK(BM_Route_Eventfd)->UseRealTime();

}  // namespace xenkvm::evtchn

BENCHMARK_MAIN();
