// EVTCHNOP_* semantics, error codes and 2-level delivery, for both the 64-bit and the compat
// layout, on plain in-process guest memory.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/evtchn/fake_guest.h"

namespace xenkvm::evtchn {
namespace {

using testing::FakeGuest;
using testing::kMovedGpa;
using testing::kSharedInfoGpa;
using testing::kSharedInfoSlot;

template <class Layout>
class EngineTest : public ::testing::Test {
 protected:
  FakeGuest<Layout> g{4};
  Engine& e() { return *g.engine; }

  Port Ipi(uint32_t vcpu) {
    evtchn_bind_ipi op{.vcpu = vcpu, .port = 0};
    auto r = e().BindIpi(op);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return op.port;
  }
  Port Unbound(domid_t remote = DOMID_SELF) {
    evtchn_alloc_unbound op{.dom = DOMID_SELF, .remote_dom = remote, .port = 0};
    EXPECT_TRUE(e().AllocUnbound(op));
    return op.port;
  }
  Result<Port> Virq(uint32_t virq, uint32_t vcpu) {
    evtchn_bind_virq op{.virq = virq, .vcpu = vcpu, .port = 0};
    TRY(e().BindVirq(op));
    return op.port;
  }
  Result<> Send(Port p) { return e().Send(evtchn_send{.port = p}); }
  Result<> Close(Port p) { return e().Close(evtchn_close{.port = p}); }
  int Errno(const Result<>& r) { return r ? 0 : r.error().xen_errno; }
  template <class T>
  int Errno(const Result<T>& r) {
    return r ? 0 : r.error().xen_errno;
  }
  evtchn_status Status(Port p) {
    evtchn_status op{};
    op.dom = DOMID_SELF;
    op.port = p;
    EXPECT_TRUE(e().Status(op));
    return op;
  }
};

using Layouts = ::testing::Types<abi::Layout64, abi::LayoutCompat>;
class LayoutNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return T::kName;
  }
};
TYPED_TEST_SUITE(EngineTest, Layouts, LayoutNames);

// ---- delivery ----

TYPED_TEST(EngineTest, NewEventSetsPendingSelectorUpcallAndInjectsOnce) {
  Port p = this->Ipi(2);
  ASSERT_TRUE(this->Send(p));
  EXPECT_TRUE(this->g.Pending(p));
  EXPECT_TRUE(this->g.SelectorBit(2, p));
  EXPECT_EQ(this->g.UpcallPending(2), 1);
  EXPECT_EQ(this->g.sinks[2].injects, 1);
  EXPECT_EQ(this->g.Selector(0), 0u);  // other vCPUs untouched
  auto c = this->e().Counters(p);
  EXPECT_EQ(c.sent, 1u);
  EXPECT_EQ(c.delivered, 1u);
}

TYPED_TEST(EngineTest, AlreadyPendingEventCoalesces) {
  Port p = this->Ipi(0);
  ASSERT_TRUE(this->Send(p));
  ASSERT_TRUE(this->Send(p));
  EXPECT_EQ(this->g.sinks[0].injects, 1);
  EXPECT_EQ(this->e().Counters(p).coalesced, 1u);
}

TYPED_TEST(EngineTest, NoSecondInjectWhileUpcallPendingStillSet) {
  Port a = this->Ipi(0), b = this->Ipi(0);
  ASSERT_TRUE(this->Send(a));
  ASSERT_TRUE(this->Send(b));
  EXPECT_EQ(this->g.sinks[0].injects, 1);
  this->g.Acknowledge(0);
  this->g.ClearPending(a);
  ASSERT_TRUE(this->Send(a));
  EXPECT_EQ(this->g.sinks[0].injects, 2);
}

TYPED_TEST(EngineTest, MaskedEventStaysPendingAndUnmaskReRaises) {
  Port p = this->Ipi(1);
  this->g.SetMask(p, true);
  ASSERT_TRUE(this->Send(p));
  EXPECT_TRUE(this->g.Pending(p));
  EXPECT_FALSE(this->g.SelectorBit(1, p));
  EXPECT_EQ(this->g.sinks[1].injects, 0);
  EXPECT_EQ(this->e().Counters(p).masked, 1u);
  ASSERT_TRUE(this->e().Unmask(evtchn_unmask{.port = p}));
  EXPECT_FALSE(this->g.Masked(p));
  EXPECT_TRUE(this->g.SelectorBit(1, p));
  EXPECT_EQ(this->g.sinks[1].injects, 1);
}

