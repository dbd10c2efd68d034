/* blkfront_hostile: a blkif frontend that sends the backend what it must refuse, on a disk the
 * kvm test filled with blk_pattern(0xa1): bad grant references, out-of-range sectors, bad
 * segment counts and sector ranges, unknown operations (each answered BLKIF_RSP_ERROR, or
 * EOPNOTSUPP for the operation as blkback does), wild ring indexes (that ring stopped, the other
 * queue unaffected), requests on a closed device (never answered, never executed) and
 * connection keys it must refuse (backend Closing with `error`). A good read after each checks
 * the backend still works; the last one after reconnecting. */
#include "blkfront.h"

GUEST_NAME("blkfront_hostile");

#define SEED_A 0xa1u
#define SEED_W 0xc3u
#define CLOSED_SECTOR 16u /* the write sent to the closed device: must not land */

static uint8_t buf[BLKFRONT_DATA_PAGES][4096] __attribute__((aligned(4096)));
static struct blkif_request_segment bad_indirect[4096 / sizeof(struct blkif_request_segment)]
    __attribute__((aligned(4096)));
static struct blkfront bf;
static unsigned refused;

static void good_read(unsigned q) {
  memset(buf[0], 0, 4096);
  int16_t st = blkfront_rw(&bf, q, BLKIF_OP_READ, 8, buf[0], 1);
  CHECK(st == BLKIF_RSP_OKAY, "good read on queue %u answered %d", q, st);
  CHECK(blk_check(buf[0], SEED_A, 8, 8) == 0, "good read on queue %u: wrong data", q);
}

/* Sends req on queue q, expects `want`, then a good read on the same queue. */
static void expect_refused(unsigned q, void* req, int16_t want, const char* what) {
  int16_t st = blkfront_do(&bf, q, req, sizeof(blkif_request_t));
  CHECK(st == want, "%s: answered %d, expected %d", what, st, want);
  refused++;
  good_read(q);
}

static blkif_request_t rw_req(uint8_t op, uint64_t sector, uint8_t nseg, grant_ref_t ref) {
  blkif_request_t r;
  memset(&r, 0, sizeof(r));
  r.operation = op;
  r.nr_segments = nseg;
  r.handle = (blkif_vdev_t)bf.devid;
  r.sector_number = sector;
  for (unsigned i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++)
    r.seg[i] = (struct blkif_request_segment){.gref = ref, .first_sect = 0, .last_sect = 7};
  return r;
}

static blkif_request_t indirect_req(uint8_t op, uint16_t nseg, grant_ref_t ind_ref) {
  blkif_request_t r;
  memset(&r, 0, sizeof(r));
  blkif_request_indirect_t* ind = (blkif_request_indirect_t*)&r;
  ind->operation = BLKIF_OP_INDIRECT;
  ind->indirect_op = op;
  ind->nr_segments = nseg;
  ind->handle = (blkif_vdev_t)bf.devid;
  ind->sector_number = 0;
  ind->indirect_grefs[0] = ind_ref;
  return r;
}

