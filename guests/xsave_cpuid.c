/* xsave_cpuid: CPUID leaf 0xd against what XCR0 enables, as Linux's fpu__init_system_xstate
 * checks it at boot ("XSAVE consistency problem"): after each XSETBV, leaf 0xd subleaf 0 ebx
 * (the XSAVE area size for the features enabled now) must equal the end of the highest enabled
 * feature's area (subleaf i: size eax at offset ebx). */
#include "guest.h"

GUEST_NAME("xsave_cpuid");

static void cpuid2(uint32_t leaf, uint32_t sub, uint32_t* a, uint32_t* b, uint32_t* c,
                   uint32_t* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static void xsetbv0(uint64_t v) {
  __asm__ volatile("xsetbv" ::"c"(0), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint32_t expected_size(uint64_t xcr0) {
  uint32_t size = 576; /* legacy area + header */
  for (uint32_t i = 2; i < 63; i++) {
    if (!(xcr0 & (1ull << i))) continue;
    uint32_t a, b, c, d;
    cpuid2(0xd, i, &a, &b, &c, &d);
    if (b + a > size) size = b + a;
  }
  return size;
}

void guest_main(void) {
  uint32_t a, b, c, d;
  cpuid2(1, 0, &a, &b, &c, &d);
  if (!(c & (1u << 26))) {
    printk("xsave_cpuid: no XSAVE on this vCPU: nothing to check\n");
    return;
  }
  uint64_t cr4;
  __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
  __asm__ volatile("mov %0, %%cr4" ::"r"(cr4 | (1ull << 18))); /* OSXSAVE */
  cpuid2(0xd, 0, &a, &b, &c, &d);
  const uint64_t supported = a | (uint64_t)d << 32;
  printk("xsave_cpuid: XCR0 may hold %llx; all of it takes %u bytes\n",
         (unsigned long long)supported, c);
  stage(10);
  /* x87+SSE, then each further user feature the CPUID offers (AVX needs SSE; the AVX-512
   * triple goes together), then all of them. */
  uint64_t steps[4] = {0x3, supported & 0x7, supported & 0x2ff, supported & ~0ull};
  for (int i = 0; i < 4; i++) {
    uint64_t xcr0 = steps[i] & supported;
    if ((xcr0 & 0xe0) != 0 && (xcr0 & 0xe0) != 0xe0) xcr0 &= ~0xe0ull;
    if (xcr0 & 0x60000) xcr0 &= ~0x60000ull; /* AMX needs opting in (XFD): left out */
    xsetbv0(xcr0);
    cpuid2(0xd, 0, &a, &b, &c, &d);
    const uint32_t want = expected_size(xcr0);
    printk("xsave_cpuid: XCR0 %llx: leaf 0xd ebx %u, areas end at %u\n", (unsigned long long)xcr0,
           b, want);
    CHECK(b == want, "XCR0 %llx: CPUID 0xd.0 ebx %u but the enabled areas end at %u",
          (unsigned long long)xcr0, b, want);
  }
  stage(11);
}