TYPED_TEST(EngineTest, UnmaskOfNonPendingPortRaisesNothing) {
  Port p = this->Ipi(1);
  this->g.SetMask(p, true);
  ASSERT_TRUE(this->e().Unmask(evtchn_unmask{.port = p}));
  EXPECT_FALSE(this->g.Masked(p));
  EXPECT_EQ(this->g.sinks[1].injects, 0);
  EXPECT_EQ(this->Errno(this->e().Unmask(evtchn_unmask{.port = TypeParam::kPorts})), XEN_EINVAL);
}

TYPED_TEST(EngineTest, HighPortsUseTheirOwnSelectorWord) {
  // Fill the table so the last port lands in the last selector word.
  Port last = 0;
  for (uint32_t i = 1; i < TypeParam::kPorts; ++i) last = this->Ipi(3);
  ASSERT_EQ(last, TypeParam::kPorts - 1);
  ASSERT_TRUE(this->Send(last));
  EXPECT_EQ(this->g.Selector(3), typename TypeParam::Word(1) << (TypeParam::kBitsPerWord - 1));
}

// ---- EVTCHNOP semantics and errors ----

TYPED_TEST(EngineTest, PortsAllocateLowestFreeFromOneAndExhaustWithENOSPC) {
  EXPECT_EQ(this->Unbound(), 1u);
  EXPECT_EQ(this->Unbound(), 2u);
  EXPECT_EQ(this->Unbound(), 3u);
  ASSERT_TRUE(this->Close(2));
  EXPECT_EQ(this->Unbound(), 2u);
  for (uint32_t p = 4; p < TypeParam::kPorts; ++p) ASSERT_EQ(this->Unbound(), p);
  evtchn_alloc_unbound op{.dom = DOMID_SELF, .remote_dom = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().AllocUnbound(op)), XEN_ENOSPC);
  evtchn_bind_ipi ipi{.vcpu = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().BindIpi(ipi)), XEN_ENOSPC);
}

TYPED_TEST(EngineTest, PortsOutOfRangeForTheModeAreEINVAL) {
  for (Port bad : {Port(0), TypeParam::kPorts, TypeParam::kPorts + 1, Port(UINT32_MAX)}) {
    EXPECT_EQ(this->Errno(this->Send(bad)), XEN_EINVAL) << bad;
    EXPECT_EQ(this->Errno(this->Close(bad)), XEN_EINVAL) << bad;
    EXPECT_EQ(this->Errno(this->e().BindVcpu(evtchn_bind_vcpu{.port = bad, .vcpu = 0})),
              XEN_EINVAL);
  }
  evtchn_status st{};
  st.dom = DOMID_SELF;
  st.port = TypeParam::kPorts;
  EXPECT_EQ(this->Errno(this->e().Status(st)), XEN_EINVAL);
}

TYPED_TEST(EngineTest, CloseOfFreeOrReservedPortIsEINVAL) {
  Port p = this->Ipi(0);
  EXPECT_TRUE(this->Close(p));
  EXPECT_EQ(this->Errno(this->Close(p)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->Close(0)), XEN_EINVAL);
}

TYPED_TEST(EngineTest, CloseClearsPendingAndFreesThePort) {
  Port p = this->Ipi(0);
  ASSERT_TRUE(this->Send(p));
  ASSERT_TRUE(this->Close(p));
  EXPECT_FALSE(this->g.Pending(p));
  EXPECT_EQ(this->Status(p).status, uint32_t(EVTCHNSTAT_closed));
  EXPECT_EQ(this->Errno(this->Send(p)), XEN_EINVAL);
}

TYPED_TEST(EngineTest, SendOnUnboundIsSilentlyDroppedAndOnVirqOrPirqIsEINVAL) {
  Port u = this->Unbound(0);
  EXPECT_TRUE(this->Send(u));
  EXPECT_FALSE(this->g.Pending(u));
  Port v = *this->Virq(VIRQ_TIMER, 0);
  EXPECT_EQ(this->Errno(this->Send(v)), XEN_EINVAL);
  evtchn_bind_pirq pirq{.pirq = 5, .flags = 0, .port = 0};
  ASSERT_TRUE(this->e().BindPirq(pirq));
  EXPECT_EQ(this->Errno(this->Send(pirq.port)), XEN_EINVAL);
}

