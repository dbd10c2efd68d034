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

/* Ports the VMM may have connected before boot (console, xenstore), as the toolstack does. */
static evtchn_port_t preset[2];

static bool is_preset(evtchn_port_t port) { return port == preset[0] || port == preset[1]; }

static evtchn_port_t preset_param(uint32_t index) {
  xen_hvm_param_t p = {.domid = DOMID_SELF, .index = index};
  return HYPERVISOR_hvm_op(HVMOP_get_param, &p) == 0 ? (evtchn_port_t)p.value : 0;
}

void guest_main(void) {
  stage(10);
  preset[0] = preset_param(HVM_PARAM_CONSOLE_EVTCHN);
  preset[1] = preset_param(HVM_PARAM_STORE_EVTCHN);
  if (preset[0] || preset[1])
    printk("port_limits: console port %u, xenstore port %u in use from boot\n", preset[0],
           preset[1]);
  evtchn_port_t p;
  for (evtchn_port_t want = 1; want < GUEST_NR_PORTS; want++) {
    if (is_preset(want)) continue;
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
  CHECK(!is_preset(77) && !is_preset(1000) && !is_preset(GUEST_NR_PORTS - 1),
        "preset ports collide with the test's choice");
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
  printk("port_limits: ports 1..%u allocated, then -ENOSPC\n", GUEST_NR_PORTS - 1);
}
