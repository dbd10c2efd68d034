/* demo: the guest `xenkvm run` boots by default. Every vCPU takes part: an IPI token goes
 * around a ring of all vCPUs (EVTCHNOP_send on ports bound with bind_ipi), each vCPU arms a
 * single-shot timer (VIRQ_TIMER), vCPU0 runs loopback events and talks to the echo backend;
 * then it prints a short summary. Works with any number of vCPUs from 1 to GUEST_MAX_VCPUS. */
#include "guest.h"

GUEST_NAME("demo");

#define ROUNDS 10
#define LOOPBACKS 10
#define MS 1000000ull

static unsigned nr_vcpus;
static evtchn_port_t ring[GUEST_MAX_VCPUS];
static evtchn_port_t timer_port[GUEST_MAX_VCPUS];
static volatile uint32_t timer_fired[GUEST_MAX_VCPUS];
static volatile uint32_t ready;
static volatile uint32_t hops_left;

/* The ring token: forward to the next vCPU until the hop budget is spent. */
static void on_ring(evtchn_port_t port, unsigned vcpu) {
  (void)port;
  if (__atomic_sub_fetch(&hops_left, 1, __ATOMIC_SEQ_CST) > 0) {
    long rc = evtchn_send(ring[(vcpu + 1) % nr_vcpus]);
    CHECK(rc == 0, "vcpu%u: ring send returned %ld", vcpu, rc);
  }
}

static void on_timer(evtchn_port_t port, unsigned vcpu) {
  (void)port;
  timer_fired[vcpu]++;
}

static void join(unsigned id) {
  if (id != 0) evtchn_setup_vector();
  EXPECT_RC(evtchn_bind_ipi(id, &ring[id]), 0);
  port_track(ring[id], id, on_ring);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, id, &timer_port[id]), 0);
  port_track(timer_port[id], id, on_timer);
  __atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
}

static void ap_main(unsigned id) {
  join(id);
  /* Wait for the ring to be set up everywhere, then arm this vCPU's timer. */
  while (__atomic_load_n(&ready, __ATOMIC_SEQ_CST) < nr_vcpus) cpu_relax();
  EXPECT_RC(set_singleshot_timer(now_ns() + (5 + id) * MS), 0);
}

void guest_main(void) {
  stage(10);
  evtchn_setup_vector();
  nr_vcpus = vcpu_count();
  printk("demo: %u vCPU%s, per-vCPU upcall vector 0x%x\n", nr_vcpus, nr_vcpus == 1 ? "" : "s",
         UPCALL_VECTOR);
  join(0);
  for (unsigned id = 1; id < nr_vcpus; id++) {
    long rc = vcpu_start(id, ap_main);
    CHECK(rc == 0, "starting vcpu%u: %ld", id, rc);
  }
  CHECK(WAIT_FOR(ready == nr_vcpus, 5000), "only %u of %u vCPUs joined", ready, nr_vcpus);
  EXPECT_RC(set_singleshot_timer(now_ns() + 5 * MS), 0);

  /* IPI ring. */
  stage(11);
  uint32_t hops = ROUNDS * nr_vcpus;
  __atomic_store_n(&hops_left, hops, __ATOMIC_SEQ_CST);
  uint64_t start = now_ns();
  EXPECT_RC(evtchn_send(ring[nr_vcpus > 1 ? 1 : 0]), 0);
  CHECK(WAIT_FOR(hops_left == 0, 10000), "IPI ring stalled with %u of %u hops left", hops_left,
        hops);
  uint64_t ring_ns = now_ns() - start;

  /* Timers on every vCPU. */
  stage(12);
  unsigned fired = 0;
  for (unsigned id = 0; id < nr_vcpus; id++) {
    CHECK(WAIT_FOR(timer_fired[id] == 1, 3000), "vcpu%u: VIRQ_TIMER did not fire", id);
    CHECK(port_last_vcpu[timer_port[id]] == id, "vcpu%u's timer handled on vcpu%u", id,
          port_last_vcpu[timer_port[id]]);
    fired++;
  }

  /* Loopback and the echo backend on vCPU0. */
  stage(13);
  evtchn_port_t a, b, e;
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "loopback bind event lost");
  for (uint32_t i = 0; i < LOOPBACKS; i++) {
    EXPECT_RC(evtchn_send(a), 0);
    CHECK(WAIT_FOR(port_hits[b] == i + 2, 2000), "loopback event %u lost", i);
  }
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e), 0);
  CHECK(WAIT_FOR(port_hits[e] == 1, 2000), "echo bind event lost");
  EXPECT_RC(evtchn_send(e), 0);
  CHECK(WAIT_FOR(port_hits[e] == 2, 2000), "no answer from the echo backend");
  CHECK(stray_events == 0, "%u stray events", stray_events);

  stage(14);
  printk("demo: IPI ring: %u hops over %u vCPU(s) in %lu us (%lu us/hop)\n", hops, nr_vcpus,
         ring_ns / 1000, ring_ns / 1000 / hops);
  printk("demo: timers: %u/%u vCPUs got VIRQ_TIMER\n", fired, nr_vcpus);
  printk("demo: loopback: %u/%u events; echo backend: answered on port %u\n", port_hits[b] - 1,
         LOOPBACKS, e);
  char line[160];
  int n = snprintk(line, sizeof(line), "demo: upcalls per vCPU:");
  for (unsigned id = 0; id < nr_vcpus; id++)
    n += snprintk(line + n, sizeof(line) - (size_t)n, " %u", upcall_count[id]);
  printk("%s\n", line);
}
