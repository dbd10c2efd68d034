/* The test guests' blkif frontend; see blkfront.h. The handshake is the one Linux's
 * xen-blkfront and Mini-OS's blkfront run: read the backend's keys at InitWait, write ring
 * references, event channels and protocol, go Initialised, wait for Connected. */
#include "blkfront.h"

#define MS 1000000ull

static uint8_t ring_pages[BLKFRONT_MAX_QUEUES][1u << BLKFRONT_MAX_RING_ORDER][4096]
    __attribute__((aligned(4096)));
static struct blkif_request_segment indirect_page[4096 / sizeof(struct blkif_request_segment)]
    __attribute__((aligned(4096)));

static bool streq(const char* a, const char* b) {
  size_t n = strlen(a);
  return n == strlen(b) && memcmp(a, b, n) == 0;
}

static uint64_t parse_u64(const char* s) {
  uint64_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (uint64_t)(*s - '0');
  return v;
}

/* `key` under dir as a number, def when the node is missing. */
static uint64_t read_num(const char* dir, const char* key, uint64_t def) {
  char path[160], val[32];
  snprintk(path, sizeof(path), "%s/%s", dir, key);
  if (xs_read(0, path, val, sizeof(val))) return def;
  return parse_u64(val);
}

static void write_key(const char* dir, const char* key, const char* fmt, uint64_t v) {
  char path[160], val[32];
  snprintk(path, sizeof(path), "%s/%s", dir, key);
  snprintk(val, sizeof(val), fmt, v);
  const char* err = xs_write(0, path, val);
  CHECK(!err, "writing %s: %s", path, err);
}

static void remove_key(const char* dir, const char* key) {
  char path[160];
  snprintk(path, sizeof(path), "%s/%s", dir, key);
  const char* err = xs_rm(0, path);
  CHECK(!err || streq(err, "ENOENT"), "removing %s: %s", path, err);
}

unsigned blkfront_backend_state(struct blkfront* bf) {
  return (unsigned)read_num(bf->back, "state", XenbusStateUnknown);
}

void blkfront_set_state(struct blkfront* bf, unsigned state) {
  write_key(bf->front, "state", "%lu", state);
}

bool blkfront_wait_backend(struct blkfront* bf, unsigned state, uint64_t ms) {
  uint64_t deadline = now_ns() + ms * MS;
  for (;;) {
    if (blkfront_backend_state(bf) == state) return true;
    uint64_t now = now_ns();
    if (now >= deadline) return false;
    struct xs_event ev; /* the watch set in probe fires on each change */
    (void)xs_next_event(&ev, (deadline - now) / MS + 1);
  }
}

void blkfront_probe(struct blkfront* bf, unsigned devid) {
  memset(bf, 0, sizeof(*bf));
  bf->devid = devid;
  snprintk(bf->front, sizeof(bf->front), "device/vbd/%u", devid);
  char path[80];
  snprintk(path, sizeof(path), "%s/backend", bf->front);
  const char* err = xs_read(0, path, bf->back, sizeof(bf->back));
  CHECK(!err, "%s: %s", path, err);
  snprintk(path, sizeof(path), "%s/state", bf->back);
  err = xs_watch(path, "blkback");
  CHECK(!err, "watch %s: %s", path, err);
  CHECK(blkfront_wait_backend(bf, XenbusStateInitWait, 10000), "backend %s state %u, not InitWait",
        bf->back, blkfront_backend_state(bf));
  bf->sectors = read_num(bf->back, "sectors", 0);
  bf->sector_size = (unsigned)read_num(bf->back, "sector-size", 0);
  bf->info = (unsigned)read_num(bf->back, "info", 0);
  bf->flush = read_num(bf->back, "feature-flush-cache", 0) != 0;
  bf->discard = read_num(bf->back, "feature-discard", 0) != 0;
  bf->max_indirect = (unsigned)read_num(bf->back, "feature-max-indirect-segments", 0);
  bf->max_queues = (unsigned)read_num(bf->back, "multi-queue-max-queues", 1);
  bf->max_order = (unsigned)read_num(bf->back, "max-ring-page-order", 0);
  char mode[8];
  snprintk(path, sizeof(path), "%s/mode", bf->back);
  err = xs_read(0, path, mode, sizeof(mode));
  CHECK(!err, "%s: %s", path, err);
  bf->read_only = streq(mode, "r");
  CHECK(bf->sectors > 0 && bf->sector_size == SECTOR_SIZE, "%s: sectors %lu sector-size %u",
        bf->back, (unsigned long)bf->sectors, bf->sector_size);
}

