// FIFO event channels (evtchn/fifo.h, evtchn/event_channels_fifo.cc) against Xen's event_fifo.c:
// every op and error, delivery and priority order, queue moves, hostile guest words, the 2-level ->
// FIFO switch and back, and link/unlink races with a guest consumer thread.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/evtchn/fifo_guest.h"

namespace xenkvm::evtchn {
namespace {

using testing::FifoGuest;
using testing::kArrayGpa;
using testing::kControlGpa;

int Errno(const Result<>& r) { return r ? 0 : r.error().xen_errno; }

TEST(FifoOps, InitControlErrorsAsXen) {
  FifoGuest g(2);
  evtchn_init_control op{};
  op.control_gfn = kControlGpa >> 12;
  op.vcpu = 7;
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_ENOENT);
  EXPECT_EQ(op.link_bits, EVTCHN_FIFO_LINK_BITS);
  op.vcpu = 0;
  op.offset = abi::kPageSize - sizeof(evtchn_fifo_control_block_t) + 8;  // crosses the page
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_EINVAL);
  op.offset = 4;  // not 8-byte aligned
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_EINVAL);
  // xsa-188: a bad frame fails, and leaves no FIFO state for expand_array to use.
  op.offset = 0;
  op.control_gfn = uint64_t(-2);
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_EINVAL);
  op.control_gfn = testing::kRamSize * 4 >> 12;  // beyond RAM
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_EINVAL);
  EXPECT_EQ(Errno(g.engine->ExpandArray({.array_gfn = kArrayGpa >> 12})), XEN_EOPNOTSUPP);
  EXPECT_FALSE(g.engine->FifoEnabled());
  EXPECT_EQ(g.engine->MaxPorts(), abi::Layout64::kPorts);
  // The last offset that fits is fine; a second block for the same vCPU is -EINVAL.
  op.control_gfn = kControlGpa >> 12;
  op.offset = abi::kPageSize - sizeof(evtchn_fifo_control_block_t);
  EXPECT_EQ(Errno(g.engine->InitControl(op)), 0);
  EXPECT_TRUE(g.engine->FifoEnabled());
  EXPECT_EQ(g.engine->MaxPorts(), uint32_t(EVTCHN_FIFO_NR_CHANNELS));
  EXPECT_EQ(Errno(g.engine->InitControl(op)), XEN_EINVAL);
  EXPECT_EQ(Errno(g.Init(1)), 0);
}

TEST(FifoOps, ExpandArrayOnePagePerCallUpToTheLimit) {
  FifoGuest g(1);
  EXPECT_EQ(Errno(g.Expand()), XEN_EOPNOTSUPP);
  g.pages = 0;
  ASSERT_TRUE(g.Init(0));
  EXPECT_EQ(Errno(g.engine->ExpandArray({.array_gfn = uint64_t(-1)})), XEN_EINVAL);
  for (uint32_t i = 0; i < kFifoMaxArrayPages; ++i)  // Xen maps the same frame again happily
    ASSERT_EQ(Errno(g.engine->ExpandArray({.array_gfn = kArrayGpa >> 12})), 0) << i;
  EXPECT_EQ(Errno(g.engine->ExpandArray({.array_gfn = kArrayGpa >> 12})), XEN_ENOSPC);
  EXPECT_EQ(Errno(g.engine->ExpandArray({.array_gfn = uint64_t(-1)})), XEN_ENOSPC);  // first
  EXPECT_EQ(g.engine->SaveFifo().array_gpas.size(), kFifoMaxArrayPages);
}

TEST(FifoOps, SetPriorityErrorsAsXen) {
  FifoGuest g(1);
  const Port port = g.BindIpi(0);
  EXPECT_EQ(Errno(g.engine->SetPriority({port, 3})), XEN_ENOSYS);  // 2-level
  EXPECT_EQ(Errno(g.engine->SetPriority({abi::Layout64::kPorts, 3})), XEN_EINVAL);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  EXPECT_EQ(Errno(g.engine->SetPriority({port, 16})), XEN_EINVAL);
  EXPECT_EQ(Errno(g.engine->SetPriority({0, 3})), XEN_EACCES);         // reserved
  EXPECT_EQ(Errno(g.engine->SetPriority({port + 1, 3})), XEN_EACCES);  // free
  EXPECT_EQ(Errno(g.engine->SetPriority({EVTCHN_FIFO_NR_CHANNELS, 3})), XEN_EINVAL);
  EXPECT_EQ(Errno(g.engine->SetPriority({port, 0})), 0);
  EXPECT_EQ(Errno(g.engine->SetPriority({port, 15})), 0);
  const FifoSnapshot s = g.engine->SaveFifo();
  ASSERT_EQ(s.ports.size(), 1u);
  EXPECT_EQ(s.ports[0].port, port);
  EXPECT_EQ(s.ports[0].priority, 15);
}

