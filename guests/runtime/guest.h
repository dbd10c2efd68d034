/* The xenkvm test-guest runtime: a freestanding 64-bit Xen PVH environment (PVH entry -> long
 * mode, IDT, hypercall page, console_io printk, stage markers, pass/fail, vCPU bring-up and
 * 2-level event channels). Semantics follow Xen's public headers in /usr/include/xen. */
#ifndef XENKVM_GUEST_H
#define XENKVM_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xen/arch-x86/cpuid.h>
#include <xen/arch-x86/hvm/start_info.h>
#include <xen/errno.h>
#include <xen/event_channel.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/hvm_vcpu.h>
#include <xen/hvm/params.h>
#include <xen/memory.h>
#include <xen/sched.h>
#include <xen/vcpu.h>
#include <xen/version.h>
#include <xen/xen.h>

#include "abi/platform.h"

#define GUEST_MAX_VCPUS 16u
#define GUEST_STACK_SIZE 16384u
#define GUEST_NR_PORTS 4096u /* 2-level, 64-bit guest */

/* Interrupt vectors this runtime uses. */
#define UPCALL_VECTOR 0xf3u   /* per-vCPU upcall vector (LAPIC fixed interrupt, EOI'd) */
#define CALLBACK_VECTOR 0xf4u /* global callback vector (HVM_PARAM_CALLBACK_IRQ type 2, no EOI) */
#define SPURIOUS_VECTOR 0xffu

/* Guest-virtual window with a deliberately odd 4 KiB mapping (see entry.S): page 0 maps the
 * physical page alias_page_b, page 1 maps alias_page_a, page 2 is not present. */
#define ALIAS_GVA 0x8000000000ull
/* A guest-virtual address with nothing mapped (PML4 slot 2 is empty). */
#define UNMAPPED_GVA 0x10000000000ull

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NORETURN __attribute__((noreturn))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- each guest provides these ---- */
extern const char guest_name[];
void guest_main(void); /* runs on vCPU0 after boot; returning means PASS */
#define GUEST_NAME(n) const char guest_name[] = n

/* ---- hypercalls: `call hypercall_page + nr*32`, args rdi rsi rdx r10 r8, result rax ---- */
extern char hypercall_page[];

static inline long hypercall5(unsigned nr, unsigned long a1, unsigned long a2, unsigned long a3,
                              unsigned long a4, unsigned long a5) {
  register unsigned long r10 __asm__("r10") = a4;
  register unsigned long r8 __asm__("r8") = a5;
  long ret;
  void* fn = hypercall_page + nr * XENKVM_HYPERCALL_STUB_SIZE;
  __asm__ volatile("call *%[fn]"
                   : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
                   : [fn] "r"(fn)
                   : "memory", "rcx", "r11");
  return ret;
}
#define HC(nr, a1, a2, a3) \
  hypercall5((nr), (unsigned long)(a1), (unsigned long)(a2), (unsigned long)(a3), 0, 0)

static inline long HYPERVISOR_event_channel_op(int cmd, void* arg) {
  return HC(__HYPERVISOR_event_channel_op, cmd, arg, 0);
}
static inline long HYPERVISOR_sched_op(int cmd, void* arg) {
  return HC(__HYPERVISOR_sched_op, cmd, arg, 0);
}
static inline long HYPERVISOR_vcpu_op(int cmd, unsigned vcpu, void* arg) {
  return HC(__HYPERVISOR_vcpu_op, cmd, vcpu, arg);
}
static inline long HYPERVISOR_hvm_op(int cmd, void* arg) {
  return HC(__HYPERVISOR_hvm_op, cmd, arg, 0);
}
static inline long HYPERVISOR_memory_op(int cmd, void* arg) {
  return HC(__HYPERVISOR_memory_op, cmd, arg, 0);
}
static inline long HYPERVISOR_xen_version(int cmd, void* arg) {
  return HC(__HYPERVISOR_xen_version, cmd, arg, 0);
}
static inline long HYPERVISOR_console_io(int cmd, unsigned long len, const void* buf) {
  return HC(__HYPERVISOR_console_io, cmd, len, buf);
}
static inline long HYPERVISOR_set_timer_op(uint64_t abs_ns) {
  return HC(__HYPERVISOR_set_timer_op, abs_ns, 0, 0);
}

/* ---- CPU helpers ---- */
static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %w1" ::"a"(v), "Nd"(port));
}
static inline void outb(uint16_t port, uint8_t v) {
  __asm__ volatile("outb %0, %w1" ::"a"(v), "Nd"(port));
}
static inline uint64_t rdmsr(uint32_t msr) {
  uint32_t lo, hi;
  __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
  return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v) {
  __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t* a, uint32_t* b, uint32_t* c,
                         uint32_t* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}
static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
/* cli, returning the previous RFLAGS for irq_restore. */
static inline uint64_t irq_save(void) {
  uint64_t flags;
  __asm__ volatile("pushfq; popq %0; cli" : "=r"(flags)::"memory");
  return flags;
}
static inline void irq_restore(uint64_t flags) {
  if (flags & 0x200) irq_enable();
}
/* Enable interrupts and halt until one arrives (sti's shadow makes the pair atomic). */
static inline void safe_halt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("sti; pause" ::: "memory"); }
static inline uint64_t read_cr3(void) {
  uint64_t v;
  __asm__ volatile("mov %%cr3, %0" : "=r"(v));
  return v;
}

