/* xenstore: the VMM's xenstore through the ring a toolstack sets up (HVM_PARAM_STORE_PFN/
 * EVTCHN): reads of the libxl tree, write/read back, a watch with its initial event and one
 * per change, a transaction that conflicts (EAGAIN) and one that commits, permissions (dom0's
 * home is unreadable), and a READ round trip timed against a no-op hypercall. */
#include "xs.h"

GUEST_NAME("xenstore");

static bool streq(const char* a, const char* b) {
  size_t n = strlen(a);
  return n == strlen(b) && memcmp(a, b, n) == 0;
}

#define EXPECT_OK(expr)                                                  \
  do {                                                                   \
    const char* e_ = (expr);                                             \
    CHECK(e_ == 0, "%s:%d: %s: %s", __FILE_NAME__, __LINE__, #expr, e_); \
  } while (0)

static void expect_event(const char* path, const char* token) {
  struct xs_event ev;
  CHECK(xs_next_event(&ev, 5000), "no watch event for %s", path);
  CHECK(streq(ev.path, path) && streq(ev.token, token), "event %s/%s, expected %s/%s", ev.path,
        ev.token, path, token);
}

void guest_main(void) {
  char buf[256];
  stage(10);
  xs_init();
  EXPECT_OK(xs_read(0, "domid", buf, sizeof(buf)));
  CHECK(streq(buf, "1"), "domid reads '%s'", buf);
  EXPECT_OK(xs_read(0, "/local/domain/1/name", buf, sizeof(buf)));
  printk("xenstore: name = %s\n", buf);
  EXPECT_OK(xs_read(0, "control/platform-feature-xs_reset_watches", buf, sizeof(buf)));
  CHECK(streq(buf, "1"), "platform-feature-xs_reset_watches reads '%s'", buf);

  stage(11); /* write, read back */
  EXPECT_OK(xs_write(0, "data/greeting", "hello xenstore"));
  EXPECT_OK(xs_read(0, "data/greeting", buf, sizeof(buf)));
  CHECK(streq(buf, "hello xenstore"), "read back '%s'", buf);
  const char* err = xs_read(0, "data/missing", buf, sizeof(buf));
  CHECK(err && streq(err, "ENOENT"), "missing node: %s", err ? err : "found");

  stage(12); /* watch: one event at once, one per change, relative path as set */
  EXPECT_OK(xs_watch("data/w", "tok"));
  expect_event("data/w", "tok");
  EXPECT_OK(xs_write(0, "data/w/child", "1"));
  expect_event("data/w/child", "tok");

  stage(13); /* a transaction whose node changed meanwhile: EAGAIN, nothing applied */
  EXPECT_OK(xs_write(0, "data/t", "before"));
  uint32_t tx = 0;
  EXPECT_OK(xs_tx_start(&tx));
  CHECK(tx != 0, "transaction id 0");
  EXPECT_OK(xs_read(tx, "data/t", buf, sizeof(buf)));
  EXPECT_OK(xs_write(0, "data/t", "outside"));
  EXPECT_OK(xs_write(tx, "data/t", "inside"));
  EXPECT_OK(xs_read(tx, "data/t", buf, sizeof(buf)));
  CHECK(streq(buf, "inside"), "transaction reads its own write as '%s'", buf);
  err = xs_tx_end(tx, true);
  CHECK(err && streq(err, "EAGAIN"), "conflicting commit: %s", err ? err : "committed");
  EXPECT_OK(xs_read(0, "data/t", buf, sizeof(buf)));
  CHECK(streq(buf, "outside"), "after EAGAIN data/t = '%s'", buf);
  EXPECT_OK(xs_tx_start(&tx));
  EXPECT_OK(xs_write(tx, "data/t", "committed"));
  EXPECT_OK(xs_tx_end(tx, true));
  EXPECT_OK(xs_read(0, "data/t", buf, sizeof(buf)));
  CHECK(streq(buf, "committed"), "after commit data/t = '%s'", buf);

  stage(14); /* permissions */
  err = xs_read(0, "/local/domain/0", buf, sizeof(buf));
  CHECK(err && streq(err, "EACCES"), "reading dom0's home: %s", err ? err : "allowed");
  err = xs_write(0, "name", "renamed");
  CHECK(err && streq(err, "EACCES"), "writing our read-only name: %s", err ? err : "allowed");

  stage(15); /* READ round trip vs a no-op hypercall (printed, not asserted) */
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0); /* pvclock for now_ns() */
  enum { kRounds = 200 };
  uint64_t t0 = now_ns();
  for (int i = 0; i < kRounds; i++) (void)HYPERVISOR_xen_version(XENVER_version, NULL);
  uint64_t t1 = now_ns();
  for (int i = 0; i < kRounds; i++) (void)xs_read(0, "domid", buf, sizeof(buf));
  uint64_t t2 = now_ns();
  uint64_t hc = (t1 - t0) / kRounds, rd = (t2 - t1) / kRounds;
  printk("xenstore-bench: read round trip %lu ns, no-op hypercall %lu ns, ratio %lu.%02lu\n",
         (unsigned long)rd, (unsigned long)hc, (unsigned long)(hc ? rd / hc : 0),
         (unsigned long)(hc ? (rd * 100 / hc) % 100 : 0));
}