TEST(FifoDelivery, LinksBehindTheTailAndRaisesUpcallOnce) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  const Port a = g.BindIpi(0), b = g.BindIpi(0), c = g.BindIpi(0);
  g.engine->RaisePort(a);
  EXPECT_EQ(g.Head(0, 7).load(), a);
  EXPECT_EQ(g.Ready(0).load(), 1u << 7);
  EXPECT_EQ(g.FifoUpcall(0), 1);
  EXPECT_EQ(g.sinks[0].injects.load(), 1);
  g.engine->RaisePort(b);
  g.engine->RaisePort(c);
  g.engine->RaisePort(a);  // coalesced
  EXPECT_EQ(g.Word(a).load(), kFifoPending | kFifoLinked | b);
  EXPECT_EQ(g.Word(b).load(), kFifoPending | kFifoLinked | c);
  EXPECT_EQ(g.Word(c).load(), kFifoPending | kFifoLinked);
  EXPECT_EQ(g.sinks[0].injects.load(), 1);
  EXPECT_EQ(g.engine->Counters(a).delivered, 1u);
  EXPECT_EQ(g.engine->Counters(a).coalesced, 1u);
  EXPECT_EQ(g.Drain(0), (std::vector<Port>{a, b, c}));
  EXPECT_EQ(g.Ready(0).load(), 0u);
  // An empty queue again: the next event is a new head and a new upcall.
  g.engine->RaisePort(b);
  EXPECT_EQ(g.Head(0, 7).load(), b);
  EXPECT_EQ(g.sinks[0].injects.load(), 2);
}

TEST(FifoDelivery, PriorityOrder) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 2));
  std::vector<Port> ports;
  for (uint32_t prio : {9u, 2u, 15u, 0u, 7u, 2u}) ports.push_back(g.BindIpi(0, prio));
  for (Port p : ports) g.engine->RaisePort(p);
  EXPECT_EQ(g.Ready(0).load(), (1u << 0 | 1u << 2 | 1u << 7 | 1u << 9 | 1u << 15));
  EXPECT_EQ(g.Drain(0),
            (std::vector<Port>{ports[3], ports[1], ports[5], ports[4], ports[0], ports[2]}));
}

TEST(FifoDelivery, MaskedUntilUnmaskRelinks) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  const Port p = g.BindIpi(0);
  g.Word(p).store(kFifoMasked);
  g.engine->RaisePort(p);
  EXPECT_EQ(g.Word(p).load(), kFifoMasked | kFifoPending);
  EXPECT_EQ(g.Ready(0).load(), 0u);
  EXPECT_EQ(g.engine->Counters(p).masked, 1u);
  ASSERT_TRUE(g.engine->Unmask({p}));
  EXPECT_EQ(g.Word(p).load(), kFifoPending | kFifoLinked);
  EXPECT_EQ(g.Head(0, 7).load(), p);
  EXPECT_EQ(g.FifoUpcall(0), 1);
  EXPECT_EQ(g.Drain(0), std::vector<Port>{p});
  // Unmasking a port that is not pending links nothing.
  g.Word(p).store(kFifoMasked);
  ASSERT_TRUE(g.engine->Unmask({p}));
  EXPECT_EQ(g.Word(p).load(), 0u);
  EXPECT_EQ(g.Ready(0).load(), 0u);
}