/* ---- reporting ---- */
void stage(uint32_t n); /* 32-bit OUT to the stage port; also remembered for FAIL lines */
void printk(const char* fmt, ...) PRINTF_LIKE(1, 2);
int vsnprintk(char* buf, size_t size, const char* fmt, va_list ap);
int snprintk(char* buf, size_t size, const char* fmt, ...) PRINTF_LIKE(3, 4);
NORETURN void test_pass(void);
NORETURN void test_fail(const char* fmt, ...) PRINTF_LIKE(1, 2);
NORETURN void shutdown(unsigned reason);

/* CHECK(cond, fmt, ...): fail the test with a reason when cond is false. */
#define CHECK(cond, ...)                 \
  do {                                   \
    if (!(cond)) test_fail(__VA_ARGS__); \
  } while (0)
/* EXPECT_RC(expr, want): a hypercall result must equal want (0 or -XEN_Exxx). */
#define EXPECT_RC(expr, want)                                                                \
  do {                                                                                       \
    long rc_ = (long)(expr);                                                                 \
    long want_ = (long)(want);                                                               \
    if (rc_ != want_)                                                                        \
      test_fail("%s:%d: %s returned %ld, expected %ld", __FILE_NAME__, __LINE__, #expr, rc_, \
                want_);                                                                      \
  } while (0)

/* ---- memory ---- */
void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);
int memcmp(const void* a, const void* b, size_t n);
size_t strlen(const char* s);

/* ---- boot info ---- */
extern const struct hvm_start_info* start_info;
/* The number after "key=" on the guest's command line (hvm_start_info), or `fallback` when the
 * key is absent or its value is 0 or not a number. */
uint32_t cmdline_number(const char* key, uint32_t fallback);
extern uint32_t xen_cpuid_base;

/* ---- vCPUs ---- */
extern uint8_t vcpu_stacks[GUEST_MAX_VCPUS][GUEST_STACK_SIZE];
/* The caller's vCPU id, derived from which per-vCPU stack it runs on. */
static inline unsigned this_vcpu(void) {
  uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
  return (unsigned)((sp - (uintptr_t)vcpu_stacks) / GUEST_STACK_SIZE);
}
/* Number of vCPUs the VMM created (VCPUOP_is_up probing until -ENOENT). */
unsigned vcpu_count(void);
/* Starts vCPU id directly in long mode (VCPUOP_initialise with vcpu_hvm_context 64-bit, then
 * VCPUOP_up); it runs fn(id) on its own stack and then idles with interrupts enabled. */
long vcpu_start(unsigned id, void (*fn)(unsigned id));
extern volatile uint32_t vcpu_online[GUEST_MAX_VCPUS];

/* ---- time (pvclock in vcpu_info.time; needs shared_info mapped) ---- */
bool time_available(void);
uint64_t now_ns(void);
/* Deadline helper that also works without a clock (falls back to an iteration budget). */
typedef struct {
  uint64_t deadline_ns;
  uint64_t spins_left;
} deadline_t;
deadline_t deadline_in_ms(uint64_t ms);
bool deadline_expired(deadline_t* d);
/* Spin (interrupts enabled) until expr holds or ms elapse; evaluates to whether it held. */
#define WAIT_FOR(expr, ms)               \
  ({                                     \
    deadline_t dl_ = deadline_in_ms(ms); \
    bool ok_;                            \
    for (;;) {                           \
      if (expr) {                        \
        ok_ = true;                      \
        break;                           \
      }                                  \
      if (deadline_expired(&dl_)) {      \
        ok_ = false;                     \
        break;                           \
      }                                  \
      cpu_relax();                       \
    }                                    \
    ok_;                                 \
  })
/* Busy-wait ms with interrupts left as they are (e.g. off, to hold back an upcall). */
void delay_ms_irqs_unchanged(uint64_t ms);
/* Halt (sti; hlt) until expr holds: use only where an interrupt is sure to come. */
#define HALT_UNTIL(expr) \
  do {                   \
    for (;;) {           \
      irq_disable();     \
      if (expr) break;   \
      safe_halt();       \
    }                    \
    irq_enable();        \
  } while (0)

/* ---- event channels (2-level) ---- */
extern shared_info_t* volatile shinfo;
/* Maps shared_info at the guest physical page `page` (XENMEM_add_to_physmap). */
long shinfo_map(void* page);
extern uint8_t shinfo_pages[2][4096]; /* two spare pages for guests that move shared_info */
/* A vCPU's vcpu_info: the one it registered, else its default slot in shared_info. */
extern vcpu_info_t* volatile vcpu_info_registered[GUEST_MAX_VCPUS];
static inline vcpu_info_t* vcpu_info_of(unsigned vcpu) {
  vcpu_info_t* vi = vcpu_info_registered[vcpu];
  return vi ? vi : &shinfo->vcpu_info[vcpu];
}
/* VCPUOP_register_vcpu_info: move vCPU vcpu's vcpu_info to the guest physical address at. */
long vcpu_info_register(unsigned vcpu, void* at);