TYPED_TEST(EngineTest, VirqBindingRules) {
  EXPECT_EQ(this->Errno(this->Virq(NR_VIRQS, 0)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->Virq(VIRQ_CONSOLE, 1)), XEN_EINVAL);  // global on vCPU != 0
  EXPECT_EQ(this->Errno(this->Virq(VIRQ_TIMER, 99)), XEN_ENOENT);
  EXPECT_EQ(this->Errno(this->Virq(VIRQ_TIMER, 4)), XEN_ENOENT);  // vCPU never registered
  auto t1 = this->Virq(VIRQ_TIMER, 1);
  ASSERT_TRUE(t1);
  EXPECT_EQ(this->Errno(this->Virq(VIRQ_TIMER, 1)), XEN_EEXIST);
  EXPECT_TRUE(this->Virq(VIRQ_TIMER, 2));  // per-vCPU: one per vCPU
  auto con = this->Virq(VIRQ_CONSOLE, 0);
  ASSERT_TRUE(con);
  EXPECT_EQ(this->Errno(this->Virq(VIRQ_CONSOLE, 0)), XEN_EEXIST);

  EXPECT_TRUE(this->e().RaiseVirq(VIRQ_TIMER, 1));
  EXPECT_TRUE(this->g.Pending(*t1));
  EXPECT_TRUE(this->g.SelectorBit(1, *t1));
  EXPECT_FALSE(this->e().RaiseVirq(VIRQ_TIMER, 3));  // not bound there: dropped
  EXPECT_FALSE(this->e().RaiseVirq(NR_VIRQS, 0));

  auto st = this->Status(*t1);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_virq));
  EXPECT_EQ(st.u.virq, uint32_t(VIRQ_TIMER));
  EXPECT_EQ(st.vcpu, 1u);

  // Closing frees the VIRQ for a new binding.
  ASSERT_TRUE(this->Close(*t1));
  EXPECT_FALSE(this->e().RaiseVirq(VIRQ_TIMER, 1));
  EXPECT_TRUE(this->Virq(VIRQ_TIMER, 1));
}

TYPED_TEST(EngineTest, GlobalVirqFollowsBindVcpu) {
  Port con = *this->Virq(VIRQ_CONSOLE, 0);
  ASSERT_TRUE(this->e().BindVcpu(evtchn_bind_vcpu{.port = con, .vcpu = 3}));
  EXPECT_TRUE(this->e().RaiseVirq(VIRQ_CONSOLE));
  EXPECT_TRUE(this->g.SelectorBit(3, con));
  EXPECT_FALSE(this->g.SelectorBit(0, con));
  EXPECT_EQ(this->Status(con).vcpu, 3u);
}

TYPED_TEST(EngineTest, BindVcpuRules) {
  Port ipi = this->Ipi(0);
  Port timer = *this->Virq(VIRQ_TIMER, 0);
  Port unbound = this->Unbound();
  EXPECT_EQ(this->Errno(this->e().BindVcpu(evtchn_bind_vcpu{.port = ipi, .vcpu = 1})), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().BindVcpu(evtchn_bind_vcpu{.port = timer, .vcpu = 1})),
            XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().BindVcpu(evtchn_bind_vcpu{.port = unbound, .vcpu = 9})),
            XEN_ENOENT);
  EXPECT_EQ(this->Errno(this->e().BindVcpu(evtchn_bind_vcpu{.port = 77, .vcpu = 1})), XEN_EINVAL);
  EXPECT_TRUE(this->e().BindVcpu(evtchn_bind_vcpu{.port = unbound, .vcpu = 2}));
  EXPECT_EQ(this->Status(unbound).vcpu, 2u);
}

TYPED_TEST(EngineTest, IpiRules) {
  evtchn_bind_ipi bad{.vcpu = 4, .port = 0};
  EXPECT_EQ(this->Errno(this->e().BindIpi(bad)), XEN_ENOENT);
  Port p = this->Ipi(3);
  auto st = this->Status(p);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_ipi));
  EXPECT_EQ(st.vcpu, 3u);
}

