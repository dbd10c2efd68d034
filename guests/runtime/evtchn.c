/* xenkvm guest runtime: 2-level event channels. shared_info is placed with
 * XENMEM_add_to_physmap(XENMAPSPACE_shared_info); upcalls arrive on a per-vCPU LAPIC vector
 * (HVMOP_set_evtchn_upcall_vector, EOI'd) or the global callback vector (HVM_PARAM_CALLBACK_IRQ
 * type 2, not EOI'd). The scan follows xen/xen.h's description of evtchn_pending_sel. */
#include "guest.h"

#define MSR_IA32_APIC_BASE 0x1b
#define APIC_BASE_EXTD (1u << 10)
#define APIC_BASE_EN (1u << 11)
#define MSR_X2APIC_EOI 0x80b
#define MSR_X2APIC_SVR 0x80f
#define BITS_PER_WORD 64u

shared_info_t* volatile shinfo;
vcpu_info_t* volatile vcpu_info_registered[GUEST_MAX_VCPUS];
uint8_t shinfo_pages[2][4096] __attribute__((aligned(4096), section(".bss.pages")));

volatile uint32_t port_hits[GUEST_NR_PORTS];
volatile uint8_t port_last_vcpu[GUEST_NR_PORTS];
volatile uint32_t upcall_count[GUEST_MAX_VCPUS];
volatile uint32_t stray_events;
static port_handler_t port_handler[GUEST_NR_PORTS];
/* Ports each vCPU's handler owns, as bit words parallel to evtchn_pending. */
static xen_ulong_t owned[GUEST_MAX_VCPUS][GUEST_NR_PORTS / BITS_PER_WORD];
/* Ports some vCPU owns: a pending port outside this set is a stray event. (A port owned by
 * another vCPU may be seen pending here before its owner handles it: that is no stray.) */
static xen_ulong_t owned_any[GUEST_NR_PORTS / BITS_PER_WORD];

long shinfo_map(void* page) {
  struct xen_add_to_physmap xatp = {
      .domid = DOMID_SELF,
      .space = XENMAPSPACE_shared_info,
      .idx = 0,
      .gpfn = (uintptr_t)page >> 12,
  };
  long rc = HYPERVISOR_memory_op(XENMEM_add_to_physmap, &xatp);
  if (rc == 0) shinfo = (shared_info_t*)page;
  return rc;
}

long vcpu_info_register(unsigned vcpu, void* at) {
  struct vcpu_register_vcpu_info info = {
      .mfn = (uintptr_t)at >> 12,
      .offset = (uint32_t)((uintptr_t)at & 0xfff),
  };
  long rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, vcpu, &info);
  if (rc == 0 && vcpu < GUEST_MAX_VCPUS) vcpu_info_registered[vcpu] = at;
  return rc;
}

