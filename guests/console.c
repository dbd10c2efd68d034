/* console: the PV console ring both ways (xen/include/public/io/console.h), found through
 * HVM_PARAM_CONSOLE_PFN/EVTCHN: 40 numbered lines (2.6 KB, more than the 2 KB out ring, so
 * the indexes wrap), then a prompt; the line typed on the VMM's stdin is echoed back as
 * "console echo: <line>". With "bench" on the command line it instead writes 4 MiB and prints
 * the throughput (console_io). Polls the ring; no upcalls needed. */
#include "guest.h"

#include <xen/io/console.h>

GUEST_NAME("console");

static struct xencons_interface* ring;
static evtchn_port_t port;

static uint64_t param(uint32_t index) {
  xen_hvm_param_t p = {.domid = DOMID_SELF, .index = index};
  long rc = HYPERVISOR_hvm_op(HVMOP_get_param, &p);
  CHECK(rc == 0, "HVMOP_get_param %u: %ld", index, rc);
  return p.value;
}

static void ring_out(const char* s, size_t len) {
  deadline_t d = deadline_in_ms(20000);
  while (len > 0) {
    XENCONS_RING_IDX prod = ring->out_prod;
    XENCONS_RING_IDX cons = __atomic_load_n(&ring->out_cons, __ATOMIC_ACQUIRE);
    size_t space = sizeof(ring->out) - (prod - cons);
    if (space == 0) {
      CHECK(!deadline_expired(&d), "console out ring stays full");
      evtchn_send(port);
      cpu_relax();
      continue;
    }
    size_t n = len < space ? len : space;
    for (size_t i = 0; i < n; i++) ring->out[MASK_XENCONS_IDX(prod + i, ring->out)] = s[i];
    __atomic_store_n(&ring->out_prod, prod + (XENCONS_RING_IDX)n, __ATOMIC_RELEASE);
    evtchn_send(port);
    s += n;
    len -= n;
  }
}

static void ring_puts(const char* s) { ring_out(s, strlen(s)); }

/* Reads one line (without the newline; \r ends it too) from the in ring. */
static size_t ring_getline(char* line, size_t size) {
  size_t n = 0;
  deadline_t d = deadline_in_ms(60000);
  for (;;) {
    XENCONS_RING_IDX cons = ring->in_cons;
    XENCONS_RING_IDX prod = __atomic_load_n(&ring->in_prod, __ATOMIC_ACQUIRE);
    if (cons == prod) {
      CHECK(!deadline_expired(&d), "no console input (got %u bytes)", (unsigned)n);
      cpu_relax();
      continue;
    }
    char c = ring->in[MASK_XENCONS_IDX(cons, ring->in)];
    __atomic_store_n(&ring->in_cons, cons + 1, __ATOMIC_RELEASE);
    evtchn_send(port);
    if (c == '\n' || c == '\r') {
      if (n == 0) continue;
      line[n] = 0;
      return n;
    }
    if (n + 1 < size) line[n++] = c;
  }
}

static void bench(void) {
  static char chunk[1024];
  for (size_t i = 0; i < sizeof(chunk); i++)
    chunk[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
  enum { kBytes = 4 << 20 };
  uint64_t t0 = now_ns();
  for (int done = 0; done < kBytes; done += (int)sizeof(chunk)) ring_out(chunk, sizeof(chunk));
  uint64_t ns = now_ns() - t0;
  printk("console-bench: %u bytes in %lu us: %lu KB/s\n", (unsigned)kBytes,
         (unsigned long)(ns / 1000), (unsigned long)((uint64_t)kBytes * 1000000 / (ns ? ns : 1)));
}

void guest_main(void) {
  stage(10);
  ring = (struct xencons_interface*)(uintptr_t)(param(HVM_PARAM_CONSOLE_PFN) << 12);
  port = (evtchn_port_t)param(HVM_PARAM_CONSOLE_EVTCHN);
  CHECK(port != 0, "no console port");
  const char* cmdline = (const char*)(uintptr_t)start_info->cmdline_paddr;
  if (cmdline && cmdline[0] == 'b') {
    EXPECT_RC(shinfo_map(shinfo_pages[0]), 0); /* pvclock for now_ns() */
    bench();
    return;
  }
  stage(11);
  char line[80];
  for (int i = 0; i < 40; i++) {
    snprintk(line, sizeof(line), "console-line %02d: abcdefghijklmnopqrstuvwxyz0123456789ABCD\n",
             i);
    ring_puts(line);
  }
  stage(12);
  ring_puts("console: type a line\n");
  char in[64];
  ring_getline(in, sizeof(in));
  ring_puts("console echo: ");
  ring_puts(in);
  ring_puts("\n");
  /* Wait until the backend took everything before powering off. */
  deadline_t d = deadline_in_ms(10000);
  while (__atomic_load_n(&ring->out_cons, __ATOMIC_ACQUIRE) != ring->out_prod) {
    CHECK(!deadline_expired(&d), "console output not drained");
    cpu_relax();
  }
  stage(13);
}
