// The engine the benchmarks share: one 64 KiB guest page range, shared_info at 0x1000 with
// vCPU 0's vcpu_info in its default slot, one IPI port bound on vCPU 0, and a sink that counts
// injections. Heap-allocated by each benchmark, as a VMM's engine is: stack placement would
// make every run's timing depend on where ASLR put the stack.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "evtchn/engine.h"

namespace xenkvm::evtchn::bench {

using L = abi::Layout64;
using Word = L::Word;
inline constexpr uint64_t kSharedInfoGpa = 0x1000;

// Counts injections. One injecting thread at a time, read from any: a plain load and store
// (no read-modify-write, so the count costs what a plain increment does).
struct NullSink : VcpuSink {
  std::atomic<uint64_t> injects{0};
  void InjectUpcall() override {
    injects.store(injects.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  void RequestSync() override {}
  void WakePoller() override {}
};

struct EngineFixture {
  EngineFixture() : page(static_cast<uint8_t*>(std::aligned_alloc(4096, 0x10000))) {
    std::fill(page, page + 0x10000, uint8_t{0});
    (void)memory.AddSlot(0, 0, 0x10000, page);
    engine = std::make_unique<Engine>(memory, Engine::Options{.domid = 1, .start_worker = true});
    (void)engine->AddVcpu(0, &sink);
    (void)engine->SetSharedInfoGpa(kSharedInfoGpa);
    (void)engine->SetVcpuInfoGpa(0, kSharedInfoGpa);
    evtchn_bind_ipi op{.vcpu = 0, .port = 0};
    (void)engine->BindIpi(op);
    port = op.port;
  }
  ~EngineFixture() {
    engine.reset();
    std::free(page);
  }
  EngineFixture(const EngineFixture&) = delete;
  EngineFixture& operator=(const EngineFixture&) = delete;

  uint8_t* shinfo() { return page + kSharedInfoGpa; }
  std::atomic_ref<Word> Pending() {
    return std::atomic_ref<Word>(*reinterpret_cast<Word*>(shinfo() + L::kEvtchnPending));
  }
  std::atomic_ref<Word> Mask() {
    return std::atomic_ref<Word>(*reinterpret_cast<Word*>(shinfo() + L::kEvtchnMask));
  }
  std::atomic_ref<Word> Sel() {
    return std::atomic_ref<Word>(*reinterpret_cast<Word*>(shinfo() + L::kPendingSel));
  }
  std::atomic_ref<uint8_t> Upcall() {
    return std::atomic_ref<uint8_t>(shinfo()[L::kUpcallPending]);
  }
  // What the guest does between two new events: acknowledge and consume.
  void Consume() {
    Upcall().store(0, std::memory_order_relaxed);
    Sel().store(0, std::memory_order_relaxed);
    Pending().store(0, std::memory_order_relaxed);
  }

  uint8_t* page;
  mem::GuestMemory memory;
  NullSink sink;
  std::unique_ptr<Engine> engine;
  Port port = 0;
};

}  // namespace xenkvm::evtchn::bench