TYPED_TEST(EngineTest, PirqRules) {
  evtchn_bind_pirq op{.pirq = 17, .flags = 0, .port = 0};
  ASSERT_TRUE(this->e().BindPirq(op));
  evtchn_bind_pirq again{.pirq = 17, .flags = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().BindPirq(again)), XEN_EEXIST);
  evtchn_bind_pirq huge{.pirq = 1u << 30, .flags = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().BindPirq(huge)), XEN_EINVAL);
  EXPECT_TRUE(this->e().RaisePirq(17));
  EXPECT_TRUE(this->g.Pending(op.port));
  EXPECT_FALSE(this->e().RaisePirq(18));
  auto st = this->Status(op.port);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_pirq));
  EXPECT_EQ(st.u.pirq, 17u);
  ASSERT_TRUE(this->e().BindVcpu(evtchn_bind_vcpu{.port = op.port, .vcpu = 2}));
  ASSERT_TRUE(this->Close(op.port));
  EXPECT_FALSE(this->e().RaisePirq(17));
}

TYPED_TEST(EngineTest, LoopbackInterdomain) {
  Port listener = this->Unbound(DOMID_SELF);
  auto st = this->Status(listener);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_unbound));
  EXPECT_EQ(st.u.unbound.dom, 1u);

  evtchn_bind_interdomain op{.remote_dom = DOMID_SELF, .remote_port = listener, .local_port = 0};
  ASSERT_TRUE(this->e().BindInterdomain(op));
  Port local = op.local_port;
  EXPECT_TRUE(this->g.Pending(local));  // Xen marks the new local port pending
  EXPECT_FALSE(this->g.Pending(listener));
  st = this->Status(local);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_interdomain));
  EXPECT_EQ(st.u.interdomain.port, listener);
  EXPECT_EQ(this->Status(listener).u.interdomain.port, local);

  // Each side's send raises the other.
  ASSERT_TRUE(this->e().BindVcpu(evtchn_bind_vcpu{.port = listener, .vcpu = 1}));
  ASSERT_TRUE(this->Send(local));
  EXPECT_TRUE(this->g.Pending(listener));
  EXPECT_TRUE(this->g.SelectorBit(1, listener));
  this->g.ClearPending(local);
  ASSERT_TRUE(this->Send(listener));
  EXPECT_TRUE(this->g.Pending(local));

  // Binding to a port that is no longer unbound fails; closing one side unbinds the other.
  evtchn_bind_interdomain again{.remote_dom = DOMID_SELF, .remote_port = listener, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(again)), XEN_EINVAL);
  ASSERT_TRUE(this->Close(local));
  st = this->Status(listener);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_unbound));
  EXPECT_EQ(st.vcpu, 1u);
  EXPECT_TRUE(this->e().BindInterdomain(again));
}

TYPED_TEST(EngineTest, BindInterdomainErrors) {
  evtchn_bind_interdomain op{.remote_dom = 7, .remote_port = 1, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(op)), XEN_ESRCH);
  Port for_dom0 = this->Unbound(0);  // waits for domain 0, not for us
  op = {.remote_dom = DOMID_SELF, .remote_port = for_dom0, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(op)), XEN_EINVAL);
  op = {.remote_dom = DOMID_SELF, .remote_port = 2, .local_port = 0};  // free port
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(op)), XEN_EINVAL);
  op = {.remote_dom = DOMID_SELF, .remote_port = 100000, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(op)), XEN_EINVAL);
  // A failed bind leaves no port behind.
  EXPECT_EQ(this->Unbound(), 2u);
}

struct Echo : Backend {
  Engine* engine = nullptr;
  std::vector<Port> received;
  void OnGuestSend(Port port) override {
    received.push_back(port);
    engine->RaisePort(port);
  }
};

