/* platform: the Xen platform around event channels as a guest sees it — xen_version
 * (version, extraversion, capabilities, get_features), the Xen CPUID leaves (version, HVM
 * features with the vCPU id), the memory map (hvm_start_info and XENMEM_memory_map),
 * reservations, the grant table (size, version, frame mapping), HVM params, console read,
 * secondary vCPU lifecycle (VCPUOP_is_up, initialise, up, down, up again), ballooning
 * (decrease_reservation, populate_physmap, increase_reservation), the FIFO event-channel ops
 * before a FIFO control block exists (xsa-188), and sysctl/domctl refused to an unprivileged guest.
 */
#include "guest.h"

#include <xen/features.h>
#include <xen/grant_table.h>

GUEST_NAME("platform");

extern char __image_start[], __image_end[];

static uint8_t grant_frame[4096] __attribute__((aligned(4096)));
static volatile uint8_t balloon_page[4096] __attribute__((aligned(4096)));

/* The heads of struct xen_sysctl / xen_domctl (xen/sysctl.h and xen/domctl.h are tools-only
 * headers); Xen copies in the whole struct, hence the padding to their full size. */
#define SYSCTL_INTERFACE_VERSION 0x15u /* Xen 4.17's XEN_SYSCTL_INTERFACE_VERSION */
#define DOMCTL_INTERFACE_VERSION 0x15u /* XEN_DOMCTL_INTERFACE_VERSION */
struct sysctl_head {
  uint32_t cmd;
  uint32_t interface_version;
  uint8_t u[128];
};
struct domctl_head {
  uint32_t cmd;
  uint32_t interface_version;
  domid_t domain;
  uint16_t pad[3];
  uint8_t u[128];
};

/* One reservation op on a single extent. */
static long reservation_op(int cmd, xen_pfn_t* gfn, unsigned order, domid_t domid) {
  struct xen_memory_reservation r = {.nr_extents = 1, .extent_order = order, .domid = domid};
  set_xen_guest_handle(r.extent_start, gfn);
  return HYPERVISOR_memory_op(cmd, &r);
}

static void check_ballooning(void) {
  domid_t self = DOMID_SELF;
  const long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
  xen_pfn_t gfn = (uintptr_t)balloon_page >> 12;
  for (unsigned i = 0; i < sizeof(balloon_page); i++) balloon_page[i] = 0xa5;
  /* Refused requests do nothing: another domain, too large an extent. */
  EXPECT_RC(reservation_op(XENMEM_decrease_reservation, &gfn, 0, 0), 0);
  EXPECT_RC(reservation_op(XENMEM_decrease_reservation, &gfn, 10, DOMID_SELF), 0);
  CHECK(balloon_page[100] == 0xa5, "refused decrease_reservation changed the page");
  /* Out once, then there is nothing left to remove (XSA-277: twice, three times). */
  EXPECT_RC(reservation_op(XENMEM_decrease_reservation, &gfn, 0, DOMID_SELF), 1);
  EXPECT_RC(reservation_op(XENMEM_decrease_reservation, &gfn, 0, DOMID_SELF), 0);
  EXPECT_RC(reservation_op(XENMEM_decrease_reservation, &gfn, 0, DOMID_SELF), 0);
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_current_reservation, &self), cur - 1);
  /* Xen copies nothing into a gfn that has no page. */
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_extraversion, (void*)balloon_page), -XEN_EFAULT);
  /* Back with a fresh page, zeroed and usable. */
  EXPECT_RC(reservation_op(XENMEM_populate_physmap, &gfn, 0, DOMID_SELF), 1);
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_current_reservation, &self), cur);
  for (unsigned i = 0; i < sizeof(balloon_page); i += 64)
    CHECK(balloon_page[i] == 0, "populated page not zeroed: byte %u is 0x%x", i, balloon_page[i]);
  balloon_page[7] = 0x5a;
  CHECK(balloon_page[7] == 0x5a, "populated page not writable");
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_extraversion, (void*)balloon_page), 0);
  /* Full again: populating over a present page needs a page the domain may not have. */
  EXPECT_RC(reservation_op(XENMEM_populate_physmap, &gfn, 0, DOMID_SELF), 0);
  /* increase_reservation hands a translated guest pages it can't reach, within its maximum. */
  EXPECT_RC(reservation_op(XENMEM_increase_reservation, &gfn, 0, DOMID_SELF), 0);
  CHECK(gfn == (uintptr_t)balloon_page >> 12, "increase_reservation wrote the extent list");
}

