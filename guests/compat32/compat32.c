/* A 32-bit Xen PVH guest of our own, with its own tiny runtime: every hypercall argument is in
 * the compat layout and the shared_info layout must latch to compat when it installs the
 * hypercall page from 32-bit mode. It maps shared_info above RAM (a special page), finds the
 * wall clock at the compat offsets, raises IPI and loopback events and checks their pending
 * bits in 32-bit words, polls, checks the console port's far end, fills the 1024-port table to
 * -ENOSPC, and reports through console_io. No interrupts: upcalls stay masked. */
#include <stddef.h>
#include <stdint.h>
#include <xen/errno.h>
#include <xen/event_channel.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/memory.h>
#include <xen/sched.h>
#include <xen/version.h>
#include <xen/xen.h>

#include "abi/platform.h"

#define SI_EVTCHN_PENDING 0x800 /* compat shared_info: 32 words of 32 ports each */
#define SI_EVTCHN_MASK 0x880
#define SI_WC_SEC 0x904
#define VI_UPCALL_MASK 1
#define VI_PENDING_SEL 4 /* a 32-bit word in compat vcpu_info */

extern char hypercall_page[];

static long hypercall(unsigned nr, uint32_t a1, uint32_t a2, uint32_t a3) {
  long ret;
  uint32_t b = a1, c = a2, d = a3;
  __asm__ volatile("call *%[entry]"
                   : "=a"(ret), "+b"(b), "+c"(c), "+d"(d)
                   : [entry] "r"(hypercall_page + nr * 32)
                   : "memory", "esi", "edi");
  return ret;
}

static void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %w1" ::"a"(v), "Nd"(port));
}
static void stage(uint32_t n) { outl(XENKVM_STAGE_PORT, n); }

static size_t length(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}
static void print(const char* s) {
  hypercall(__HYPERVISOR_console_io, CONSOLEIO_write, length(s), (uint32_t)s);
}
static void print_num(const char* label, long v) {
  char buf[24];
  int i = sizeof(buf) - 1;
  unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
  buf[i] = 0;
  do {
    buf[--i] = '0' + u % 10;
    u /= 10;
  } while (u);
  if (v < 0) buf[--i] = '-';
  print(label);
  print(buf + i);
  print("\n");
}

static void shutdown(unsigned reason) {
  struct sched_shutdown s = {.reason = reason};
  hypercall(__HYPERVISOR_sched_op, SCHEDOP_shutdown, (uint32_t)&s, 0);
  for (;;) __asm__ volatile("hlt");
}
static void fail(const char* what, long value) {
  print("xenkvm-test: FAIL compat32: ");
  print(what);
  print_num(" = ", value);
  shutdown(SHUTDOWN_crash);
}
#define CHECK(cond, what, value)            \
  do {                                      \
    if (!(cond)) fail(what, (long)(value)); \
  } while (0)

static long evtchn(int cmd, void* arg) {
  return hypercall(__HYPERVISOR_event_channel_op, cmd, (uint32_t)arg, 0);
}

static volatile uint8_t* shinfo;
static uint32_t word_of(uint32_t offset) { return *(volatile uint32_t*)(shinfo + offset); }
static int pending(uint32_t port) {
  return word_of(SI_EVTCHN_PENDING + 4 * (port / 32)) >> (port % 32) & 1;
}
static void clear_pending(uint32_t port) {
  __atomic_and_fetch((uint32_t*)(shinfo + SI_EVTCHN_PENDING + 4 * (port / 32)),
                     ~(1u << (port % 32)), __ATOMIC_SEQ_CST);
}

/* compat xen_memory_map / xen_add_to_physmap (abi/compat.h gives the host's view). */
struct compat_memory_map {
  uint32_t nr_entries, buffer;
};
struct compat_add_to_physmap {
  uint16_t domid, size;
  uint32_t space, idx, gpfn;
};
struct compat_sched_poll {
  uint32_t ports, nr_ports;
  uint64_t timeout;
} __attribute__((packed, aligned(4)));
struct e820 {
  uint64_t addr, size;
  uint32_t type;
} __attribute__((packed));

static struct e820 map[32];