void blkfront_connect(struct blkfront* bf, unsigned nr_queues, unsigned order) {
  CHECK(nr_queues >= 1 && nr_queues <= BLKFRONT_MAX_QUEUES && nr_queues <= bf->max_queues,
        "%u queues (backend offers %u)", nr_queues, bf->max_queues);
  CHECK(order <= BLKFRONT_MAX_RING_ORDER && order <= bf->max_order, "ring order %u", order);
  bf->nr_queues = nr_queues;
  bf->order = order;
  for (unsigned q = 0; q < nr_queues; q++) {
    struct blkfront_queue* bq = &bf->q[q];
    blkif_sring_t* sring = (blkif_sring_t*)ring_pages[q];
    memset(ring_pages[q], 0, sizeof(ring_pages[q]));
    SHARED_RING_INIT(sring);
    FRONT_RING_INIT(&bq->ring, sring, 4096u << order);
    for (unsigned p = 0; p < (1u << order); p++)
      bq->ring_refs[p] = gnttab_grant(0, ring_pages[q][p], false);
    EXPECT_RC(evtchn_alloc_unbound(0, &bq->port), 0);
    evtchn_mask(bq->port); /* we poll it */
    bq->notifies = 0;

    char dir[80];
    if (nr_queues == 1)
      snprintk(dir, sizeof(dir), "%s", bf->front);
    else
      snprintk(dir, sizeof(dir), "%s/queue-%u", bf->front, q);
    if (order == 0) {
      write_key(dir, "ring-ref", "%lu", bq->ring_refs[0]);
    } else {
      for (unsigned p = 0; p < (1u << order); p++) {
        char key[16];
        snprintk(key, sizeof(key), "ring-ref%u", p);
        write_key(dir, key, "%lu", bq->ring_refs[p]);
      }
    }
    write_key(dir, "event-channel", "%lu", bq->port);
  }
  /* Keys of an earlier connection would describe rings that are gone: the backend reads
   * multi-queue-num-queues and ring-page-order first (as blkback does), so drop them. */
  if (order > 0)
    write_key(bf->front, "ring-page-order", "%lu", order);
  else
    remove_key(bf->front, "ring-page-order");
  if (nr_queues > 1)
    write_key(bf->front, "multi-queue-num-queues", "%lu", nr_queues);
  else
    remove_key(bf->front, "multi-queue-num-queues");
  char path[80];
  snprintk(path, sizeof(path), "%s/protocol", bf->front);
  const char* err = xs_write(0, path, bf->protocol ? bf->protocol : XEN_IO_PROTO_ABI_X86_64);
  CHECK(!err, "%s: %s", path, err);
  blkfront_set_state(bf, XenbusStateInitialised);
  CHECK(blkfront_wait_backend(bf, XenbusStateConnected, 10000), "backend state %u, not Connected",
        blkfront_backend_state(bf));
  blkfront_set_state(bf, XenbusStateConnected);
}

void blkfront_close(struct blkfront* bf) {
  blkfront_set_state(bf, XenbusStateClosing);
  CHECK(blkfront_wait_backend(bf, XenbusStateClosing, 10000), "backend state %u, not Closing",
        blkfront_backend_state(bf));
  blkfront_set_state(bf, XenbusStateClosed);
  CHECK(blkfront_wait_backend(bf, XenbusStateClosed, 10000), "backend state %u, not Closed",
        blkfront_backend_state(bf));
  blkfront_release(bf);
}

