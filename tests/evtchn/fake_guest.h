// Plain in-process guest memory and recording vCPU sinks for engine tests: no KVM needed.
#pragma once

#include <atomic>
#include <cstdlib>
#include <memory>
#include <vector>

#include "abi/xen.h"
#include "evtchn/engine.h"
#include "mem/guest_memory.h"

namespace xenkvm::evtchn::testing {

// Guest RAM is two slots: slot 0 = [0, 1 MiB) ordinary RAM, slot 1 = one page at
// kSharedInfoGpa holding shared_info (and the default vcpu_info slots inside it), so tests can
// move or remove that page on its own.
inline constexpr uint64_t kRamSize = 1 << 20;
inline constexpr uint64_t kSharedInfoGpa = 0x100000;
inline constexpr uint64_t kMovedGpa = 0x200000;
inline constexpr uint32_t kSharedInfoSlot = 1;

struct RecordingSink : VcpuSink {
  std::atomic<int> injects{0}, sync_requests{0}, poll_wakes{0};
  void InjectUpcall() override { injects.fetch_add(1); }
  void RequestSync() override { sync_requests.fetch_add(1); }
  void WakePoller() override { poll_wakes.fetch_add(1); }
};

struct PageDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Pages = std::unique_ptr<uint8_t, PageDeleter>;
inline Pages AllocPages(uint64_t size) {
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(abi::kPageSize, size));
  std::fill(p, p + size, uint8_t{0});
  return Pages(p);
}

template <class Layout>
struct FakeGuest {
  explicit FakeGuest(uint32_t vcpus, bool start_worker = false)
      : ram(AllocPages(kRamSize)), shared_page(AllocPages(abi::kPageSize)), sinks(vcpus) {
    EXPECT_TRUE(memory.AddSlot(0, 0, kRamSize, ram.get()));
    EXPECT_TRUE(memory.AddSlot(kSharedInfoSlot, kSharedInfoGpa, abi::kPageSize, shared_page.get()));
    engine =
        std::make_unique<Engine>(memory, Engine::Options{.domid = 1, .start_worker = start_worker});
    engine->SetAbi(std::is_same_v<Layout, abi::Layout64> ? Abi::k64 : Abi::kCompat);
    EXPECT_TRUE(engine->SetSharedInfoGpa(kSharedInfoGpa));
    for (uint32_t i = 0; i < vcpus; ++i) {
      EXPECT_TRUE(engine->AddVcpu(i, &sinks[i]));
      EXPECT_TRUE(engine->SetVcpuInfoGpa(i, kSharedInfoGpa + i * Layout::kVcpuInfoSize));
    }
  }

  using Word = typename Layout::Word;
  static constexpr uint32_t kBits = Layout::kBitsPerWord;

  std::atomic_ref<Word> WordAt(uint64_t offset) {
    return std::atomic_ref<Word>(*reinterpret_cast<Word*>(shared_page.get() + offset));
  }
  bool Pending(Port p) {
    return WordAt(Layout::kEvtchnPending + p / kBits * sizeof(Word)).load() >> (p % kBits) & 1;
  }
  bool Masked(Port p) {
    return WordAt(Layout::kEvtchnMask + p / kBits * sizeof(Word)).load() >> (p % kBits) & 1;
  }
  void SetMask(Port p, bool on) {
    auto w = WordAt(Layout::kEvtchnMask + p / kBits * sizeof(Word));
    if (on)
      w.fetch_or(Word(1) << (p % kBits));
    else
      w.fetch_and(Word(~(Word(1) << (p % kBits))));
  }
  void ClearPending(Port p) {
    WordAt(Layout::kEvtchnPending + p / kBits * sizeof(Word))
        .fetch_and(Word(~(Word(1) << (p % kBits))));
  }
  // vcpu_info fields at the default slot of vCPU i.
  Word Selector(uint32_t i) {
    return WordAt(i * Layout::kVcpuInfoSize + Layout::kPendingSel).load();
  }
  uint8_t& UpcallPending(uint32_t i) {
    return shared_page.get()[i * Layout::kVcpuInfoSize + Layout::kUpcallPending];
  }
  // What a guest's upcall handler does first: clear upcall_pending, take the selector.
  Word Acknowledge(uint32_t i) {
    std::atomic_ref<uint8_t>(UpcallPending(i)).store(0);
    return WordAt(i * Layout::kVcpuInfoSize + Layout::kPendingSel).exchange(0);
  }
  bool SelectorBit(uint32_t i, Port p) { return Selector(i) >> (p / kBits) & 1; }

  Pages ram, shared_page;
  mem::GuestMemory memory;
  std::vector<RecordingSink> sinks;
  std::unique_ptr<Engine> engine;
};

}  // namespace xenkvm::evtchn::testing