void compat32_main(uint32_t start_info_pa) {
  (void)start_info_pa;
  stage(1);
  uint32_t base = 0;
  for (uint32_t leaf = XENKVM_CPUID_BASE; leaf < XENKVM_CPUID_BASE + 0x10000; leaf += 0x100) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(0));
    if (b == 0x566e6558 && c == 0x65584d4d && d == 0x4d4d566e) { /* "XenVMMXenVMM" */
      base = leaf;
      break;
    }
  }
  if (!base) shutdown(SHUTDOWN_crash);
  uint32_t pages, msr, c, d;
  __asm__ volatile("cpuid" : "=a"(pages), "=b"(msr), "=c"(c), "=d"(d) : "a"(base + 2), "c"(0));
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)hypercall_page), "d"(0));
  stage(2);
  print("compat32: 32-bit flat guest, hypercall page installed\n");
  long version = hypercall(__HYPERVISOR_xen_version, XENVER_version, 0, 0);
  CHECK(version > 0, "xen_version", version);

  /* Memory map (compat struct); shared_info goes to the first gfn above every entry below 4G
   * except the LAPIC: GRUB's choice, not backed by RAM. */
  struct compat_memory_map mm = {32, (uint32_t)map};
  long rc = hypercall(__HYPERVISOR_memory_op, XENMEM_memory_map, (uint32_t)&mm, 0);
  CHECK(rc == 0 && mm.nr_entries > 0 && mm.nr_entries <= 32, "memory_map",
        rc ? rc : (long)mm.nr_entries);
  uint64_t top = 0;
  for (uint32_t i = 0; i < mm.nr_entries; i++) {
    if (map[i].addr < 0xf0000000ull && map[i].addr + map[i].size > top)
      top = map[i].addr + map[i].size;
  }
  const uint32_t gfn = (uint32_t)((top + 4095) >> 12);
  struct compat_add_to_physmap xatp = {DOMID_SELF, 0, XENMAPSPACE_shared_info, 0, gfn};
  rc = hypercall(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, (uint32_t)&xatp, 0);
  CHECK(rc == 0, "add_to_physmap(shared_info above RAM)", rc);
  shinfo = (volatile uint8_t*)(gfn << 12);
  stage(3);
  /* Latched compat: the wall clock is at the compat offset. */
  CHECK(word_of(SI_WC_SEC) > 1000000000u, "compat wc_sec", word_of(SI_WC_SEC));
  shinfo[VI_UPCALL_MASK] = 1; /* vcpu_info[0]: no upcalls, we look at the bits ourselves */

  /* IPI to ourselves: pending bit in a 32-bit word, selector bit in a 32-bit pending_sel. */
  evtchn_bind_ipi_t ipi = {.vcpu = 0};
  rc = evtchn(EVTCHNOP_bind_ipi, &ipi);
  CHECK(rc == 0, "bind_ipi", rc);
  evtchn_send_t send = {.port = ipi.port};
  CHECK(evtchn(EVTCHNOP_send, &send) == 0, "send ipi", ipi.port);
  CHECK(pending(ipi.port), "ipi pending bit", ipi.port);
  CHECK(word_of(VI_PENDING_SEL) >> (ipi.port / 32) & 1, "pending_sel bit", word_of(VI_PENDING_SEL));
  clear_pending(ipi.port);
  stage(4);

  /* Loopback interdomain pair. */
  evtchn_alloc_unbound_t unbound = {.dom = DOMID_SELF, .remote_dom = DOMID_SELF};
  CHECK(evtchn(EVTCHNOP_alloc_unbound, &unbound) == 0, "alloc_unbound", 0);
  evtchn_bind_interdomain_t inter = {.remote_dom = DOMID_SELF, .remote_port = unbound.port};
  CHECK(evtchn(EVTCHNOP_bind_interdomain, &inter) == 0, "bind_interdomain", 0);
  clear_pending(inter.local_port); /* bind_interdomain sets the new port pending */
  send.port = inter.local_port;
  CHECK(evtchn(EVTCHNOP_send, &send) == 0, "send loopback", 0);
  CHECK(pending(unbound.port), "loopback pending bit", unbound.port);

  /* SCHEDOP_poll (compat: 4-byte handle): a pending port returns at once; port 0 is -EINVAL. */
  uint32_t poll_port = unbound.port;
  struct compat_sched_poll poll = {(uint32_t)&poll_port, 1, 0};
  rc = hypercall(__HYPERVISOR_sched_op, SCHEDOP_poll, (uint32_t)&poll, 0);
  CHECK(rc == 0, "poll pending port", rc);
  poll_port = 0;
  rc = hypercall(__HYPERVISOR_sched_op, SCHEDOP_poll, (uint32_t)&poll, 0);
  CHECK(rc == -XEN_EINVAL, "poll port 0", rc);
  stage(5);

  /* The console ring's port is an interdomain port whose far end is domain 0. */
  xen_hvm_param_t param = {.domid = DOMID_SELF, .index = HVM_PARAM_CONSOLE_EVTCHN};
  CHECK(hypercall(__HYPERVISOR_hvm_op, HVMOP_get_param, (uint32_t)&param, 0) == 0, "get_param", 0);
  evtchn_status_t status = {.dom = DOMID_SELF, .port = (evtchn_port_t)param.value};
  CHECK(evtchn(EVTCHNOP_status, &status) == 0, "status console port", param.value);
  CHECK(status.status == EVTCHNSTAT_interdomain && status.u.interdomain.dom == 0,
        "console port peer", status.status);

  /* Fill the compat table: ports stop at 1023 with -ENOSPC. */
  uint32_t highest = 0;
  int count = 0;
  for (;;) {
    evtchn_alloc_unbound_t more = {.dom = DOMID_SELF, .remote_dom = 0};
    rc = evtchn(EVTCHNOP_alloc_unbound, &more);
    if (rc != 0) break;
    if (more.port > highest) highest = more.port;
    if (++count > 2000) break;
  }
  CHECK(rc == -XEN_ENOSPC, "alloc beyond the table", rc);
  CHECK(highest == 1023, "highest compat port", highest);
  /* The last port's pending bit is the top bit of the last 32-bit word. */
  evtchn_close_t close = {.port = 1023};
  CHECK(evtchn(EVTCHNOP_close, &close) == 0, "close 1023", 0);
  evtchn_bind_ipi_t last = {.vcpu = 0};
  CHECK(evtchn(EVTCHNOP_bind_ipi, &last) == 0 && last.port == 1023, "rebind 1023", last.port);
  send.port = 1023;
  CHECK(evtchn(EVTCHNOP_send, &send) == 0, "send 1023", 0);
  CHECK(word_of(SI_EVTCHN_PENDING + 31 * 4) >> 31 & 1, "port 1023 pending bit",
        word_of(SI_EVTCHN_PENDING + 124));
  stage(6);
  print_num("compat32: ports allocated to the limit: ", count);
  print("xenkvm-test: PASS compat32\n");
  shutdown(SHUTDOWN_poweroff);
}
