/* fifo: the FIFO event channel ABI end to end (xen/include/public/event_channel.h). A pending
 * 2-level event carries over to FIFO; init_control per vCPU, expand_array up to ports above
 * 4096; events at mixed priorities arrive highest priority first and FIFO within a priority;
 * a masked event stays pending and unlinked until EVTCHNOP_unmask re-raises it (once); IPIs
 * between all vCPUs and VIRQ_TIMER on each, over FIFO, with exact counts; EVTCHNOP_reset
 * returns to 2-level, where events work again. */
#include "guest.h"

GUEST_NAME("fifo");

#define MS 1000000ull
#define ARRAY_PAGES 5u /* ports 0..5119 */
#define FIRST_HIGH_PORT 4097u
#define IPI_ROUNDS 10u
#define TIMER_ROUNDS 5u
#define PRIO_PAIRS 6u

static unsigned nr_vcpus;
static evtchn_port_t ipi_port[GUEST_MAX_VCPUS][GUEST_MAX_VCPUS]; /* [receiver][sender] */
static evtchn_port_t timer_port[GUEST_MAX_VCPUS];
static volatile uint32_t joined, go, finished;
static uint32_t expected_total; /* events the FIFO consumer must have seen, summed as we go */

static void ap_main(unsigned id) {
  lapic_enable();
  EXPECT_RC(upcall_vector_set(id, UPCALL_VECTOR), 0);
  EXPECT_RC(fifo_init_control(id), 0);
  for (unsigned from = 0; from < nr_vcpus; from++)
    if (from != id) EXPECT_RC(evtchn_bind_ipi(id, &ipi_port[id][from]), 0);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, id, &timer_port[id]), 0);
  __atomic_add_fetch(&joined, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
  for (uint32_t k = 1; k <= IPI_ROUNDS; k++)
    for (unsigned to = 0; to < nr_vcpus; to++) {
      if (to == id) continue;
      evtchn_port_t p = ipi_port[to][id];
      CHECK(WAIT_FOR(fifo_hits[p] == k - 1, 5000), "vcpu%u: IPI %u to vcpu%u (port %u) lost", id,
            k - 1, to, p);
      EXPECT_RC(evtchn_send(p), 0);
    }
  for (uint32_t k = 1; k <= TIMER_ROUNDS; k++) {
    EXPECT_RC(set_singleshot_timer(now_ns() + MS), 0);
    CHECK(WAIT_FOR(fifo_hits[timer_port[id]] == k, 5000), "vcpu%u: timer %u lost (hits %u)", id, k,
          fifo_hits[timer_port[id]]);
  }
  __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
}

/* A 2-level event pending (and masked) at the switch is raised on FIFO once its page exists. */
static void carry_over_and_switch(void) {
  evtchn_port_t a, b;
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "2-level: bind_interdomain left no event on %u", b);
  evtchn_mask(a);
  EXPECT_RC(evtchn_send(b), 0);
  CHECK(evtchn_is_pending(a) && port_hits[a] == 0, "2-level: masked port %u not held pending", a);

  stage(11);
  EXPECT_RC(fifo_expand_array(), -XEN_EOPNOTSUPP); /* before any control block */
  EXPECT_RC(fifo_set_priority(a, 3), -XEN_ENOSYS);
  EXPECT_RC(fifo_init_control(0), 0);
  EXPECT_RC(fifo_init_control(0), -XEN_EINVAL); /* one control block per vCPU */
  for (unsigned i = 0; i < ARRAY_PAGES; i++) EXPECT_RC(fifo_expand_array(), 0);
  CHECK(WAIT_FOR(fifo_hits[a] == 1, 2000), "the 2-level event on port %u was not carried over", a);
  expected_total += 1;
  CHECK(fifo_last_vcpu[a] == 0, "carried event handled on vcpu%u", fifo_last_vcpu[a]);
}

/* Loopback pairs above port 4096 with the receiving ends at mixed priorities, all raised while
 * upcalls are held off: the consumer must take them by priority, in raise order within one. */
