/* evtchn_ops: the EVTCHNOP_* operations between two vCPUs — loopback (alloc_unbound with
 * remote = self, then bind_interdomain), IPI vCPU0 -> vCPU1, interdomain to the VMM's echo
 * backend (remote_dom 0, remote_port 1: it answers each send with an event on the same port),
 * status, bind_vcpu, unmask of another vCPU's port, SCHEDOP_poll woken from another vCPU,
 * close, port reuse and reset. vCPU1 uses a registered vcpu_info (VCPUOP_register_vcpu_info). */
#include "guest.h"

GUEST_NAME("evtchn_ops");

static evtchn_port_t ipi1, kick1, timer1;
static volatile uint32_t ap_ready;
static volatile evtchn_port_t ap_send_later; /* vCPU1: send on this port about 20 ms from now */

static uint8_t vcpu1_info_page[4096] __attribute__((aligned(4096)));

static void ap_main(unsigned id) {
  /* vCPU1 takes its events through a registered vcpu_info, away from shared_info. */
  EXPECT_RC(vcpu_info_register(id, vcpu1_info_page + 4096 - 32), -XEN_EINVAL); /* crosses */
  EXPECT_RC(vcpu_info_register(id, vcpu1_info_page + 128), 0);
  evtchn_setup_vector();
  EXPECT_RC(evtchn_bind_ipi(id, &ipi1), 0);
  EXPECT_RC(evtchn_bind_ipi(id, &kick1), 0);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, id, &timer1), 0); /* per-vCPU: vCPU0 may bind it too */
  __atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
  for (;;) {
    HALT_UNTIL(ap_send_later != 0); /* vCPU0 kicks us through kick1 */
    evtchn_port_t port = ap_send_later;
    WAIT_FOR(false, 20);
    EXPECT_RC(evtchn_send(port), 0);
    ap_send_later = 0;
  }
}

static evtchn_status_t status_of(evtchn_port_t port) {
  evtchn_status_t st;
  EXPECT_RC(evtchn_status(port, &st), 0);
  return st;
}

#define EXPECT_STATUS(port, want)                                                           \
  do {                                                                                      \
    evtchn_status_t s_ = status_of(port);                                                   \
    CHECK(s_.status == (want), "line %d: port %u status %u, expected %u", __LINE__, (port), \
          s_.status, (want));                                                               \
  } while (0)

