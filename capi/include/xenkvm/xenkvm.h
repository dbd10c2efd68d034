/* libxenkvm: Xen event channels in user space for any KVM VMM, in the shape of KVM's Xen
 * interface (Linux Documentation/virt/kvm/api.rst: KVM_XEN_HVM_SET_ATTR, KVM_XEN_VCPU_SET_ATTR,
 * KVM_XEN_HVM_EVTCHN_SEND, KVM_IRQ_ROUTING_XEN_EVTCHN). A thin C layer over the C++ engine.
 *
 * Errors: every function returns 0 or a negated Xen errno (xen/include/public/errno.h values,
 * e.g. -XEN_EINVAL == -22), which a hypercall answer hands to the guest unchanged.
 * Threads: every function may be called from any thread; the delivery callback is called from
 * any thread (vCPU threads, the engine's worker, the eventfd router) and must not block or call
 * back into the library. */
#ifndef XENKVM_XENKVM_H
#define XENKVM_XENKVM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(XENKVM_BUILDING_LIBRARY)
#define XENKVM_API __attribute__((visibility("default")))
#else
#define XENKVM_API
#endif

#define XENKVM_VERSION_MAJOR 0
#define XENKVM_VERSION_MINOR 1
#define XENKVM_VERSION_PATCH 0

typedef struct xenkvm_handle xenkvm_t;

/* Why the library calls the host (the `deliver` callback). */
enum xenkvm_delivery {
  /* evtchn_upcall_pending went 0 -> 1 on `vcpu`: inject `vector` into it (an MSI/LAPIC vector;
   * 0 when no upcall vector is set: raise the host's own callback, e.g. the HVM callback GSI). */
  XENKVM_DELIVER_UPCALL = 1,
  /* The vCPU's vcpu_info was not mapped when an event arrived: call xenkvm_vcpu_sync() on it
   * before it next enters the guest (kick it out of KVM_RUN if it is running). */
  XENKVM_DELIVER_SYNC = 2,
  /* A port the vCPU polls (SCHEDOP_poll) became pending: wake/kick it. */
  XENKVM_DELIVER_WAKE = 3,
};

struct xenkvm_config {
  uint16_t domid;   /* the guest's domain id; 0 means 1 */
  uint32_t n_vcpus; /* vCPU indexes 0 .. n_vcpus-1 (at most 4096) */
  void* opaque;     /* passed to the callbacks */
  void (*deliver)(void* opaque, uint32_t vcpu, enum xenkvm_delivery why, uint8_t vector);
  /* Guest-virtual -> guest-physical on `vcpu` (for hypercall arguments): 0 or -XEN_EFAULT. */
  int (*gva_to_gpa)(void* opaque, uint32_t vcpu, uint64_t gva, uint64_t* gpa);
};

/* Create an engine; *out is set on success. Guest memory starts empty: add regions. */
XENKVM_API int xenkvm_create(const struct xenkvm_config* config, xenkvm_t** out);
/* Stops the worker and the eventfd router; the caller closes its eventfds afterwards. */
XENKVM_API void xenkvm_destroy(xenkvm_t* xk);
/* "0.1.0" */
XENKVM_API const char* xenkvm_version(void);

/* ---- guest memory (the MMU-notifier analogue): may change while events flow ---- */
/* slot < 96; [gpa, gpa+size) page aligned, not overlapping another slot; host stays valid until
 * the region is removed and xenkvm_remove_region returned. */
XENKVM_API int xenkvm_add_region(xenkvm_t* xk, uint32_t slot, uint64_t gpa, uint64_t size,
                                 void* host);
/* Returns once no delivery uses the region any more; events arriving meanwhile are deferred and
 * delivered when the memory they need is back. */
XENKVM_API int xenkvm_remove_region(xenkvm_t* xk, uint32_t slot);

/* ---- KVM_XEN_HVM_SET_ATTR analogue ---- */
enum xenkvm_hvm_attr_type {
  XENKVM_HVM_ATTR_LONG_MODE = 0,    /* u.long_mode: 1 = 64-bit shared_info layout, 0 = compat */
  XENKVM_HVM_ATTR_SHARED_INFO = 1,  /* u.gfn: shared_info frame */
  XENKVM_HVM_ATTR_UPCALL_VECTOR = 2 /* u.vector: vector for every vCPU without its own */
};
struct xenkvm_hvm_attr {
  uint16_t type;
  union {
    uint8_t long_mode;
    uint64_t gfn;
    uint8_t vector;
  } u;
};
XENKVM_API int xenkvm_hvm_set_attr(xenkvm_t* xk, const struct xenkvm_hvm_attr* attr);
XENKVM_API int xenkvm_hvm_get_attr(xenkvm_t* xk, struct xenkvm_hvm_attr* attr);

/* ---- KVM_XEN_VCPU_SET_ATTR analogue (vcpu = the host's vCPU index) ---- */
enum xenkvm_vcpu_attr_type {
  XENKVM_VCPU_ATTR_VCPU_INFO = 0,    /* u.gpa: where this vCPU's vcpu_info lives */
  XENKVM_VCPU_ATTR_VCPU_ID = 1,      /* u.vcpu_id: its Xen vCPU id (default: the index) */
  XENKVM_VCPU_ATTR_UPCALL_VECTOR = 2 /* u.vector: this vCPU's own upcall vector (0: none) */
};
struct xenkvm_vcpu_attr {
  uint16_t type;
  union {
    uint64_t gpa;
    uint32_t vcpu_id;
    uint8_t vector;
  } u;
};
XENKVM_API int xenkvm_vcpu_set_attr(xenkvm_t* xk, uint32_t vcpu, const struct xenkvm_vcpu_attr* a);
XENKVM_API int xenkvm_vcpu_get_attr(xenkvm_t* xk, uint32_t vcpu, struct xenkvm_vcpu_attr* a);

