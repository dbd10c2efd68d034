/* blkfront: our blkif frontend (runtime/blkfront.c) against the VMM's backend, run with
 * `--disk A --disk B,ro` where the kvm test filled A with blk_pattern(0xa1) and B with
 * blk_pattern(0xb2). Scenarios, each verified by data and ending in `blkfront: PASS <name>`:
 * reads, writes read back, flush, discard (zeros after), indirect, close and reconnect (with
 * two queues and two-page rings), multi-queue, a full ring in flight, the x86_32-abi layout, a
 * read-only disk refusing writes. The test checks the image afterwards and the per-disk --stats
 * line against the tally printed here. With "hold=1" the reads go on until the host releases
 * the guest (xs.h): a save or migration in the middle of its I/O, however fast the host. */
#include "blkfront.h"

GUEST_NAME("blkfront");

#define SEED_A 0xa1u /* the rw disk as the test made it */
#define SEED_B 0xb2u /* the ro disk */
#define SEED_W 0xc3u /* what we write at WRITE_SECTOR */
#define SEED_I 0xd4u /* the indirect write at INDIRECT_SECTOR */
#define SEED_Q 0xe5u /* the write through queue 1 at QUEUE_SECTOR */
#define WRITE_SECTOR 200u
#define DISCARD_SECTOR 1024u /* 64 KiB, discard-granularity aligned */
#define DISCARD_SECTORS 128u
#define INDIRECT_SECTOR 2048u
#define INDIRECT_PAGES 32u
#define QUEUE_SECTOR 3000u
#define FULL_RING_SECTOR 4096u /* 64 pages of the original pattern */
#define FULL_RING_ID 5000u
#define LAYOUT32_SECTOR 5120u
#define SEED_L 0xf6u /* the x86_32-abi write at LAYOUT32_SECTOR */

/* Flat (not [pages][4096]): loops run across page boundaries. */
static uint8_t buf_mem[BLKFRONT_DATA_PAGES * 4096] __attribute__((aligned(4096)));
static uint8_t buf2_mem[BLKFRONT_DATA_PAGES * 4096] __attribute__((aligned(4096)));
#define buf(n) (buf_mem + (n)*4096u)
#define buf2(n) (buf2_mem + (n)*4096u)
static struct blkfront rw, ro;

#define EXPECT_STATUS(expr, want)                                                              \
  do {                                                                                         \
    int16_t st_ = (expr);                                                                      \
    CHECK(st_ == (want), "%s:%d: %s answered %d, expected %d", __FILE_NAME__, __LINE__, #expr, \
          st_, (want));                                                                        \
  } while (0)

static void check_pattern(const void* p, uint64_t seed, uint64_t sector, unsigned sectors,
                          const char* what) {
  unsigned bad = blk_check(p, seed, sector, sectors);
  CHECK(bad == 0, "%s: sector %lu does not hold pattern %lx", what,
        (unsigned long)(sector + bad - 1), (unsigned long)seed);
}

static void scenario_pass(const char* name) { printk("blkfront: PASS %s\n", name); }

static void reads(void) {
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, 0, buf(0), 1), BLKIF_RSP_OKAY);
  check_pattern(buf(0), SEED_A, 0, 8, "read of sector 0");
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, 100, buf(0), 4), BLKIF_RSP_OKAY);
  check_pattern(buf(0), SEED_A, 100, 32, "4-page read at 100");
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, rw.sectors - 8, buf(0), 1), BLKIF_RSP_OKAY);
  check_pattern(buf(0), SEED_A, rw.sectors - 8, 8, "read of the last page");
  /* Sectors 3..5 of a page: the data lands at byte 3 * 512 of it, nothing else changes. */
  memset(buf(1), 0xee, 4096);
  grant_ref_t ref = gnttab_grant(0, buf(1), false);
  blkif_request_t req = {.operation = BLKIF_OP_READ,
                         .nr_segments = 1,
                         .handle = (blkif_vdev_t)rw.devid,
                         .sector_number = 77};
  req.seg[0] = (struct blkif_request_segment){.gref = ref, .first_sect = 3, .last_sect = 5};
  EXPECT_STATUS(blkfront_do(&rw, 0, &req, sizeof(req)), BLKIF_RSP_OKAY);
  rw.tally.read_bytes += 3 * SECTOR_SIZE;
  CHECK(gnttab_end(ref), "partial-page grant still mapped");
  check_pattern(buf(1) + 3 * SECTOR_SIZE, SEED_A, 77, 3, "sectors 3..5 of a page");
  CHECK(buf(1)[0] == 0xee && buf(1)[3 * SECTOR_SIZE - 1] == 0xee &&
            buf(1)[6 * SECTOR_SIZE] == 0xee && buf(1)[4095] == 0xee,
        "a partial-page read wrote outside its sectors");
  scenario_pass("reads");
}

