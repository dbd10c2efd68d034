/* shinfo_move: events keep arriving while the guest moves shared_info between two pages with
 * XENMEM_add_to_physmap (the VMM's slow path). vCPU1 sends one IPI on each of 64 ports bound
 * to vCPU0 while vCPU0 moves shared_info back and forth and talks to the echo backend; every
 * event must arrive exactly once, and pending/mask bits must move with the page (in Xen the
 * page itself moves to the new frame). */
#include "guest.h"

GUEST_NAME("shinfo_move");

#define NR_IPIS 64
#define NR_MOVES 12

static evtchn_port_t ipi[NR_IPIS];
static volatile uint32_t go, sender_done;

static void sender(unsigned id) {
  (void)id;
  while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) cpu_relax();
  for (int i = 0; i < NR_IPIS; i++) {
    EXPECT_RC(evtchn_send(ipi[i]), 0);
    for (volatile int spin = 0; spin < 20; spin++) cpu_relax();
  }
  __atomic_store_n(&sender_done, 1, __ATOMIC_RELEASE);
}

static void move_to(unsigned page) {
  irq_disable(); /* our handler must not use the old mapping while it moves */
  long rc = shinfo_map(shinfo_pages[page]);
  irq_enable();
  CHECK(rc == 0, "add_to_physmap(shared_info -> %p) returned %ld", shinfo_pages[page], rc);
}

void guest_main(void) {
  stage(10);
  evtchn_setup_vector();
  for (int i = 0; i < NR_IPIS; i++) EXPECT_RC(evtchn_bind_ipi(0, &ipi[i]), 0);
  /* A masked loopback end with an event pending: both bits must survive the moves. */
  evtchn_port_t a, b;
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "bind event lost");
  evtchn_mask(b);
  EXPECT_RC(evtchn_send(a), 0);
  CHECK(evtchn_is_pending(b), "masked port not pending");
  evtchn_port_t e;
  EXPECT_RC(evtchn_bind_interdomain(0, 1, &e), 0);
  CHECK(WAIT_FOR(port_hits[e] == 1, 2000), "echo bind event lost");

  stage(11);
  EXPECT_RC(vcpu_start(1, sender), 0);
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  for (uint32_t m = 0; m < NR_MOVES; m++) {
    EXPECT_RC(evtchn_send(e), 0);
    move_to((m + 1) % 2);
    CHECK(WAIT_FOR(port_hits[e] == m + 2, 2000), "move %u: echo event lost", m);
  }
  stage(12);
  CHECK(WAIT_FOR(sender_done, 10000), "vcpu1 did not finish sending");
  for (int i = 0; i < NR_IPIS; i++)
    CHECK(WAIT_FOR(port_hits[ipi[i]] >= 1, 2000), "IPI port %u lost across %u moves", ipi[i],
          NR_MOVES);
  CHECK(!WAIT_FOR(port_hits[ipi[NR_IPIS - 1]] > 1, 20), "duplicate event");
  for (int i = 0; i < NR_IPIS; i++)
    CHECK(port_hits[ipi[i]] == 1, "IPI port %u delivered %u times", ipi[i], port_hits[ipi[i]]);

  stage(13);
  CHECK(evtchn_is_masked(b), "mask bit of port %u lost when shared_info moved", b);
  CHECK(evtchn_is_pending(b), "pending bit of port %u lost when shared_info moved", b);
  CHECK(port_hits[b] == 1, "masked port delivered");
  EXPECT_RC(evtchn_unmask(b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 2, 2000), "pending event did not survive the moves");
  /* Time keeps being published at the new place. */
  CHECK(time_available(), "vcpu_info.time empty after the move");
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("shinfo_move: %u moves, %u IPIs, %u echoes, %u upcalls\n", NR_MOVES, NR_IPIS,
         port_hits[e] - 1, upcall_count[0]);
}