TYPED_TEST(EngineTest, BackendEndpoint) {
  Echo echo;
  echo.engine = &this->e();
  Port endpoint = *this->e().AddBackendEndpoint(&echo);
  evtchn_bind_interdomain op{.remote_dom = 0, .remote_port = endpoint, .local_port = 0};
  ASSERT_TRUE(this->e().BindInterdomain(op));
  Port p = op.local_port;
  auto st = this->Status(p);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_interdomain));
  EXPECT_EQ(st.u.interdomain.dom, 0u);
  EXPECT_EQ(st.u.interdomain.port, endpoint);
  this->g.ClearPending(p);
  ASSERT_TRUE(this->Send(p));
  ASSERT_EQ(echo.received.size(), 1u);
  EXPECT_EQ(echo.received[0], p);
  EXPECT_TRUE(this->g.Pending(p));  // echoed back

  evtchn_bind_interdomain twice{.remote_dom = 0, .remote_port = endpoint, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(twice)), XEN_EINVAL);
  evtchn_bind_interdomain unknown{.remote_dom = 0, .remote_port = endpoint + 1, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(unknown)), XEN_EINVAL);
  ASSERT_TRUE(this->Close(p));
  EXPECT_TRUE(this->e().BindInterdomain(twice));  // endpoint free again

  Port console = *this->e().ConnectBackend(&echo);
  EXPECT_EQ(this->Status(console).status, uint32_t(EVTCHNSTAT_interdomain));
  ASSERT_TRUE(this->Send(console));
  EXPECT_EQ(echo.received.back(), console);
}

// A PV frontend allocates its port for dom0; the backend binds to it (Xen: bind_interdomain
// from dom0), closes it at disconnect, and binds again when the frontend reconnects.
TYPED_TEST(EngineTest, AttachBackendToFrontendPort) {
  Echo echo;
  echo.engine = &this->e();
  Port p = this->Unbound(0);
  this->g.ClearPending(p);
  Port endpoint = *this->e().AttachBackend(p, &echo);
  auto st = this->Status(p);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_interdomain));
  EXPECT_EQ(st.u.interdomain.dom, 0u);
  EXPECT_EQ(st.u.interdomain.port, endpoint);
  EXPECT_FALSE(this->g.Pending(p));  // Xen notifies the binding side only
  ASSERT_TRUE(this->Send(p));
  ASSERT_EQ(echo.received.size(), 1u);
  EXPECT_EQ(echo.received[0], p);
  EXPECT_TRUE(this->g.Pending(p));
  // Already bound, free, unbound for another domain, bad port: -EINVAL.
  Echo other;
  EXPECT_EQ(this->Errno(this->e().AttachBackend(p, &other)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().AttachBackend(p + 1, &other)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().AttachBackend(this->Unbound(), &other)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().AttachBackend(100000, &other)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().AttachBackend(p, nullptr)), XEN_EINVAL);

  // The backend closes: the guest's port waits for dom0 again, sends go nowhere.
  ASSERT_TRUE(this->e().CloseBackend(endpoint));
  st = this->Status(p);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_unbound));
  EXPECT_EQ(st.u.unbound.dom, 0u);
  ASSERT_TRUE(this->Send(p));
  EXPECT_EQ(echo.received.size(), 1u);
  EXPECT_EQ(this->Errno(this->e().CloseBackend(endpoint)), XEN_EINVAL);
  EXPECT_EQ(this->Errno(this->e().CloseBackend(0)), XEN_EINVAL);
  evtchn_bind_interdomain stale{.remote_dom = 0, .remote_port = endpoint, .local_port = 0};
  EXPECT_EQ(this->Errno(this->e().BindInterdomain(stale)), XEN_EINVAL);

  // Reconnection: the same port attaches again.
  Port again = *this->e().AttachBackend(p, &echo);
  ASSERT_TRUE(this->Send(p));
  EXPECT_EQ(echo.received.size(), 2u);

  // The guest closes first: the endpoint stays the backend's until it closes too.
  ASSERT_TRUE(this->Close(p));
  EXPECT_EQ(this->Status(p).status, uint32_t(EVTCHNSTAT_closed));
  ASSERT_TRUE(this->e().CloseBackend(again));
}

// Endpoints are reused: attach/close cycles (a guest that keeps reconnecting) never run out.
TYPED_TEST(EngineTest, BackendEndpointsAreReused) {
  Echo echo;
  echo.engine = &this->e();
  for (int i = 0; i < 500; ++i) {
    Port p = this->Unbound(0);
    auto endpoint = this->e().AttachBackend(p, &echo);
    ASSERT_TRUE(endpoint) << "cycle " << i;
    ASSERT_TRUE(this->e().CloseBackend(*endpoint));
    ASSERT_TRUE(this->Close(p));
  }
  // And the table is bounded: endpoints held open run out with -ENOSPC, not a crash.
  std::vector<Port> held;
  for (;;) {
    auto endpoint = this->e().AddBackendEndpoint(&echo);
    if (!endpoint) {
      EXPECT_EQ(endpoint.error().xen_errno, XEN_ENOSPC);
      break;
    }
    held.push_back(*endpoint);
    ASSERT_LT(held.size(), 1000u);
  }
  EXPECT_GT(held.size(), 8u);
}

