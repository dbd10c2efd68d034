// Engine::Save / Engine::Restore: a restored engine saves to the same bytes, behaves as the
// original (same ports and statuses, same next free port, events land where they did, counters
// carry on), FIFO state included; a hostile snapshot is refused whole and changes nothing.
#include <gtest/gtest.h>

#include <cstring>

#include "tests/evtchn/fifo_guest.h"

namespace xenkvm::evtchn {
namespace {

using testing::FakeGuest;
using testing::FifoGuest;
using testing::kRamSize;

struct CountingBackend : Backend {
  std::atomic<int> sends{0};
  void OnGuestSend(Port) override { sends.fetch_add(1); }
};

std::vector<std::byte> SaveBytes(const Engine& engine) {
  snapshot::Encoder out;
  engine.Save(out);
  return out.Take();
}

Result<> RestoreBytes(Engine& engine, std::span<const std::byte> bytes) {
  snapshot::Decoder in(bytes);
  return engine.Restore(in);
}

// The guest's memory travels with RAM: copy it as the VMM would.
template <class G>
void CopyMemory(const G& from, G& to) {
  std::memcpy(to.ram.get(), from.ram.get(), kRamSize);
  std::memcpy(to.shared_page.get(), from.shared_page.get(), abi::kPageSize);
}

evtchn_status Status(Engine& e, Port p) {
  evtchn_status op{};
  op.dom = DOMID_SELF;
  op.port = p;
  EXPECT_TRUE(e.Status(op));
  return op;
}

struct Bound {
  Port ipi = 0, timer = 0, virq_global = 0, pirq = 0, unbound = 0, loop_a = 0, loop_b = 0,
       backend = 0;
};

// A 2-level guest with a port of every kind, some events raised and counted.
Bound BindEverything(Engine& e, Backend& backend) {
  Bound b;
  b.backend = *e.ConnectBackend(&backend);  // as the VMM connects the console ring
  evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
  EXPECT_TRUE(e.BindIpi(ipi));
  b.ipi = ipi.port;
  evtchn_bind_virq timer{.virq = VIRQ_TIMER, .vcpu = 1, .port = 0};
  EXPECT_TRUE(e.BindVirq(timer));
  b.timer = timer.port;
  evtchn_bind_virq con{.virq = VIRQ_CONSOLE, .vcpu = 0, .port = 0};
  EXPECT_TRUE(e.BindVirq(con));
  b.virq_global = con.port;
  evtchn_bind_pirq pirq{.pirq = 5, .flags = 0, .port = 0};
  EXPECT_TRUE(e.BindPirq(pirq));
  b.pirq = pirq.port;
  evtchn_alloc_unbound unbound{.dom = DOMID_SELF, .remote_dom = 0, .port = 0};
  EXPECT_TRUE(e.AllocUnbound(unbound));  // a frontend's channel, waiting for dom0
  b.unbound = unbound.port;
  evtchn_alloc_unbound a{.dom = DOMID_SELF, .remote_dom = DOMID_SELF, .port = 0};
  EXPECT_TRUE(e.AllocUnbound(a));
  evtchn_bind_interdomain bi{.remote_dom = DOMID_SELF, .remote_port = a.port, .local_port = 0};
  EXPECT_TRUE(e.BindInterdomain(bi));
  b.loop_a = a.port;
  b.loop_b = bi.local_port;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(e.Send({.port = b.ipi}));
  e.RaiseVirq(VIRQ_TIMER, 1);
  e.RaisePirq(5);
  return b;
}

TEST(EngineSnapshot, TwoLevelRoundTripsExactly) {
  FakeGuest<abi::Layout64> a(2);
  CountingBackend backend_a;
  const Bound b = BindEverything(*a.engine, backend_a);
  const std::vector<std::byte> saved = SaveBytes(*a.engine);

  FakeGuest<abi::Layout64> r(2);
  CountingBackend backend_r;
  ASSERT_EQ(*r.engine->AddBackendEndpoint(&backend_r), 1u);  // same endpoint as in `a`
  CopyMemory(a, r);
  ASSERT_TRUE(RestoreBytes(*r.engine, saved));
  EXPECT_EQ(SaveBytes(*r.engine), saved);

  for (Port p : {b.ipi, b.timer, b.virq_global, b.pirq, b.unbound, b.loop_a, b.loop_b, b.backend}) {
    const evtchn_status sa = Status(*a.engine, p), sr = Status(*r.engine, p);
    EXPECT_EQ(sr.status, sa.status) << p;
    EXPECT_EQ(sr.vcpu, sa.vcpu) << p;
    EXPECT_EQ(std::memcmp(&sr.u, &sa.u, sizeof(sa.u)), 0) << p;
    const PortCounters ca = a.engine->Counters(p), cr = r.engine->Counters(p);
    EXPECT_EQ(cr.sent, ca.sent);
    EXPECT_EQ(cr.raised(), ca.raised());
  }
  EXPECT_EQ(r.engine->Counters(b.ipi).sent, 3u);
  // The same next port, the same VIRQ/PIRQ refusals, events land on the restored bindings.
  evtchn_bind_ipi next_a{.vcpu = 0, .port = 0}, next_r{.vcpu = 0, .port = 0};
  ASSERT_TRUE(a.engine->BindIpi(next_a));
  ASSERT_TRUE(r.engine->BindIpi(next_r));
  EXPECT_EQ(next_r.port, next_a.port);
  evtchn_bind_virq again{.virq = VIRQ_TIMER, .vcpu = 1, .port = 0};
  EXPECT_EQ(r.engine->BindVirq(again).error().xen_errno, XEN_EEXIST);
  evtchn_bind_pirq pirq_again{.pirq = 5, .flags = 0, .port = 0};
  EXPECT_EQ(r.engine->BindPirq(pirq_again).error().xen_errno, XEN_EEXIST);
  r.ClearPending(b.timer);
  EXPECT_TRUE(r.engine->RaiseVirq(VIRQ_TIMER, 1));
  EXPECT_TRUE(r.Pending(b.timer));
  EXPECT_TRUE(r.engine->Send({.port = b.backend}));
  EXPECT_EQ(backend_r.sends.load(), 1);
  r.ClearPending(b.loop_b);
  EXPECT_TRUE(r.engine->Send({.port = b.loop_a}));
  EXPECT_TRUE(r.Pending(b.loop_b));
  EXPECT_TRUE(r.engine->Close({.port = b.loop_a}));  // the peer goes back to unbound
  EXPECT_EQ(Status(*r.engine, b.loop_b).status, uint32_t(EVTCHNSTAT_unbound));
}

TEST(EngineSnapshot, CompatAbiAndShadowSelectorsCarryOver) {
  FakeGuest<abi::LayoutCompat> a(1);
  evtchn_bind_ipi ipi{.vcpu = 0, .port = 0};
  ASSERT_TRUE(a.engine->BindIpi(ipi));
  const std::vector<std::byte> saved = SaveBytes(*a.engine);
  FakeGuest<abi::Layout64> r(1);  // set up 64-bit: the snapshot's ABI wins
  ASSERT_TRUE(RestoreBytes(*r.engine, saved));
  EXPECT_EQ(r.engine->abi(), Abi::kCompat);
  EXPECT_EQ(r.engine->MaxPorts(), abi::LayoutCompat::kPorts);
  EXPECT_EQ(SaveBytes(*r.engine), saved);
}

// A selector bit parked in a vCPU's shadow (its vcpu_info was unmapped when the event came)
// travels in the snapshot and lands, with one upcall, at the first SyncVcpu after the restore:
// what Machine::ResumeRestored does for every vCPU before any runs (the source's vCPU would have
// synced at its next entry, a request no snapshot holds).
TEST(EngineSnapshot, AShadowedSelectorLandsAtTheFirstSyncAfterRestore) {
  using Word = abi::Layout64::Word;
  FakeGuest<abi::Layout64> a(2);
  auto page = testing::AllocPages(abi::kPageSize);
  ASSERT_TRUE(a.memory.AddSlot(5, testing::kMovedGpa, abi::kPageSize, page.get()));
  ASSERT_TRUE(a.engine->SetVcpuInfoGpa(1, testing::kMovedGpa));  // raises an upcall (as Xen)
  a.engine->SyncVcpu(1);
  std::fill(page.get(), page.get() + abi::kPageSize, uint8_t{0});  // the guest took it
  ASSERT_TRUE(a.memory.RemoveSlot(5));  // vCPU 1's vcpu_info is not backed right now
  evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
  ASSERT_TRUE(a.engine->BindIpi(ipi));
  const int injects_before = a.sinks[1].injects.load();
  ASSERT_TRUE(a.engine->Send({.port = ipi.port}));
  ASSERT_TRUE(a.Pending(ipi.port));
  ASSERT_EQ(a.sinks[1].injects.load(), injects_before);  // shadowed: nothing injected yet
  ASSERT_GE(a.sinks[1].sync_requests.load(), 1);
  const std::vector<std::byte> saved = SaveBytes(*a.engine);

  FakeGuest<abi::Layout64> r(2);
  CopyMemory(a, r);
  auto restored_page = testing::AllocPages(abi::kPageSize);  // vcpu_info's page, as saved
  ASSERT_TRUE(r.memory.AddSlot(5, testing::kMovedGpa, abi::kPageSize, restored_page.get()));
  ASSERT_TRUE(RestoreBytes(*r.engine, saved));
  const auto selector = [&] {
    return *reinterpret_cast<Word*>(restored_page.get() + abi::Layout64::kPendingSel);
  };
  EXPECT_EQ(selector(), Word(0));
  r.engine->SyncVcpu(1);
  EXPECT_EQ(selector(), Word(1) << (ipi.port / abi::Layout64::kBitsPerWord));
  EXPECT_EQ(restored_page.get()[abi::Layout64::kUpcallPending], 1);
  EXPECT_EQ(r.sinks[1].injects.load(), 1);
  EXPECT_TRUE(r.engine->UpcallPending(1));
  r.engine->SyncVcpu(1);  // folded once: nothing more
  EXPECT_EQ(r.sinks[1].injects.load(), 1);
}

TEST(EngineSnapshot, FifoRoundTripsExactly) {
  FifoGuest a(2);
  ASSERT_TRUE(a.InitAndExpand(2, 2));
  const Port high = a.BindIpi(1, 2);
  const Port low = a.BindIpi(1, 9);
  ASSERT_TRUE(a.engine->Send({.port = high}));
  ASSERT_TRUE(a.engine->Send({.port = low}));
  const std::vector<std::byte> saved = SaveBytes(*a.engine);

  FifoGuest r(2);
  r.pages = a.pages;
  CopyMemory(a, r);
  ASSERT_TRUE(RestoreBytes(*r.engine, saved));
  EXPECT_TRUE(r.engine->FifoEnabled());
  EXPECT_EQ(SaveBytes(*r.engine), saved);
  const FifoSnapshot fa = a.engine->SaveFifo(), fr = r.engine->SaveFifo();
  EXPECT_EQ(fr.array_gpas, fa.array_gpas);
  ASSERT_EQ(fr.vcpus.size(), fa.vcpus.size());
  for (size_t i = 0; i < fa.vcpus.size(); ++i) EXPECT_EQ(fr.vcpus[i].tails, fa.vcpus[i].tails);
  // The guest drains what was queued before the save, in priority order, then a new event on
  // the restored queue links behind the restored tail.
  EXPECT_EQ(r.ConsumeOne(1, 2), high);
  EXPECT_EQ(r.ConsumeOne(1, 9), low);
  ASSERT_TRUE(r.engine->Send({.port = low}));
  EXPECT_EQ(r.ConsumeOne(1, 9), low);
}

TEST(EngineSnapshot, HostileSnapshotsAreRefusedAndChangeNothing) {
  FakeGuest<abi::Layout64> a(2);
  CountingBackend backend;
  const Bound b = BindEverything(*a.engine, backend);
  const std::vector<std::byte> saved = SaveBytes(*a.engine);

  // No backend endpoint registered: the snapshot's backend port has nowhere to go.
  FakeGuest<abi::Layout64> r(2);
  evtchn_bind_ipi mine{.vcpu = 0, .port = 0};
  ASSERT_TRUE(r.engine->BindIpi(mine));
  const std::vector<std::byte> before = SaveBytes(*r.engine);
  auto refused = RestoreBytes(*r.engine, saved);
  ASSERT_FALSE(refused);
  EXPECT_STREQ(refused.error().message, "snapshot: port connected to a backend this machine lacks");
  EXPECT_EQ(SaveBytes(*r.engine), before);

  // One vCPU fewer than the snapshot binds to.
  FakeGuest<abi::Layout64> small(1);
  ASSERT_TRUE(small.engine->AddBackendEndpoint(&backend));
  EXPECT_FALSE(RestoreBytes(*small.engine, saved));

  // Every truncation and every single-byte change: refused or accepted, never a crash, and a
  // refusal leaves the engine as it was.
  FakeGuest<abi::Layout64> t(2);
  ASSERT_TRUE(t.engine->AddBackendEndpoint(&backend));
  const std::vector<std::byte> clean = SaveBytes(*t.engine);
  for (size_t len = 0; len < saved.size(); ++len)
    EXPECT_FALSE(RestoreBytes(*t.engine, std::span(saved).first(len))) << len;
  EXPECT_EQ(SaveBytes(*t.engine), clean);
  int refusals = 0;
  auto fresh = std::make_unique<FakeGuest<abi::Layout64>>(2);
  ASSERT_TRUE(fresh->engine->AddBackendEndpoint(&backend));
  for (size_t i = 0; i < saved.size(); ++i) {
    std::vector<std::byte> bad = saved;
    bad[i] ^= std::byte{0x41};
    if (!RestoreBytes(*fresh->engine, bad)) {
      ++refusals;
      EXPECT_EQ(SaveBytes(*fresh->engine), clean) << i;
    } else {  // accepted (a counter, a free choice): start again from a fresh engine
      fresh = std::make_unique<FakeGuest<abi::Layout64>>(2);
      ASSERT_TRUE(fresh->engine->AddBackendEndpoint(&backend));
    }
  }
  EXPECT_GT(refusals, 0);
  (void)b;
}

TEST(EngineSnapshot, BrokenPeersAndDuplicatesAreRefused) {
  // Hand-made tables: one field wrong at a time.
  auto table =
      [](std::initializer_list<std::tuple<Port, PortState, uint16_t, uint32_t, uint32_t>> ports) {
        snapshot::Encoder e;
        e.U8(0);  // 64-bit
        e.U8(0);  // 2-level
        e.U64(testing::kSharedInfoGpa);
        e.U32(0);  // vCPUs
        e.U32(uint32_t(ports.size()));
        for (auto [port, state, vcpu, peer, source] : ports) {
          e.U32(port);
          e.U8(uint8_t(state));
          e.U16(vcpu);
          e.U32(peer);
          e.U16(1);
          e.U32(source);
        }
        e.U32(0);  // deferred
        e.U32(0);  // counters
        e.Bool(false);
        for (int i = 0; i < 4; ++i) e.U32(0);  // FIFO: pages, vCPUs, ports, parked
        return e.Take();
      };
  FakeGuest<abi::Layout64> g(2);
  using S = PortState;
  EXPECT_TRUE(RestoreBytes(*g.engine,
                           table({{1, S::kInterdomain, 0, 2, 0}, {2, S::kInterdomain, 0, 1, 0}})));
  EXPECT_FALSE(RestoreBytes(*g.engine,
                            table({{1, S::kInterdomain, 0, 2, 0}, {2, S::kInterdomain, 0, 3, 0}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{1, S::kInterdomain, 0, 1, 0}})));
  EXPECT_FALSE(RestoreBytes(
      *g.engine, table({{1, S::kVirq, 1, 0, VIRQ_TIMER}, {2, S::kVirq, 1, 0, VIRQ_TIMER}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{1, S::kVirq, 1, 0, VIRQ_CONSOLE}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{1, S::kPirq, 0, 0, 7}, {2, S::kPirq, 0, 0, 7}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{1, S::kIpi, 5, 0, 0}})));     // no vCPU 5
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{4096, S::kIpi, 0, 0, 0}})));  // beyond 2L
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{3, S::kIpi, 0, 0, 0}, {3, S::kIpi, 0, 0, 0}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{0, S::kIpi, 0, 0, 0}})));
  EXPECT_FALSE(RestoreBytes(*g.engine, table({{1, S::kFree, 0, 0, 0}})));
  // What was accepted first is still what the engine holds.
  EXPECT_EQ(Status(*g.engine, 1).status, uint32_t(EVTCHNSTAT_interdomain));
}

}  // namespace
}  // namespace xenkvm::evtchn
