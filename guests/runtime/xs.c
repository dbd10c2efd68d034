/* Minimal polling xenstore client; see xs.h. */
#include "xs.h"

static struct xenstore_domain_interface* ring;
static evtchn_port_t port;
static uint32_t next_req_id = 1;
static struct xs_event events[XS_MAX_EVENTS];
static unsigned nr_events;
static char err_buf[32];

static uint64_t param(uint32_t index) {
  xen_hvm_param_t p = {.domid = DOMID_SELF, .index = index};
  long rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);
  CHECK(rc == 0, "HVMOP_get_param %u: %ld", index, rc);
  return p.value;
}

void xs_init(void) {
  if (ring) return; /* held() may have opened it first */
  uint64_t pfn = param(HVM_PARAM_STORE_PFN);
  port = (evtchn_port_t)param(HVM_PARAM_STORE_EVTCHN);
  CHECK(pfn != 0 && port != 0, "no xenstore ring (pfn %lx port %u)", (unsigned long)pfn, port);
  ring = (struct xenstore_domain_interface*)(uintptr_t)(pfn << 12);
  if (shinfo) evtchn_mask(port); /* we poll the ring: its events are no upcalls (nor strays) */
}

static void ring_write(const void* data, uint32_t len) {
  const char* p = data;
  deadline_t d = deadline_in_ms(10000);
  while (len > 0) {
    uint32_t prod = ring->req_prod;
    uint32_t cons = __atomic_load_n(&ring->req_cons, __ATOMIC_ACQUIRE);
    uint32_t space = (uint32_t)XENSTORE_RING_SIZE - (prod - cons);
    if (space == 0) {
      CHECK(!deadline_expired(&d), "xenstore request ring stays full");
      cpu_relax();
      continue;
    }
    uint32_t n = len < space ? len : space;
    for (uint32_t i = 0; i < n; i++) ring->req[MASK_XENSTORE_IDX(prod + i)] = p[i];
    __atomic_store_n(&ring->req_prod, prod + n, __ATOMIC_RELEASE);
    evtchn_send(port);
    p += n;
    len -= n;
  }
}

static void ring_read(void* data, uint32_t len) {
  char* p = data;
  deadline_t d = deadline_in_ms(10000);
  while (len > 0) {
    uint32_t cons = ring->rsp_cons;
    uint32_t prod = __atomic_load_n(&ring->rsp_prod, __ATOMIC_ACQUIRE);
    if (prod == cons) {
      CHECK(!deadline_expired(&d), "no xenstore reply");
      cpu_relax();
      continue;
    }
    uint32_t n = prod - cons < len ? prod - cons : len;
    for (uint32_t i = 0; i < n; i++) p[i] = ring->rsp[MASK_XENSTORE_IDX(cons + i)];
    __atomic_store_n(&ring->rsp_cons, cons + n, __ATOMIC_RELEASE);
    evtchn_send(port);
    p += n;
    len -= n;
  }
}

/* Reads one message; watch events are queued, anything else is returned. */
static bool read_message(struct xsd_sockmsg* hdr, char* body, uint32_t size) {
  static char buf[XENSTORE_PAYLOAD_MAX + 1];
  ring_read(hdr, sizeof(*hdr));
  CHECK(hdr->len <= (uint32_t)XENSTORE_PAYLOAD_MAX, "reply of %u bytes", hdr->len);
  ring_read(buf, hdr->len);
  buf[hdr->len] = 0;
  if (hdr->type == XS_WATCH_EVENT) {
    if (nr_events < XS_MAX_EVENTS) {
      struct xs_event* ev = &events[nr_events++];
      size_t plen = strlen(buf);
      CHECK(plen < sizeof(ev->path), "watch path too long");
      memcpy(ev->path, buf, plen + 1);
      const char* tok = buf + plen + 1;
      size_t tlen = hdr->len > plen + 1 ? strlen(tok) : 0;
      CHECK(tlen < sizeof(ev->token), "watch token too long");
      memcpy(ev->token, tok, tlen);
      ev->token[tlen] = 0;
    }
    return false;
  }
  uint32_t n = hdr->len < size - 1 ? hdr->len : size - 1;
  memcpy(body, buf, n);
  body[n] = 0;
  return true;
}

