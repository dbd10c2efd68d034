/* A minimal xenstore client for test guests: the xs_wire protocol (xen/include/public/io/
 * xs_wire.h) over the ring page named by HVM_PARAM_STORE_PFN/EVTCHN, polling the ring (no
 * upcalls needed). One request in flight; watch events that arrive meanwhile are queued. */
#ifndef XENKVM_GUEST_XS_H
#define XENKVM_GUEST_XS_H

#include "guest.h"

#include <xen/io/xs_wire.h>

#define XS_MAX_EVENTS 8

struct xs_event {
  char path[128];
  char token[32];
};

void xs_init(void);
/* Sends one request (payload = the strings given, each with its NUL unless the last is raw
 * value bytes); the reply's type is returned, its payload copied into reply (NUL-terminated). */
uint32_t xs_request(uint32_t type, uint32_t tx, const void* payload, uint32_t len, char* reply,
                    uint32_t reply_size);
/* Helpers: 0 or the xsd_errors name in err (e.g. "EAGAIN"). */
const char* xs_read(uint32_t tx, const char* path, char* out, uint32_t size);
const char* xs_write(uint32_t tx, const char* path, const char* value);
const char* xs_rm(uint32_t tx, const char* path);
const char* xs_watch(const char* path, const char* token);
const char* xs_tx_start(uint32_t* tx);
const char* xs_tx_end(uint32_t tx, bool commit);
/* Waits (polling) for the next watch event; false after timeout_ms. */
bool xs_next_event(struct xs_event* ev, uint64_t timeout_ms);

/* "hold=1" on the command line: true until the host writes the guest's xenstore key
 * data/release (relative to its home), so a test that saves or migrates a guest mid-run keeps it
 * working until then however fast the host is. Without the key: false at once. vCPU0 only (the
 * xenstore client is not shared); one xenstore read per call while held. */
bool held(void);

#endif
