/* hypercall_insn: calls Xen the way Linux has since XSA-466 (arch/x86/xen/xen-head.S): no
 * hypercall page, a `vmmcall` (AMD) or `vmcall` (Intel) in two 16-byte aligned functions that
 * a dispatcher picks with `jz amd; jmp intel`. The VMM makes them reach it either through the
 * host's KVM_EXIT_XEN intercept (bytes left as written) or by rewriting both to the port trap
 * as it loads the image (docs/hypercall_sites.md). A lone `vmcall; ret` of another shape (as
 * Linux's own KVM-guest code has) must stay as written; it is never executed: without the
 * intercept KVM would answer it, and a PVM host hangs on it. Prints which path it saw. */
#include "guest.h"

GUEST_NAME("hypercall_insn");

/* by_insn(a1, a2, a3, nr, amd): rdi rsi rdx as Xen's first arguments, the number in eax. */
long by_insn(unsigned long a1, unsigned long a2, unsigned long a3, unsigned long nr,
             unsigned long amd);
extern const uint8_t insn_amd[], insn_intel[], other_vmcall[];

__asm__(
    ".text\n"
    ".balign 16\n"
    ".globl by_insn\n"
    "by_insn:\n"
    "  mov %ecx, %eax\n"
    "  cmp $1, %r8d\n"
    "  jz insn_amd\n"
    "  jmp insn_intel\n"
    "  .balign 16, 0xcc\n"
    "insn_amd:\n"
    "  vmmcall\n"
    "  ret\n"
    "  int3\n"
    "  .balign 16, 0xcc\n"
    "insn_intel:\n"
    "  vmcall\n"
    "  ret\n"
    "  int3\n"
    "  .balign 16, 0xcc\n"
    "other_vmcall:\n"
    "  vmcall\n"
    "  ret\n");

static int is_amd(void) {
  uint32_t a, b, c, d;
  cpuid(0, 0, &a, &b, &c, &d);
  /* "AuthenticAMD" / "HygonGenuine": ebx "Auth" / "Hygo" */
  return b == 0x68747541u || b == 0x6f677948u;
}

static int same3(const uint8_t* p, uint8_t a, uint8_t b, uint8_t c) {
  return p[0] == a && p[1] == b && p[2] == c;
}

void guest_main(void) {
  stage(10);
  const int amd = is_amd();
  const int rewritten = same3(insn_amd, 0xe7, XENKVM_HYPERCALL_PORT, 0x90);
  CHECK(rewritten == same3(insn_intel, 0xe7, XENKVM_HYPERCALL_PORT, 0x90),
        "only one of the two sites was rewritten");
  if (!rewritten) {
    CHECK(same3(insn_amd, 0x0f, 0x01, 0xd9) && same3(insn_intel, 0x0f, 0x01, 0xc1),
          "the sites are neither as written nor the port trap");
  }
  CHECK(same3(other_vmcall, 0x0f, 0x01, 0xc1), "a vmcall of another shape was rewritten");
  printk("hypercall sites %s; calling by %s\n", rewritten ? "rewritten to port I/O" : "as written",
         amd ? "vmmcall" : "vmcall");
  stage(11);
  const long page_ver = HYPERVISOR_xen_version(XENVER_version, NULL);
  const long insn_ver = by_insn(XENVER_version, 0, 0, __HYPERVISOR_xen_version, amd);
  CHECK(insn_ver == page_ver && insn_ver > 0, "XENVER_version by instruction %ld, by page %ld",
        insn_ver, page_ver);
  /* A Xen error code comes back the same way, and arguments arrive: an unknown sub-op. */
  const long bad = by_insn(0x7fff, 0, 0, __HYPERVISOR_xen_version, amd);
  CHECK(bad == -XEN_ENOSYS, "unknown XENVER sub-op by instruction gave %ld", bad);
  static const char line[] = "console_io by instruction\n";
  const long written =
      by_insn(CONSOLEIO_write, sizeof(line) - 1, (unsigned long)line, __HYPERVISOR_console_io, amd);
  CHECK(written == 0, "console_io by instruction gave %ld", written);
  stage(12);
}
