/* pirq_device: a device's MSI as a Xen PIRQ, end to end, with `xenkvm run --test-device`
 * (abi/platform.h): PHYSDEVOP_map_pirq/unmap/eoi/irq_status_query/get_free_pirq with Xen's
 * answers for an HVM guest, then Linux's way to an MSI PIRQ (get_free_pirq, the device's MSI
 * programmed with vector 0 and the PIRQ in the address, EVTCHNOP_bind_pirq). The device fires
 * from a host thread through eventfd -> route -> PIRQ -> port -> upcall: paced (exactly N
 * events), in a burst (nothing left pending after the last), after EVTCHNOP_bind_vcpu to vCPU1,
 * and after close. Last, a short timing run of the same device as a PIRQ and as an ordinary MSI
 * on the upcall vector (the VMM prints signal -> handler latencies at exit). */
#include "guest.h"

/* After guest.h, which brings the fixed-width types Xen's headers expect. */
#include <xen/physdev.h>

#include "abi/platform.h"

GUEST_NAME("pirq_device");

#define PACED 40
#define BURST 60
#define BENCH 200
#define BENCH_ROUND 40

static inline void dev_write(unsigned reg, uint64_t v) {
  *(volatile uint64_t*)(uintptr_t)(XENKVM_TEST_DEVICE_GPA + reg) = v;
}
static inline uint64_t dev_read(unsigned reg) {
  return *(volatile uint64_t*)(uintptr_t)(XENKVM_TEST_DEVICE_GPA + reg);
}
static long physdev(int cmd, void* arg) { return HC(__HYPERVISOR_physdev_op, cmd, arg, 0); }

static long map_gsi(int gsi, int* pirq) {
  physdev_map_pirq_t op = {
      .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_GSI, .index = gsi, .pirq = -1};
  long rc = physdev(PHYSDEVOP_map_pirq, &op);
  *pirq = op.pirq;
  return rc;
}
static long status_query(uint32_t pirq) {
  physdev_irq_status_query_t q = {.irq = pirq};
  long rc = physdev(PHYSDEVOP_irq_status_query, &q);
  if (rc == 0 && !(q.flags & XENIRQSTAT_needs_eoi)) test_fail("irq_status_query: no needs_eoi");
  return rc;
}
static long bind_pirq(uint32_t pirq, evtchn_port_t* port) {
  evtchn_bind_pirq_t op = {.pirq = pirq};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &op);
  *port = op.port;
  return rc;
}

/* The PIRQ's handler: the event is consumed (pending cleared) when this runs; ACK it. */
static volatile uint32_t acks;
static void pirq_handler(evtchn_port_t port, unsigned vcpu) {
  (void)port;
  (void)vcpu;
  acks++;
  dev_write(XENKVM_TEST_DEVICE_ACK, 1);
}
/* The ordinary MSI on the upcall vector: nothing to scan; ACK at once. */
static volatile uint32_t msi_hits;
static void msi_hook(unsigned vcpu) {
  (void)vcpu;
  msi_hits++;
  dev_write(XENKVM_TEST_DEVICE_ACK, 1);
}

static void ap_main(unsigned id) {
  lapic_enable();
  EXPECT_RC(upcall_vector_set(id, UPCALL_VECTOR), 0);
}

/* Fire n paced interrupts and wait until the handler has taken each one. */
static void fire_paced(evtchn_port_t port, uint32_t n) {
  uint32_t hits0 = port_hits[port];
  uint64_t seq0 = dev_read(XENKVM_TEST_DEVICE_SEQ);
  dev_write(XENKVM_TEST_DEVICE_FIRE_PACED, n);
  CHECK(
      WAIT_FOR(port_hits[port] == hits0 + n && dev_read(XENKVM_TEST_DEVICE_SEQ) == seq0 + n, 20000),
      "paced: %u of %u events, device signalled %lu", port_hits[port] - hits0, n,
      (unsigned long)(dev_read(XENKVM_TEST_DEVICE_SEQ) - seq0));
  CHECK(!WAIT_FOR(port_hits[port] != hits0 + n, 20), "paced: more events than signals");
}

