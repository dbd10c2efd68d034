/* xenkvm guest runtime: boot (hypercall page via the Xen CPUID leaves and MSR, IDT), console
 * output through HYPERVISOR_console_io, stage markers, pass/fail, time and vCPU bring-up.
 * Protocols: xen/arch-x86/cpuid.h (hypercall page), xen/sched.h (shutdown), xen/vcpu.h and
 * xen/hvm/hvm_vcpu.h (VCPUOP_initialise for HVM vCPUs). */
#include "guest.h"

_Static_assert(XENKVM_STAGE_PORT == 0xe4, "entry code assumes the platform contract");

const struct hvm_start_info* start_info;
uint32_t xen_cpuid_base;
uint8_t vcpu_stacks[GUEST_MAX_VCPUS][GUEST_STACK_SIZE] __attribute__((aligned(GUEST_STACK_SIZE)));
volatile uint32_t vcpu_online[GUEST_MAX_VCPUS];
static volatile uint32_t last_stage;

extern const uint64_t exc_stubs[32];
extern char upcall_vector_entry[], callback_vector_entry[], spurious_entry[];
extern const uint8_t gdt_desc[];

/* ---- libc bits the compiler may call ---- */
void* memset(void* d, int c, size_t n) {
  void* ret = d;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return ret;
}
void* memcpy(void* d, const void* s, size_t n) {
  void* ret = d;
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n)::"memory");
  return ret;
}
int memcmp(const void* a, const void* b, size_t n) {
  const uint8_t* x = a;
  const uint8_t* y = b;
  for (size_t i = 0; i < n; i++)
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  return 0;
}
size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

/* ---- output ---- */
static void debugcon_write(const char* s, size_t n) {
  for (size_t i = 0; i < n; i++) outb(XENKVM_DEBUGCON_PORT, (uint8_t)s[i]);
}
static bool hypercalls_ready;

static void console_write(const char* s, size_t n) {
  if (hypercalls_ready)
    HYPERVISOR_console_io(CONSOLEIO_write, n, s);
  else
    debugcon_write(s, n);
}

static char* put_num(char* p, char* end, uint64_t v, unsigned base, int width, char pad, bool neg) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (neg) tmp[n++] = '-';
  while (width-- > n && p < end) *p++ = pad;
  while (n && p < end) *p++ = tmp[--n];
  return p;
}

int vsnprintk(char* buf, size_t size, const char* fmt, va_list ap) {
  char* p = buf;
  char* end = buf + size - 1;
  for (; *fmt && p < end; fmt++) {
    if (*fmt != '%') {
      *p++ = *fmt;
      continue;
    }
    fmt++;
    char pad = ' ';
    int width = 0;
    int longs = 0;
    if (*fmt == '0') pad = '0';
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    while (*fmt == 'l') longs++, fmt++;
    switch (*fmt) {
      case 'd':
      case 'i': {
        int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
        p = put_num(p, end, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, width, pad, v < 0);
        break;
      }
      case 'u':
        p = put_num(p, end, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad,
                    false);
        break;
      case 'x':
        p = put_num(p, end, longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad,
                    false);
        break;
      case 'p':
        if (p < end) *p++ = '0';
        if (p < end) *p++ = 'x';
        p = put_num(p, end, (uintptr_t)va_arg(ap, void*), 16, width, pad, false);
        break;
      case 'c':
        *p++ = (char)va_arg(ap, int);
        break;
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        while (*s && p < end) *p++ = *s++;
        break;
      }
      case '%':
        *p++ = '%';
        break;
      default:
        *p++ = '?';
        if (!*fmt) fmt--;
        break;
    }
  }
  *p = 0;
  return (int)(p - buf);
}