static void check_refused_ops(void) {
  /* FIFO event channels (xsa-188): a bad control frame fails and leaves no FIFO state behind,
   * so expand_array is still refused; this guest stays 2-level, which has no priorities. */
  struct evtchn_init_control init = {.control_gfn = (uint64_t)-2, .vcpu = 0};
  EXPECT_RC(HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &init), -XEN_EINVAL);
  struct evtchn_expand_array expand = {.array_gfn = (uintptr_t)balloon_page >> 12};
  EXPECT_RC(HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &expand), -XEN_EOPNOTSUPP);
  struct evtchn_set_priority prio = {.port = 1, .priority = 7};
  EXPECT_RC(HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &prio), -XEN_ENOSYS);
  prio.port = GUEST_NR_PORTS;
  EXPECT_RC(HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &prio), -XEN_EINVAL);
  /* The toolstack's hypercalls: wrong version -EACCES, else not privileged -EPERM. */
  static struct sysctl_head sysctl;
  sysctl.interface_version = SYSCTL_INTERFACE_VERSION;
  EXPECT_RC(HC(__HYPERVISOR_sysctl, &sysctl, 0, 0), -XEN_EPERM);
  sysctl.interface_version = SYSCTL_INTERFACE_VERSION - 1;
  EXPECT_RC(HC(__HYPERVISOR_sysctl, &sysctl, 0, 0), -XEN_EACCES);
  EXPECT_RC(HC(__HYPERVISOR_sysctl, UNMAPPED_GVA, 0, 0), -XEN_EFAULT);
  static struct domctl_head domctl = {.cmd = 3 /* pausedomain */, .domain = 1};
  domctl.interface_version = DOMCTL_INTERFACE_VERSION;
  EXPECT_RC(HC(__HYPERVISOR_domctl, &domctl, 0, 0), -XEN_EPERM);
  domctl.interface_version = 0;
  EXPECT_RC(HC(__HYPERVISOR_domctl, &domctl, 0, 0), -XEN_EACCES);
}
static volatile uint64_t ap_counter;
static volatile uint32_t ap_cpuid_vcpu = 0xffffffff;

static void ap_main(unsigned id) {
  (void)id;
  uint32_t a, b, c, d;
  cpuid(xen_cpuid_base + 4, 0, &a, &b, &c, &d);
  ap_cpuid_vcpu = b;
  for (;;) {
    ap_counter++;
    cpu_relax();
  }
}

static bool memchr_nul(const char* s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!s[i]) return true;
  return false;
}

static bool contains(const char* hay, const char* needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (memcmp(hay, needle, n) == 0) return true;
  return false;
}

static bool ram_covers(uint64_t addr, uint64_t size, uint32_t type, uint64_t lo, uint64_t hi) {
  return type == XEN_HVM_MEMMAP_TYPE_RAM && addr <= lo && addr + size >= hi;
}

