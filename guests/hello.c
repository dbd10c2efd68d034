/* hello: the smallest guest — boots through PVH into long mode, talks to "Xen" through the
 * hypercall page (xen_version, console_io), and powers off. */
#include "guest.h"

GUEST_NAME("hello");

void guest_main(void) {
  stage(10);
  long ver = HYPERVISOR_xen_version(XENVER_version, NULL);
  CHECK(ver > 0, "XENVER_version returned %ld", ver);
  printk("hello from a Xen PVH guest on xenkvm: Xen %ld.%ld\n", ver >> 16, ver & 0xffff);
  stage(11);
  CHECK(start_info->magic == XEN_HVM_START_MAGIC_VALUE, "start_info magic %x", start_info->magic);
  if (start_info->cmdline_paddr && *(const char*)(uintptr_t)start_info->cmdline_paddr)
    printk("cmdline: %s\n", (const char*)(uintptr_t)start_info->cmdline_paddr);
  stage(12);
}
