/* poll_timer: SCHEDOP_poll (ready at once, timeout at an absolute system time, woken by a
 * masked port becoming pending), timers (VCPUOP_set_singleshot_timer, set_timer_op; in the
 * past; cancelled) raising VIRQ_TIMER, and SCHEDOP_block woken by the timer event. System time is
 * the pvclock in vcpu_info.time (xen.h). With "hold=1" the 20 ms poll timeouts of stage 12 go
 * on until the host releases the guest (xs.h), each still at least 20 ms of system time. */
#include "guest.h"
#include "xs.h"

GUEST_NAME("poll_timer");

#define MS 1000000ull

static long poll(evtchn_port_t* ports, unsigned n, uint64_t timeout_abs) {
  sched_poll_t p = {.nr_ports = n, .timeout = timeout_abs};
  set_xen_guest_handle(p.ports, ports);
  return HYPERVISOR_sched_op(SCHEDOP_poll, &p);
}

void guest_main(void) {
  stage(10);
  evtchn_setup_vector();
  CHECK(time_available(), "vcpu_info.time is not populated (tsc_to_system_mul == 0)");
  uint64_t t0 = now_ns();
  uint64_t t1 = now_ns();
  CHECK(t0 > 0 && t1 >= t0, "system time not monotonic: %lu then %lu", t0, t1);

  /* Poll on a port that is already pending (masked, so no upcall takes it first). */
  stage(11);
  evtchn_port_t a, b;
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  CHECK(WAIT_FOR(port_hits[b] == 1, 2000), "bind event lost");
  evtchn_mask(b);
  EXPECT_RC(evtchn_send(a), 0);
  uint64_t start = now_ns();
  EXPECT_RC(poll(&b, 1, start + 5000 * MS), 0);
  uint64_t took = now_ns() - start;
  CHECK(took < 1000 * MS, "poll on a pending port took %lu ns", took);
  CHECK(evtchn_is_pending(b), "poll consumed the pending bit");

  /* Poll times out at an absolute time. */
  stage(12);
  evtchn_clear_pending(b);
  bool holding = held();
  do {
    start = now_ns();
    EXPECT_RC(poll(&b, 1, start + 20 * MS), 0);
    took = now_ns() - start;
    CHECK(took >= 19 * MS, "poll with a 20 ms timeout returned after %lu ns", took);
    CHECK(took < 2000 * MS, "poll with a 20 ms timeout returned after %lu ns", took);
    if (holding) holding = held();
  } while (holding);
  /* A timeout already in the past returns at once. */
  start = now_ns();
  EXPECT_RC(poll(&b, 1, start - 1 * MS), 0);
  CHECK(now_ns() - start < 1000 * MS, "poll with a past timeout blocked");

  /* Poll woken by a masked port becoming pending: VIRQ_TIMER from a single-shot timer. */
  stage(13);
  evtchn_port_t t;
  EXPECT_RC(evtchn_bind_virq(VIRQ_TIMER, 0, &t), 0);
  evtchn_mask(t);
  start = now_ns();
  EXPECT_RC(set_singleshot_timer(start + 30 * MS), 0);
  evtchn_port_t ports[2] = {b, t};
  EXPECT_RC(poll(ports, 2, start + 5000 * MS), 0);
  took = now_ns() - start;
  CHECK(evtchn_is_pending(t), "poll returned but timer port %u is not pending", t);
  CHECK(took >= 29 * MS && took < 4000 * MS, "woke after %lu ns for a 30 ms timer", took);
  CHECK(port_hits[t] == 0, "masked timer port was delivered");

  /* Unmask: the pending timer event is delivered. */
  stage(14);
  EXPECT_RC(evtchn_unmask(t), 0);
  CHECK(WAIT_FOR(port_hits[t] == 1, 2000), "unmask did not deliver the timer event");

  /* Poll argument checks. */
  EXPECT_RC(poll(ports, 129, now_ns() + MS), -XEN_EINVAL); /* more than 128 ports */
  evtchn_port_t bad = 5000;
  EXPECT_RC(poll(&bad, 1, now_ns() + MS), -XEN_EINVAL);

  /* Timers delivered as events. */
  stage(15);
  start = now_ns();
  EXPECT_RC(set_singleshot_timer(start + 10 * MS), 0);
  CHECK(WAIT_FOR(port_hits[t] == 2, 3000), "single-shot timer did not fire");
  took = now_ns() - start;
  CHECK(took >= 9 * MS, "single-shot timer fired after %lu ns, asked 10 ms", took);
  start = now_ns();
  EXPECT_RC(HYPERVISOR_set_timer_op(start + 10 * MS), 0);
  CHECK(WAIT_FOR(port_hits[t] == 3, 3000), "set_timer_op timer did not fire");
  took = now_ns() - start;
  CHECK(took >= 9 * MS, "set_timer_op timer fired after %lu ns, asked 10 ms", took);

  /* A deadline already in the past fires at once (without VCPU_SSHOTTMR_future). */
  start = now_ns();
  EXPECT_RC(set_singleshot_timer(start - 5 * MS), 0);
  CHECK(WAIT_FOR(port_hits[t] == 4, 1000), "single-shot timer in the past did not fire");
  EXPECT_RC(HYPERVISOR_set_timer_op(now_ns() - 5 * MS), 0);
  CHECK(WAIT_FOR(port_hits[t] == 5, 1000), "set_timer_op in the past did not fire");

  /* Cancelling: set_timer_op(0) and VCPUOP_stop_singleshot_timer. */
  stage(16);
  EXPECT_RC(HYPERVISOR_set_timer_op(now_ns() + 20 * MS), 0);
  EXPECT_RC(HYPERVISOR_set_timer_op(0), 0);
  EXPECT_RC(set_singleshot_timer(now_ns() + 20 * MS), 0);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL), 0);
  CHECK(!WAIT_FOR(port_hits[t] != 5, 80), "a cancelled timer fired");

  /* VCPU_SSHOTTMR_future refuses a time in the past. */
  vcpu_set_singleshot_timer_t past = {.timeout_abs_ns = now_ns() - 10 * MS,
                                      .flags = VCPU_SSHOTTMR_future};
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &past), -XEN_ETIME);

  /* SCHEDOP_block sleeps until an event (here the timer) is pending. */
  stage(17);
  uint32_t before = port_hits[t];
  unsigned blocks = 0;
  start = now_ns();
  EXPECT_RC(set_singleshot_timer(start + 20 * MS), 0);
  while (port_hits[t] == before && blocks < 100) {
    EXPECT_RC(HYPERVISOR_sched_op(SCHEDOP_block, NULL), 0);
    blocks++;
  }
  took = now_ns() - start;
  CHECK(WAIT_FOR(port_hits[t] == before + 1, 1000), "timer event after SCHEDOP_block lost");
  CHECK(blocks <= 3, "SCHEDOP_block returned %u times before a 20 ms timer fired", blocks);
  CHECK(took >= 19 * MS, "SCHEDOP_block returned after %lu ns, timer was 20 ms", took);
  CHECK(stray_events == 0, "%u stray events", stray_events);
}
