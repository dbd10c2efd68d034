// Route delivery (EventfdRouter, the KVM_IRQ_ROUTING_XEN_EVTCHN analogue) against a direct
// Engine::RaisePort on the same port: RaiseRoute (route lookup + raise, the router thread's work
// per signal) and the whole eventfd path (write, epoll wake-up, read, raise). Each BM_Raw_<Case>
// is the direct call, the baseline of the other entry with that case (bench/ratios.py).
#include <benchmark/benchmark.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "evtchn/engine.h"
#include "evtchn/eventfd_router.h"

namespace xenkvm::evtchn {
namespace {

using L = abi::Layout64;
constexpr uint64_t kSharedInfoGpa = 0x1000;

struct NullSink : VcpuSink {
  std::atomic<uint64_t> injects{0};
  void InjectUpcall() override { injects.fetch_add(1, std::memory_order_relaxed); }
  void RequestSync() override {}
  void WakePoller() override {}
};

// Heap-allocated, as a VMM's engine is (see evtchn_bench.cc).
struct Setup {
  Setup() : page(static_cast<uint8_t*>(std::aligned_alloc(4096, 0x10000))) {
    std::fill(page, page + 0x10000, uint8_t{0});
    (void)memory.AddSlot(0, 0, 0x10000, page);
    engine = std::make_unique<Engine>(memory, Engine::Options{.domid = 1, .start_worker = true});
    (void)engine->AddVcpu(0, &sink);
    (void)engine->SetSharedInfoGpa(kSharedInfoGpa);
    (void)engine->SetVcpuInfoGpa(0, kSharedInfoGpa);
    evtchn_bind_ipi op{.vcpu = 0, .port = 0};
    (void)engine->BindIpi(op);
    port = op.port;
    router = std::make_unique<EventfdRouter>(*engine);
    (void)router->SetRoute(1,
                           {.is_pirq = false, .pirq = 0, .port = port, .vcpu = 0, .priority = 7});
  }
  ~Setup() {
    router.reset();
    engine.reset();
    std::free(page);
  }
  // What the guest does between two events: acknowledge and consume.
  void Consume() {
    uint8_t* s = page + kSharedInfoGpa;
    std::atomic_ref<uint8_t>(s[L::kUpcallPending]).store(0, std::memory_order_relaxed);
    std::atomic_ref<L::Word>(*reinterpret_cast<L::Word*>(s + L::kPendingSel)).store(0);
    std::atomic_ref<L::Word>(*reinterpret_cast<L::Word*>(s + L::kEvtchnPending)).store(0);
  }
  uint8_t* page;
  mem::GuestMemory memory;
  NullSink sink;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<EventfdRouter> router;
  Port port = 0;
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
BENCHMARK(BM_Raw_Eventfd)->UseRealTime();
BENCHMARK(BM_Route_Eventfd)->UseRealTime();

}  // namespace xenkvm::evtchn

BENCHMARK_MAIN();