// CloseBackend waits out a send already inside OnGuestSend.
struct SlowBackend : Backend {
  std::atomic<int> inside{0};
  std::atomic<bool> release{false};
  std::atomic<int> calls{0};
  void OnGuestSend(Port) override {
    inside = 1;
    while (!release.load()) std::this_thread::yield();
    calls.fetch_add(1);
    inside = 0;
  }
};

TYPED_TEST(EngineTest, CloseBackendWaitsForSenders) {
  SlowBackend slow;
  Port p = this->Unbound(0);
  Port endpoint = *this->e().AttachBackend(p, &slow);
  std::thread sender([&] { (void)this->Send(p); });
  while (slow.inside.load() == 0) std::this_thread::yield();
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    EXPECT_TRUE(this->e().CloseBackend(endpoint));
    closed = true;
    EXPECT_EQ(slow.inside.load(), 0);  // the send finished before the close returned
  });
  slow.release = true;
  sender.join();
  closer.join();
  EXPECT_TRUE(closed.load());
  EXPECT_EQ(slow.calls.load(), 1);
  ASSERT_TRUE(this->Send(p));  // after the close: not delivered
  EXPECT_EQ(slow.calls.load(), 1);
}

TYPED_TEST(EngineTest, DomainChecks) {
  evtchn_alloc_unbound other{.dom = 5, .remote_dom = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().AllocUnbound(other)), XEN_ESRCH);
  evtchn_alloc_unbound dom0{.dom = 0, .remote_dom = 0, .port = 0};
  EXPECT_EQ(this->Errno(this->e().AllocUnbound(dom0)), XEN_EPERM);
  evtchn_alloc_unbound own_id{.dom = 1, .remote_dom = 0, .port = 0};
  EXPECT_TRUE(this->e().AllocUnbound(own_id));
  evtchn_status st{};
  st.dom = 5;
  st.port = 1;
  EXPECT_EQ(this->Errno(this->e().Status(st)), XEN_ESRCH);
  EXPECT_EQ(this->Errno(this->e().Reset(evtchn_reset{.dom = 0})), XEN_EPERM);
}

TYPED_TEST(EngineTest, StatusOfFreeAndReservedPortsIsClosed) {
  EXPECT_EQ(this->Status(0).status, uint32_t(EVTCHNSTAT_closed));
  this->Unbound();  // makes sure the bucket of port 5 exists
  EXPECT_EQ(this->Status(5).status, uint32_t(EVTCHNSTAT_closed));
}

TYPED_TEST(EngineTest, ResetClosesEverything) {
  Port a = this->Ipi(1);
  Port t = *this->Virq(VIRQ_TIMER, 2);
  ASSERT_TRUE(this->Send(a));
  ASSERT_TRUE(this->e().Reset(evtchn_reset{.dom = DOMID_SELF}));
  EXPECT_EQ(this->Status(a).status, uint32_t(EVTCHNSTAT_closed));
  EXPECT_EQ(this->Status(t).status, uint32_t(EVTCHNSTAT_closed));
  EXPECT_FALSE(this->g.Pending(a));
  EXPECT_TRUE(this->Virq(VIRQ_TIMER, 2));  // VIRQ free again
  EXPECT_EQ(this->Unbound(), 2u);          // lowest free again (timer took 1)
}

// ---- polling ----

TYPED_TEST(EngineTest, PollSeesPendingAndIsWokenByMaskedEvent) {
  Port ready = this->Ipi(0), waited = this->Ipi(0), other = this->Ipi(0);
  ASSERT_TRUE(this->Send(ready));
  Port both[] = {waited, ready};
  EXPECT_EQ(this->e().BeginPoll(0, both).value(), true);
  this->e().EndPoll(0);

  Port one[] = {waited};
  EXPECT_EQ(this->e().BeginPoll(0, one).value(), false);
  ASSERT_TRUE(this->Send(other));  // not the polled port
  EXPECT_EQ(this->g.sinks[0].poll_wakes, 0);
  this->g.SetMask(waited, true);
  ASSERT_TRUE(this->Send(waited));
  EXPECT_EQ(this->g.sinks[0].poll_wakes, 1);  // masked ports wake pollers too
  this->e().EndPoll(0);
  this->g.ClearPending(waited);
  ASSERT_TRUE(this->Send(waited));
  EXPECT_EQ(this->g.sinks[0].poll_wakes, 1);  // no longer polling

  Port bad[] = {TypeParam::kPorts};
  EXPECT_EQ(this->Errno(this->e().BeginPoll(0, bad)), XEN_EINVAL);
}

