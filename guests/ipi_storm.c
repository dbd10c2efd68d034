/* ipi_storm: every vCPU sends to every other vCPU at once, on one port per (sender, receiver)
 * pair bound with bind_ipi on the receiver; a sender sends its next event on a port only after
 * the receiver has taken the previous one, so nothing may coalesce and every count is exact.
 * Lost wake-ups or misrouted events under concurrency show up as a stalled or wrong count.
 * Built twice: upcalls through per-vCPU vectors on every vCPU, and (IPI_STORM_MIXED) with
 * even vCPUs on the global callback vector and odd ones on per-vCPU vectors, which Xen
 * allows at the same time. "rounds=N" on the command line sets the rounds per port (default 25),
 * for runs long enough to be migrated from a benchmark script; with "hold=1" the storm goes on
 * past them until the host releases it (xs.h), each sender counting the rounds it sent. */
#include "guest.h"
#include "xs.h"

#ifdef IPI_STORM_MIXED
GUEST_NAME("ipi_storm_mixed");
#else
GUEST_NAME("ipi_storm");
#endif

static uint32_t nr_rounds = 25;

static unsigned nr_vcpus;
static evtchn_port_t port[GUEST_MAX_VCPUS][GUEST_MAX_VCPUS]; /* [receiver][sender] */
static volatile uint32_t joined, go, finished;
static volatile uint32_t holding;             /* vCPU0's held(), for every sender */
static uint32_t sent_rounds[GUEST_MAX_VCPUS]; /* per sender: rounds sent on each of its ports */

static void setup_upcalls(unsigned id) {
#ifdef IPI_STORM_MIXED
  if (id % 2 == 0) return; /* the global callback, set once by vCPU0 */
#endif
  lapic_enable();
  EXPECT_RC(upcall_vector_set(id, UPCALL_VECTOR), 0);
}

static void storm(unsigned me) {
  uint32_t k;
  for (k = 1; k <= nr_rounds || __atomic_load_n(&holding, __ATOMIC_ACQUIRE); k++) {
    if (me == 0 && holding) __atomic_store_n(&holding, held(), __ATOMIC_RELEASE);
    for (unsigned to = 0; to < nr_vcpus; to++) {
      if (to == me) continue;
      evtchn_port_t p = port[to][me];
      CHECK(WAIT_FOR(port_hits[p] == k - 1, 3000),
            "round %u: vcpu%u's previous event to vcpu%u (port %u) never arrived (hits %u)", k, me,
            to, p, port_hits[p]);
      EXPECT_RC(evtchn_send(p), 0);
    }
  }
  sent_rounds[me] = k - 1;
  __atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
}

static void ap_main(unsigned id) {
  setup_upcalls(id);
  for (unsigned from = 0; from < nr_vcpus; from++)
    if (from != id) EXPECT_RC(evtchn_bind_ipi(id, &port[id][from]), 0);
  __atomic_add_fetch(&joined, 1, __ATOMIC_SEQ_CST);
  while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
  storm(id);
}

void guest_main(void) {
  stage(10);
  nr_rounds = cmdline_number("rounds", 25);
  nr_vcpus = vcpu_count();
  CHECK(nr_vcpus >= 2, "needs at least 2 vCPUs, found %u", nr_vcpus);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
#ifdef IPI_STORM_MIXED
  EXPECT_RC(callback_vector_set(CALLBACK_VECTOR), 0);
#endif
  setup_upcalls(0);
  for (unsigned from = 1; from < nr_vcpus; from++) EXPECT_RC(evtchn_bind_ipi(0, &port[0][from]), 0);
  joined = 1;
  for (unsigned id = 1; id < nr_vcpus; id++) EXPECT_RC(vcpu_start(id, ap_main), 0);
  CHECK(WAIT_FOR(joined == nr_vcpus, 5000), "only %u of %u vCPUs joined", joined, nr_vcpus);

  holding = held();
  stage(11);
  uint64_t start = now_ns();
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  storm(0);
  CHECK(WAIT_FOR(finished == nr_vcpus, 10000), "only %u of %u vCPUs finished sending", finished,
        nr_vcpus);
  stage(12);
  uint32_t total = 0;
  for (unsigned to = 0; to < nr_vcpus; to++)
    for (unsigned from = 0; from < nr_vcpus; from++) {
      if (to == from) continue;
      evtchn_port_t p = port[to][from];
      CHECK(WAIT_FOR(port_hits[p] == sent_rounds[from], 3000),
            "port %u (vcpu%u -> vcpu%u): %u of %u events", p, from, to, port_hits[p],
            sent_rounds[from]);
      CHECK(port_last_vcpu[p] == to, "port %u for vcpu%u handled on vcpu%u", p, to,
            port_last_vcpu[p]);
      total += port_hits[p];
    }
  CHECK(stray_events == 0, "%u stray events", stray_events);
  uint64_t took = now_ns() - start;
  printk("%s: %u events between %u vCPUs in %lu ms\n", guest_name, total, nr_vcpus, took / 1000000);
}
