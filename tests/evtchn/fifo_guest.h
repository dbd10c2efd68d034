// A FIFO guest for engine tests: control blocks and event array pages in plain RAM, and a
// consumer that drains queues the way Linux's events_fifo.c does (highest priority first,
// unlinking each word with compare-and-exchange). Every walk is bounded, so a test that
// corrupts words cannot hang here either.
#pragma once

#include <atomic>
#include <vector>

#include "evtchn/fifo.h"
#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn::testing {

inline constexpr uint64_t kControlGpa = 0x10000;  // vCPU i's control block at + i * 0x1000
inline constexpr uint64_t kArrayGpa = 0x40000;    // event array page n at + n * 0x1000

struct FifoGuest : FakeGuest<abi::Layout64> {
  explicit FifoGuest(uint32_t vcpus, bool start_worker = false)
      : FakeGuest(vcpus, start_worker), local_head(vcpus) {}

  Result<> Init(uint32_t vcpu) {
    evtchn_init_control op{};
    op.control_gfn = (kControlGpa >> 12) + vcpu;
    op.vcpu = vcpu;
    return engine->InitControl(op);
  }
  Result<> Expand() { return engine->ExpandArray({.array_gfn = (kArrayGpa >> 12) + pages++}); }
  Result<> InitAndExpand(uint32_t vcpus, uint32_t array_pages) {
    for (uint32_t v = 0; v < vcpus; ++v) TRY(Init(v));
    for (uint32_t i = 0; i < array_pages; ++i) TRY(Expand());
    return {};
  }
  Port BindIpi(uint32_t vcpu, uint32_t priority = EVTCHN_FIFO_PRIORITY_DEFAULT) {
    evtchn_bind_ipi op{.vcpu = vcpu, .port = 0};
    EXPECT_TRUE(engine->BindIpi(op));
    if (engine->FifoEnabled()) {
      EXPECT_TRUE(engine->SetPriority({op.port, priority}));
    }
    return op.port;
  }

  std::atomic_ref<uint32_t> Word(Port port) {
    return std::atomic_ref<uint32_t>(
        *reinterpret_cast<uint32_t*>(ram.get() + kArrayGpa + uint64_t(port) * 4));
  }
  evtchn_fifo_control_block_t& Control(uint32_t vcpu) {
    return *reinterpret_cast<evtchn_fifo_control_block_t*>(ram.get() + kControlGpa +
                                                           vcpu * abi::kPageSize);
  }
  std::atomic_ref<uint32_t> Ready(uint32_t vcpu) { return std::atomic_ref(Control(vcpu).ready); }
  std::atomic_ref<uint32_t> Head(uint32_t vcpu, uint32_t q) {
    return std::atomic_ref(Control(vcpu).head[q]);
  }
  uint8_t FifoUpcall(uint32_t vcpu) { return std::atomic_ref<uint8_t>(UpcallPending(vcpu)).load(); }

  // Linux's consume_one_event: take the queue's head (or the one kept from last time), unlink
  // it, and report it if pending and unmasked (clearing PENDING as the handler's ack would).
  // Returns 0 when the queue was empty.
  Port ConsumeOne(uint32_t vcpu, uint32_t q) {
    Port port = local_head[vcpu][q];
    if (port == 0) port = Head(vcpu, q).exchange(0);
    if (port == 0 || port >= pages * kFifoWordsPerPage) {
      Ready(vcpu).fetch_and(~(1u << q));
      local_head[vcpu][q] = 0;
      return 0;
    }
    auto word = Word(port);
    uint32_t w = word.load();
    while (!word.compare_exchange_weak(w, w & ~(kFifoLinked | kFifoLinkMask))) {
    }
    const Port next = w & kFifoLinkMask;
    local_head[vcpu][q] = next;
    if (next == 0) Ready(vcpu).fetch_and(~(1u << q));
    if ((w & (kFifoPending | kFifoMasked)) == kFifoPending &&
        (word.fetch_and(~kFifoPending) & kFifoPending))
      return port;
    return kNotPending;
  }
  // Everything deliverable on this vCPU, highest priority first, at most `limit` events.
  std::vector<Port> Drain(uint32_t vcpu, size_t limit = 4096) {
    std::vector<Port> seen;
    std::atomic_ref<uint8_t>(UpcallPending(vcpu)).store(0);
    for (size_t steps = 0; steps < limit; ++steps) {
      const uint32_t ready = Ready(vcpu).load();
      uint32_t q = 0;
      while (q < kFifoQueues && !(ready >> q & 1) && local_head[vcpu][q] == 0) ++q;
      if (q == kFifoQueues) break;
      const Port port = ConsumeOne(vcpu, q);
      if (port != 0 && port != kNotPending) seen.push_back(port);
    }
    return seen;
  }

  static constexpr Port kNotPending = UINT32_MAX;
  uint32_t pages = 0;
  std::vector<std::array<Port, kFifoQueues>> local_head;
};

}  // namespace xenkvm::evtchn::testing