int snprintk(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintk(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

/* One console_io write per call keeps lines from different vCPUs whole. */
void printk(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintk(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  console_write(buf, (size_t)n);
}

void stage(uint32_t n) {
  last_stage = n;
  outl(XENKVM_STAGE_PORT, n);
}

/* ---- end of test ---- */
NORETURN void shutdown(unsigned reason) {
  sched_shutdown_t op = {.reason = reason};
  if (hypercalls_ready) HYPERVISOR_sched_op(SCHEDOP_shutdown, &op);
  for (;;) __asm__ volatile("cli; hlt");
}

static volatile uint32_t finishing;

NORETURN void test_pass(void) {
  if (__atomic_exchange_n(&finishing, 1, __ATOMIC_SEQ_CST)) shutdown(SHUTDOWN_poweroff);
  printk("xenkvm-test: PASS %s\n", guest_name);
  shutdown(SHUTDOWN_poweroff);
}

NORETURN void test_fail(const char* fmt, ...) {
  char reason[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintk(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  /* Only the first failure prints the final line; others just stop. */
  if (__atomic_exchange_n(&finishing, 1, __ATOMIC_SEQ_CST)) {
    printk("(also failed on vcpu%u: %s)\n", this_vcpu(), reason);
    for (;;) __asm__ volatile("cli; hlt");
  }
  printk("xenkvm-test: FAIL %s: %s (vcpu%u, stage %u)\n", guest_name, reason, this_vcpu(),
         last_stage);
  shutdown(SHUTDOWN_crash);
}

/* ---- IDT ---- */
struct idt_entry {
  uint16_t off0;
  uint16_t sel;
  uint8_t ist;
  uint8_t type;
  uint16_t off1;
  uint32_t off2;
  uint32_t zero;
};
static struct idt_entry idt[256] __attribute__((aligned(16)));
static struct __attribute__((packed)) {
  uint16_t limit;
  uint64_t base;
} idt_desc;

static void idt_set(unsigned vec, uint64_t handler) {
  idt[vec] = (struct idt_entry){.off0 = (uint16_t)handler,
                                .sel = 0x08,
                                .type = 0x8e, /* present, DPL0, 64-bit interrupt gate */
                                .off1 = (uint16_t)(handler >> 16),
                                .off2 = (uint32_t)(handler >> 32)};
}

static void idt_load(void) { __asm__ volatile("lidt %0" ::"m"(idt_desc)); }

struct exc_frame {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

NORETURN void exception_handler(struct exc_frame* f);
NORETURN void exception_handler(struct exc_frame* f) {
  uint64_t cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  printk("exception %lu error %lx at rip %lx rsp %lx cr2 %lx rax %lx rdi %lx\n", f->vector,
         f->error, f->rip, f->rsp, cr2, f->rax, f->rdi);
  test_fail("exception %lu at rip %lx", f->vector, f->rip);
}

/* ---- hypercall page ---- */
static uint32_t find_xen_cpuid_base(void) {
  for (uint32_t base = XENKVM_CPUID_BASE; base < XENKVM_CPUID_BASE + 0x10000; base += 0x100) {
    uint32_t a, b, c, d;
    cpuid(base, 0, &a, &b, &c, &d);
    /* "XenVMMXenVMM" in ebx, ecx, edx */
    if (b == XEN_CPUID_SIGNATURE_EBX && c == XEN_CPUID_SIGNATURE_ECX &&
        d == XEN_CPUID_SIGNATURE_EDX && a >= base + 2)
      return base;
  }
  return 0;
}

static void early_fail(const char* msg) {
  debugcon_write("xenkvm-test: FAIL ", 18);
  debugcon_write(guest_name, strlen(guest_name));
  debugcon_write(": ", 2);
  debugcon_write(msg, strlen(msg));
  debugcon_write("\n", 1);
  for (;;) __asm__ volatile("cli; hlt");
}

NORETURN void runtime_start(uint32_t start_info_pa);
NORETURN void runtime_start(uint32_t start_info_pa) {
  stage(1);
  for (unsigned v = 0; v < 32; v++) idt_set(v, exc_stubs[v]);
  idt_set(UPCALL_VECTOR, (uintptr_t)upcall_vector_entry);
  idt_set(CALLBACK_VECTOR, (uintptr_t)callback_vector_entry);
  idt_set(SPURIOUS_VECTOR, (uintptr_t)spurious_entry);
  idt_desc.limit = sizeof(idt) - 1;
  idt_desc.base = (uintptr_t)idt;
  idt_load();
  stage(2);

  xen_cpuid_base = find_xen_cpuid_base();
  if (!xen_cpuid_base) early_fail("no XenVMMXenVMM CPUID leaves");
  uint32_t pages, msr, c, d;
  cpuid(xen_cpuid_base + 2, 0, &pages, &msr, &c, &d);
  if (pages < 1) early_fail("CPUID leaf +2 reports no hypercall pages");
  wrmsr(msr, (uintptr_t)hypercall_page);
  hypercalls_ready = true;
  stage(3);

  start_info = (const struct hvm_start_info*)(uintptr_t)start_info_pa;
  if (!start_info || start_info->magic != XEN_HVM_START_MAGIC_VALUE)
    test_fail("bad hvm_start_info at %x", start_info_pa);
  vcpu_online[0] = 1;
  printk("%s: booted (hypercall msr %x, start_info %x)\n", guest_name, msr, start_info_pa);
  stage(4);
  irq_enable();
  guest_main();
  test_pass();
}

/* ---- secondary vCPUs ---- */
extern char ap_start64[];
static void (*volatile ap_fn[GUEST_MAX_VCPUS])(unsigned);

NORETURN void runtime_ap_start(unsigned id);
NORETURN void runtime_ap_start(unsigned id) {
  idt_load();
  if (this_vcpu() != id) test_fail("vcpu%u started on the stack of vcpu%u", id, this_vcpu());
  __atomic_store_n(&vcpu_online[id], 1, __ATOMIC_SEQ_CST);
  irq_enable();
  if (ap_fn[id]) ap_fn[id](id);
  for (;;) safe_halt();
}

unsigned vcpu_count(void) {
  unsigned n = 1;
  while (n < GUEST_MAX_VCPUS && HYPERVISOR_vcpu_op(VCPUOP_is_up, n, NULL) >= 0) n++;
  return n;
}

long vcpu_start(unsigned id, void (*fn)(unsigned)) {
  if (id == 0 || id >= GUEST_MAX_VCPUS) return -XEN_EINVAL;
  vcpu_hvm_context_t ctx;
  memset(&ctx, 0, sizeof(ctx));
  ctx.mode = VCPU_HVM_MODE_64B;
  struct vcpu_hvm_x86_64* r = &ctx.cpu_regs.x86_64;
  r->rip = (uintptr_t)ap_start64;
  r->rsp = (uintptr_t)vcpu_stacks[id] + GUEST_STACK_SIZE;
  r->rdi = id;
  r->rflags = 0x2;
  r->cr0 = 0x80000011; /* PG | ET | PE */
  r->cr3 = read_cr3();
  r->cr4 = 0x20;   /* PAE */
  r->efer = 0x500; /* LME | LMA */
  ap_fn[id] = fn;
  long rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, id, &ctx);
  if (rc) return rc;
  rc = HYPERVISOR_vcpu_op(VCPUOP_up, id, NULL);
  if (rc) return rc;
  if (!WAIT_FOR(vcpu_online[id], 5000)) return -XEN_ETIMEDOUT;
  return 0;
}

/* ---- time: pvclock in this vCPU's vcpu_info (xen.h: struct vcpu_time_info) ---- */
bool time_available(void) {
  if (!shinfo) return false;
  return vcpu_info_of(this_vcpu())->time.tsc_to_system_mul != 0;
}

uint32_t cmdline_number(const char* key, uint32_t fallback) {
  const char* p = start_info ? (const char*)(uintptr_t)start_info->cmdline_paddr : 0;
  for (; p && *p; p++) {
    const char* k = key;
    const char* q = p;
    while (*k && *q == *k) k++, q++;
    if (*k || *q != '=') continue;
    uint32_t n = 0;
    for (q++; *q >= '0' && *q <= '9' && n < 1000000; q++) n = n * 10 + (uint32_t)(*q - '0');
    return n > 0 ? n : fallback;
  }
  return fallback;
}

uint64_t now_ns(void) {
  if (!shinfo) return 0;
  volatile struct vcpu_time_info* t = &vcpu_info_of(this_vcpu())->time;
  uint32_t version;
  uint64_t ns;
  do {
    version = t->version;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint64_t delta = rdtsc() - t->tsc_timestamp;
    int8_t shift = t->tsc_shift;
    if (shift < 0)
      delta >>= -shift;
    else
      delta <<= shift;
    ns = t->system_time + (uint64_t)(((unsigned __int128)delta * t->tsc_to_system_mul) >> 32);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
  } while ((version & 1) || version != t->version);
  return ns;
}

deadline_t deadline_in_ms(uint64_t ms) {
  deadline_t d = {0, 0};
  if (time_available())
    d.deadline_ns = now_ns() + ms * 1000000ull;
  else
    d.spins_left = ms * 200; /* emulated CPL0: a spin iteration costs microseconds */
  return d;
}

bool deadline_expired(deadline_t* d) {
  if (d->deadline_ns) return now_ns() >= d->deadline_ns;
  if (d->spins_left == 0) return true;
  d->spins_left--;
  return false;
}

void delay_ms_irqs_unchanged(uint64_t ms) {
  deadline_t d = deadline_in_ms(ms);
  while (!deadline_expired(&d)) __asm__ volatile("pause" ::: "memory");
}
