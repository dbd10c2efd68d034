/* upcall_vector: event delivery through the per-vCPU upcall vector
 * (HVMOP_set_evtchn_upcall_vector; setting it re-raises what is already pending), loopback events
 * over many ports (several selector words), and masked-then-unmasked delivery where EVTCHNOP_unmask
 * re-raises the pending event. */
#include "guest.h"

GUEST_NAME("upcall_vector");

#define NR_PAIRS 40 /* 80 ports: the scan must cover more than one selector word */

static evtchn_port_t pa[NR_PAIRS], pb[NR_PAIRS];
static evtchn_port_t ap_ipi;
static volatile uint32_t ap_phase;

/* vCPU1 routes its upcalls to the vector but leaves its LAPIC software-disabled until vCPU0
 * has made an IPI pending for it: an interrupt sent meanwhile is lost in the LAPIC, so the
 * VMM must raise the upcall again when the LAPIC comes up. */
static void ap_main(unsigned id) {
  EXPECT_RC(upcall_vector_set(id, UPCALL_VECTOR), 0);
  EXPECT_RC(evtchn_bind_ipi(id, &ap_ipi), 0);
  __atomic_store_n(&ap_phase, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&ap_phase, __ATOMIC_SEQ_CST) != 2) cpu_relax();
  if (port_hits[ap_ipi]) printk("upcall_vector: vcpu1 took the upcall before enabling its LAPIC\n");
  lapic_enable();
  CHECK(WAIT_FOR(port_hits[ap_ipi] == 1, 2000),
        "upcall pending when the LAPIC was enabled was not delivered (upcall_pending %u)",
        vcpu_info_of(id)->evtchn_upcall_pending);
  __atomic_store_n(&ap_phase, 3, __ATOMIC_SEQ_CST);
}

void guest_main(void) {
  stage(10);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  lapic_enable();
  EXPECT_RC(upcall_vector_set(0, 0x0f), -XEN_EINVAL); /* vectors below 0x10 are refused */

  /* Events raised before any vector is set wait in shared_info; setting the vector
   * re-raises them at once. bind_interdomain leaves the new port pending. */
  stage(11);
  EXPECT_RC(evtchn_loopback_pair(&pa[0], &pb[0]), 0);
  evtchn_port_t a = pa[0], b = pb[0];
  CHECK(a != b && a > 0 && b > 0, "bad loopback ports %u %u", a, b);
  CHECK(evtchn_is_pending(b), "bind_interdomain did not set port %u pending", b);
  CHECK(vcpu_info_of(0)->evtchn_upcall_pending, "evtchn_upcall_pending not set");
  CHECK(!WAIT_FOR(upcall_count[0] != 0, 20), "upcall before a vector was set");
  EXPECT_RC(upcall_vector_set(0, UPCALL_VECTOR), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000),
        "setting the vector did not deliver pending port %u (hits %u, upcalls %u)", b, port_hits[b],
        upcall_count[0]);
  CHECK(upcall_count[0] >= 1, "no upcall counted");
  stage(12);
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(WAIT_FOR(port_hits[b] == 2, 2000), "send on %u did not reach %u", a, b);
  EXPECT_RC(evtchn_send(b), 0);
  CHECK(WAIT_FOR(port_hits[a] == 1, 2000), "send on %u did not reach %u", b, a);
  CHECK(!evtchn_is_pending(a) && !evtchn_is_pending(b), "handled ports still pending");

  /* Masked, then unmasked: the event waits in evtchn_pending and EVTCHNOP_unmask raises it. */
  stage(13);
  evtchn_mask(b);
  uint32_t upcalls_before = upcall_count[0];
  EXPECT_RC(evtchn_send(a), 0);
  EXPECT_RC(evtchn_send(a), 0); /* coalesces with the first */
  CHECK(evtchn_is_pending(b), "masked port %u not pending after send", b);
  CHECK(!WAIT_FOR(port_hits[b] != 2, 50), "masked port %u was delivered", b);
  CHECK(upcall_count[0] == upcalls_before, "upcall for a masked port");
  stage(14);
  EXPECT_RC(evtchn_unmask(b), 0);
  CHECK(!evtchn_is_masked(b), "EVTCHNOP_unmask left port %u masked", b);
  CHECK(WAIT_FOR(port_hits[b] == 3, 2000), "unmask did not re-raise pending port %u (hits %u)", b,
        port_hits[b]);
  CHECK(!WAIT_FOR(port_hits[b] != 3, 30), "coalesced sends delivered twice");
  /* Unmasking a port with nothing pending raises nothing. */
  evtchn_mask(b);
  EXPECT_RC(evtchn_unmask(b), 0);
  CHECK(!WAIT_FOR(port_hits[b] != 3, 30), "unmask of an idle port raised it");

  /* Many ports in more than one selector word, all sent before any is handled. */
  stage(15);
  for (int i = 1; i < NR_PAIRS; i++) EXPECT_RC(evtchn_loopback_pair(&pa[i], &pb[i]), 0);
  CHECK(pb[NR_PAIRS - 1] >= 64, "expected ports beyond 63, last is %u", pb[NR_PAIRS - 1]);
  for (int i = 1; i < NR_PAIRS; i++)
    CHECK(WAIT_FOR(port_hits[pb[i]] == 1, 2000), "bind event for port %u missing", pb[i]);
  stage(16);
  irq_disable();
  for (int i = 0; i < NR_PAIRS; i++) EXPECT_RC(evtchn_send(pb[i]), 0);
  irq_enable();
  for (int i = 0; i < NR_PAIRS; i++)
    CHECK(WAIT_FOR(port_hits[pa[i]] == (i == 0 ? 2u : 1u), 2000), "port %u: %u events, expected %u",
          pa[i], port_hits[pa[i]], i == 0 ? 2u : 1u);

  stage(17);
  EXPECT_RC(vcpu_start(1, ap_main), 0);
  CHECK(WAIT_FOR(ap_phase == 1, 2000), "vcpu1 did not bind its IPI");
  EXPECT_RC(evtchn_send(ap_ipi), 0);
  CHECK(WAIT_FOR(vcpu_info_of(1)->evtchn_upcall_pending || port_hits[ap_ipi], 2000),
        "IPI to vcpu1 did not set its evtchn_upcall_pending");
  __atomic_store_n(&ap_phase, 2, __ATOMIC_SEQ_CST);
  CHECK(WAIT_FOR(ap_phase == 3, 5000), "vcpu1 did not finish");
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("upcall_vector: %u upcalls, %u ports\n", upcall_count[0], 2 * NR_PAIRS);
}
