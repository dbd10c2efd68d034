/* xs_shutdown: a guest that does what PV drivers do for `xl shutdown`: watches
 * control/shutdown, and when the toolstack (xenkvm on SIGTERM) writes "poweroff" there,
 * clears it and powers off. Prints "xs_shutdown: waiting" once the watch is set. */
#include "xs.h"

GUEST_NAME("xs_shutdown");

void guest_main(void) {
  char buf[64];
  stage(10);
  xs_init();
  const char* err = xs_watch("control/shutdown", "shutdown");
  CHECK(err == 0, "watch control/shutdown: %s", err);
  printk("xs_shutdown: waiting\n");
  for (;;) {
    struct xs_event ev;
    if (!xs_next_event(&ev, 600000)) test_fail("no shutdown request in 10 minutes");
    err = xs_read(0, "control/shutdown", buf, sizeof(buf));
    if (err != 0 || buf[0] == 0) continue; /* the initial event, or our own clearing */
    CHECK(memcmp(buf, "poweroff", 9) == 0, "control/shutdown = '%s'", buf);
    stage(11);
    err = xs_write(0, "control/shutdown", "");
    CHECK(err == 0, "clearing control/shutdown: %s", err);
    printk("xs_shutdown: poweroff requested\n");
    return; /* PASS, SCHEDOP_shutdown poweroff */
  }
}
