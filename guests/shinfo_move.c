/* shinfo_move: events keep arriving while the guest moves shared_info between two pages with
 * XENMEM_add_to_physmap (the VMM's slow path). vCPU1 sends one IPI on each of 64 ports bound
 * to vCPU0 while vCPU0 moves shared_info back and forth, talks to the echo backend and has
 * VIRQ_TIMER fire around each move; every event must arrive exactly once, and pending/mask
 * bits must move with the page (in Xen the page itself moves to the new frame). */
#include "guest.h"
#include "xs.h"

GUEST_NAME("shinfo_move");

#define NR_IPIS 64
/* "moves=N" on the command line sets how many times shared_info moves (default 12); with
 * "hold=1" it goes on moving until the host releases it (xs.h). */
static uint32_t nr_moves = 12;

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
  uint64_t flags = irq_save(); /* our handler must not use the old mapping while it moves */
  long rc = shinfo_map(shinfo_pages[page]);
  irq_restore(flags);
  CHECK(rc == 0, "add_to_physmap(shared_info -> %p) returned %ld", shinfo_pages[page], rc);
}

void guest_main(void) {
  stage(10);
  nr_moves = cmdline_number("moves", 12);
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
  evtchn_port_t tm;
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &tm), 0);

  stage(11);
  EXPECT_RC(vcpu_start(1, sender), 0);
  __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
  bool holding = held();
  uint32_t m;
  /* Held: on until released, then to an even count (shared_info back on page 0). */
  for (m = 0; m < nr_moves || holding || m % 2 != 0; m++) {
    /* A timer due about now, raised from the VMM's timer thread while the page moves. */
    EXPECT_RC(set_singleshot_timer(now_ns() + (m % 4) * 50000), 0);
    EXPECT_RC(evtchn_send(e), 0);
    move_to((m + 1) % 2);
    CHECK(WAIT_FOR(port_hits[e] == m + 2, 2000), "move %u: echo event lost", m);
    CHECK(WAIT_FOR(port_hits[tm] == m + 1, 2000), "move %u: timer event lost", m);
    if (holding) holding = held();
  }
  nr_moves = m;
  stage(12);
  CHECK(WAIT_FOR(sender_done, 10000), "vcpu1 did not finish sending");
  for (int i = 0; i < NR_IPIS; i++)
    CHECK(WAIT_FOR(port_hits[ipi[i]] >= 1, 2000), "IPI port %u lost across %u moves", ipi[i],
          nr_moves);
  CHECK(!WAIT_FOR(port_hits[ipi[NR_IPIS - 1]] > 1, 20), "duplicate event");
  for (int i = 0; i < NR_IPIS; i++)
    CHECK(port_hits[ipi[i]] == 1, "IPI port %u delivered %u times", ipi[i], port_hits[ipi[i]]);

  stage(13);
  CHECK(evtchn_is_masked(b), "mask bit of port %u lost when shared_info moved", b);
  CHECK(evtchn_is_pending(b), "pending bit of port %u lost when shared_info moved", b);
  CHECK(port_hits[b] == 1, "masked port delivered");
  EXPECT_RC(evtchn_unmask(b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 2, 2000), "pending event did not survive the moves");
  evtchn_mask(b);
  /* The old frame is no longer shared_info: new events must not show up there. */
  CHECK(shinfo == (shared_info_t*)shinfo_pages[0], "shared_info should be back on page 0");
  const shared_info_t* old = (const shared_info_t*)shinfo_pages[1];
  xen_ulong_t old_pending = old->evtchn_pending[0];
  xen_ulong_t old_sel = old->vcpu_info[0].evtchn_pending_sel;
  uint8_t old_upcall = old->vcpu_info[0].evtchn_upcall_pending;
  for (uint32_t i = 0; i < 5; i++) {
    EXPECT_RC(evtchn_send(e), 0);
    CHECK(WAIT_FOR(port_hits[e] == nr_moves + 2 + i, 2000), "echo after the moves lost");
  }
  irq_disable();
  EXPECT_RC(evtchn_send(a), 0); /* b is masked: stays pending in the current page */
  CHECK(old->evtchn_pending[0] == old_pending && old->vcpu_info[0].evtchn_pending_sel == old_sel &&
            old->vcpu_info[0].evtchn_upcall_pending == old_upcall,
        "events still written to the old shared_info frame");
  irq_enable();
  /* Time keeps being published at the new place. */
  CHECK(time_available(), "vcpu_info.time empty after the move");
  CHECK(stray_events == 0, "%u stray events", stray_events);
  printk("shinfo_move: %u moves, %u IPIs, %u echoes, %u timers, %u upcalls\n", nr_moves, NR_IPIS,
         port_hits[e] - 1, port_hits[tm], upcall_count[0]);
}
