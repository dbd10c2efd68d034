// Engine delivery vs the bare 2-level fetch_or chain on the same memory with no engine: new
// (unmasked) events, coalesced events and masked events. Each "Raw" case is the baseline of
// the "Engine" case with the same suffix; bench/ratios.py prints raw_time / engine_time.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>

#include "bench/engine_fixture.h"
#include "evtchn/engine.h"

namespace xenkvm::evtchn {
namespace {

using bench::kSharedInfoGpa;
using bench::L;
using bench::NullSink;
using bench::Word;
using Setup = bench::EngineFixture;

// The raw chain: pending -> mask -> selector -> upcall_pending -> "inject".
inline void RawDeliver(Setup& s) {
  const Word bit = Word(1) << s.port;
  if (s.Pending().fetch_or(bit, std::memory_order_acq_rel) & bit) return;
  if (s.Mask().load(std::memory_order_acquire) & bit) return;
  if (s.Sel().fetch_or(1, std::memory_order_acq_rel) & 1) return;
  if (s.Upcall().exchange(1, std::memory_order_acq_rel) == 0) s.sink.InjectUpcall();
}

// Setup lives on the heap (bench/engine_fixture.h says why).
void BM_Raw_New(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  for (auto _ : state) {
    RawDeliver(s);
    s.Consume();
  }
  benchmark::DoNotOptimize(s.sink.injects);
}
void BM_Engine_New(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  for (auto _ : state) {
    s.engine->RaisePort(s.port);
    s.Consume();
  }
  if (s.sink.injects != uint64_t(state.iterations()))
    state.SkipWithError("engine missed injections");
}
void BM_Raw_Coalesced(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  RawDeliver(s);
  for (auto _ : state) RawDeliver(s);
  benchmark::DoNotOptimize(s.sink.injects);
}
void BM_Engine_Coalesced(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  s.engine->RaisePort(s.port);
  for (auto _ : state) s.engine->RaisePort(s.port);
  if (s.sink.injects != 1) state.SkipWithError("engine injected a coalesced event");
}
void BM_Raw_Masked(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  s.Mask().store(~Word(0));
  for (auto _ : state) {
    RawDeliver(s);
    s.Pending().store(0, std::memory_order_relaxed);
  }
  benchmark::DoNotOptimize(s.sink.injects);
}
void BM_Engine_Masked(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  s.Mask().store(~Word(0));
  for (auto _ : state) {
    s.engine->RaisePort(s.port);
    s.Pending().store(0, std::memory_order_relaxed);
  }
  if (s.sink.injects != 0) state.SkipWithError("engine injected a masked event");
}

// Two threads, each raising its own port (in its own pending word) on its own vCPU, as two
// device threads would: the engine adds no shared cache line between them (the layout guard
// is a per-thread record), so it should keep about the same ratio to the raw chain as one
// thread does.
struct TwoSenders {
  static TwoSenders& Get() {
    static TwoSenders shared;
    return shared;
  }
  TwoSenders() : page(static_cast<uint8_t*>(std::aligned_alloc(4096, 0x10000))) {
    std::fill(page, page + 0x10000, uint8_t{0});
    (void)memory.AddSlot(0, 0, 0x10000, page);
    engine = std::make_unique<Engine>(memory, Engine::Options{.domid = 1, .start_worker = true});
    for (uint32_t v = 0; v < 2; ++v) {
      (void)engine->AddVcpu(v, &sinks[v]);
      (void)engine->SetVcpuInfoGpa(v, kSharedInfoGpa + v * L::kVcpuInfoSize);
    }
    (void)engine->SetSharedInfoGpa(kSharedInfoGpa);
    for (Port p = 1; p <= 64; ++p) {  // port 64 is the first of pending word 1
      evtchn_bind_ipi op{.vcpu = p < 64 ? 0u : 1u, .port = 0};
      (void)engine->BindIpi(op);
    }
  }
  std::atomic_ref<Word> WordAt(size_t offset) {
    return std::atomic_ref<Word>(*reinterpret_cast<Word*>(page + kSharedInfoGpa + offset));
  }
  // Sender t uses port 1 (vCPU 0, word 0) or port 64 (vCPU 1, word 1).
  static Port PortOf(int t) { return t == 0 ? 1 : 64; }
  void RawDeliver(int t) {
    const Word bit = Word(1) << (PortOf(t) % 64);
    if (WordAt(L::kEvtchnPending + t * 8).fetch_or(bit, std::memory_order_acq_rel) & bit) return;
    if (WordAt(L::kEvtchnMask + t * 8).load(std::memory_order_acquire) & bit) return;
    const size_t vcpu_info = t * L::kVcpuInfoSize;
    if (WordAt(vcpu_info + L::kPendingSel).fetch_or(Word(1) << t, std::memory_order_acq_rel))
      return;
    auto upcall = std::atomic_ref<uint8_t>(page[kSharedInfoGpa + vcpu_info + L::kUpcallPending]);
    if (upcall.exchange(1, std::memory_order_acq_rel) == 0) sinks[t].InjectUpcall();
  }
  void Consume(int t) {
    const size_t vcpu_info = t * L::kVcpuInfoSize;
    std::atomic_ref<uint8_t>(page[kSharedInfoGpa + vcpu_info + L::kUpcallPending]).store(0);
    WordAt(vcpu_info + L::kPendingSel).store(0, std::memory_order_relaxed);
    WordAt(L::kEvtchnPending + t * 8).store(0, std::memory_order_relaxed);
  }