void lapic_enable(void) {
  uint64_t base = rdmsr(MSR_IA32_APIC_BASE);
  if ((base & (APIC_BASE_EN | APIC_BASE_EXTD)) != (APIC_BASE_EN | APIC_BASE_EXTD))
    wrmsr(MSR_IA32_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
  wrmsr(MSR_X2APIC_SVR, 0x100 | SPURIOUS_VECTOR);
}

long upcall_vector_set(unsigned vcpu, unsigned vector) {
  xen_hvm_evtchn_upcall_vector_t op = {.vcpu = vcpu, .vector = (uint8_t)vector};
  return HYPERVISOR_hvm_op(HVMOP_set_evtchn_upcall_vector, &op);
}

long callback_vector_set(unsigned vector) {
  xen_hvm_param_t p = {
      .domid = DOMID_SELF,
      .index = HVM_PARAM_CALLBACK_IRQ,
      .value = ((uint64_t)HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | (vector & 0xff),
  };
  return HYPERVISOR_hvm_op(HVMOP_set_param, &p);
}

void port_track(evtchn_port_t port, unsigned vcpu, port_handler_t handler) {
  if (port >= GUEST_NR_PORTS || vcpu >= GUEST_MAX_VCPUS) return;
  port_handler[port] = handler;
  for (unsigned v = 0; v < GUEST_MAX_VCPUS; v++)
    __atomic_fetch_and(&owned[v][port / BITS_PER_WORD], ~(1ul << (port % BITS_PER_WORD)),
                       __ATOMIC_SEQ_CST);
  __atomic_fetch_or(&owned[vcpu][port / BITS_PER_WORD], 1ul << (port % BITS_PER_WORD),
                    __ATOMIC_SEQ_CST);
  __atomic_fetch_or(&owned_any[port / BITS_PER_WORD], 1ul << (port % BITS_PER_WORD),
                    __ATOMIC_SEQ_CST);
}

void port_untrack(evtchn_port_t port) {
  if (port >= GUEST_NR_PORTS) return;
  for (unsigned v = 0; v < GUEST_MAX_VCPUS; v++)
    __atomic_fetch_and(&owned[v][port / BITS_PER_WORD], ~(1ul << (port % BITS_PER_WORD)),
                       __ATOMIC_SEQ_CST);
  __atomic_fetch_and(&owned_any[port / BITS_PER_WORD], ~(1ul << (port % BITS_PER_WORD)),
                     __ATOMIC_SEQ_CST);
  port_handler[port] = NULL;
}

/* The Xen 2-level scan: clear upcall_pending, take the selector, handle pending & ~mask. */
void (*volatile upcall_hook)(unsigned vcpu);

void evtchn_upcall(int eoi) {
  unsigned cpu = this_vcpu();
  shared_info_t* s = shinfo;
  upcall_count[cpu]++;
  void (*hook)(unsigned) = upcall_hook;
  if (hook) hook(cpu);
  if (s && __atomic_load_n(&fifo_active, __ATOMIC_ACQUIRE)) {
    /* FIFO: upcall_pending still says "look"; the queues say what. */
    vcpu_info_t* vi = vcpu_info_of(cpu);
    while (__atomic_load_n(&vi->evtchn_upcall_pending, __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&vi->evtchn_upcall_pending, 0, __ATOMIC_SEQ_CST);
      fifo_upcall(cpu);
    }
  } else if (s) {
    vcpu_info_t* vi = vcpu_info_of(cpu);
    while (__atomic_load_n(&vi->evtchn_upcall_pending, __ATOMIC_ACQUIRE)) {
      __atomic_store_n(&vi->evtchn_upcall_pending, 0, __ATOMIC_SEQ_CST);
      xen_ulong_t sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
      while (sel) {
        unsigned w = (unsigned)__builtin_ctzl(sel);
        sel &= sel - 1;
        xen_ulong_t pending = __atomic_load_n(&s->evtchn_pending[w], __ATOMIC_ACQUIRE) &
                              ~__atomic_load_n(&s->evtchn_mask[w], __ATOMIC_ACQUIRE);
        xen_ulong_t mine = pending & owned[cpu][w];
        if (pending & ~owned_any[w]) stray_events++;
        while (mine) {
          unsigned b = (unsigned)__builtin_ctzl(mine);
          mine &= mine - 1;
          evtchn_port_t port = w * BITS_PER_WORD + b;
          __atomic_fetch_and(&s->evtchn_pending[w], ~(1ul << b), __ATOMIC_SEQ_CST);
          port_last_vcpu[port] = (uint8_t)cpu;
          __atomic_fetch_add(&port_hits[port], 1, __ATOMIC_SEQ_CST);
          if (port_handler[port]) port_handler[port](port, cpu);
        }
      }
    }
  }
  if (eoi) wrmsr(MSR_X2APIC_EOI, 0);
}

/* ---- EVTCHNOP wrappers ---- */
long evtchn_alloc_unbound(domid_t remote, evtchn_port_t* port) {
  evtchn_alloc_unbound_t op = {.dom = DOMID_SELF, .remote_dom = remote};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &op);
  if (rc == 0) {
    *port = op.port;
    port_track(op.port, 0, NULL);
  }
  return rc;
}

long evtchn_bind_interdomain(domid_t remote_dom, evtchn_port_t remote_port, evtchn_port_t* port) {
  evtchn_bind_interdomain_t op = {.remote_dom = remote_dom, .remote_port = remote_port};
  /* Xen sets the new port pending at once: keep upcalls off until the port is tracked, or
   * the handler would count that event as stray. */
  uint64_t flags = irq_save();
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &op);
  if (rc == 0) {
    *port = op.local_port;
    port_track(op.local_port, 0, NULL);
  }
  irq_restore(flags);
  return rc;
}

