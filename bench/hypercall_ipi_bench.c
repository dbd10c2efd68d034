/* bench_hypercall_ipi: a guest that times, in one run on the same vCPUs,
 *  1. a no-op hypercall round trip (xen_version(XENVER_version) through the hypercall page)
 *     against a bare port-I/O exit (outb to an unclaimed port) — the cost the Xen layer adds;
 *  2. an event-channel IPI ping-pong (EVTCHNOP_send on bind_ipi ports, per-vCPU upcall
 *     vector) against a native x2APIC IPI ping-pong (ICR write, same vector) between vCPU0 and
 *     vCPU1. Both sides halt until the counter their upcall handler bumps moves (so a waiting
 *     vCPU sleeps in the kernel instead of being emulated), so only delivery differs. The two
 *     ping-pongs run in alternating rounds so drifting host load hits both alike.
 * Prints means (pvclock ns) and the two ratios; run with `xenkvm run --vcpus 2`. */
#include "guest.h"

GUEST_NAME("bench_hypercall_ipi");

#define EXITS 2000
#define PINGS 60
#define ROUNDS 5
#define MSR_X2APIC_ICR 0x830

static evtchn_port_t ipi_port[2];
static volatile uint32_t mode; /* 0 idle, 1 evtchn ping-pong, 2 native, 3 done */
static volatile uint32_t ap_ready;

static uint64_t time_io_exits(void) {
  uint64_t t0 = now_ns();
  for (int i = 0; i < EXITS; i++) outb(0x80, 0);
  return now_ns() - t0;
}

static uint64_t time_hypercalls(void) {
  uint64_t t0 = now_ns();
  for (int i = 0; i < EXITS; i++) HYPERVISOR_xen_version(XENVER_version, NULL);
  return now_ns() - t0;
}

/* The same hypercall without the page's stub (call, mov, ret): isolates the VMM's dispatch
 * from the extra guest instructions, which PVM emulates at several microseconds each. */
static uint64_t time_inline_hypercalls(void) {
  uint64_t t0 = now_ns();
  for (int i = 0; i < EXITS; i++) {
    unsigned long rdi = XENVER_version, rsi = 0;
    long ret;
    __asm__ volatile("outl %%eax, %[port]"
                     : "=a"(ret), "+D"(rdi), "+S"(rsi)
                     : "a"(__HYPERVISOR_xen_version), [port] "i"(XENKVM_HYPERCALL_PORT)
                     : "memory", "rdx", "r10", "r8");
  }
  return now_ns() - t0;
}

static void native_ipi(unsigned dest) {
  wrmsr(MSR_X2APIC_ICR, ((uint64_t)dest << 32) | UPCALL_VECTOR);
}

/* vCPU1 answers every ping on the channel the current mode measures. */
static void ap_main(unsigned id) {
  evtchn_setup_vector();
  CHECK(evtchn_bind_ipi(id, &ipi_port[id]) == 0, "vcpu1 bind_ipi");
  __atomic_store_n(&ap_ready, 1, __ATOMIC_SEQ_CST);
  uint32_t seen_evt = 0, seen_native = upcall_count[1];
  for (;;) {
    HALT_UNTIL(mode == 3 || (mode == 1 && port_hits[ipi_port[1]] != seen_evt) ||
               (mode == 2 && upcall_count[1] != seen_native));
    uint32_t m = __atomic_load_n(&mode, __ATOMIC_SEQ_CST);
    /* Both marks move on every answer: an event-channel upcall bumps upcall_count too, and a
     * stale mark would answer a native ping that was never sent when the mode flips. */
    seen_evt = port_hits[ipi_port[1]];
    seen_native = upcall_count[1];
    if (m == 1) {
      evtchn_send(ipi_port[0]);
    } else if (m == 2) {
      native_ipi(0);
    } else if (m == 3) {
      for (;;) safe_halt();
    }
  }
}

/* Event-channel ping-pong (the xenkvm --timeout ends a lost ping). Returns the total ns. */
static uint64_t ping_pong_evtchn(void) {
  __atomic_store_n(&mode, 1, __ATOMIC_SEQ_CST);
  uint64_t t0 = now_ns();
  for (int i = 0; i < PINGS; i++) {
    uint32_t before = port_hits[ipi_port[0]];
    evtchn_send(ipi_port[1]);
    HALT_UNTIL(port_hits[ipi_port[0]] != before);
  }
  return now_ns() - t0;
}

/* Native x2APIC ping-pong on the same vector. */
static uint64_t ping_pong_native(void) {
  __atomic_store_n(&mode, 2, __ATOMIC_SEQ_CST);
  uint64_t t0 = now_ns();
  for (int i = 0; i < PINGS; i++) {
    uint32_t before = upcall_count[0];
    native_ipi(1);
    HALT_UNTIL(upcall_count[0] != before);
  }
  return now_ns() - t0;
}

void guest_main(void) {
  evtchn_setup_vector();
  CHECK(time_available(), "no pvclock: cannot time anything");
  CHECK(vcpu_count() >= 2, "needs --vcpus 2");
  CHECK(evtchn_bind_ipi(0, &ipi_port[0]) == 0, "vcpu0 bind_ipi");
  CHECK(vcpu_start(1, ap_main) == 0, "starting vcpu1");
  CHECK(WAIT_FOR(ap_ready, 2000), "vcpu1 not ready");

  /* Warm up, then alternate the two kinds so drift hits both alike. */
  time_io_exits();
  time_hypercalls();
  uint64_t io = 0, hc = 0, inl = 0;
  for (int r = 0; r < 3; r++) {
    io += time_io_exits();
    hc += time_hypercalls();
    inl += time_inline_hypercalls();
  }
  const uint64_t io_ns = io / (3 * EXITS), hc_ns = hc / (3 * EXITS), inl_ns = inl / (3 * EXITS);

  /* The two ping-pongs in alternating rounds, so host load that drifts during the run (the
   * halted sides make this one sensitive to host scheduling) hits both alike. */
  uint64_t evt_total = 0, native_total = 0;
  for (int r = 0; r < ROUNDS; r++) {
    evt_total += ping_pong_evtchn();
    native_total += ping_pong_native();
  }
  const uint64_t evt_ns = evt_total / (ROUNDS * PINGS), native_ns = native_total / (ROUNDS * PINGS);
  __atomic_store_n(&mode, 3, __ATOMIC_SEQ_CST);
  native_ipi(1); /* wake vCPU1 to see mode 3 */

  printk("bench: port-I/O exit %lu ns, no-op hypercall %lu ns: hypercall/exit = %lu.%02lu\n", io_ns,
         hc_ns, hc_ns / io_ns, hc_ns * 100 / io_ns % 100);
  printk("bench: hypercall without the stub (inline out) %lu ns: inline/exit = %lu.%02lu\n", inl_ns,
         inl_ns / io_ns, inl_ns * 100 / io_ns % 100);
  printk(
      "bench: IPI round trip: EVTCHNOP_send %lu ns, native x2APIC %lu ns: evtchn/native = "
      "%lu.%02lu\n",
      evt_ns, native_ns, evt_ns / native_ns, evt_ns * 100 / native_ns % 100);
}
