/* reboot_once: needs `--disk A` (the kvm test makes it). Boot 1 finds no mark in sector 0,
 * writes one and asks for SCHEDOP_shutdown reboot; under `--on-reboot=restart` the VMM starts
 * the guest again from its image, and boot 2 finds the mark (the disk kept, the memory new:
 * a static set at boot 1 is back at 0) and powers off. */
#include "blkfront.h"
#include "guest.h"

GUEST_NAME("reboot_once");

static const char kMark[] = "xenkvm-reboot-once";
static uint8_t page[4096] __attribute__((aligned(4096)));
static unsigned boots_in_this_memory; /* 0 at every boot: the image is loaded afresh */
static struct blkfront disk;

void guest_main(void) {
  EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  xs_init();
  gnttab_init();
  blkfront_probe(&disk, 51712); /* xvda */
  blkfront_connect(&disk, 1, 0);
  stage(10);
  CHECK(boots_in_this_memory++ == 0, "memory from an earlier boot");
  CHECK(blkfront_rw(&disk, 0, BLKIF_OP_READ, 0, page, 1) == BLKIF_RSP_OKAY, "read sector 0");
  if (memcmp(page, kMark, sizeof(kMark)) == 0) {
    printk("reboot_once: boot 2: the mark from boot 1 is on the disk\n");
    stage(12);
    return; /* PASS, poweroff */
  }
  memset(page, 0, sizeof(page));
  memcpy(page, kMark, sizeof(kMark));
  CHECK(blkfront_rw(&disk, 0, BLKIF_OP_WRITE, 0, page, 1) == BLKIF_RSP_OKAY, "write sector 0");
  CHECK(blkfront_flush(&disk, 0) == BLKIF_RSP_OKAY, "flush");
  printk("reboot_once: boot 1: mark written, rebooting\n");
  stage(11);
  shutdown(SHUTDOWN_reboot);
}
