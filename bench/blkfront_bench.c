/* bench_blkfront: a guest that times, in one run on one vCPU, a 4 KiB read round trip through
 * the PV disk (runtime/blkfront.c: grant the page, put the request on the ring, EVTCHNOP_send,
 * SCHEDOP_poll until the backend's notification, take the response, end the grant) against a
 * no-op hypercall (xen_version). Rounds of each alternate; means in pvclock ns and the ratio.
 * Run with `xenkvm run --disk IMAGE bench_blkfront.elf` (IMAGE at least 1 MiB). */
#include "blkfront.h"

GUEST_NAME("bench_blkfront");

#define ROUNDS 4
#define READS 100
#define HYPERCALLS 400

static uint8_t page[4096] __attribute__((aligned(4096)));
static struct blkfront bf;

void guest_main(void) {
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  xs_init();
  gnttab_init();
  blkfront_probe(&bf, 51712);
  blkfront_connect(&bf, 1, 0);
  uint64_t hc_ns = 0, rd_ns = 0;
  uint32_t sector = 0;
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t t0 = now_ns();
    for (int i = 0; i < HYPERCALLS; i++) (void)HYPERVISOR_xen_version(XENVER_version, NULL);
    uint64_t t1 = now_ns();
    for (int i = 0; i < READS; i++) {
      int16_t st = blkfront_rw(&bf, 0, BLKIF_OP_READ, sector, page, 1);
      CHECK(st == BLKIF_RSP_OKAY, "read answered %d", st);
      sector = (sector + 8) % (uint32_t)(bf.sectors < 2048 ? bf.sectors : 2048);
    }
    uint64_t t2 = now_ns();
    if (r == 0) continue; /* warm-up: page cache, first mappings */
    hc_ns += t1 - t0;
    rd_ns += t2 - t1;
  }
  uint64_t hc = hc_ns / ((ROUNDS - 1) * HYPERCALLS), rd = rd_ns / ((ROUNDS - 1) * READS);
  printk(
      "bench: 4 KiB read round trip %lu ns, no-op hypercall %lu ns: read/hypercall = "
      "%lu.%02lu (%u notifications for %u reads)\n",
      (unsigned long)rd, (unsigned long)hc, (unsigned long)(hc ? rd / hc : 0),
      (unsigned long)(hc ? (rd * 100 / hc) % 100 : 0), bf.q[0].notifies,
      (unsigned)(ROUNDS * READS));
  blkfront_close(&bf);
}