uint32_t xs_request(uint32_t type, uint32_t tx, const void* payload, uint32_t len, char* reply,
                    uint32_t reply_size) {
  struct xsd_sockmsg hdr = {.type = type, .req_id = next_req_id++, .tx_id = tx, .len = len};
  ring_write(&hdr, sizeof(hdr));
  ring_write(payload, len);
  struct xsd_sockmsg rsp;
  while (!read_message(&rsp, reply, reply_size)) {
  }
  CHECK(rsp.req_id == hdr.req_id, "reply req_id %u for %u", rsp.req_id, hdr.req_id);
  return rsp.type;
}

static const char* result(uint32_t type, const char* reply) {
  if (type != XS_ERROR) return 0;
  size_t n = strlen(reply);
  if (n >= sizeof(err_buf)) n = sizeof(err_buf) - 1;
  memcpy(err_buf, reply, n);
  err_buf[n] = 0;
  return err_buf;
}

const char* xs_read(uint32_t tx, const char* path, char* out, uint32_t size) {
  uint32_t type = xs_request(XS_READ, tx, path, (uint32_t)strlen(path) + 1, out, size);
  return result(type, out);
}

const char* xs_write(uint32_t tx, const char* path, const char* value) {
  char msg[256], reply[64];
  size_t p = strlen(path) + 1, v = strlen(value);
  CHECK(p + v <= sizeof(msg), "xs_write too long");
  memcpy(msg, path, p);
  memcpy(msg + p, value, v);
  return result(xs_request(XS_WRITE, tx, msg, (uint32_t)(p + v), reply, sizeof(reply)), reply);
}

const char* xs_rm(uint32_t tx, const char* path) {
  char reply[64];
  return result(xs_request(XS_RM, tx, path, (uint32_t)strlen(path) + 1, reply, sizeof(reply)),
                reply);
}

const char* xs_watch(const char* path, const char* token) {
  char msg[256], reply[64];
  size_t p = strlen(path) + 1, t = strlen(token) + 1;
  CHECK(p + t <= sizeof(msg), "xs_watch too long");
  memcpy(msg, path, p);
  memcpy(msg + p, token, t);
  return result(xs_request(XS_WATCH, 0, msg, (uint32_t)(p + t), reply, sizeof(reply)), reply);
}

const char* xs_tx_start(uint32_t* tx) {
  char reply[64];
  uint32_t type = xs_request(XS_TRANSACTION_START, 0, "", 1, reply, sizeof(reply));
  if (type == XS_ERROR) return result(type, reply);
  uint32_t id = 0;
  for (const char* c = reply; *c >= '0' && *c <= '9'; c++) id = id * 10 + (uint32_t)(*c - '0');
  *tx = id;
  return 0;
}

const char* xs_tx_end(uint32_t tx, bool commit) {
  char reply[64];
  return result(xs_request(XS_TRANSACTION_END, tx, commit ? "T" : "F", 2, reply, sizeof(reply)),
                reply);
}

bool xs_next_event(struct xs_event* ev, uint64_t timeout_ms) {
  deadline_t d = deadline_in_ms(timeout_ms);
  while (nr_events == 0) {
    if (deadline_expired(&d)) return false;
    uint32_t cons = ring->rsp_cons;
    if (__atomic_load_n(&ring->rsp_prod, __ATOMIC_ACQUIRE) != cons) {
      struct xsd_sockmsg hdr;
      char body[64];
      CHECK(!read_message(&hdr, body, sizeof(body)), "unexpected reply type %u", hdr.type);
    } else {
      cpu_relax();
    }
  }
  *ev = events[0];
  for (unsigned i = 1; i < nr_events; i++) events[i - 1] = events[i];
  nr_events--;
  return true;
}

bool held(void) {
  static int state = -1; /* -1: not asked yet, 0: released (or never held), 1: held */
  if (state == 0) return false;
  if (state < 0) {
    state = cmdline_number("hold", 0) != 0;
    if (!state) return false;
    xs_init();
    printk("%s: held until data/release is written\n", guest_name);
  }
  char value[16];
  if (xs_read(0, "data/release", value, sizeof(value)) == 0) {
    state = 0;
    printk("%s: released\n", guest_name);
  }
  return state == 1;
}
