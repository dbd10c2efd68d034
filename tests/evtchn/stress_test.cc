// Concurrency stress: senders on several threads, a thread that keeps moving/removing/re-adding
// the memslots holding shared_info and vcpu_info, a thread binding and closing other ports, and
// a simulated guest consuming events. Afterwards every event sent after the guest's last
// consumption of its port must be visible: pending, its selector bit set, upcall_pending set.
// Run under the tsan preset too.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn {
namespace {

using L = abi::Layout64;
using Word = L::Word;

constexpr uint32_t kVcpus = 4;
constexpr uint32_t kPorts = 200;  // verified ports 1..kPorts
constexpr uint32_t kSenders = 3;
constexpr uint32_t kMinSendsPerThread = 20000;
constexpr uint64_t kLayoutRounds = 100;      // senders keep going until the churn has finished
constexpr uint64_t kVcpuInfoGpa = 0x180000;  // vCPUs 2, 3 keep vcpu_info in a page of their own
constexpr uint32_t kVcpuInfoSlot = 2;

TEST(EngineStress, NothingIsLostWhileLayoutChangesAndPortsChurn) {
  auto vcpu_page = testing::AllocPages(abi::kPageSize);  // outlives the engine's worker
  testing::FakeGuest<L> g(kVcpus, /*start_worker=*/true);
  Engine& engine = *g.engine;
  ASSERT_TRUE(g.memory.AddSlot(kVcpuInfoSlot, kVcpuInfoGpa, abi::kPageSize, vcpu_page.get()));
  auto vcpu_info = [&](uint32_t v) -> uint8_t* {
    return v < 2 ? g.shared_page.get() + v * L::kVcpuInfoSize
                 : vcpu_page.get() + (v - 2) * L::kVcpuInfoSize;
  };
  for (uint32_t v = 2; v < kVcpus; ++v)
    ASSERT_TRUE(engine.SetVcpuInfoGpa(v, kVcpuInfoGpa + (v - 2) * L::kVcpuInfoSize));

  std::vector<uint32_t> target(kPorts + 1);
  for (Port p = 1; p <= kPorts; ++p) {
    evtchn_bind_ipi op{.vcpu = p % kVcpus, .port = 0};
    ASSERT_TRUE(engine.BindIpi(op));
    ASSERT_EQ(op.port, p);
    target[p] = op.vcpu;
  }
  std::vector<std::atomic<uint64_t>> send_seq(kPorts + 1), consumed_seq(kPorts + 1);

  std::atomic<uint32_t> senders_done{0};
  std::atomic<bool> churn_done{false};
  std::atomic<uint64_t> total_sends{0};
  std::atomic<bool> stop_guest{false};
  std::atomic<uint64_t> sync_requests_seen[kVcpus] = {};

  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kSenders; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      uint64_t sends = 0;
      while (sends < kMinSendsPerThread || !churn_done.load()) {
        Port p = 1 + Port(rng() % kPorts);
        send_seq[p].fetch_add(1, std::memory_order_seq_cst);
        EXPECT_TRUE(engine.Send(evtchn_send{.port = p}));
        ++sends;
      }
      total_sends.fetch_add(sends);
      senders_done.fetch_add(1);
    });
  }

  // Layout churn: the shared_info page and the vcpu_info page disappear, move away and come
  // back, a fixed number of times. Ends with both pages where the guest registered them.
  uint64_t layout_changes = 0;
  threads.emplace_back([&] {
    std::mt19937 rng(99);
    auto page_of = [&](uint32_t slot) {
      return slot == testing::kSharedInfoSlot ? g.shared_page.get() : vcpu_page.get();
    };
    auto home_of = [&](uint32_t slot) {
      return slot == testing::kSharedInfoSlot ? testing::kSharedInfoGpa : kVcpuInfoGpa;
    };
    for (uint64_t round = 0; round < kLayoutRounds; ++round) {
      uint32_t slot = rng() % 2 ? testing::kSharedInfoSlot : kVcpuInfoSlot;
      if (rng() % 2) {
        ASSERT_TRUE(g.memory.RemoveSlot(slot));
        std::this_thread::yield();
        ASSERT_TRUE(g.memory.AddSlot(slot, home_of(slot), abi::kPageSize, page_of(slot)));
      } else {
        ASSERT_TRUE(g.memory.MoveSlot(slot, testing::kMovedGpa));
        std::this_thread::yield();
        ASSERT_TRUE(g.memory.MoveSlot(slot, home_of(slot)));
      }
      layout_changes += 2;
    }
    churn_done = true;
  });

  // Port churn beside the verified ports.
  threads.emplace_back([&] {
    while (senders_done.load() < kSenders) {
      evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
      ASSERT_TRUE(engine.BindIpi(ipi));
      ASSERT_GT(ipi.port, kPorts);
      evtchn_alloc_unbound unbound{.dom = DOMID_SELF, .remote_dom = DOMID_SELF, .port = 0};
      ASSERT_TRUE(engine.AllocUnbound(unbound));
      evtchn_bind_interdomain loop{
          .remote_dom = DOMID_SELF, .remote_port = unbound.port, .local_port = 0};
      ASSERT_TRUE(engine.BindInterdomain(loop));
      ASSERT_TRUE(engine.Send(evtchn_send{.port = loop.local_port}));
      ASSERT_TRUE(engine.Close(evtchn_close{.port = ipi.port}));
      ASSERT_TRUE(engine.Close(evtchn_close{.port = unbound.port}));
      ASSERT_TRUE(engine.Close(evtchn_close{.port = loop.local_port}));
    }
  });

  // The guest: on each "entry" sync if asked, then run the 2-level upcall handler.
  uint64_t consumed = 0;
  std::thread guest([&] {
    auto word = [](uint8_t* base, size_t offset) {
      return std::atomic_ref<Word>(*reinterpret_cast<Word*>(base + offset));
    };
    while (!stop_guest.load()) {
      for (uint32_t v = 0; v < kVcpus; ++v) {
        uint64_t requests = g.sinks[v].sync_requests.load();
        if (requests != sync_requests_seen[v]) {
          sync_requests_seen[v] = requests;
          engine.SyncVcpu(v);
        }
        uint8_t* vi = vcpu_info(v);
        std::atomic_ref<uint8_t>(vi[L::kUpcallPending]).store(0);
        Word sel = word(vi, L::kPendingSel).exchange(0);
        while (sel) {
          uint32_t w = uint32_t(std::countr_zero(sel));
          sel &= sel - 1;
          Word ready = word(g.shared_page.get(), L::kEvtchnPending + w * sizeof(Word)).load() &
                       ~word(g.shared_page.get(), L::kEvtchnMask + w * sizeof(Word)).load();
          while (ready) {
            Port p = w * 64 + uint32_t(std::countr_zero(ready));
            ready &= ready - 1;
            word(g.shared_page.get(), L::kEvtchnPending + w * sizeof(Word))
                .fetch_and(~(Word(1) << (p % 64)));
            if (p >= 1 && p <= kPorts) {
              consumed_seq[p].store(send_seq[p].load(std::memory_order_seq_cst));
              ++consumed;
            }
          }
        }
      }
      std::this_thread::yield();
    }
  });

  for (auto& t : threads) t.join();
  stop_guest = true;
  guest.join();

  // Quiesce: whatever is still deferred or shadowed lands now.
  engine.RunDeferredWork();
  for (uint32_t v = 0; v < kVcpus; ++v) engine.SyncVcpu(v);

  uint32_t outstanding = 0;
  for (Port p = 1; p <= kPorts; ++p) {
    if (send_seq[p].load() == consumed_seq[p].load()) continue;
    ++outstanding;
    const uint32_t v = target[p];
    EXPECT_TRUE(g.Pending(p)) << "port " << p << " lost";
    Word sel =
        std::atomic_ref<Word>(*reinterpret_cast<Word*>(vcpu_info(v) + L::kPendingSel)).load();
    EXPECT_TRUE(sel >> (p / 64) & 1) << "port " << p << " selector lost";
    EXPECT_EQ(vcpu_info(v)[L::kUpcallPending], 1) << "port " << p << " upcall lost";
  }
  uint64_t deliveries = 0, deferred = 0;
  for (Port p = 1; p <= kPorts; ++p) {
    deliveries += engine.Counters(p).sent;
    deferred += engine.Counters(p).deferred;
  }
  EXPECT_EQ(deliveries, total_sends.load());
  EXPECT_GT(consumed, 0u);
  EXPECT_EQ(layout_changes, 2 * kLayoutRounds);
  std::printf(
      "stress: %llu sends (%llu via the slow path), %llu consumed, %u outstanding, "
      "%llu layout changes\n",
      (unsigned long long)deliveries, (unsigned long long)deferred, (unsigned long long)consumed,
      outstanding, (unsigned long long)layout_changes);
}

}  // namespace
}  // namespace xenkvm::evtchn