static void writes(void) {
  blk_fill(buf(0), SEED_W, WRITE_SECTOR, 3 * 8);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_WRITE, WRITE_SECTOR, buf(0), 3), BLKIF_RSP_OKAY);
  memset(buf2(0), 0, 3 * 4096);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, WRITE_SECTOR, buf2(0), 3), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_W, WRITE_SECTOR, 24, "write read back");
  /* Neighbours untouched. */
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, WRITE_SECTOR + 24, buf2(0), 1), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_A, WRITE_SECTOR + 24, 8, "the page after the write");
  scenario_pass("writes");
}

static void flush(void) {
  CHECK(rw.flush, "feature-flush-cache not offered");
  EXPECT_STATUS(blkfront_flush(&rw, 0), BLKIF_RSP_OKAY);
  /* A barrier with data: flush, then the write. */
  blk_fill(buf(0), SEED_W, WRITE_SECTOR + 24, 8);
  grant_ref_t ref = gnttab_grant(0, buf(0), true);
  blkif_request_t req = {.operation = BLKIF_OP_WRITE_BARRIER,
                         .nr_segments = 1,
                         .handle = (blkif_vdev_t)rw.devid,
                         .sector_number = WRITE_SECTOR + 24};
  req.seg[0] = (struct blkif_request_segment){.gref = ref, .first_sect = 0, .last_sect = 7};
  EXPECT_STATUS(blkfront_do(&rw, 0, &req, sizeof(req)), BLKIF_RSP_OKAY);
  rw.tally.writes++; /* the backend counts a barrier's data as a write */
  rw.tally.write_bytes += 4096;
  CHECK(gnttab_end(ref), "barrier grant still mapped");
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, WRITE_SECTOR + 24, buf2(0), 1), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_W, WRITE_SECTOR + 24, 8, "barrier write read back");
  scenario_pass("flush");
}

static void discard(void) {
  if (!rw.discard) {
    /* The image's file system cannot punch holes (9p): not offered, and refused as such. */
    EXPECT_STATUS(blkfront_discard(&rw, 0, DISCARD_SECTOR, DISCARD_SECTORS), BLKIF_RSP_EOPNOTSUPP);
    EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, DISCARD_SECTOR, buf(0), 1), BLKIF_RSP_OKAY);
    check_pattern(buf(0), SEED_A, DISCARD_SECTOR, 8, "after a refused discard");
    scenario_pass("discard (not offered: EOPNOTSUPP)");
    return;
  }
  EXPECT_STATUS(blkfront_discard(&rw, 0, DISCARD_SECTOR, DISCARD_SECTORS), BLKIF_RSP_OKAY);
  memset(buf(0), 0xff, 16 * 4096);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, DISCARD_SECTOR, buf(0), 16), BLKIF_RSP_OKAY);
  for (unsigned i = 0; i < 16 * 4096; i++)
    CHECK(buf(0)[i] == 0, "discarded byte %u reads %x", i, buf(0)[i]);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, DISCARD_SECTOR + DISCARD_SECTORS, buf(0), 1),
                BLKIF_RSP_OKAY);
  check_pattern(buf(0), SEED_A, DISCARD_SECTOR + DISCARD_SECTORS, 8, "after the discard");
  scenario_pass("discard");
}

static void indirect(void) {
  CHECK(rw.max_indirect >= INDIRECT_PAGES, "feature-max-indirect-segments %u", rw.max_indirect);
  blk_fill(buf(0), SEED_I, INDIRECT_SECTOR, INDIRECT_PAGES * 8);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_WRITE, INDIRECT_SECTOR, buf(0), INDIRECT_PAGES),
                BLKIF_RSP_OKAY);
  memset(buf2(0), 0, INDIRECT_PAGES * 4096);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, INDIRECT_SECTOR, buf2(0), INDIRECT_PAGES),
                BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_I, INDIRECT_SECTOR, INDIRECT_PAGES * 8, "indirect read back");
  scenario_pass("indirect");
}

