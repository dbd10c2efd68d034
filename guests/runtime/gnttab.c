/* Guest-side grant table; see gnttab.h. */
#include "gnttab.h"

static grant_entry_v1_t frame[GNTTAB_ENTRIES] __attribute__((aligned(4096)));
grant_entry_v1_t* const gnttab = frame;
static grant_ref_t free_refs[GNTTAB_ENTRIES];
static unsigned nr_free;

void gnttab_init(void) {
  struct gnttab_set_version sv = {.version = 1};
  EXPECT_RC(HC(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, &sv, 1), 0);
  struct xen_add_to_physmap xatp = {.domid = DOMID_SELF,
                                    .space = XENMAPSPACE_grant_table,
                                    .idx = 0,
                                    .gpfn = (uintptr_t)frame >> 12};
  EXPECT_RC(HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp), 0);
  /* The first GNTTAB_NR_RESERVED_ENTRIES belong to the toolstack (console, xenstore). */
  nr_free = 0;
  for (grant_ref_t ref = GNTTAB_ENTRIES; ref-- > GNTTAB_NR_RESERVED_ENTRIES;)
    free_refs[nr_free++] = ref;
}

grant_ref_t gnttab_grant(domid_t domid, const void* page, bool readonly) {
  CHECK(nr_free > 0, "out of grant references");
  grant_ref_t ref = free_refs[--nr_free];
  frame[ref].domid = domid;
  frame[ref].frame = (uint32_t)((uintptr_t)page >> 12);
  /* domid and frame must be visible before the entry becomes valid. */
  __atomic_store_n(&frame[ref].flags, (uint16_t)(GTF_permit_access | (readonly ? GTF_readonly : 0)),
                   __ATOMIC_RELEASE);
  return ref;
}

bool gnttab_end(grant_ref_t ref) {
  uint16_t flags = __atomic_load_n(&frame[ref].flags, __ATOMIC_ACQUIRE);
  do {
    if (flags & (GTF_reading | GTF_writing)) return false;
  } while (!__atomic_compare_exchange_n(&frame[ref].flags, &flags, 0, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE));
  free_refs[nr_free++] = ref;
  return true;
}

uint16_t gnttab_busy(grant_ref_t ref) {
  return __atomic_load_n(&frame[ref].flags, __ATOMIC_ACQUIRE) & (GTF_reading | GTF_writing);
}