static void bad_grants(void) {
  blkif_request_t r;
  r = rw_req(BLKIF_OP_READ, 0, 1, 0xffffff);
  expect_refused(0, &r, BLKIF_RSP_ERROR, "read into a ref beyond the table");
  r = rw_req(BLKIF_OP_READ, 0, 1, GNTTAB_ENTRIES - 1); /* never granted: flags 0 */
  expect_refused(0, &r, BLKIF_RSP_ERROR, "read into a ref never granted");
  r = rw_req(BLKIF_OP_WRITE, 0, 1, 2); /* a reserved entry */
  expect_refused(0, &r, BLKIF_RSP_ERROR, "write from a reserved ref");
  grant_ref_t other = gnttab_grant(7, buf[1], false); /* granted to another domain */
  r = rw_req(BLKIF_OP_READ, 0, 1, other);
  expect_refused(0, &r, BLKIF_RSP_ERROR, "read into a page granted to domain 7");
  CHECK(gnttab_end(other), "domain 7's grant mapped");
  grant_ref_t ro = gnttab_grant(0, buf[1], true);
  memset(buf[1], 0x77, 4096);
  r = rw_req(BLKIF_OP_READ, 0, 1, ro);
  expect_refused(0, &r, BLKIF_RSP_ERROR, "read into a read-only grant");
  CHECK(buf[1][0] == 0x77 && buf[1][4095] == 0x77, "a read-only granted page was written");
  /* Several segments, only the last one bad: nothing is read, the good ones are released. */
  r = rw_req(BLKIF_OP_READ, 0, 3, ro);
  grant_ref_t good = gnttab_grant(0, buf[2], false);
  r.seg[0].gref = good;
  r.seg[1].gref = good;
  expect_refused(0, &r, BLKIF_RSP_ERROR, "read whose third segment is read-only");
  CHECK(gnttab_end(good), "the good segment's grant still mapped after an error");
  CHECK(gnttab_end(ro), "read-only grant still mapped");
  r = indirect_req(BLKIF_OP_READ, 4, 0xfffff0);
  expect_refused(0, &r, BLKIF_RSP_ERROR, "indirect page ref beyond the table");
  grant_ref_t ind = gnttab_grant(0, bad_indirect, true);
  for (unsigned i = 0; i < 4; i++)
    bad_indirect[i] =
        (struct blkif_request_segment){.gref = 0xfffff0, .first_sect = 0, .last_sect = 7};
  r = indirect_req(BLKIF_OP_READ, 4, ind);
  expect_refused(0, &r, BLKIF_RSP_ERROR, "indirect segments with bad refs");
  CHECK(gnttab_end(ind), "indirect page grant still mapped");
  printk("blkfront: PASS bad grant references\n");
}