void blkfront_release(struct blkfront* bf) {
  /* The backend has let go of the rings: their grants end at once. */
  for (unsigned q = 0; q < bf->nr_queues; q++) {
    for (unsigned p = 0; p < (1u << bf->order); p++)
      CHECK(gnttab_end(bf->q[q].ring_refs[p]), "queue %u ring page %u still mapped (flags %x)", q,
            p, gnttab_busy(bf->q[q].ring_refs[p]));
    EXPECT_RC(evtchn_close(bf->q[q].port), 0);
  }
}

void blkfront_reopen(struct blkfront* bf) {
  blkfront_set_state(bf, XenbusStateInitialising);
  CHECK(blkfront_wait_backend(bf, XenbusStateInitWait, 10000), "backend state %u, not InitWait",
        blkfront_backend_state(bf));
}

void blkfront_push(struct blkfront* bf, unsigned q, const void* req, size_t len) {
  struct blkfront_queue* bq = &bf->q[q];
  CHECK(len <= sizeof(blkif_request_t), "request of %lu bytes", (unsigned long)len);
  CHECK(!RING_FULL(&bq->ring), "queue %u ring full", q);
  memcpy(RING_GET_REQUEST(&bq->ring, bq->ring.req_prod_pvt), req, len);
  bq->ring.req_prod_pvt++;
  int notify;
  RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&bq->ring, notify);
  if (notify) {
    bq->notifies++;
    EXPECT_RC(evtchn_send(bq->port), 0);
  }
}

bool blkfront_response(struct blkfront* bf, unsigned q, blkif_response_t* rsp, uint64_t ms) {
  struct blkfront_queue* bq = &bf->q[q];
  uint64_t deadline = now_ns() + ms * MS;
  for (;;) {
    /* Clear first: a notification after this is not lost, SCHEDOP_poll sees it pending. */
    evtchn_clear_pending(bq->port);
    int more = RING_HAS_UNCONSUMED_RESPONSES(&bq->ring);
    if (!more) RING_FINAL_CHECK_FOR_RESPONSES(&bq->ring, more);
    if (more) {
      *rsp = *RING_GET_RESPONSE(&bq->ring, bq->ring.rsp_cons);
      bq->ring.rsp_cons++;
      return true;
    }
    if (now_ns() >= deadline) return false;
    evtchn_port_t port = bq->port;
    sched_poll_t p = {.nr_ports = 1, .timeout = deadline};
    set_xen_guest_handle(p.ports, &port);
    (void)HYPERVISOR_sched_op(SCHEDOP_poll, &p);
  }
}

/* Bytes are added by blkfront_rw, which knows them. */
static void tally(struct blkfront* bf, uint8_t op, int16_t status) {
  bf->tally.requests++;
  if (status != BLKIF_RSP_OKAY) {
    bf->tally.errors++;
  } else if (op == BLKIF_OP_READ) {
    bf->tally.reads++;
  } else if (op == BLKIF_OP_WRITE) {
    bf->tally.writes++;
  }
}

int16_t blkfront_do(struct blkfront* bf, unsigned q, void* req, size_t len) {
  blkif_request_t* r = req;
  r->id = ++bf->next_id;
  blkfront_push(bf, q, req, len);
  blkif_response_t rsp;
  CHECK(blkfront_response(bf, q, &rsp, 10000), "queue %u: no response to op %u id %lu", q,
        r->operation, (unsigned long)r->id);
  /* An indirect request is answered with its indirect_op, as blkback does and Linux's
   * blkfront insists ("response has wrong operation"). */
  uint8_t op = r->operation;
  if (op == BLKIF_OP_INDIRECT) op = ((blkif_request_indirect_t*)req)->indirect_op;
  CHECK(rsp.id == r->id && rsp.operation == op, "response id %lu op %u for id %lu op %u",
        (unsigned long)rsp.id, rsp.operation, (unsigned long)r->id, op);
  tally(bf, op, rsp.status);
  return rsp.status;
}

