/* A small guest-side grant table (xen/include/public/grant_table.h, version 1 entries): frame 0
 * mapped into our own page with XENMEM_add_to_physmap(XENMAPSPACE_grant_table), references
 * handed out from a free list, access ended as the header's "Invalidating" steps say. */
#ifndef XENKVM_GUEST_GNTTAB_H
#define XENKVM_GUEST_GNTTAB_H

#include "guest.h"

#include <xen/grant_table.h>

#define GNTTAB_ENTRIES (4096u / sizeof(grant_entry_v1_t)) /* one frame: 512 refs */

extern grant_entry_v1_t* const gnttab;

void gnttab_init(void); /* set_version 1, frame 0 mapped; fails the test on error */
/* Grants domid access to the page at `page` (identity mapped: gfn = address >> 12). */
grant_ref_t gnttab_grant(domid_t domid, const void* page, bool readonly);
/* Ends access: false (and the ref kept) while the other side still has it mapped. */
bool gnttab_end(grant_ref_t ref);
/* GTF_reading|GTF_writing as the hypervisor left them in the entry. */
uint16_t gnttab_busy(grant_ref_t ref);

#endif