/* Before entering the guest after XENKVM_DELIVER_SYNC (may block briefly). */
XENKVM_API void xenkvm_vcpu_sync(xenkvm_t* xk, uint32_t vcpu);
/* Whether the vCPU's evtchn_upcall_pending is set (re-inject after an EOI, SCHEDOP_block). */
XENKVM_API int xenkvm_vcpu_upcall_pending(xenkvm_t* xk, uint32_t vcpu);

/* ---- KVM_XEN_HVM_EVTCHN_SEND analogue: raise a guest port from the host (never blocks) ---- */
XENKVM_API int xenkvm_evtchn_send(xenkvm_t* xk, uint32_t port);

/* ---- hypercalls ---- */
/* The guest's registers at a hypercall exit, in the shape of KVM's kvm_xen_exit.u.hcall: rax =
 * number; arguments rdi, rsi, rdx, r10, r8 from a 64-bit caller, ebx, ecx, edx, esi, edi from a
 * 32-bit one (`compat` = 1: the vCPU was not in 64-bit mode; argument structs are then read
 * and written in the i386 layout and pointers are 32 bits, as Xen's compat layer does). `cpl`
 * is the caller's privilege level: Xen refuses hypercalls from user mode (-XEN_EPERM). On
 * return *handled says whether the library implemented it; if so `ret` is the value for the
 * guest's rax (a 32-bit caller takes its low 32 bits). Implemented: __HYPERVISOR_event_channel_op
 * (32; every EVTCHNOP the engine has) and __HYPERVISOR_physdev_op (33: PHYSDEVOP_map_pirq,
 * unmap_pirq, eoi, irq_status_query, get_free_pirq with Xen's answers for an HVM guest; the
 * other PHYSDEVOPs are -XEN_ENOSYS as for an HVM domU). Others (SCHEDOP, VCPUOP, ...) are
 * left to the host: *handled = 0. */
struct xenkvm_hypercall {
  uint64_t nr;
  uint64_t args[6];
  int64_t ret;
  uint32_t compat; /* 1: 32-bit caller */
  uint32_t cpl;    /* caller's CPL (0 = kernel) */
};
XENKVM_API int xenkvm_handle_hypercall(xenkvm_t* xk, uint32_t vcpu, struct xenkvm_hypercall* call,
                                       int* handled);

/* ---- routes: KVM_IRQ_ROUTING_XEN_EVTCHN analogue ---- */
/* XENKVM_ROUTE_PORT: the event goes to `port` on the vCPU the guest bound it to (Xen semantics);
 * `vcpu` (a Xen vCPU id) and `priority` (FIFO: 0 highest .. 15 lowest, default 7) are checked,
 * -XEN_EINVAL. XENKVM_ROUTE_PIRQ: the eventfd is a device MSI whose vector is 0; `pirq`
 * (xenkvm_msi_to_pirq) is raised, reaching the port the guest bound to it; a PIRQ raised
 * before the guest binds it is kept and delivered at the bind. */
enum xenkvm_route_type { XENKVM_ROUTE_PORT = 0, XENKVM_ROUTE_PIRQ = 1 };
struct xenkvm_route {
  uint32_t type;
  uint32_t port;
  uint32_t vcpu;
  uint32_t priority;
  uint32_t pirq;
};
/* Add or change a route while its eventfds fire. */
XENKVM_API int xenkvm_route_set(xenkvm_t* xk, uint32_t route_id, const struct xenkvm_route* r);
XENKVM_API int xenkvm_route_get(xenkvm_t* xk, uint32_t route_id, struct xenkvm_route* r);
/* -XEN_ENOENT if absent. Signals on eventfds still bound to it are dropped. */
XENKVM_API int xenkvm_route_remove(xenkvm_t* xk, uint32_t route_id);
/* Bind an eventfd (the caller keeps it and unbinds before closing it) to a route id; writes to
 * it deliver from the library's router thread. -XEN_EEXIST if already bound. */
XENKVM_API int xenkvm_eventfd_bind(xenkvm_t* xk, int eventfd, uint32_t route_id);
XENKVM_API int xenkvm_eventfd_unbind(xenkvm_t* xk, int eventfd);

/* ---- MSIs that are PIRQs ---- */
/* Whether an MSI (address, data) is Xen's PIRQ form (vector 0; PIRQ in the destination-id bits
 * 19:12 and address bits 63:40): 1 and *pirq set, else 0 (an ordinary MSI for the host). */
XENKVM_API int xenkvm_msi_to_pirq(uint64_t address, uint32_t data, uint32_t* pirq);
/* KVM_SIGNAL_MSI analogue for PIRQ MSIs: raise the PIRQ (never blocks). 1: delivered to its
 * port; 0: kept until the guest binds it; -XEN_EINVAL: not a PIRQ MSI or out of range. */
XENKVM_API int xenkvm_msi_send(xenkvm_t* xk, uint64_t address, uint32_t data);

#ifdef __cplusplus
}
#endif

#endif /* XENKVM_XENKVM_H */