  uint8_t* page;
  mem::GuestMemory memory;
  NullSink sinks[2];
  std::unique_ptr<Engine> engine;
};

void BM_Raw_TwoSenders(benchmark::State& state) {
  TwoSenders& s = TwoSenders::Get();
  const int t = state.thread_index();
  for (auto _ : state) {
    s.RawDeliver(t);
    s.Consume(t);
  }
}
void BM_Engine_TwoSenders(benchmark::State& state) {
  TwoSenders& s = TwoSenders::Get();
  const int t = state.thread_index();
  for (auto _ : state) {
    s.engine->RaisePort(TwoSenders::PortOf(t));
    s.Consume(t);
  }
}

// ---- FIFO ----
// A FIFO guest: control block at 0x2000, event array pages from 0x10000 (128 pages cover
// 2^17 ports). `bound` IPI ports are bound on vCPU 0; the one raised is the last.
struct FifoSetup {
  static constexpr uint64_t kControl = 0x2000, kArray = 0x10000, kSize = kArray + 128 * 4096;
  explicit FifoSetup(uint32_t bound)
      : page(static_cast<uint8_t*>(std::aligned_alloc(4096, kSize))) {
    std::fill(page, page + kSize, uint8_t{0});
    (void)memory.AddSlot(0, 0, kSize, page);
    engine = std::make_unique<Engine>(memory, Engine::Options{.domid = 1, .start_worker = true});
    (void)engine->AddVcpu(0, &sink);
    (void)engine->SetSharedInfoGpa(kSharedInfoGpa);
    (void)engine->SetVcpuInfoGpa(0, kSharedInfoGpa);
    evtchn_init_control init{};
    init.control_gfn = kControl >> 12;
    (void)engine->InitControl(init);
    for (uint32_t i = 0; i < (bound + 1023) / 1024; ++i)
      (void)engine->ExpandArray({.array_gfn = (kArray >> 12) + i});
    for (uint32_t i = 1; i < bound; ++i) {
      evtchn_bind_ipi op{.vcpu = 0, .port = 0};
      (void)engine->BindIpi(op);
      port = op.port;
    }
  }
  ~FifoSetup() {
    engine.reset();
    std::free(page);
  }
  std::atomic_ref<uint32_t> At(uint64_t gpa) {
    return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(page + gpa));
  }
  std::atomic_ref<uint32_t> EventWord(Port p) { return At(kArray + uint64_t(p) * 4); }
  // The guest consumes the one event: unlink, clear READY, head, upcall_pending.
  void Consume(uint32_t priority = EVTCHN_FIFO_PRIORITY_DEFAULT) {
    EventWord(port).store(0, std::memory_order_relaxed);
    At(kControl).store(0, std::memory_order_relaxed);
    At(kControl + 8 + 4 * priority).store(0, std::memory_order_relaxed);
    std::atomic_ref<uint8_t>(page[kSharedInfoGpa + L::kUpcallPending]).store(0);
  }
  uint8_t* page;
  mem::GuestMemory memory;
  NullSink sink;
  std::unique_ptr<Engine> engine;
  Port port = 0;
};

void FifoDeliverLoop(benchmark::State& state, uint32_t bound) {
  auto holder = std::make_unique<FifoSetup>(bound);
  FifoSetup& s = *holder;
  for (auto _ : state) {
    s.engine->RaisePort(s.port);
    s.Consume();
  }
  if (s.sink.injects != uint64_t(state.iterations())) state.SkipWithError("FIFO missed upcalls");
}
// FIFO vs 2-level, both through the engine, new events on a port near 4096. ("Raw" is the
// baseline slot ratios.py divides by: here it is the 2-level engine.)
void BM_Raw_FifoVsTwoLevel(benchmark::State& state) {
  auto holder = std::make_unique<Setup>();
  Setup& s = *holder;
  for (Port p = s.port + 1; p < 4000; ++p) {
    evtchn_bind_ipi op{.vcpu = 0, .port = 0};
    (void)s.engine->BindIpi(op);
    s.port = op.port;
  }
  const uint64_t offset = s.port / 64 * 8;
  auto pending =
      std::atomic_ref<Word>(*reinterpret_cast<Word*>(s.shinfo() + L::kEvtchnPending + offset));
  for (auto _ : state) {
    s.engine->RaisePort(s.port);
    s.Upcall().store(0, std::memory_order_relaxed);
    s.Sel().store(0, std::memory_order_relaxed);
    pending.store(0, std::memory_order_relaxed);
  }
  if (s.sink.injects != uint64_t(state.iterations())) state.SkipWithError("missed upcalls");
}
void BM_Fifo_FifoVsTwoLevel(benchmark::State& state) { FifoDeliverLoop(state, 4000); }
// FIFO with 2^17 bound ports vs 4096 ("Raw" slot: 4096).
void BM_Raw_FifoPorts(benchmark::State& state) { FifoDeliverLoop(state, 4096); }
void BM_Fifo_FifoPorts(benchmark::State& state) { FifoDeliverLoop(state, EVTCHN_FIFO_NR_CHANNELS); }

// Two FIFO senders on different priorities (their own queues) of one vCPU, against the raw
// 2-level chain of BM_Raw_TwoSenders.
struct FifoTwo {
  static FifoTwo& Get() {
    static FifoTwo shared;
    return shared;
  }
  FifoTwo() : s(4096) {
    ports[0] = s.port;
    ports[1] = s.port - 1;
    (void)s.engine->SetPriority({ports[0], 2});
    (void)s.engine->SetPriority({ports[1], 9});
  }
  void Consume(int t) {
    s.EventWord(ports[t]).store(0, std::memory_order_relaxed);
    s.At(FifoSetup::kControl).fetch_and(~(1u << (t ? 9 : 2)), std::memory_order_relaxed);
    s.At(FifoSetup::kControl + 8 + 4 * (t ? 9 : 2)).store(0, std::memory_order_relaxed);
  }
  FifoSetup s;
  Port ports[2];
};
void BM_Fifo_TwoSenders(benchmark::State& state) {
  FifoTwo& f = FifoTwo::Get();
  const int t = state.thread_index();
  for (auto _ : state) {
    f.s.engine->RaisePort(f.ports[t]);
    f.Consume(t);
  }
}

BENCHMARK(BM_Raw_TwoSenders)->Threads(2)->UseRealTime();
BENCHMARK(BM_Engine_TwoSenders)->Threads(2)->UseRealTime();
BENCHMARK(BM_Fifo_TwoSenders)->Threads(2)->UseRealTime();
BENCHMARK(BM_Raw_FifoVsTwoLevel);
BENCHMARK(BM_Fifo_FifoVsTwoLevel);
BENCHMARK(BM_Raw_FifoPorts);
BENCHMARK(BM_Fifo_FifoPorts);
BENCHMARK(BM_Raw_New);
BENCHMARK(BM_Engine_New);
BENCHMARK(BM_Raw_Coalesced);
BENCHMARK(BM_Engine_Coalesced);
BENCHMARK(BM_Raw_Masked);
BENCHMARK(BM_Engine_Masked);

}  // namespace
}  // namespace xenkvm::evtchn

BENCHMARK_MAIN();