static void bad_ranges(void) {
  grant_ref_t ref = gnttab_grant(0, buf[1], false);
  blkif_request_t r;
  r = rw_req(BLKIF_OP_READ, bf.sectors, 1, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read at the end of the disk");
  r = rw_req(BLKIF_OP_READ, bf.sectors - 4, 1, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read straddling the end");
  r = rw_req(BLKIF_OP_WRITE, bf.sectors - 8, 2, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "write of two pages over the last one");
  r = rw_req(BLKIF_OP_READ, 1ull << 60, 1, ref); /* * 512 overflows 64 bits */
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read at sector 2^60");
  r = rw_req(BLKIF_OP_READ, ~0ull - 3, 1, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read at sector 2^64 - 4");
  blkif_request_discard_t d = {.operation = BLKIF_OP_DISCARD,
                               .handle = (blkif_vdev_t)bf.devid,
                               .sector_number = 8,
                               .nr_sectors = ~0ull};
  expect_refused(1, &d, BLKIF_RSP_ERROR, "discard of 2^64 - 1 sectors");
  d.sector_number = bf.sectors;
  d.nr_sectors = 8;
  expect_refused(1, &d, BLKIF_RSP_ERROR, "discard past the end");
  printk("blkfront: PASS out-of-range sectors\n");

  /* Segment counts */
  r = rw_req(BLKIF_OP_READ, 0, 0, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read with no segment");
  r = rw_req(BLKIF_OP_READ, 0, 12, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "read with 12 segments");
  r = rw_req(BLKIF_OP_WRITE, 0, 255, ref);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "write with 255 segments");
  grant_ref_t ind = gnttab_grant(0, bad_indirect, true);
  for (unsigned i = 0; i < 512; i++)
    bad_indirect[i] = (struct blkif_request_segment){.gref = ref, .first_sect = 0, .last_sect = 7};
  r = indirect_req(BLKIF_OP_READ, 0, ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect with no segment");
  r = indirect_req(BLKIF_OP_READ, (uint16_t)(bf.max_indirect + 1), ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect beyond feature-max-indirect-segments");
  r = indirect_req(BLKIF_OP_READ, 0xffff, ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect with 65535 segments");
  r = indirect_req(BLKIF_OP_FLUSH_DISKCACHE, 1, ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect flush");
  r = indirect_req(BLKIF_OP_INDIRECT, 1, ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect indirect");
  printk("blkfront: PASS bad segment counts\n");

  /* Sector ranges within a page */
  r = rw_req(BLKIF_OP_READ, 0, 1, ref);
  r.seg[0].last_sect = 8;
  expect_refused(1, &r, BLKIF_RSP_ERROR, "segment ending at sector 8 of its page");
  r.seg[0].first_sect = 5;
  r.seg[0].last_sect = 4;
  expect_refused(1, &r, BLKIF_RSP_ERROR, "segment with last_sect < first_sect");
  r.seg[0].first_sect = 0;
  r.seg[0].last_sect = 255;
  expect_refused(1, &r, BLKIF_RSP_ERROR, "segment with last_sect 255");
  bad_indirect[1].last_sect = 9;
  r = indirect_req(BLKIF_OP_READ, 2, ind);
  expect_refused(1, &r, BLKIF_RSP_ERROR, "indirect segment ending at sector 9");
  CHECK(gnttab_end(ind), "indirect page grant still mapped");
  CHECK(gnttab_end(ref), "data grant still mapped");
  printk("blkfront: PASS bad sector ranges\n");

  /* Operations nobody offered */
  r = rw_req(99, 0, 1, 0);
  expect_refused(0, &r, BLKIF_RSP_EOPNOTSUPP, "operation 99");
  r = rw_req(BLKIF_OP_RESERVED_1, 0, 1, 0);
  expect_refused(0, &r, BLKIF_RSP_EOPNOTSUPP, "BLKIF_OP_RESERVED_1");
  printk("blkfront: PASS unknown operations\n");
}

static void wild_indexes(void) {
  /* Queue 1: req_prod a ring and a half ahead of what was answered. The backend stops that
   * ring (a log line) and answers nothing there; queue 0 goes on. */
  struct blkfront_queue* bq = &bf.q[1];
  __atomic_store_n(&bq->ring.sring->req_prod, bq->ring.req_prod_pvt + 48, __ATOMIC_RELEASE);
  EXPECT_RC(evtchn_send(bq->port), 0);
  blkif_response_t rsp;
  CHECK(!blkfront_response(&bf, 1, &rsp, 1000), "a response on a ring with wild indexes");
  good_read(0);
  /* A wild rsp_event / req_event: only notifications change, not what is answered. */
  struct blkfront_queue* q0 = &bf.q[0];
  __atomic_store_n(&q0->ring.sring->rsp_event, 0x80000000u, __ATOMIC_RELEASE);
  good_read(0);
  printk("blkfront: PASS wild ring indexes\n");
}

/* Closing with 16 reads just pushed: the backend drains what it took before it says Closing;
 * whatever it answered is right, and no grant is left mapped. */
static void close_in_flight(void) {
  enum { kReads = 16, kFirstPage = 16, kId = 7000 };
  grant_ref_t refs[kReads];
  for (unsigned i = 0; i < kReads; i++) {
    memset(buf[kFirstPage + i], 0, 4096);
    refs[i] = gnttab_grant(0, buf[kFirstPage + i], false);
    blkif_request_t r = rw_req(BLKIF_OP_READ, 8u * i, 1, refs[i]);
    r.id = kId + i;
    blkfront_push(&bf, 0, &r, sizeof(r));
  }
  blkfront_set_state(&bf, XenbusStateClosing);
  CHECK(blkfront_wait_backend(&bf, XenbusStateClosing, 10000), "backend state %u, not Closing",
        blkfront_backend_state(&bf));
  unsigned answered = 0;
  blkif_response_t rsp;
  while (blkfront_response(&bf, 0, &rsp, 0)) {
    const uint64_t i = rsp.id - kId;
    CHECK(i < kReads && rsp.status == BLKIF_RSP_OKAY, "response id %lu status %d",
          (unsigned long)rsp.id, rsp.status);
    CHECK(blk_check(buf[kFirstPage + i], SEED_A, 8u * i, 8) == 0, "read %lu: wrong data",
          (unsigned long)i);
    answered++;
  }
  for (unsigned i = 0; i < kReads; i++)
    CHECK(gnttab_end(refs[i]), "read %u's page still mapped after Closing", i);
  bf.tally.requests += answered, bf.tally.reads += answered,
      bf.tally.read_bytes += answered * 4096u;
  printk("blkfront_hostile: %u of %u reads answered before Closing\n", answered, kReads);
  printk("blkfront: PASS closing with requests in flight\n");
}

static void closed_device(void) {
  /* Closing (close_in_flight did it): the backend has let go of the rings. A write put on the
   * old ring then is never executed (checked after reconnecting, and by the test on the image). */
  close_in_flight();
  blk_fill(buf[3], SEED_W, CLOSED_SECTOR, 8);
  grant_ref_t ref = gnttab_grant(0, buf[3], true);
  blkif_request_t r = rw_req(BLKIF_OP_WRITE, CLOSED_SECTOR, 1, ref);
  r.id = 4242;
  blkfront_push(&bf, 0, &r, sizeof(r));
  EXPECT_RC(evtchn_send(bf.q[0].port), 0);
  blkif_response_t rsp;
  CHECK(!blkfront_response(&bf, 0, &rsp, 1000), "a response on a closing device");
  CHECK(gnttab_end(ref), "the closed device's write grant is mapped");
  blkfront_set_state(&bf, XenbusStateClosed);
  CHECK(blkfront_wait_backend(&bf, XenbusStateClosed, 10000), "backend state %u, not Closed",
        blkfront_backend_state(&bf));
  blkfront_release(&bf);
  /* Connected without starting over: the backend stays Closed. */
  blkfront_set_state(&bf, XenbusStateConnected);
  CHECK(!blkfront_wait_backend(&bf, XenbusStateConnected, 1000),
        "backend connected a closed device");
  CHECK(blkfront_backend_state(&bf) == XenbusStateClosed, "backend state %u",
        blkfront_backend_state(&bf));
  /* Starting over works, and the write on the closed device never happened. */
  blkfront_reopen(&bf);
  blkfront_connect(&bf, 2, 0);
  good_read(0);
  good_read(1);
  EXPECT_RC(blkfront_rw(&bf, 1, BLKIF_OP_READ, CLOSED_SECTOR, buf[0], 1), BLKIF_RSP_OKAY);
  CHECK(blk_check(buf[0], SEED_A, CLOSED_SECTOR, 8) == 0, "the closed device executed a write");
  printk("blkfront: PASS requests on a closed device\n");
}

/* Connection keys a backend must refuse: it writes `error`, goes Closing, and the frontend can
 * start over (Closed, Initialising -> InitWait). */
static uint8_t ring_page[4096] __attribute__((aligned(4096)));

static void write_front(const char* key, const char* value) {
  char path[96];
  snprintk(path, sizeof(path), "%s/%s", bf.front, key);
  const char* err = xs_write(0, path, value);
  CHECK(!err, "writing %s: %s", path, err);
}

static bool contains(const char* s, const char* part) {
  size_t n = strlen(part);
  for (; *s; s++)
    if (memcmp(s, part, n) == 0) return true;
  return false;
}

/* Connects with key = value (the other keys good) and expects `why` in the backend's error. */
static void refused_connection(const char* what, const char* key, const char* value,
                               const char* why) {
  memset(ring_page, 0, sizeof(ring_page));
  grant_ref_t ref = gnttab_grant(0, ring_page, false);
  evtchn_port_t port;
  EXPECT_RC(evtchn_alloc_unbound(0, &port), 0);
  char num[16];
  snprintk(num, sizeof(num), "%u", ref);
  write_front("ring-ref", num);
  snprintk(num, sizeof(num), "%u", port);
  write_front("event-channel", num);
  write_front("protocol", XEN_IO_PROTO_ABI_X86_64);
  write_front(key, value);
  blkfront_set_state(&bf, XenbusStateInitialised);
  CHECK(blkfront_wait_backend(&bf, XenbusStateClosing, 10000), "%s: backend state %u", what,
        blkfront_backend_state(&bf));
  char path[128], err[96];
  snprintk(path, sizeof(path), "%s/error", bf.back);
  CHECK(!xs_read(0, path, err, sizeof(err)) && err[0], "%s: no error node", what);
  CHECK(contains(err, why), "%s: backend error '%s', expected '%s'", what, err, why);
  printk("blkfront_hostile: %s refused: %s\n", what, err);
  blkfront_set_state(&bf, XenbusStateClosed);
  CHECK(blkfront_wait_backend(&bf, XenbusStateClosed, 10000), "%s: backend state %u", what,
        blkfront_backend_state(&bf));
  CHECK(gnttab_end(ref), "%s: ring page still mapped", what);
  EXPECT_RC(evtchn_close(port), 0);
  blkfront_reopen(&bf);
  char tmp[96]; /* the next case starts from clean keys */
  snprintk(tmp, sizeof(tmp), "%s/%s", bf.front, key);
  (void)xs_rm(0, tmp);
}

static void bad_keys(void) {
  blkfront_close(&bf);
  blkfront_reopen(&bf);
  /* One queue, one page: no keys of the two-queue connection before. */
  char path[96];
  snprintk(path, sizeof(path), "%s/multi-queue-num-queues", bf.front);
  const char* rm = xs_rm(0, path);
  CHECK(!rm, "removing %s: %s", path, rm);
  refused_connection("a ring-ref never granted", "ring-ref", "500", "ring grant refused");
  refused_connection("a ring-ref that is not a number", "ring-ref", "12abc",
                     "ring-ref: missing or malformed");
  grant_ref_t ro = gnttab_grant(0, buf[5], true);
  char num[16];
  snprintk(num, sizeof(num), "%u", ro);
  refused_connection("a read-only ring page", "ring-ref", num, "ring grant refused");
  CHECK(gnttab_end(ro), "read-only ring grant mapped");
  refused_connection("event-channel 0", "event-channel", "0",
                     "event-channel: missing or malformed");
  evtchn_port_t a, b; /* a port bound to ourselves is no port unbound for domain 0 */
  EXPECT_RC(evtchn_loopback_pair(&a, &b), 0);
  snprintk(num, sizeof(num), "%u", b);
  refused_connection("an event-channel bound elsewhere", "event-channel", num,
                     "not a port unbound for domain 0");
  refused_connection("9 queues", "multi-queue-num-queues", "9",
                     "multi-queue-num-queues: out of range");
  refused_connection("ring-page-order 5", "ring-page-order", "5", "ring-page-order: out of range");
  refused_connection("an unknown protocol", "protocol", "x86_16-abi", "protocol: unsupported ABI");
  blkfront_connect(&bf, 1, 0); /* and a good connection still works */
  good_read(0);
  blkfront_close(&bf);
  printk("blkfront: PASS bad connection keys\n");
}

void guest_main(void) {
  stage(10);
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  xs_init();
  gnttab_init();
  blkfront_probe(&bf, 51712);
  blkfront_connect(&bf, 2, 0);
  good_read(0);
  good_read(1);
  stage(11);
  bad_grants();
  stage(12);
  bad_ranges();
  stage(13);
  wild_indexes();
  stage(14);
  closed_device();
  stage(15);
  bad_keys();
  printk(
      "blkfront-tally xvda: requests %lu reads %lu writes %lu read-bytes %lu write-bytes %lu "
      "errors %lu\n",
      (unsigned long)bf.tally.requests, (unsigned long)bf.tally.reads,
      (unsigned long)bf.tally.writes, (unsigned long)bf.tally.read_bytes,
      (unsigned long)bf.tally.write_bytes, (unsigned long)bf.tally.errors);
  printk("blkfront_hostile: %u bad requests refused\n", refused);
}