static void reconnect(void) {
  blkfront_close(&rw);
  blkfront_reopen(&rw);
  CHECK(rw.max_queues >= 2 && rw.max_order >= 1, "backend offers %u queues, ring order %u",
        rw.max_queues, rw.max_order);
  blkfront_connect(&rw, 2, 1);
  /* What was written before the close is there. */
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, WRITE_SECTOR, buf2(0), 3), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_W, WRITE_SECTOR, 24, "after reconnecting");
  scenario_pass("reconnect");
}

static void multi_queue(void) {
  CHECK(rw.q[0].port != rw.q[1].port, "both queues on port %u", rw.q[0].port);
  blk_fill(buf(0), SEED_Q, QUEUE_SECTOR, 16);
  EXPECT_STATUS(blkfront_rw(&rw, 1, BLKIF_OP_WRITE, QUEUE_SECTOR, buf(0), 2), BLKIF_RSP_OKAY);
  memset(buf2(0), 0, 2 * 4096);
  EXPECT_STATUS(blkfront_rw(&rw, 0, BLKIF_OP_READ, QUEUE_SECTOR, buf2(0), 2), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_Q, QUEUE_SECTOR, 16, "queue 1's write read on queue 0");
  /* One read in flight on each queue at once, each answered on its own ring. */
  static blkif_request_t req[2];
  grant_ref_t ref[2];
  for (unsigned q = 0; q < 2; q++) {
    ref[q] = gnttab_grant(0, buf2(q), false);
    req[q] = (blkif_request_t){.operation = BLKIF_OP_READ,
                               .nr_segments = 1,
                               .handle = (blkif_vdev_t)rw.devid,
                               .id = 1000 + q,
                               .sector_number = 8u * q};
    req[q].seg[0] = (struct blkif_request_segment){.gref = ref[q], .first_sect = 0, .last_sect = 7};
    blkfront_push(&rw, q, &req[q], sizeof(req[q]));
  }
  for (unsigned q = 0; q < 2; q++) {
    blkif_response_t rsp;
    CHECK(blkfront_response(&rw, q, &rsp, 10000), "no response on queue %u", q);
    CHECK(rsp.id == 1000 + q && rsp.status == BLKIF_RSP_OKAY, "queue %u: id %lu status %d", q,
          (unsigned long)rsp.id, rsp.status);
    CHECK(gnttab_end(ref[q]), "queue %u grant still mapped", q);
    check_pattern(buf2(q), SEED_A, 8u * q, 8, "parallel read");
    rw.tally.requests++, rw.tally.reads++, rw.tally.read_bytes += 4096;
  }
  CHECK(rw.q[0].notifies > 0 && rw.q[1].notifies > 0, "queue notifications: %u, %u",
        rw.q[0].notifies, rw.q[1].notifies);
  scenario_pass("multi-queue");
}

/* A whole ring of reads in flight at once (64 on the two-page ring), pushed one by one as a
 * busy frontend does: every one answered once, in any order, with its own data, and the
 * backend's req_event spares us most of the notifications. */
static void full_ring(void) {
  struct blkfront_queue* bq = &rw.q[0];
  const unsigned n = RING_SIZE(&bq->ring);
  CHECK(n == 64 && n <= BLKFRONT_DATA_PAGES, "ring of %u entries", n);
  static grant_ref_t refs[64];
  static uint8_t seen[64];
  const uint32_t notifies = bq->notifies;
  memset(buf(0), 0, n * 4096);
  memset(seen, 0, sizeof(seen));
  for (unsigned i = 0; i < n; i++) {
    refs[i] = gnttab_grant(0, buf(i), false);
    blkif_request_t req = {.operation = BLKIF_OP_READ,
                           .nr_segments = 1,
                           .handle = (blkif_vdev_t)rw.devid,
                           .id = FULL_RING_ID + i,
                           .sector_number = FULL_RING_SECTOR + 8u * i};
    req.seg[0] = (struct blkif_request_segment){.gref = refs[i], .first_sect = 0, .last_sect = 7};
    blkfront_push(&rw, 0, &req, sizeof(req));
  }
  for (unsigned k = 0; k < n; k++) {
    blkif_response_t rsp;
    CHECK(blkfront_response(&rw, 0, &rsp, 10000), "%u of %u responses", k, n);
    const uint64_t i = rsp.id - FULL_RING_ID;
    CHECK(i < n && !seen[i] && rsp.status == BLKIF_RSP_OKAY, "response id %lu status %d",
          (unsigned long)rsp.id, rsp.status);
    seen[i] = 1;
    CHECK(gnttab_end(refs[i]), "request %lu's grant still mapped after its response",
          (unsigned long)i);
    check_pattern(buf(i), SEED_A, FULL_RING_SECTOR + 8u * i, 8, "full-ring read");
  }
  rw.tally.requests += n, rw.tally.reads += n, rw.tally.read_bytes += n * 4096u;
  printk("blkfront: %u requests in flight took %u notifications\n", n, bq->notifies - notifies);
  scenario_pass("full ring");
}