void guest_main(void) {
  /* xen_version */
  stage(10);
  long ver = HYPERVISOR_xen_version(XENVER_version, NULL);
  CHECK(ver > 0, "XENVER_version returned %ld", ver);
  static xen_extraversion_t extra;
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_extraversion, extra), 0);
  CHECK(memchr_nul(extra, sizeof(extra)), "extraversion is not NUL-terminated");
  static xen_capabilities_info_t caps;
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_capabilities, caps), 0);
  CHECK(contains(caps, "hvm-3.0-x86_64"), "capabilities \"%s\" lack hvm-3.0-x86_64", caps);
  xen_feature_info_t fi = {.submap_idx = 0};
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_get_features, &fi), 0);
  CHECK(fi.submap & (1u << XENFEAT_hvm_callback_vector),
        "XENFEAT_hvm_callback_vector not advertised (features %x)", fi.submap);
  printk("platform: Xen %ld.%ld%s, caps \"%s\", features %x\n", ver >> 16, ver & 0xffff, extra,
         caps, fi.submap);

  /* CPUID leaves */
  stage(11);
  uint32_t a, b, c, d;
  cpuid(xen_cpuid_base + 1, 0, &a, &b, &c, &d);
  CHECK(a == (uint32_t)ver, "CPUID version %x but XENVER_version %lx", a, ver);
  cpuid(xen_cpuid_base + 4, 0, &a, &b, &c, &d);
  CHECK(a & XEN_HVM_CPUID_VCPU_ID_PRESENT, "HVM CPUID leaf lacks VCPU_ID_PRESENT (%x)", a);
  CHECK(a & XEN_HVM_CPUID_UPCALL_VECTOR, "HVM CPUID leaf lacks UPCALL_VECTOR (%x)", a);
  CHECK(b == 0, "vcpu0's CPUID vcpu id is %u", b);

  /* Memory map */
  stage(12);
  const uint64_t lo = (uintptr_t)__image_start, hi = (uintptr_t)__image_end;
  CHECK(start_info->version >= 1 && start_info->memmap_entries > 0,
        "hvm_start_info v%u has %u memmap entries", start_info->version,
        start_info->memmap_entries);
  const struct hvm_memmap_table_entry* mm =
      (const struct hvm_memmap_table_entry*)(uintptr_t)start_info->memmap_paddr;
  bool covered = false;
  for (uint32_t i = 0; i < start_info->memmap_entries; i++)
    covered |= ram_covers(mm[i].addr, mm[i].size, mm[i].type, lo, hi);
  CHECK(covered, "no start_info RAM entry covers the image %lx-%lx", lo, hi);
  static struct e820entry {
    uint64_t addr, size;
    uint32_t type;
  } __attribute__((packed)) e820[32];
  xen_memory_map_t map = {.nr_entries = ARRAY_SIZE(e820)};
  set_xen_guest_handle(map.buffer, e820);
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_memory_map, &map), 0);
  CHECK(map.nr_entries > 0 && map.nr_entries <= ARRAY_SIZE(e820), "memory_map: %u entries",
        map.nr_entries);
  covered = false;
  for (uint32_t i = 0; i < map.nr_entries; i++)
    covered |= ram_covers(e820[i].addr, e820[i].size, e820[i].type, lo, hi);
  CHECK(covered, "no XENMEM_memory_map RAM entry covers the image");
  domid_t self = DOMID_SELF;
  long cur = HYPERVISOR_memory_op(XENMEM_current_reservation, &self);
  long max = HYPERVISOR_memory_op(XENMEM_maximum_reservation, &self);
  CHECK(cur > 0 && max >= cur, "reservation: current %ld maximum %ld", cur, max);

  /* Grant table */
  stage(13);
  struct gnttab_query_size qs = {.dom = DOMID_SELF};
  EXPECT_RC(HC(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, &qs, 1), 0);
  CHECK(qs.status == GNTST_okay && qs.max_nr_frames >= qs.nr_frames && qs.max_nr_frames > 0,
        "query_size: status %d frames %u max %u", qs.status, qs.nr_frames, qs.max_nr_frames);
  struct gnttab_set_version sv = {.version = 1};
  EXPECT_RC(HC(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, &sv, 1), 0);
  struct xen_add_to_physmap xatp = {.domid = DOMID_SELF,
                                    .space = XENMAPSPACE_grant_table,
                                    .idx = 0,
                                    .gpfn = (uintptr_t)grant_frame >> 12};
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp), 0);
  xatp.idx = qs.max_nr_frames;
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp), -XEN_EINVAL);

  /* HVM params and the console */
  static const uint32_t readable[] = {HVM_PARAM_CALLBACK_IRQ, HVM_PARAM_STORE_PFN,
                                      HVM_PARAM_STORE_EVTCHN, HVM_PARAM_CONSOLE_PFN,
                                      HVM_PARAM_CONSOLE_EVTCHN};
  for (unsigned i = 0; i < ARRAY_SIZE(readable); i++) {
    xen_hvm_param_t hp = {.domid = DOMID_SELF, .index = readable[i]};
    EXPECT_RC(HYPERVISOR_hvm_op(HVMOP_get_param, &hp), 0);
  }
  xen_hvm_param_t bad = {.domid = DOMID_SELF, .index = HVM_NR_PARAMS};
  EXPECT_RC(HYPERVISOR_hvm_op(HVMOP_get_param, &bad), -XEN_EINVAL);
  EXPECT_RC(HYPERVISOR_hvm_op(HVMOP_set_param, &bad), -XEN_EINVAL);
  static char in[16];
  long got = HYPERVISOR_console_io(CONSOLEIO_read, sizeof(in), in);
  CHECK(got >= 0 && got <= (long)sizeof(in), "CONSOLEIO_read returned %ld", got);

  /* Secondary vCPU lifecycle */
  stage(14);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, NULL), 1);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 99, NULL), -XEN_ENOENT);
  EXPECT_RC(vcpu_start(1, ap_main), 0);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 1);
  CHECK(WAIT_FOR(ap_cpuid_vcpu != 0xffffffff, 2000), "vcpu1 did not read CPUID");
  CHECK(ap_cpuid_vcpu == 1, "vcpu1's CPUID vcpu id is %u", ap_cpuid_vcpu);
  vcpu_hvm_context_t ctx;
  memset(&ctx, 0, sizeof(ctx));
  ctx.mode = VCPU_HVM_MODE_64B;
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, &ctx), -XEN_EEXIST);

  stage(15);
  uint64_t c0 = ap_counter;
  CHECK(WAIT_FOR(ap_counter > c0 + 10, 2000), "vcpu1 is not running");
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_down, 1, NULL), 0);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 0);
  /* The target stops asynchronously (Xen: vcpu_sleep_nosync): wait for a quiet counter. */
  bool stopped = false;
  for (int i = 0; i < 100 && !stopped; i++) {
    c0 = ap_counter;
    stopped = !WAIT_FOR(ap_counter != c0, 20);
  }
  CHECK(stopped, "vcpu1 still runs 2 s after VCPUOP_down");
  c0 = ap_counter;
  CHECK(!WAIT_FOR(ap_counter != c0, 50), "vcpu1 ran again while down");
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_up, 1, NULL), 0);
  EXPECT_RC(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, NULL), 1);
  CHECK(WAIT_FOR(ap_counter > c0 + 10, 2000), "vcpu1 did not resume after VCPUOP_up");
  EXPECT_RC(HYPERVISOR_sched_op(SCHEDOP_yield, NULL), 0);

  stage(16);
  fi.submap_idx = XENFEAT_NR_SUBMAPS; /* Xen knows one submap only */
  EXPECT_RC(HYPERVISOR_xen_version(XENVER_get_features, &fi), -XEN_EINVAL);

  stage(17);
  check_ballooning();
  stage(18);
  check_refused_ops();
}
