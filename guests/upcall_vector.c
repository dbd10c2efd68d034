/* upcall_vector: event delivery through the per-vCPU upcall vector
 * (HVMOP_set_evtchn_upcall_vector), loopback events over many ports (several selector words),
 * and masked-then-unmasked delivery where EVTCHNOP_unmask re-raises the pending event. */
#include "guest.h"

GUEST_NAME("upcall_vector");

#define NR_PAIRS 40 /* 80 ports: the scan must cover more than one selector word */

static evtchn_port_t pa[NR_PAIRS], pb[NR_PAIRS];

void guest_main(void) {
  stage(10);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  lapic_enable();
  EXPECT_RC(upcall_vector_set(0, 0x0f), -XEN_EINVAL); /* vectors below 0x10 are refused */
  EXPECT_RC(upcall_vector_set(0, UPCALL_VECTOR), 0);

  /* Vector injection: a loopback pair; bind_interdomain leaves the new port pending. */
  stage(11);
  EXPECT_RC(evtchn_loopback_pair(&pa[0], &pb[0]), 0);
  evtchn_port_t a = pa[0], b = pb[0];
  CHECK(a != b && a > 0 && b > 0, "bad loopback ports %u %u", a, b);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "bind_interdomain did not raise port %u (hits %u)",
        b, port_hits[b]);
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
  CHECK(WAIT_FOR(port_hits[b] == 3, 2000), "unmask did not re-raise pending port %u (hits %u)",
        b, port_hits[b]);
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
    CHECK(WAIT_FOR(port_hits[pa[i]] == (i == 0 ? 2u : 1u), 2000),
          "port %u: %u events, expected %u", pa[i], port_hits[pa[i]], i == 0 ? 2u : 1u);
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("upcall_vector: %u upcalls, %u ports\n", upcall_count[0], 2 * NR_PAIRS);
}