int16_t blkfront_rw(struct blkfront* bf, unsigned q, uint8_t op, uint64_t sector, uint8_t* pages,
                    unsigned nr_pages) {
  CHECK(nr_pages >= 1 && nr_pages <= BLKFRONT_DATA_PAGES, "%u pages", nr_pages);
  grant_ref_t refs[BLKFRONT_DATA_PAGES];
  /* A read writes into our pages: the grant must be writable. */
  for (unsigned i = 0; i < nr_pages; i++)
    refs[i] = gnttab_grant(0, pages + i * 4096u, op == BLKIF_OP_WRITE);
  grant_ref_t ind_ref = 0;
  blkif_request_t req;
  memset(&req, 0, sizeof(req));
  if (nr_pages <= BLKIF_MAX_SEGMENTS_PER_REQUEST) {
    req.operation = op;
    req.nr_segments = (uint8_t)nr_pages;
    req.handle = (blkif_vdev_t)bf->devid;
    req.sector_number = sector;
    for (unsigned i = 0; i < nr_pages; i++)
      req.seg[i] = (struct blkif_request_segment){.gref = refs[i], .first_sect = 0, .last_sect = 7};
  } else {
    CHECK(nr_pages <= bf->max_indirect, "%u pages: backend offers %u indirect segments", nr_pages,
          bf->max_indirect);
    for (unsigned i = 0; i < nr_pages; i++)
      indirect_page[i] =
          (struct blkif_request_segment){.gref = refs[i], .first_sect = 0, .last_sect = 7};
    ind_ref = gnttab_grant(0, indirect_page, true);
    blkif_request_indirect_t* ind = (blkif_request_indirect_t*)&req;
    ind->operation = BLKIF_OP_INDIRECT;
    ind->indirect_op = op;
    ind->nr_segments = (uint16_t)nr_pages;
    ind->handle = (blkif_vdev_t)bf->devid;
    ind->sector_number = sector;
    ind->indirect_grefs[0] = ind_ref;
  }
  int16_t status = blkfront_do(bf, q, &req, sizeof(req));
  if (status == BLKIF_RSP_OKAY) {
    /* blkfront_do counted the request; add what it moved. */
    uint64_t bytes = (uint64_t)nr_pages * 4096u;
    if (op == BLKIF_OP_READ) bf->tally.read_bytes += bytes;
    if (op == BLKIF_OP_WRITE) bf->tally.write_bytes += bytes;
  }
  /* The backend unmaps before it answers (docs/block.md): every grant ends at once. */
  for (unsigned i = 0; i < nr_pages; i++)
    CHECK(gnttab_end(refs[i]), "data page %u still mapped after the response (flags %x)", i,
          gnttab_busy(refs[i]));
  if (ind_ref) CHECK(gnttab_end(ind_ref), "indirect page still mapped after the response");
  return status;
}

int16_t blkfront_flush(struct blkfront* bf, unsigned q) {
  blkif_request_t req;
  memset(&req, 0, sizeof(req));
  req.operation = BLKIF_OP_FLUSH_DISKCACHE;
  req.handle = (blkif_vdev_t)bf->devid;
  return blkfront_do(bf, q, &req, sizeof(req));
}

int16_t blkfront_discard(struct blkfront* bf, unsigned q, uint64_t sector, uint64_t nr_sectors) {
  blkif_request_discard_t req;
  memset(&req, 0, sizeof(req));
  req.operation = BLKIF_OP_DISCARD;
  req.handle = (blkif_vdev_t)bf->devid;
  req.sector_number = sector;
  req.nr_sectors = nr_sectors;
  return blkfront_do(bf, q, &req, sizeof(req));
}

void blk_fill(uint8_t* buf, uint64_t seed, uint64_t sector, unsigned nr_sectors) {
  uint64_t* w = (uint64_t*)buf;
  for (unsigned s = 0; s < nr_sectors; s++)
    for (unsigned i = 0; i < SECTOR_SIZE / 8; i++) *w++ = blk_pattern(seed, sector + s, i);
}

unsigned blk_check(const uint8_t* buf, uint64_t seed, uint64_t sector, unsigned nr_sectors) {
  const uint64_t* w = (const uint64_t*)buf;
  for (unsigned s = 0; s < nr_sectors; s++)
    for (unsigned i = 0; i < SECTOR_SIZE / 8; i++)
      if (*w++ != blk_pattern(seed, sector + s, i)) return s + 1;
  return 0;
}