void guest_main(void) {
  stage(10);
  evtchn_setup_vector();
  EXPECT_RC(vcpu_start(1, ap_main), 0);
  CHECK(WAIT_FOR(ap_ready, 5000), "vcpu1 did not set up");

  /* Loopback, step by step. */
  stage(11);
  evtchn_port_t a, b;
  EXPECT_RC(evtchn_alloc_unbound(DOMID_SELF, &a), 0);
  EXPECT_STATUS(a, EVTCHNSTAT_unbound);
  EXPECT_RC(evtchn_send(a), 0); /* unbound: dropped */
  CHECK(!WAIT_FOR(port_hits[a] != 0, 20), "send on an unbound port raised it");
  EXPECT_RC(evtchn_bind_interdomain(DOMID_SELF, a, &b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "bind_interdomain did not raise the new port %u", b);
  evtchn_status_t st = status_of(a);
  CHECK(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.port == b && st.vcpu == 0,
        "status(%u): %u port %u vcpu %u", a, st.status, st.u.interdomain.port, st.vcpu);
  st = status_of(b);
  CHECK(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.port == a, "status(%u): %u port %u",
        b, st.status, st.u.interdomain.port);
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(WAIT_FOR(port_hits[b] == 2, 2000), "loopback %u -> %u lost", a, b);
  EXPECT_RC(evtchn_send(b), 0);
  CHECK(WAIT_FOR(port_hits[a] == 1, 2000), "loopback %u -> %u lost", b, a);

  /* IPI from vCPU0 to vCPU1. */
  stage(12);
  st = status_of(ipi1);
  CHECK(st.status == EVTCHNSTAT_ipi && st.vcpu == 1, "IPI port %u: status %u vcpu %u", ipi1,
        st.status, st.vcpu);
  for (uint32_t i = 1; i <= 5; i++) {
    EXPECT_RC(evtchn_send(ipi1), 0);
    CHECK(WAIT_FOR(port_hits[ipi1] == i, 2000), "IPI %u to vcpu1 lost", i);
    CHECK(port_last_vcpu[ipi1] == 1, "IPI handled on vcpu%u", port_last_vcpu[ipi1]);
  }
  /* Masked on vCPU1, unmasked by vCPU0: the pending event still goes to vCPU1. */
  evtchn_mask(ipi1);
  EXPECT_RC(evtchn_send(ipi1), 0);
  CHECK(!WAIT_FOR(port_hits[ipi1] != 5, 30), "masked IPI delivered");
  EXPECT_RC(evtchn_unmask(ipi1), 0);
  CHECK(WAIT_FOR(port_hits[ipi1] == 6, 2000), "unmask from vcpu0 did not raise vcpu1's IPI");
  CHECK(port_last_vcpu[ipi1] == 1, "IPI handled on vcpu%u after unmask", port_last_vcpu[ipi1]);
  st = status_of(timer1);
  CHECK(st.status == EVTCHNSTAT_virq && st.vcpu == 1 && st.u.virq == VIRQ_TIMER,
        "vcpu1's timer port %u: status %u vcpu %u virq %u", timer1, st.status, st.vcpu, st.u.virq);

  /* SCHEDOP_poll on vCPU0 woken by a send from vCPU1 on a masked port. */
  evtchn_port_t pa0, pb0;
  EXPECT_RC(evtchn_loopback_pair(&pa0, &pb0), 0);
  CHECK(WAIT_FOR(port_hits[pb0] == 1, 2000), "bind event lost");
  evtchn_mask(pb0);
  ap_send_later = pa0;
  EXPECT_RC(evtchn_send(kick1), 0);
  sched_poll_t poll = {.nr_ports = 1, .timeout = now_ns() + 5000000000ull};
  set_xen_guest_handle(poll.ports, &pb0);
  EXPECT_RC(HYPERVISOR_sched_op(SCHEDOP_poll, &poll), 0);
  CHECK(evtchn_is_pending(pb0), "poll returned before vcpu1's send");
  CHECK(WAIT_FOR(ap_send_later == 0, 2000), "vcpu1 did not finish its send");
  EXPECT_RC(evtchn_unmask(pb0), 0);
  CHECK(WAIT_FOR(port_hits[pb0] == 2, 2000), "polled event not delivered after unmask");

  CHECK(shinfo->vcpu_info[1].evtchn_pending_sel == 0 &&
            shinfo->vcpu_info[1].evtchn_upcall_pending == 0,
        "events for vcpu1 went to its old vcpu_info slot");

  /* Interdomain to the VMM echo backend (endpoint 1 of domain 0). */
  stage(13);
  evtchn_port_t e;
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e), 0);
  CHECK(WAIT_FOR(port_hits[e] == 1, 2000), "bind to the echo backend did not raise port %u", e);
  st = status_of(e);
  CHECK(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == 0 &&
            st.u.interdomain.port == 1,
        "echo port %u: status %u dom %u port %u", e, st.status, st.u.interdomain.dom,
        st.u.interdomain.port);
  for (uint32_t i = 2; i <= 6; i++) {
    EXPECT_RC(evtchn_send(e), 0);
    CHECK(WAIT_FOR(port_hits[e] == i, 2000), "echo %u did not come back on port %u", i - 1, e);
  }
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e), -XEN_EINVAL); /* endpoint already connected */
  /* Closing our end frees the endpoint for a new binding. */
  EXPECT_RC(evtchn_close(e), 0);
  uint32_t e_hits = port_hits[e];
  evtchn_port_t e2;
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e2), 0);
  CHECK(e2 == e, "rebinding the echo endpoint gave port %u, lowest free is %u", e2, e);
  CHECK(WAIT_FOR(port_hits[e] == e_hits + 1, 2000), "rebind did not raise port %u", e);
  EXPECT_RC(evtchn_send(e), 0);
  CHECK(WAIT_FOR(port_hits[e] == e_hits + 2, 2000), "echo after rebind lost");

  /* bind_vcpu: move a loopback end to vCPU1 and back. */
  stage(14);
  EXPECT_RC(evtchn_bind_vcpu(b, 1), 0);
  CHECK(status_of(b).vcpu == 1, "status after bind_vcpu: vcpu %u", status_of(b).vcpu);
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(WAIT_FOR(port_hits[b] == 3, 2000), "event after bind_vcpu lost");
  CHECK(port_last_vcpu[b] == 1, "bound to vcpu1 but handled on vcpu%u", port_last_vcpu[b]);
  EXPECT_RC(evtchn_bind_vcpu(b, 0), 0);
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(WAIT_FOR(port_hits[b] == 4, 2000), "event after bind_vcpu back lost");
  CHECK(port_last_vcpu[b] == 0, "bound to vcpu0 but handled on vcpu%u", port_last_vcpu[b]);
  EXPECT_RC(evtchn_bind_vcpu(b, 99), -XEN_ENOENT);
  EXPECT_RC(evtchn_bind_vcpu(ipi1, 0), -XEN_EINVAL); /* IPIs stay on their vCPU */
  evtchn_port_t t;
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &t), 0);
  EXPECT_RC(evtchn_bind_vcpu(t, 1), -XEN_EINVAL); /* so do per-vCPU VIRQs */
  EXPECT_STATUS(t, EVTCHNSTAT_virq);

  /* close: the peer goes back to unbound; the closed port is free and reused lowest-first. */
  stage(15);
  EXPECT_RC(evtchn_close(b), 0);
  EXPECT_STATUS(b, EVTCHNSTAT_closed);
  EXPECT_STATUS(a, EVTCHNSTAT_unbound);
  EXPECT_RC(evtchn_send(a), 0); /* peer gone: dropped */
  EXPECT_RC(evtchn_send(b), -XEN_EINVAL);
  EXPECT_RC(evtchn_close(b), -XEN_EINVAL);
  EXPECT_RC(evtchn_close(ipi1), 0);
  EXPECT_STATUS(ipi1, EVTCHNSTAT_closed);
  EXPECT_RC(evtchn_close(t), 0);
  evtchn_port_t lowest = b < ipi1 ? b : ipi1;
  lowest = t < lowest ? t : lowest;
  evtchn_port_t r;
  EXPECT_RC(evtchn_alloc_unbound(0, &r), 0);
  CHECK(r == lowest, "alloc after close gave port %u, lowest free is %u", r, lowest);
  CHECK(port_hits[b] == 4, "closed port %u still got events", b);

  /* reset: every port closed, numbering starts again at 1, endpoints can be rebound. */
  stage(16);
  EXPECT_RC(evtchn_reset_self(), 0);
  EXPECT_STATUS(a, EVTCHNSTAT_closed);
  EXPECT_STATUS(e, EVTCHNSTAT_closed);
  EXPECT_STATUS(r, EVTCHNSTAT_closed);
  EXPECT_RC(evtchn_alloc_unbound(0, &r), 0);
  CHECK(r == 1, "first port after reset is %u", r);
  uint32_t hits_before = port_hits[2];
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e), 0);
  CHECK(e == 2, "echo rebind got port %u, expected 2", e);
  CHECK(WAIT_FOR(port_hits[e] == hits_before + 1, 2000), "rebind did not raise port %u", e);
  EXPECT_RC(evtchn_send(e), 0);
  CHECK(WAIT_FOR(port_hits[e] == hits_before + 2, 2000), "echo after reset lost");
  CHECK(stray_events == 0, "%u stray events", stray_events);
}