static evtchn_port_t prio_a[PRIO_PAIRS], prio_b[PRIO_PAIRS];
static void priorities(void) {
  static const uint32_t prio[PRIO_PAIRS] = {9, 2, 15, 0, 2, 7};
  static const unsigned order[PRIO_PAIRS] = {3, 1, 4, 5, 0, 2};
  for (unsigned i = 0; i < PRIO_PAIRS; i++) {
    EXPECT_RC(evtchn_loopback_pair(&prio_a[i], &prio_b[i]), 0);
    CHECK(prio_a[i] >= FIRST_HIGH_PORT, "port %u is not above 4096", prio_a[i]);
    CHECK(WAIT_FOR(fifo_hits[prio_b[i]] == 1, 2000), "bind_interdomain: no event on %u", prio_b[i]);
    expected_total += 1;
    EXPECT_RC(fifo_set_priority(prio_a[i], prio[i]), 0);
  }
  EXPECT_RC(fifo_set_priority(prio_a[0], EVTCHN_FIFO_PRIORITY_MIN + 1), -XEN_EINVAL);
  EXPECT_RC(fifo_set_priority(200000, 1), -XEN_EINVAL);

  irq_disable();
  fifo_log_len = 0;
  for (unsigned i = 0; i < PRIO_PAIRS; i++) {
    EXPECT_RC(evtchn_send(prio_b[i]), 0);
    CHECK(fifo_is_pending(prio_a[i]) && fifo_is_linked(prio_a[i]), "port %u not pending and linked",
          prio_a[i]);
  }
  CHECK(fifo_log_len == 0, "an event was handled with upcalls off");
  irq_enable();
  CHECK(WAIT_FOR(fifo_log_len == PRIO_PAIRS, 2000), "%u of %u prioritised events arrived",
        fifo_log_len, PRIO_PAIRS);
  for (unsigned i = 0; i < PRIO_PAIRS; i++)
    CHECK(fifo_log[i] == prio_a[order[i]],
          "event %u was port %u (priority order wants %u at priority %u)", i, fifo_log[i],
          prio_a[order[i]], prio[order[i]]);
  expected_total += PRIO_PAIRS;
}

/* Masked: pending without a link or an upcall, coalesced; EVTCHNOP_unmask links it once. */
static void unmask_reraises(void) {
  evtchn_port_t p = prio_a[0];
  uint32_t before = fifo_hits[p];
  fifo_mask(p);
  EXPECT_RC(evtchn_send(prio_b[0]), 0);
  EXPECT_RC(evtchn_send(prio_b[0]), 0);
  CHECK(fifo_is_pending(p) && !fifo_is_linked(p), "masked port %u: linked or not pending", p);
  delay_ms_irqs_unchanged(5);
  CHECK(fifo_hits[p] == before, "masked port %u was delivered", p);
  EXPECT_RC(evtchn_unmask(p), 0);
  CHECK(WAIT_FOR(fifo_hits[p] == before + 1, 2000), "unmask did not re-raise port %u", p);
  CHECK(!(*fifo_word(p) & (1u << EVTCHN_FIFO_MASKED)), "port %u still masked", p);
  delay_ms_irqs_unchanged(5);
  CHECK(fifo_hits[p] == before + 1, "port %u delivered %u times after unmask", p,
        fifo_hits[p] - before);
  expected_total += 1;
}

static void ipis_and_timers(void) {
  for (unsigned from = 1; from < nr_vcpus; from++)
    EXPECT_RC(evtchn_bind_ipi(0, &ipi_port[0][from]), 0);
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &timer_port[0]), 0);
  joined = 1;
  for (unsigned id = 1; id < nr_vcpus; id++) EXPECT_RC(vcpu_start(id, ap_main), 0);
  CHECK(WAIT_FOR(joined == nr_vcpus, 10000), "only %u of %u vCPUs joined", joined, nr_vcpus);
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  for (uint32_t k = 1; k <= IPI_ROUNDS; k++)
    for (unsigned to = 1; to < nr_vcpus; to++) {
      evtchn_port_t p = ipi_port[to][0];
      CHECK(WAIT_FOR(fifo_hits[p] == k - 1, 5000), "vcpu0: IPI %u to vcpu%u (port %u) lost", k - 1,
            to, p);
      EXPECT_RC(evtchn_send(p), 0);
    }
  for (uint32_t k = 1; k <= TIMER_ROUNDS; k++) {
    EXPECT_RC(set_singleshot_timer(now_ns() + MS), 0);
    CHECK(WAIT_FOR(fifo_hits[timer_port[0]] == k, 5000), "vcpu0: timer %u lost", k);
  }
  CHECK(WAIT_FOR(finished == nr_vcpus - 1, 20000), "only %u of %u APs finished", finished,
        nr_vcpus - 1);
  for (unsigned to = 0; to < nr_vcpus; to++) {
    for (unsigned from = 0; from < nr_vcpus; from++) {
      if (to == from) continue;
      evtchn_port_t p = ipi_port[to][from];
      CHECK(p >= FIRST_HIGH_PORT, "IPI port %u is not above 4096", p);
      CHECK(WAIT_FOR(fifo_hits[p] == IPI_ROUNDS, 3000), "IPI port %u (vcpu%u -> vcpu%u): %u of %u",
            p, from, to, fifo_hits[p], IPI_ROUNDS);
      CHECK(fifo_last_vcpu[p] == to, "IPI port %u for vcpu%u handled on vcpu%u", p, to,
            fifo_last_vcpu[p]);
      expected_total += IPI_ROUNDS;
    }
    evtchn_port_t t = timer_port[to];
    CHECK(fifo_hits[t] == TIMER_ROUNDS, "vcpu%u: %u of %u timer events", to, fifo_hits[t],
          TIMER_ROUNDS);
    CHECK(fifo_last_vcpu[t] == to, "vcpu%u's timer handled on vcpu%u", to, fifo_last_vcpu[t]);
    expected_total += TIMER_ROUNDS;
  }
}