// A new event sets PENDING and LINKED in one step under the queue lock: the guest's other
// bits survive, and a word left pending but unlinked (the guest took it off its queue without
// clearing PENDING) is linked again and delivered, as Xen's two steps would.
TEST(FifoDelivery, PendingAndLinkedSetTogetherKeepXenOutcomes) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  const Port a = g.BindIpi(0), b = g.BindIpi(0);
  g.Word(a).store(kFifoBusy | 0x1234);  // garbage the engine must leave alone
  g.engine->RaisePort(a);
  EXPECT_EQ(g.Word(a).load(), kFifoBusy | kFifoPending | kFifoLinked | 0x1234);
  EXPECT_EQ(g.Head(0, 7).load(), a);
  EXPECT_EQ(g.engine->Counters(a).delivered, 1u);
  g.Word(a).store(0);
  g.Control(0).ready = 0;
  g.Head(0, 7).store(0);
  g.Word(b).store(kFifoPending);
  g.engine->RaisePort(b);
  EXPECT_EQ(g.Word(b).load(), kFifoPending | kFifoLinked);
  EXPECT_EQ(g.Head(0, 7).load(), b);
  EXPECT_EQ(g.Ready(0).load(), 1u << 7);
  EXPECT_EQ(g.engine->Counters(b).delivered, 1u);
  EXPECT_EQ(g.Drain(0), std::vector<Port>{b});
}

TEST(FifoDelivery, NoControlBlockDropsAsXen) {
  FifoGuest g(2);
  ASSERT_TRUE(g.InitAndExpand(1, 1));  // vCPU 1 never gets a control block
  const Port p = g.BindIpi(1);
  g.engine->RaisePort(p);
  EXPECT_EQ(g.Word(p).load(), 0u);
  EXPECT_EQ(g.sinks[1].injects.load(), 0);
}

// Xen's rule for a port that moves: its old queue forgets it as tail once it is relinked
// elsewhere, so a later event on the old queue starts a new list instead of linking to it.
TEST(FifoDelivery, MovingPriorityAndVcpu) {
  FifoGuest g(2);
  ASSERT_TRUE(g.InitAndExpand(2, 1));
  const Port a = g.BindIpi(0), b = g.BindIpi(0);
  evtchn_alloc_unbound unbound{.dom = DOMID_SELF, .remote_dom = DOMID_SELF, .port = 0};
  ASSERT_TRUE(g.engine->AllocUnbound(unbound));
  evtchn_bind_interdomain bind{
      .remote_dom = DOMID_SELF, .remote_port = unbound.port, .local_port = 0};
  ASSERT_TRUE(g.engine->BindInterdomain(bind));  // local port raised on vCPU 0, prio 7
  const Port moving = unbound.port;
  g.Drain(0);
  // Link `moving` on vCPU 0 prio 7, consume it, then move it to vCPU 1 prio 3.
  g.engine->Send({bind.local_port});
  EXPECT_EQ(g.Drain(0), std::vector<Port>{moving});
  ASSERT_TRUE(g.engine->BindVcpu({moving, 1}));
  ASSERT_TRUE(g.engine->SetPriority({moving, 3}));
  g.engine->Send({bind.local_port});
  EXPECT_EQ(g.Head(1, 3).load(), moving);
  g.engine->RaisePort(a);
  g.engine->RaisePort(b);
  EXPECT_EQ(g.Head(0, 7).load(), a);  // not linked behind `moving`
  EXPECT_EQ(g.Word(moving).load() & kFifoLinkMask, 0u);
  EXPECT_EQ(g.Drain(0), (std::vector<Port>{a, b}));
  EXPECT_EQ(g.Drain(1), std::vector<Port>{moving});
  // A port still LINKED keeps its queue until the guest unlinks it (no doubled event).
  g.engine->Send({bind.local_port});
  ASSERT_TRUE(g.engine->SetPriority({moving, 12}));
  g.Word(moving).fetch_and(~kFifoPending);  // handled, not yet unlinked
  g.engine->Send({bind.local_port});
  EXPECT_EQ(g.Ready(1).load(), 1u << 3);
  EXPECT_EQ(g.Drain(1), std::vector<Port>{moving});
}

TEST(FifoDelivery, EventsBeforeTheirPageAreKept) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  std::vector<Port> ports;
  for (int i = 0; i < 1100; ++i) ports.push_back(g.BindIpi(0));
  const Port high = ports.back();  // beyond the first 1024 words
  ASSERT_GE(high, kFifoWordsPerPage);
  g.engine->RaisePort(high);
  EXPECT_EQ(g.Ready(0).load(), 0u);
  EXPECT_EQ(g.engine->Counters(high).deferred, 1u);
  ASSERT_TRUE(g.Expand());
  EXPECT_EQ(g.Word(high).load(), kFifoPending | kFifoLinked);
  EXPECT_EQ(g.Drain(0), std::vector<Port>{high});
}