void lapic_enable(void); /* x2APIC on, software-enabled via SVR */
/* Per-vCPU upcall vector for vCPU id (HVMOP_set_evtchn_upcall_vector). */
long upcall_vector_set(unsigned vcpu, unsigned vector);
/* Global callback vector (HVM_PARAM_CALLBACK_IRQ type 2). */
long callback_vector_set(unsigned vector);

typedef void (*port_handler_t)(evtchn_port_t port, unsigned vcpu);
/* Per-port bookkeeping kept by the upcall handler. */
extern volatile uint32_t port_hits[GUEST_NR_PORTS];
extern volatile uint8_t port_last_vcpu[GUEST_NR_PORTS];
extern volatile uint32_t upcall_count[GUEST_MAX_VCPUS];
extern volatile uint32_t stray_events; /* upcalls that found a pending port no vCPU owns */
/* Which vCPU's upcall handler handles port (the guest-side view of notify_vcpu). */
void port_track(evtchn_port_t port, unsigned vcpu, port_handler_t handler);
void port_untrack(evtchn_port_t port);

long evtchn_alloc_unbound(domid_t remote, evtchn_port_t* port);
long evtchn_bind_interdomain(domid_t remote_dom, evtchn_port_t remote_port, evtchn_port_t* port);
long evtchn_bind_ipi(unsigned vcpu, evtchn_port_t* port);
long evtchn_bind_virq(uint32_t virq, unsigned vcpu, evtchn_port_t* port);
long evtchn_send(evtchn_port_t port);
long evtchn_close(evtchn_port_t port);
long evtchn_unmask(evtchn_port_t port); /* EVTCHNOP_unmask: re-raises a pending port */
long evtchn_bind_vcpu(evtchn_port_t port, unsigned vcpu);
long evtchn_status(evtchn_port_t port, evtchn_status_t* st);
long evtchn_reset_self(void);
void evtchn_mask(evtchn_port_t port);
bool evtchn_is_pending(evtchn_port_t port);
bool evtchn_is_masked(evtchn_port_t port);
void evtchn_clear_pending(evtchn_port_t port);
/* Loopback pair: a = alloc_unbound(remote = self), b = bind_interdomain(self, a). Sending on
 * one raises the other. Both are tracked on vCPU0. Xen's bind_interdomain leaves b pending,
 * so the caller sees one event on b right after binding. */
long evtchn_loopback_pair(evtchn_port_t* a, evtchn_port_t* b);

long set_singleshot_timer(uint64_t abs_ns);

/* Common setups: map shared_info at shinfo_pages[0] if not yet mapped, then route upcalls for
 * the calling vCPU to UPCALL_VECTOR (enabling its x2APIC), or for all vCPUs to the global
 * CALLBACK_VECTOR (no LAPIC needed). Fail the test on error. */
void evtchn_setup_vector(void);
void evtchn_setup_callback(void);

/* ---- event channels (FIFO, runtime/fifo.c) ---- */
#define FIFO_WORDS_PER_PAGE (4096u / sizeof(event_word_t))
#define FIFO_GUEST_ARRAY_PAGES 8u /* ports 0..8191: enough to test ports above 4096 */
#define FIFO_GUEST_PORTS (FIFO_GUEST_ARRAY_PAGES * FIFO_WORDS_PER_PAGE)
#define FIFO_LOG_SIZE 256u
/* Set once a control block is registered: upcalls then consume FIFO queues, not 2-level. */
extern volatile uint32_t fifo_active;
extern volatile uint32_t fifo_array_nr; /* event array pages given with expand_array */
extern volatile uint32_t fifo_hits[FIFO_GUEST_PORTS];
extern volatile uint8_t fifo_last_vcpu[FIFO_GUEST_PORTS];
extern volatile uint32_t fifo_bad_events;
/* Ports in the order the consumer handled them (first FIFO_LOG_SIZE; reset fifo_log_len). */
extern volatile uint32_t fifo_log[FIFO_LOG_SIZE];
extern volatile uint32_t fifo_log_len;
long fifo_init_control(unsigned vcpu); /* control block of vcpu at offset 0 of its own page */
long fifo_expand_array(void);          /* adds the next (zeroed) event array page */
long fifo_set_priority(evtchn_port_t port, uint32_t priority);
volatile event_word_t* fifo_word(evtchn_port_t port); /* NULL past the array */
void fifo_mask(evtchn_port_t port);
bool fifo_is_pending(evtchn_port_t port);
bool fifo_is_linked(evtchn_port_t port);
void fifo_reset_state(void); /* after EVTCHNOP_reset: back to the 2-level scan */
void fifo_upcall(unsigned cpu);

/* If set, called first in every upcall (before the event scan), e.g. to time an ordinary MSI
 * that arrives on the upcall vector. */
extern void (*volatile upcall_hook)(unsigned vcpu);

/* Called from the upcall stubs in entry.S. */
void evtchn_upcall(int eoi);

#endif