namespace xenkvm::evtchn {
namespace {

// Once EVTCHNOP_close returns, no send that started before it may leave the port pending
// (Xen guarantees this with the channel lock; the engine drains senders instead).
TEST(EngineStress, CloseLeavesNoPendingBitBehindConcurrentSenders) {
  testing::FakeGuest<L> g(2, /*start_worker=*/true);
  for (int round = 0; round < 200; ++round) {
    evtchn_bind_ipi op{.vcpu = 1, .port = 0};
    ASSERT_TRUE(g.engine->BindIpi(op));
    std::atomic<bool> started{false}, stop{false};
    std::thread sender([&] {
      while (!stop.load()) {
        g.ClearPending(op.port);
        (void)g.engine->Send(evtchn_send{.port = op.port});
        started = true;
      }
    });
    while (!started.load()) std::this_thread::yield();
    ASSERT_TRUE(g.engine->Close(evtchn_close{.port = op.port}));
    const bool pending_after_close = g.Pending(op.port);
    stop = true;
    sender.join();
    // The sender's own ClearPending may run after the close; only a set bit is a failure.
    EXPECT_FALSE(pending_after_close) << "round " << round;
    EXPECT_FALSE(g.Pending(op.port)) << "round " << round;
  }
}

}  // namespace
}  // namespace xenkvm::evtchn