// ---- mode changes ----

using Engine64Test = EngineTest<abi::Layout64>;

TEST_F(Engine64Test, SwitchingToCompatClosesPortsBeyond1024) {
  for (int i = 1; i < 1100; ++i) Unbound();
  e().SetAbi(Abi::kCompat);
  EXPECT_EQ(e().MaxPorts(), 1024u);
  EXPECT_EQ(e().abi(), Abi::kCompat);
  EXPECT_EQ(Errno(Send(1050)), XEN_EINVAL);
  e().SetAbi(Abi::k64);
  EXPECT_EQ(Status(1050).status, uint32_t(EVTCHNSTAT_closed));
  EXPECT_EQ(Status(1000).status, uint32_t(EVTCHNSTAT_unbound));
}

// ---- the slow path: pages not mapped right now ----

TYPED_TEST(EngineTest, UnmappedVcpuInfoGoesToShadowUntilSync) {
  Port p = this->Ipi(1);
  ASSERT_TRUE(this->g.memory.RemoveSlot(kSharedInfoSlot));
  // shared_info is gone too, so the whole event is deferred.
  ASSERT_TRUE(this->Send(p));
  EXPECT_FALSE(this->g.Pending(p));
  this->e().RunDeferredWork();  // still unmapped: stays deferred
  EXPECT_FALSE(this->g.Pending(p));
  ASSERT_TRUE(this->g.memory.AddSlot(kSharedInfoSlot, kSharedInfoGpa, abi::kPageSize,
                                     this->g.shared_page.get()));
  this->e().RunDeferredWork();
  EXPECT_TRUE(this->g.Pending(p));
  EXPECT_TRUE(this->g.SelectorBit(1, p));
  EXPECT_EQ(this->g.sinks[1].injects, 1);
  EXPECT_EQ(this->e().Counters(p).deferred, 1u);
  EXPECT_EQ(this->e().Counters(p).raised(), 1u);
}

TYPED_TEST(EngineTest, SelectorShadowIsFoldedInWithOrThenClear) {
  // vcpu_info of vCPU 2 registered outside any slot's current position: deliveries shadow.
  auto page = testing::AllocPages(abi::kPageSize);
  ASSERT_TRUE(this->g.memory.AddSlot(5, kMovedGpa, abi::kPageSize, page.get()));
  ASSERT_TRUE(this->e().SetVcpuInfoGpa(2, kMovedGpa));
  const auto before_sel = this->g.sinks[2].injects.load();
  this->e().SyncVcpu(2);
  page.get()[TypeParam::kUpcallPending] = 0;
  std::fill(page.get(), page.get() + 64, uint8_t{0});
  ASSERT_TRUE(this->g.memory.RemoveSlot(5));
  Port p = this->Ipi(2);
  ASSERT_TRUE(this->Send(p));
  EXPECT_TRUE(this->g.Pending(p));
  EXPECT_GE(this->g.sinks[2].sync_requests, 1);
  EXPECT_EQ(this->g.sinks[2].injects, before_sel);
  ASSERT_TRUE(this->g.memory.AddSlot(5, kMovedGpa, abi::kPageSize, page.get()));
  this->e().SyncVcpu(2);
  using Word = typename TypeParam::Word;
  Word sel = *reinterpret_cast<Word*>(page.get() + TypeParam::kPendingSel);
  EXPECT_EQ(sel, Word(1) << (p / TypeParam::kBitsPerWord));
  EXPECT_EQ(page.get()[TypeParam::kUpcallPending], 1);
  EXPECT_EQ(this->g.sinks[2].injects, before_sel + 1);
  this->e().SyncVcpu(2);  // nothing left in the shadow: no second injection
  EXPECT_EQ(this->g.sinks[2].injects, before_sel + 1);
}