/* The x86_32-abi layout (`protocol` = x86_32-abi, as a 32-bit frontend writes): 8-byte fields
 * 4-aligned, request 108 bytes, response 12, 32 entries on one page. Driven by hand here: the
 * ring macros only know our own (64-bit) layout. */
struct req32 {
  uint8_t operation, nr_segments;
  uint16_t handle;
  uint32_t id[2], sector[2];
  struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct rsp32 {
  uint32_t id[2];
  uint8_t operation, pad;
  int16_t status;
};
_Static_assert(sizeof(struct req32) == 108 && sizeof(struct rsp32) == 12, "x86_32-abi sizes");
#define RING32_ENTRIES 32u

static int16_t do32(struct blkfront_queue* bq, uint32_t* prod, uint8_t op, uint64_t sector,
                    uint8_t* page, unsigned nr_pages) {
  volatile uint8_t* ring = (volatile uint8_t*)bq->ring.sring;
  volatile uint32_t* idx = (volatile uint32_t*)ring; /* req_prod, req_event, rsp_prod, rsp_event */
  grant_ref_t refs[BLKIF_MAX_SEGMENTS_PER_REQUEST];
  struct req32 req;
  memset(&req, 0, sizeof(req));
  req.operation = op;
  req.nr_segments = (uint8_t)nr_pages;
  req.handle = (uint16_t)rw.devid;
  const uint64_t id = 0x1234567800000000ull + *prod; /* both halves of the id must come back */
  req.id[0] = (uint32_t)id, req.id[1] = (uint32_t)(id >> 32);
  req.sector[0] = (uint32_t)sector, req.sector[1] = (uint32_t)(sector >> 32);
  for (unsigned i = 0; i < nr_pages; i++) {
    refs[i] = gnttab_grant(0, page + i * 4096u, op == BLKIF_OP_WRITE);
    req.seg[i] = (struct blkif_request_segment){.gref = refs[i], .first_sect = 0, .last_sect = 7};
  }
  const uint32_t slot = *prod % RING32_ENTRIES;
  memcpy((void*)(ring + 64 + slot * sizeof(struct req32)), &req, sizeof(req));
  __atomic_store_n(&idx[0], *prod + 1, __ATOMIC_SEQ_CST);
  EXPECT_RC(evtchn_send(bq->port), 0);
  uint64_t deadline = now_ns() + 10000 * 1000000ull;
  for (;;) {
    evtchn_clear_pending(bq->port);
    __atomic_store_n(&idx[3], *prod + 1, __ATOMIC_SEQ_CST); /* rsp_event: the next response */
    if (__atomic_load_n(&idx[2], __ATOMIC_SEQ_CST) != *prod) break;
    CHECK(now_ns() < deadline, "no x86_32-abi response");
    evtchn_port_t port = bq->port;
    sched_poll_t p = {.nr_ports = 1, .timeout = deadline};
    set_xen_guest_handle(p.ports, &port);
    (void)HYPERVISOR_sched_op(SCHEDOP_poll, &p);
  }
  struct rsp32 rsp;
  memcpy(&rsp, (const void*)(ring + 64 + slot * sizeof(struct req32)), sizeof(rsp));
  ++*prod;
  CHECK(rsp.id[0] == (uint32_t)id && rsp.id[1] == (uint32_t)(id >> 32) && rsp.operation == op,
        "x86_32-abi response id %x:%x op %u", rsp.id[1], rsp.id[0], rsp.operation);
  for (unsigned i = 0; i < nr_pages; i++) CHECK(gnttab_end(refs[i]), "x86_32-abi grant mapped");
  rw.tally.requests++;
  if (rsp.status == BLKIF_RSP_OKAY && op == BLKIF_OP_READ)
    rw.tally.reads++, rw.tally.read_bytes += nr_pages * 4096u;
  if (rsp.status == BLKIF_RSP_OKAY && op == BLKIF_OP_WRITE)
    rw.tally.writes++, rw.tally.write_bytes += nr_pages * 4096u;
  if (rsp.status != BLKIF_RSP_OKAY) rw.tally.errors++;
  return rsp.status;
}

static void layout32(void) {
  blkfront_close(&rw);
  blkfront_reopen(&rw);
  rw.protocol = XEN_IO_PROTO_ABI_X86_32;
  blkfront_connect(&rw, 1, 0);
  struct blkfront_queue* bq = &rw.q[0];
  uint32_t prod = 0;
  /* More requests than entries: the indexes wrap around the 32-entry ring. */
  for (unsigned round = 0; round < 40; round++) {
    const uint64_t sector = LAYOUT32_SECTOR + 16u * (round % 4);
    if (round % 4 == 0) {
      blk_fill(buf(0), SEED_L, LAYOUT32_SECTOR, 64);
      EXPECT_STATUS(do32(bq, &prod, BLKIF_OP_WRITE, LAYOUT32_SECTOR, buf(0), 8), BLKIF_RSP_OKAY);
    }
    memset(buf2(0), 0, 2 * 4096);
    EXPECT_STATUS(do32(bq, &prod, BLKIF_OP_READ, sector, buf2(0), 2), BLKIF_RSP_OKAY);
    check_pattern(buf2(0), SEED_L, sector, 16, "x86_32-abi read back");
  }
  EXPECT_STATUS(do32(bq, &prod, BLKIF_OP_READ, rw.sectors, buf2(0), 1), BLKIF_RSP_ERROR);
  blkfront_close(&rw);
  rw.protocol = 0;
  scenario_pass("x86_32-abi layout");
}

static void read_only(void) {
  blkfront_probe(&ro, 51728); /* xvdb */
  CHECK(ro.read_only && (ro.info & VDISK_READONLY) && !ro.discard,
        "ro disk: mode %s info %x discard %d", ro.read_only ? "r" : "w", ro.info, ro.discard);
  blkfront_connect(&ro, 1, 0);
  EXPECT_STATUS(blkfront_rw(&ro, 0, BLKIF_OP_READ, 16, buf(0), 2), BLKIF_RSP_OKAY);
  check_pattern(buf(0), SEED_B, 16, 16, "ro disk read");
  blk_fill(buf(0), SEED_W, 16, 16);
  EXPECT_STATUS(blkfront_rw(&ro, 0, BLKIF_OP_WRITE, 16, buf(0), 2), BLKIF_RSP_ERROR);
  EXPECT_STATUS(blkfront_rw(&ro, 0, BLKIF_OP_WRITE, 16, buf(0), 12), BLKIF_RSP_ERROR);
  EXPECT_STATUS(blkfront_flush(&ro, 0), BLKIF_RSP_ERROR);
  EXPECT_STATUS(blkfront_discard(&ro, 0, 0, 8), BLKIF_RSP_EOPNOTSUPP);
  EXPECT_STATUS(blkfront_rw(&ro, 0, BLKIF_OP_READ, 16, buf2(0), 2), BLKIF_RSP_OKAY);
  check_pattern(buf2(0), SEED_B, 16, 16, "ro disk after refused writes");
  blkfront_close(&ro);
  scenario_pass("read-only");
}

static void print_tally(const char* vdev, const struct blkfront* bf) {
  printk(
      "blkfront-tally %s: requests %lu reads %lu writes %lu read-bytes %lu write-bytes %lu "
      "errors %lu\n",
      vdev, (unsigned long)bf->tally.requests, (unsigned long)bf->tally.reads,
      (unsigned long)bf->tally.writes, (unsigned long)bf->tally.read_bytes,
      (unsigned long)bf->tally.write_bytes, (unsigned long)bf->tally.errors);
}

void guest_main(void) {
  stage(10);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0); /* pvclock for SCHEDOP_poll timeouts */
  xs_init();
  gnttab_init();
  blkfront_probe(&rw, 51712); /* xvda */
  CHECK(!rw.read_only && !(rw.info & VDISK_READONLY), "xvda: mode r, info %x", rw.info);
  blkfront_connect(&rw, 1, 0);
  stage(11);
  do reads();
  while (held());
  stage(12);
  writes();
  stage(13);
  flush();
  stage(14);
  discard();
  stage(15);
  indirect();
  stage(16);
  reconnect();
  stage(17);
  multi_queue();
  stage(18);
  full_ring();
  stage(19);
  layout32();
  stage(20);
  read_only();
  print_tally("xvda", &rw);
  print_tally("xvdb", &ro);
}
