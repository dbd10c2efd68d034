/* bench_blkfront: a guest that times, in one run on one vCPU, a 4 KiB read round trip through
 * the PV disk (runtime/blkfront.c: grant the page, put the request on the ring, EVTCHNOP_send,
 * SCHEDOP_poll until the backend's notification, take the response, end the grant) against a
 * no-op hypercall (xen_version), and the per-read cost with 32 reads in flight. Rounds of each
 * alternate; means in pvclock ns and the ratios.
 * Run with `xenkvm run --disk IMAGE bench_blkfront.elf` (IMAGE at least 1 MiB). */
#include "blkfront.h"

GUEST_NAME("bench_blkfront");

#define ROUNDS 4
#define READS 100
#define HYPERCALLS 400

#define DEPTH 32 /* one page's ring */

static struct blkfront bf;
static uint8_t page[4096] __attribute__((aligned(4096)));
static uint8_t pages[DEPTH * 4096] __attribute__((aligned(4096)));

/* DEPTH reads pushed before the first response is taken: the per-read cost when batched. */
static void batch(uint32_t* sector) {
  grant_ref_t refs[DEPTH];
  for (unsigned i = 0; i < DEPTH; i++) {
    refs[i] = gnttab_grant(0, pages + i * 4096u, false);
    blkif_request_t req = {.operation = BLKIF_OP_READ,
                           .nr_segments = 1,
                           .handle = (blkif_vdev_t)bf.devid,
                           .id = i,
                           .sector_number = *sector};
    req.seg[0] = (struct blkif_request_segment){.gref = refs[i], .first_sect = 0, .last_sect = 7};
    blkfront_push(&bf, 0, &req, sizeof(req));
    *sector = (*sector + 8) % 2048u;
  }
  for (unsigned i = 0; i < DEPTH; i++) {
    blkif_response_t rsp;
    CHECK(blkfront_response(&bf, 0, &rsp, 10000), "batch response %u missing", i);
    CHECK(rsp.status == BLKIF_RSP_OKAY && rsp.id < DEPTH, "batch response %lu status %d",
          (unsigned long)rsp.id, rsp.status);
    CHECK(gnttab_end(refs[rsp.id]), "batch grant still mapped");
  }
}

void guest_main(void) {
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  xs_init();
  gnttab_init();
  blkfront_probe(&bf, 51712);
  blkfront_connect(&bf, 1, 0);
  CHECK(bf.sectors >= 2048, "the image needs at least 1 MiB");
  uint64_t hc_ns = 0, rd_ns = 0, batch_ns = 0;
  uint32_t sector = 0, single_notifies = 0, batch_notifies = 0;
  for (int r = 0; r < ROUNDS; r++) {
    const uint32_t n0 = bf.q[0].notifies;
    uint64_t t0 = now_ns();
    for (int i = 0; i < HYPERCALLS; i++) (void)HYPERVISOR_xen_version(XENVER_version, NULL);
    uint64_t t1 = now_ns();
    for (int i = 0; i < READS; i++) {
      int16_t st = blkfront_rw(&bf, 0, BLKIF_OP_READ, sector, page, 1);
      CHECK(st == BLKIF_RSP_OKAY, "read answered %d", st);
      sector = (sector + 8) % 2048u;
    }
    uint64_t t2 = now_ns();
    const uint32_t n1 = bf.q[0].notifies;
    for (int i = 0; i < READS / DEPTH; i++) batch(&sector);
    uint64_t t3 = now_ns();
    single_notifies += n1 - n0;
    batch_notifies += bf.q[0].notifies - n1;
    if (r == 0) continue; /* warm-up: page cache, first mappings */
    hc_ns += t1 - t0;
    rd_ns += t2 - t1;
    batch_ns += t3 - t2;
  }
  uint64_t hc = hc_ns / ((ROUNDS - 1) * HYPERCALLS), rd = rd_ns / ((ROUNDS - 1) * READS);
  printk(
      "bench: 4 KiB read round trip %lu ns, no-op hypercall %lu ns: read/hypercall = "
      "%lu.%02lu (%u notifications for %u single reads)\n",
      (unsigned long)rd, (unsigned long)hc, (unsigned long)(hc ? rd / hc : 0),
      (unsigned long)(hc ? (rd * 100 / hc) % 100 : 0), single_notifies, (unsigned)(ROUNDS * READS));
  uint64_t per = batch_ns / ((ROUNDS - 1) * (READS / DEPTH) * DEPTH);
  printk(
      "bench: 4 KiB reads %u in flight: %lu ns each: batched/hypercall = %lu.%02lu (%u "
      "notifications for %u reads)\n",
      DEPTH, (unsigned long)per, (unsigned long)(hc ? per / hc : 0),
      (unsigned long)(hc ? (per * 100 / hc) % 100 : 0), batch_notifies,
      (unsigned)(ROUNDS * (READS / DEPTH) * DEPTH));
  blkfront_close(&bf);
}