TYPED_TEST(EngineTest, MovingSharedInfoKeepsItsContents) {
  auto page = testing::AllocPages(abi::kPageSize);
  ASSERT_TRUE(this->g.memory.AddSlot(5, kMovedGpa, abi::kPageSize, page.get()));
  Port p = this->Ipi(0);
  this->g.SetMask(p + 9, true);
  ASSERT_TRUE(this->Send(p));
  const uint32_t follow[] = {0, 1, 2, 3};
  ASSERT_TRUE(this->e().SetSharedInfoGpa(kMovedGpa, follow));
  using Word = typename TypeParam::Word;
  auto word = [&](size_t off) { return *reinterpret_cast<Word*>(page.get() + off); };
  EXPECT_EQ(word(TypeParam::kEvtchnPending) >> p & 1, 1u);
  EXPECT_EQ(word(TypeParam::kEvtchnMask) >> (p + 9) & 1, 1u);
  // Default-slot vcpu_info moves along: vCPU 0's selector and upcall_pending came with the page
  // and new events for it land in the new place.
  EXPECT_EQ(word(TypeParam::kPendingSel) >> (p / TypeParam::kBitsPerWord) & 1, 1u);
  EXPECT_EQ(this->Errno(this->e().SetSharedInfoGpa(0x7000'0000)), XEN_EFAULT);
  EXPECT_EQ(this->Errno(this->e().SetSharedInfoGpa(kMovedGpa + 8)), XEN_EINVAL);
  Port q = this->Ipi(1);
  ASSERT_TRUE(this->Send(q));
  EXPECT_EQ(
      word(TypeParam::kVcpuInfoSize + TypeParam::kPendingSel) >> (q / TypeParam::kBitsPerWord) & 1,
      1u);
  EXPECT_EQ(page.get()[TypeParam::kVcpuInfoSize + TypeParam::kUpcallPending], 1);
  EXPECT_FALSE(this->g.SelectorBit(1, q));  // nothing written to the old page
}

TYPED_TEST(EngineTest, RegisteringVcpuInfoElsewhereCopiesAndRescans) {
  Port p = this->Ipi(3);
  ASSERT_TRUE(this->Send(p));
  this->g.UpcallPending(3) = 0;
  const uint64_t new_gpa = 0x8000 + 64;  // in ordinary RAM
  ASSERT_TRUE(this->e().SetVcpuInfoGpa(3, new_gpa));
  uint8_t* vi = this->g.ram.get() + new_gpa;
  using Word = typename TypeParam::Word;
  EXPECT_EQ(*reinterpret_cast<Word*>(vi + TypeParam::kPendingSel), Word(~Word(0)));
  EXPECT_EQ(vi[TypeParam::kUpcallPending], 1);
  EXPECT_EQ(this->Errno(this->e().SetVcpuInfoGpa(3, 0x8000 + 4032 + 8)),
            XEN_EINVAL);  // crosses a page
  EXPECT_EQ(this->Errno(this->e().SetVcpuInfoGpa(3, 0x7000'0000)), XEN_EFAULT);
  EXPECT_EQ(this->Errno(this->e().SetVcpuInfoGpa(9, new_gpa)), XEN_ENOENT);
}

TYPED_TEST(EngineTest, EventsBeforeSharedInfoIsSetArriveWhenItIs) {
  FakeGuest<TypeParam> fresh(1);
  // A second engine over fresh memory with no shared_info yet.
  Engine engine(fresh.memory, Engine::Options{.domid = 1, .start_worker = false});
  engine.SetAbi(std::is_same_v<TypeParam, abi::Layout64> ? Abi::k64 : Abi::kCompat);
  testing::RecordingSink sink;
  ASSERT_TRUE(engine.AddVcpu(0, &sink));
  evtchn_bind_ipi op{.vcpu = 0, .port = 0};
  ASSERT_TRUE(engine.BindIpi(op));
  ASSERT_TRUE(engine.Send(evtchn_send{.port = op.port}));
  EXPECT_EQ(sink.injects, 0);
  ASSERT_TRUE(engine.SetSharedInfoGpa(testing::kSharedInfoGpa));
  EXPECT_TRUE(fresh.Pending(op.port));
  ASSERT_TRUE(engine.SetVcpuInfoGpa(0, testing::kSharedInfoGpa));
  EXPECT_TRUE(fresh.SelectorBit(0, op.port));
  EXPECT_EQ(sink.injects, 1);
}

}  // namespace
}  // namespace xenkvm::evtchn
