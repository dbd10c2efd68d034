/* callback_vector: delivery through Xen's global callback vector (HVM_PARAM_CALLBACK_IRQ
 * type 2) on vCPU0 and on a secondary vCPU, of events pending before the callback was set
 * and of events raised while interrupts were off. Neither vCPU enables its LAPIC and the handler
 * never EOIs, as small guest OSes do; waits use `sti; hlt`. */
#include "guest.h"

GUEST_NAME("callback_vector");

#define ROUNDS 10

static evtchn_port_t ipi_to_1, ipi_to_0;
static volatile uint32_t ap_ready;

static void ap_main(unsigned id) {
  EXPECT_RC(evtchn_bind_ipi(id, &ipi_to_1), 0);
  __atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
  /* Answer every IPI from vCPU0 with one back. */
  for (uint32_t seen = 0; seen < ROUNDS; seen++) {
    HALT_UNTIL(port_hits[ipi_to_1] > seen);
    CHECK(port_last_vcpu[ipi_to_1] == 1, "IPI for vcpu1 handled on vcpu%u",
          port_last_vcpu[ipi_to_1]);
    EXPECT_RC(evtchn_send(ipi_to_0), 0);
  }
}

void guest_main(void) {
  stage(10);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  /* An event pending before the callback is set is delivered once it is (Xen checks
   * evtchn_upcall_pending at every VM entry). */
  evtchn_port_t a, b;
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(evtchn_is_pending(b), "bind_interdomain did not set port %u pending", b);
  CHECK(!WAIT_FOR(upcall_count[0] != 0, 20), "upcall before a callback was set");
  EXPECT_RC(callback_vector_set(CALLBACK_VECTOR), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "setting the callback did not deliver pending port %u",
        b);
  xen_hvm_param_t p = {.domid = DOMID_SELF, .index = HVM_PARAM_CALLBACK_IRQ};
  EXPECT_RC(HYPERVISOR_hvm_op(HVMOP_get_param, &p), 0);
  CHECK(p.value == ((2ull << 56) | CALLBACK_VECTOR), "CALLBACK_IRQ reads back %lx", p.value);

  stage(11);
  for (uint32_t i = 0; i < ROUNDS; i++) {
    EXPECT_RC(evtchn_send(a), 0);
    HALT_UNTIL(port_hits[b] == 2 + i);
  }
  CHECK(upcall_count[0] >= ROUNDS, "only %u upcalls", upcall_count[0]);
  /* Raised while interrupts are off: held back, then taken as soon as they are on. */
  irq_disable();
  EXPECT_RC(evtchn_send(a), 0);
  delay_ms_irqs_unchanged(30);
  CHECK(port_hits[b] == ROUNDS + 1, "upcall taken with interrupts off");
  irq_enable();
  CHECK(WAIT_FOR(port_hits[b] == ROUNDS + 2, 2000), "upcall raised under cli never arrived");

  stage(12);
  unsigned n = vcpu_count();
  CHECK(n >= 2, "needs 2 vCPUs, VCPUOP_is_up found %u", n);
  EXPECT_RC(evtchn_bind_ipi(0, &ipi_to_0), 0);
  EXPECT_RC(vcpu_start(1, ap_main), 0);
  CHECK(WAIT_FOR(ap_ready, 5000), "vcpu1 did not bind its IPI");
  stage(13);
  for (uint32_t i = 0; i < ROUNDS; i++) {
    EXPECT_RC(evtchn_send(ipi_to_1), 0);
    CHECK(WAIT_FOR(port_hits[ipi_to_0] == i + 1, 2000),
          "round %u: no reply from vcpu1 (vcpu1 got %u IPIs, %u upcalls)", i, port_hits[ipi_to_1],
          upcall_count[1]);
  }
  CHECK(port_last_vcpu[ipi_to_0] == 0, "IPI for vcpu0 handled on vcpu%u", port_last_vcpu[ipi_to_0]);
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("callback_vector: vcpu0 %u upcalls, vcpu1 %u upcalls\n", upcall_count[0], upcall_count[1]);
}
