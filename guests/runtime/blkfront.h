/* A small blkif frontend for test guests (xen/include/public/io/blkif.h, io/ring.h, the xenbus
 * handshake of io/xenbus.h): reads the backend's features, connects 1..2 queues with rings of
 * 1..2 pages, issues direct, indirect, flush and discard requests with data pages granted per
 * request, and closes and reopens the device. Waits by SCHEDOP_poll on the queue's port (kept
 * masked: no upcalls needed); xenstore through xs.c (polling). Raw access to the ring is open
 * so that hostile scenarios can put anything on it. */
#ifndef XENKVM_GUEST_BLKFRONT_H
#define XENKVM_GUEST_BLKFRONT_H

#include "gnttab.h"
#include "xs.h"

/* io/ring.h wants these barriers from its includer. */
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/blkif.h>
#include <xen/io/protocols.h>
#include <xen/io/xenbus.h>

#define BLKFRONT_MAX_QUEUES 2u
#define BLKFRONT_MAX_RING_ORDER 1u /* rings of up to 2 pages */
#define BLKFRONT_DATA_PAGES 64u    /* data pages one request may use (indirect: up to 64) */
#define SECTOR_SIZE 512u
#define SECTORS_PER_PAGE 8u

struct blkfront_queue {
  blkif_front_ring_t ring;
  grant_ref_t ring_refs[1u << BLKFRONT_MAX_RING_ORDER];
  evtchn_port_t port;
  uint32_t notifies; /* sends we made: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY said so */
};

/* Answered requests, counted as the backend's --stats counts them (docs/block.md). */
struct blkfront_tally {
  uint64_t requests, reads, writes, read_bytes, write_bytes, errors;
};

struct blkfront {
  unsigned devid;
  char front[48]; /* device/vbd/<devid> (relative to our home) */
  char back[96];  /* the backend directory, from the frontend's `backend` key */
  /* what the backend advertised */
  uint64_t sectors;
  unsigned sector_size, info, max_indirect, max_queues, max_order;
  bool flush, discard, read_only;
  /* this connection */
  const char* protocol; /* written as `protocol`; 0: x86_64-abi (then the ring macros work) */
  unsigned nr_queues, order;
  struct blkfront_queue q[BLKFRONT_MAX_QUEUES];
  uint64_t next_id;
  struct blkfront_tally tally;
};

/* Needs xs_init, gnttab_init and shared_info mapped (SCHEDOP_poll timeouts use now_ns). */
void blkfront_probe(struct blkfront* bf, unsigned devid);
/* Rings, grants, ports and keys, frontend Initialised; returns once the backend is Connected. */
void blkfront_connect(struct blkfront* bf, unsigned nr_queues, unsigned order);
/* Frontend Closing, then Closed, each answered by the backend; ring grants and ports ended. */
void blkfront_close(struct blkfront* bf);
/* After the backend is Closed: ends the ring grants (failing if still mapped), closes ports. */
void blkfront_release(struct blkfront* bf);
/* Frontend Initialising again: the backend offers the device anew (InitWait). */
void blkfront_reopen(struct blkfront* bf);
unsigned blkfront_backend_state(struct blkfront* bf);
void blkfront_set_state(struct blkfront* bf, unsigned state);
/* Waits for the backend's state; false after ms. */
bool blkfront_wait_backend(struct blkfront* bf, unsigned state, uint64_t ms);

/* Raw: copies len bytes into queue q's next request slot, pushes and notifies. */
void blkfront_push(struct blkfront* bf, unsigned q, const void* req, size_t len);
/* The next response on queue q; false if none came within ms. */
bool blkfront_response(struct blkfront* bf, unsigned q, blkif_response_t* rsp, uint64_t ms);
/* push + response (failing the test if none comes or the id/operation is not echoed);
 * returns its status and counts it in the tally as the backend's stats would. */
int16_t blkfront_do(struct blkfront* bf, unsigned q, void* req, size_t len);

/* Reads/writes nr_pages whole pages at sector through queue q: one direct request for up to
 * 11 pages, else one BLKIF_OP_INDIRECT. The pages are granted for the request only (and the
 * grants checked released when the response comes). */
int16_t blkfront_rw(struct blkfront* bf, unsigned q, uint8_t op, uint64_t sector, uint8_t* pages,
                    unsigned nr_pages);
int16_t blkfront_flush(struct blkfront* bf, unsigned q);
int16_t blkfront_discard(struct blkfront* bf, unsigned q, uint64_t sector, uint64_t nr_sectors);

/* The disk pattern the kvm test writes (and checks): word i of sector s for seed. */
static inline uint64_t blk_pattern(uint64_t seed, uint64_t sector, unsigned word) {
  return (seed << 56) ^ (sector << 8) ^ word ^ 0x5a5a000000000000ull;
}
void blk_fill(uint8_t* buf, uint64_t seed, uint64_t sector, unsigned nr_sectors);
/* 0 if buf holds the pattern, else 1 + the index of the first bad sector. */
unsigned blk_check(const uint8_t* buf, uint64_t seed, uint64_t sector, unsigned nr_sectors);

#endif