long evtchn_bind_ipi(unsigned vcpu, evtchn_port_t* port) {
  evtchn_bind_ipi_t op = {.vcpu = vcpu};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_ipi, &op);
  if (rc == 0) {
    *port = op.port;
    port_track(op.port, vcpu, NULL);
  }
  return rc;
}

long evtchn_bind_virq(uint32_t virq, unsigned vcpu, evtchn_port_t* port) {
  evtchn_bind_virq_t op = {.virq = virq, .vcpu = vcpu};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &op);
  if (rc == 0) {
    *port = op.port;
    port_track(op.port, vcpu, NULL);
  }
  return rc;
}

long evtchn_send(evtchn_port_t port) {
  evtchn_send_t op = {.port = port};
  return HYPERVISOR_event_channel_op(EVTCHNOP_send, &op);
}

long evtchn_close(evtchn_port_t port) {
  evtchn_close_t op = {.port = port};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_close, &op);
  if (rc == 0) port_untrack(port);
  return rc;
}

long evtchn_unmask(evtchn_port_t port) {
  evtchn_unmask_t op = {.port = port};
  return HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &op);
}

long evtchn_bind_vcpu(evtchn_port_t port, unsigned vcpu) {
  evtchn_bind_vcpu_t op = {.port = port, .vcpu = vcpu};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &op);
  if (rc == 0) port_track(port, vcpu, port < GUEST_NR_PORTS ? port_handler[port] : NULL);
  return rc;
}

long evtchn_status(evtchn_port_t port, evtchn_status_t* st) {
  memset(st, 0, sizeof(*st));
  st->dom = DOMID_SELF;
  st->port = port;
  return HYPERVISOR_event_channel_op(EVTCHNOP_status, st);
}

long evtchn_reset_self(void) {
  evtchn_reset_t op = {.dom = DOMID_SELF};
  long rc = HYPERVISOR_event_channel_op(EVTCHNOP_reset, &op);
  if (rc == 0) {
    memset(owned, 0, sizeof(owned));
    memset(owned_any, 0, sizeof(owned_any));
    memset(port_handler, 0, sizeof(port_handler));
  }
  return rc;
}

void evtchn_mask(evtchn_port_t port) {
  __atomic_fetch_or(&shinfo->evtchn_mask[port / BITS_PER_WORD], 1ul << (port % BITS_PER_WORD),
                    __ATOMIC_SEQ_CST);
}

bool evtchn_is_pending(evtchn_port_t port) {
  return (__atomic_load_n(&shinfo->evtchn_pending[port / BITS_PER_WORD], __ATOMIC_SEQ_CST) >>
          (port % BITS_PER_WORD)) &
         1;
}

bool evtchn_is_masked(evtchn_port_t port) {
  return (__atomic_load_n(&shinfo->evtchn_mask[port / BITS_PER_WORD], __ATOMIC_SEQ_CST) >>
          (port % BITS_PER_WORD)) &
         1;
}

void evtchn_clear_pending(evtchn_port_t port) {
  __atomic_fetch_and(&shinfo->evtchn_pending[port / BITS_PER_WORD],
                     ~(1ul << (port % BITS_PER_WORD)), __ATOMIC_SEQ_CST);
}

long evtchn_loopback_pair(evtchn_port_t* a, evtchn_port_t* b) {
  long rc = evtchn_alloc_unbound(DOMID_SELF, a);
  if (rc) return rc;
  return evtchn_bind_interdomain(DOMID_SELF, *a, b);
}

long set_singleshot_timer(uint64_t abs_ns) {
  vcpu_set_singleshot_timer_t t = {.timeout_abs_ns = abs_ns, .flags = 0};
  return HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, this_vcpu(), &t);
}

void evtchn_setup_vector(void) {
  if (!shinfo) EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  lapic_enable();
  EXPECT_RC(upcall_vector_set(this_vcpu(), UPCALL_VECTOR), 0);
}

void evtchn_setup_callback(void) {
  if (!shinfo) EXPECT_RC(shinfo_map(shinfo_pages[0]), 0);
  EXPECT_RC(callback_vector_set(CALLBACK_VECTOR), 0);
}