/* EVTCHNOP_reset: every port closed, back to 2-level; loopback and an IPI work there. */
static void reset_to_two_level(void) {
  EXPECT_RC(evtchn_reset_self(), 0);
  fifo_reset_state();
  EXPECT_RC(fifo_expand_array(), -XEN_EOPNOTSUPP);
  EXPECT_RC(fifo_set_priority(1, 3), -XEN_ENOSYS); /* 2-level again: no priorities */
  /* The 2-level words still hold what was pending and masked before the switch: a guest
   * returning to 2-level starts them afresh. */
  memset((void*)shinfo->evtchn_pending, 0, sizeof(shinfo->evtchn_pending));
  memset((void*)shinfo->evtchn_mask, 0, sizeof(shinfo->evtchn_mask));
  evtchn_port_t a, b, ipi;
  uint32_t b_before = port_hits[2];
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(a == 1 && b == 2, "after reset the pair is %u/%u, expected 1/2", a, b);
  EXPECT_RC(fifo_set_priority(a, 3), -XEN_ENOSYS);
  CHECK(WAIT_FOR(port_hits[b] == b_before + 1, 2000), "2-level after reset: no bind event on %u",
        b);
  uint32_t before = port_hits[b];
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(WAIT_FOR(port_hits[b] == before + 1, 2000), "2-level after reset: send lost");
  if (nr_vcpus > 1) {
    EXPECT_RC(evtchn_bind_ipi(1, &ipi), 0);
    uint32_t ipi_before = port_hits[ipi];
    EXPECT_RC(evtchn_send(ipi), 0);
    CHECK(WAIT_FOR(port_hits[ipi] == ipi_before + 1, 2000), "2-level after reset: IPI lost");
    CHECK(port_last_vcpu[ipi] == 1, "2-level IPI handled on vcpu%u", port_last_vcpu[ipi]);
  }
  CHECK(stray_events == 0, "%u stray 2-level events", stray_events);
}

void guest_main(void) {
  stage(10);
  nr_vcpus = vcpu_count();
  CHECK(nr_vcpus >= 2, "needs at least 2 vCPUs, found %u", nr_vcpus);
  evtchn_setup_vector();
  carry_over_and_switch();

  stage(12);
  evtchn_port_t filler;
  do EXPECT_RC(evtchn_alloc_unbound(DOMID_SELF, &filler), 0);
  while (filler < FIRST_HIGH_PORT - 1);
  priorities();

  stage(13);
  unmask_reraises();

  stage(14);
  ipis_and_timers();
  uint32_t total = 0;
  for (unsigned p = 0; p < FIFO_GUEST_PORTS; p++) total += fifo_hits[p];
  CHECK(total == expected_total, "FIFO consumer saw %u events, expected %u", total, expected_total);
  CHECK(fifo_bad_events == 0, "%u queue heads outside the event array", fifo_bad_events);

  stage(15);
  reset_to_two_level();
  printk("fifo: %u FIFO events on %u vCPUs, priorities in order, reset to 2-level\n", total,
         nr_vcpus);
}
