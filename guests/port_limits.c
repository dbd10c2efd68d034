/* port_limits: EVTCHNOP_alloc_unbound hands out ports lowest-free from 1 (port 0 is reserved)
 * until all 4096 ports of the 64-bit 2-level ABI are in use, then answers -ENOSPC; a closed
 * port is reused; EVTCHNOP_reset frees them all. */
#include "guest.h"

GUEST_NAME("port_limits");

static long alloc_raw(evtchn_port_t* port) {
  evtchn_alloc_unbound_t op = {.dom = DOMID_SELF, .remote_dom = DOMID_SELF};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &op);
  *port = op.port;
  return rc;
}

void guest_main(void) {
  stage(10);
  evtchn_port_t p;
  for (evtchn_port_t want = 1; want < GUEST_NR_PORTS; want++) {
    long rc = alloc_raw(&p);
    CHECK(rc == 0, "alloc_unbound #%u returned %ld", want, rc);
    CHECK(p == want, "alloc_unbound #%u gave port %u", want, p);
  }
  stage(11);
  EXPECT_RC(alloc_raw(&p), -XEN_ENOSPC);
  EXPECT_RC(evtchn_bind_ipi(0, &p), -XEN_ENOSPC);
  evtchn_port_t v;
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &v), -XEN_ENOSPC);

  stage(12);
  EXPECT_RC(evtchn_close(1000), 0);
  EXPECT_RC(evtchn_close(77), 0);
  EXPECT_RC(alloc_raw(&p), 0);
  CHECK(p == 77, "reuse gave port %u, expected 77", p);
  EXPECT_RC(alloc_raw(&p), 0);
  CHECK(p == 1000, "reuse gave port %u, expected 1000", p);
  EXPECT_RC(alloc_raw(&p), -XEN_ENOSPC);
  EXPECT_RC(evtchn_close(GUEST_NR_PORTS - 1), 0);
  EXPECT_RC(alloc_raw(&p), 0);
  CHECK(p == GUEST_NR_PORTS - 1, "reuse gave port %u, expected %u", p, GUEST_NR_PORTS - 1);

  stage(13);
  EXPECT_RC(evtchn_reset_self(), 0);
  EXPECT_RC(alloc_raw(&p), 0);
  CHECK(p == 1, "first port after reset is %u", p);
  EXPECT_RC(alloc_raw(&p), 0);
  CHECK(p == 2, "second port after reset is %u", p);
  printk("port_limits: %u ports allocated, then -ENOSPC\n", GUEST_NR_PORTS - 1);
}