TEST(FifoSwitch, PendingTwoLevelEventsCarryOver) {
  FifoGuest g(1);
  const Port a = g.BindIpi(0), b = g.BindIpi(0), masked = g.BindIpi(0);
  g.SetMask(masked, true);
  g.engine->RaisePort(a);
  g.engine->RaisePort(masked);
  ASSERT_TRUE(g.Pending(a));
  ASSERT_TRUE(g.Init(0));
  g.engine->RaisePort(b);  // in flight: no array page yet
  ASSERT_TRUE(g.Expand());
  EXPECT_EQ(g.Drain(0), (std::vector<Port>{a, b, masked}));
  // Reset: back to 2-level with its limit; FIFO ops refused again.
  ASSERT_TRUE(g.engine->Reset({DOMID_SELF}));
  EXPECT_FALSE(g.engine->FifoEnabled());
  EXPECT_EQ(g.engine->MaxPorts(), abi::Layout64::kPorts);
  EXPECT_EQ(Errno(g.Expand()), XEN_EOPNOTSUPP);
  const Port again = g.BindIpi(0);
  g.ClearPending(again);
  g.SetMask(again, false);
  g.engine->RaisePort(again);
  EXPECT_TRUE(g.Pending(again));
  // And FIFO again from scratch.
  g.pages = 0;
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  EXPECT_EQ(g.engine->SaveFifo().array_gpas.size(), 1u);
}

TEST(FifoHostile, CorruptWordsNeverEscapeTheArray) {
  FifoGuest g(1);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  const Port a = g.BindIpi(0), b = g.BindIpi(0), c = g.BindIpi(0);
  g.engine->RaisePort(a);
  // The guest makes the tail a cycle with LINK past the array and garbage bits, keeps it
  // LINKED; the engine only compare-and-exchanges the tail's own word.
  g.Word(a).store(kFifoLinked | kFifoPending | kFifoBusy | 0x1ffff);
  g.engine->RaisePort(b);
  EXPECT_EQ(g.Word(a).load(), kFifoLinked | kFifoPending | b);
  g.Word(b).store(kFifoLinked | b);  // a self-cycle
  g.engine->RaisePort(c);
  EXPECT_EQ(g.Word(b).load(), kFifoLinked | c);
  // Garbage in the control block and in words beyond the bound ports changes nothing here.
  g.Ready(0).store(0xffffffff);
  g.Head(0, 7).store(0xffffffff);
  for (Port p = c + 1; p < kFifoWordsPerPage; ++p) g.Word(p).store(0xffffffff);
  g.engine->RaisePort(c);
  // The page after the array is untouched.
  EXPECT_EQ(*reinterpret_cast<uint32_t*>(g.ram.get() + kArrayGpa + abi::kPageSize), 0u);
  // The consumer's walk is bounded as well.
  g.Drain(0, 64);
}

// Two senders on two priorities against a guest consumer thread that unlinks as they link:
// every event is seen (sender waits for it before the next), none is lost or doubled.
TEST(FifoRace, LinkUnlinkAgainstGuestConsumer) {
  FifoGuest g(1, /*start_worker=*/true);
  ASSERT_TRUE(g.InitAndExpand(1, 1));
  const Port ports[2] = {g.BindIpi(0, 2), g.BindIpi(0, 9)};
  constexpr int kRounds = 3000;
  std::atomic<int> seen[2] = {0, 0};
  std::atomic<bool> stop{false};
  std::atomic<int> unexpected{0};
  std::thread consumer([&] {
    while (!stop.load()) {
      for (Port p : g.Drain(0, 64)) {
        if (p == ports[0])
          seen[0].fetch_add(1);
        else if (p == ports[1])
          seen[1].fetch_add(1);
        else
          unexpected.fetch_add(1);
      }
    }
  });
  auto sender = [&](int t) {
    for (int i = 0; i < kRounds; ++i) {
      g.engine->RaisePort(ports[t]);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (seen[t].load() < i + 1 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
      if (seen[t].load() < i + 1) return;  // lost: the check below fails
    }
  };
  std::thread s0(sender, 0), s1(sender, 1);
  s0.join();
  s1.join();
  stop.store(true);
  consumer.join();
  EXPECT_EQ(seen[0].load(), kRounds);
  EXPECT_EQ(seen[1].load(), kRounds);
  EXPECT_EQ(unexpected.load(), 0);
}

}  // namespace
}  // namespace xenkvm::evtchn