void guest_main(void) {
  stage(10);
  if (!shinfo) EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  int pirq = 0;
  /* Xen maps PIRQs only for a guest that takes events on a vector. */
  EXPECT_RC(map_gsi(20, &pirq), -XEN_EINVAL);
  evtchn_setup_vector();

  stage(11);
  physdev_map_pirq_t msi = {
      .domid = DOMID_SELF, .type = MAP_PIRQ_TYPE_MSI, .index = -1, .pirq = -1};
  EXPECT_RC(physdev(PHYSDEVOP_map_pirq, &msi), -XEN_EINVAL); /* HVM: GSIs only */
  EXPECT_RC(map_gsi(20, &pirq), 0);
  CHECK(pirq == 16, "GSI 20 mapped to PIRQ %d, Xen picks 16", pirq);
  EXPECT_RC(status_query(16), 0);
  physdev_eoi_t eoi = {.irq = 16};
  EXPECT_RC(physdev(PHYSDEVOP_eoi, &eoi), 0);
  physdev_unmap_pirq_t unmap = {.domid = DOMID_SELF, .pirq = 16};
  EXPECT_RC(physdev(PHYSDEVOP_unmap_pirq, &unmap), 0);
  EXPECT_RC(status_query(16), -XEN_EINVAL);
  eoi.irq = 5000;
  EXPECT_RC(physdev(PHYSDEVOP_eoi, &eoi), -XEN_EINVAL);

  /* Linux's xen_hvm_setup_msi_irqs: a free PIRQ, the MSI programmed with it, then the bind. */
  stage(12);
  physdev_get_free_pirq_t free_pirq = {.type = MAP_PIRQ_TYPE_MSI};
  EXPECT_RC(physdev(PHYSDEVOP_get_free_pirq, &free_pirq), 0);
  const uint32_t p = free_pirq.pirq;
  CHECK(p >= 48 && p < 1024, "get_free_pirq gave %u", p);
  const uint64_t pirq_addr =
      0xfee00000ull | ((uint64_t)(p & 0xff) << 12) | ((uint64_t)(p >> 8) << 40);
  dev_write(XENKVM_TEST_DEVICE_MSI_ADDR, pirq_addr);
  dev_write(XENKVM_TEST_DEVICE_MSI_DATA, 0); /* vector 0: a PIRQ */
  CHECK(dev_read(XENKVM_TEST_DEVICE_MSI_ADDR) == pirq_addr, "device lost its MSI address");
  /* Fired before the bind: kept, and delivered by EVTCHNOP_bind_pirq. */
  dev_write(XENKVM_TEST_DEVICE_FIRE, 1);
  CHECK(WAIT_FOR(dev_read(XENKVM_TEST_DEVICE_SEQ) == 1, 5000), "device did not fire");
  evtchn_port_t port = 0;
  uint32_t hits0;
  irq_disable();
  EXPECT_RC(bind_pirq(p, &port), 0);
  port_track(port, 0, pirq_handler);
  hits0 = port_hits[port];
  irq_enable();
  CHECK(WAIT_FOR(port_hits[port] == hits0 + 1, 5000), "the PIRQ raised before the bind was lost");
  evtchn_port_t again;
  EXPECT_RC(bind_pirq(p, &again), -XEN_EEXIST);
  EXPECT_RC(status_query(p), 0); /* the first MSI mapped it (Xen's hvm_inject_msi) */

  stage(13);
  fire_paced(port, PACED);
  CHECK(port_last_vcpu[port] == 0, "event on vCPU%u", port_last_vcpu[port]);

  /* A burst coalesces; what matters is that nothing stays pending after the last signal. */
  stage(14);
  hits0 = port_hits[port];
  uint64_t seq0 = dev_read(XENKVM_TEST_DEVICE_SEQ);
  dev_write(XENKVM_TEST_DEVICE_FIRE, BURST);
  CHECK(WAIT_FOR(dev_read(XENKVM_TEST_DEVICE_SEQ) == seq0 + BURST, 20000), "burst not signalled");
  CHECK(WAIT_FOR(!evtchn_is_pending(port) && !vcpu_info_of(0)->evtchn_upcall_pending, 5000),
        "event left pending after the burst");
  CHECK(port_hits[port] > hits0 && port_hits[port] <= hits0 + BURST, "burst: %u events",
        port_hits[port] - hits0);
  printk("pirq_device: burst of %u signals gave %u events\n", BURST, port_hits[port] - hits0);

  stage(15);
  EXPECT_RC(vcpu_start(1, ap_main), 0);
  CHECK(WAIT_FOR(vcpu_online[1], 5000), "vCPU1 did not start");
  EXPECT_RC(evtchn_bind_vcpu(port, 1), 0);
  fire_paced(port, PACED);
  CHECK(port_last_vcpu[port] == 1, "after bind_vcpu, event on vCPU%u", port_last_vcpu[port]);

  /* Closed: the device's signals reach no port. */
  stage(16);
  EXPECT_RC(evtchn_close(port), 0); /* also stops tracking it */
  hits0 = port_hits[port];
  seq0 = dev_read(XENKVM_TEST_DEVICE_SEQ);
  dev_write(XENKVM_TEST_DEVICE_FIRE, 3);
  CHECK(WAIT_FOR(dev_read(XENKVM_TEST_DEVICE_SEQ) == seq0 + 3, 5000), "device did not fire");
  CHECK(!WAIT_FOR(port_hits[port] != hits0, 50), "event on a closed port");

  /* Timing: the same device as a PIRQ on vCPU0 and as an ordinary MSI to vCPU0's upcall vector
   * (a KVM irqfd), alternating in rounds so that a change in the host's load hits both alike.
   * The first bind delivers what the closed port missed. */
  stage(17);
  irq_disable();
  EXPECT_RC(bind_pirq(p, &port), 0);
  port_track(port, 0, pirq_handler);
  hits0 = port_hits[port];
  irq_enable();
  CHECK(WAIT_FOR(port_hits[port] == hits0 + 1, 5000), "no event kept across close and bind");
  dev_write(XENKVM_TEST_DEVICE_CLEAR_TIMES, 1);
  for (uint32_t round = 0; round < BENCH / BENCH_ROUND; round++) {
    dev_write(XENKVM_TEST_DEVICE_MSI_ADDR, pirq_addr);
    dev_write(XENKVM_TEST_DEVICE_MSI_DATA, 0);
    fire_paced(port, BENCH_ROUND);
    const uint32_t msi0 = msi_hits;
    upcall_hook = msi_hook;
    dev_write(XENKVM_TEST_DEVICE_MSI_ADDR, 0xfee00000ull); /* APIC id 0 */
    dev_write(XENKVM_TEST_DEVICE_MSI_DATA, UPCALL_VECTOR);
    seq0 = dev_read(XENKVM_TEST_DEVICE_SEQ);
    dev_write(XENKVM_TEST_DEVICE_FIRE_PACED, BENCH_ROUND);
    /* At least: the hook sees every interrupt on the upcall vector, and an upcall raised again
     * for an event already taken (which Xen allows and the handler ignores) counts too. The
     * device's own count of ACKed signals (its summary line) is the exact one. */
    CHECK(WAIT_FOR(msi_hits >= msi0 + BENCH_ROUND &&
                       dev_read(XENKVM_TEST_DEVICE_SEQ) == seq0 + BENCH_ROUND,
                   20000),
          "ordinary MSI: %u of %u", msi_hits - msi0, BENCH_ROUND);
    upcall_hook = 0;
  }
  EXPECT_RC(evtchn_close(port), 0);
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("pirq_device: %u PIRQ events acknowledged, %u ordinary MSIs\n", acks, msi_hits);
}
