// Hypercall argument structs in the calling vCPU's layout: one mechanism for every op (Xen
// does this with its generated compat/ translation layer). Each struct a handler reads or
// writes names its compat twin in a CompatLayout<> specialisation (abi/compat.h pins the
// layouts); a struct with no specialisation does not compile, so none is decoded natively by
// mistake for a 32-bit caller.
#pragma once

#include <cstdint>
#include <cstring>

#include "abi/compat.h"
#include "abi/result.h"
#include "xen/guest_access.h"

namespace xenkvm::xen {

// CompatLayout<Native>::Type is the compat struct; ToNative/FromNative convert (handles become
// 64-bit guest-virtual addresses in the native struct's handle field).
template <class Native>
struct CompatLayout;

// Structs whose compat layout is the native one (pinned in abi/compat.h).
template <class T>
struct SameLayout {
  using Type = T;
  static T ToNative(const T& v) { return v; }
  static T FromNative(const T& v) { return v; }
};
#define XENKVM_SAME_LAYOUT(T) \
  template <>                 \
  struct CompatLayout<T> : SameLayout<T> {}

// A guest handle (XEN_GUEST_HANDLE: one pointer) as the guest-virtual address it carries.
template <class Handle>
uint64_t HandleGva(const Handle& h) {
  static_assert(sizeof(Handle) == sizeof(uint64_t));
  uint64_t gva;
  std::memcpy(&gva, &h, sizeof(gva));
  return gva;
}
template <class Handle>
void SetHandleGva(Handle& h, uint64_t gva) {
  static_assert(sizeof(Handle) == sizeof(uint64_t));
  std::memcpy(&h, &gva, sizeof(gva));
}

// Reads and writes argument structs for one hypercall. Threads: the calling vCPU's.
class HypercallArgs {
 public:
  HypercallArgs(GuestAccess guest, bool compat) : guest_(guest), compat_(compat) {}

  bool compat() const { return compat_; }
  const GuestAccess& guest() const { return guest_; }

  template <class T>
  Result<T> Read(uint64_t gva) const {
    using L = CompatLayout<T>;
    if (compat_) return L::ToNative(TRY(guest_.ReadObj<typename L::Type>(gva)));
    return guest_.ReadObj<T>(gva);
  }
  template <class T>
  Result<> Write(uint64_t gva, const T& value) const {
    using L = CompatLayout<T>;
    if (compat_) return guest_.WriteObj(gva, L::FromNative(value));
    return guest_.WriteObj(gva, value);
  }
  // Element i of an array of xen_pfn_t / xen_ulong_t (4 bytes each in compat).
  Result<uint64_t> ReadUlong(uint64_t array_gva, uint64_t i) const;
  // -ERANGE if the value does not fit a compat guest's 32-bit element.
  Result<> WriteUlong(uint64_t array_gva, uint64_t i, uint64_t value) const;

 private:
  GuestAccess guest_;
  bool compat_;
};

XENKVM_SAME_LAYOUT(uint32_t);
XENKVM_SAME_LAYOUT(domid_t);
XENKVM_SAME_LAYOUT(xen_hvm_param_t);
XENKVM_SAME_LAYOUT(xen_hvm_evtchn_upcall_vector_t);
XENKVM_SAME_LAYOUT(xen_hvm_get_time_t);
XENKVM_SAME_LAYOUT(vcpu_register_vcpu_info_t);
XENKVM_SAME_LAYOUT(vcpu_set_periodic_timer_t);
XENKVM_SAME_LAYOUT(vcpu_hvm_context_t);
XENKVM_SAME_LAYOUT(vcpu_time_info_t);
XENKVM_SAME_LAYOUT(sched_shutdown_t);
XENKVM_SAME_LAYOUT(xen_feature_info_t);
XENKVM_SAME_LAYOUT(gnttab_query_size_t);
XENKVM_SAME_LAYOUT(gnttab_set_version_t);
XENKVM_SAME_LAYOUT(gnttab_get_version_t);
XENKVM_SAME_LAYOUT(evtchn_alloc_unbound_t);
XENKVM_SAME_LAYOUT(evtchn_bind_interdomain_t);
XENKVM_SAME_LAYOUT(evtchn_bind_virq_t);
XENKVM_SAME_LAYOUT(evtchn_bind_ipi_t);
XENKVM_SAME_LAYOUT(evtchn_bind_pirq_t);
XENKVM_SAME_LAYOUT(evtchn_status_t);
XENKVM_SAME_LAYOUT(evtchn_close_t);
XENKVM_SAME_LAYOUT(evtchn_send_t);
XENKVM_SAME_LAYOUT(evtchn_bind_vcpu_t);
XENKVM_SAME_LAYOUT(evtchn_unmask_t);
XENKVM_SAME_LAYOUT(evtchn_reset_t);
XENKVM_SAME_LAYOUT(evtchn_init_control_t);
XENKVM_SAME_LAYOUT(evtchn_expand_array_t);
XENKVM_SAME_LAYOUT(evtchn_set_priority_t);
XENKVM_SAME_LAYOUT(physdev_unmap_pirq_t);
XENKVM_SAME_LAYOUT(physdev_eoi_t);
XENKVM_SAME_LAYOUT(physdev_irq_status_query_t);
XENKVM_SAME_LAYOUT(physdev_get_free_pirq_t);
static_assert(sizeof(evtchn_init_control_t) == 24 && sizeof(evtchn_expand_array_t) == 8);

template <>
struct CompatLayout<xen_add_to_physmap_t> {
  using Type = abi::CompatAddToPhysmap;
  static xen_add_to_physmap_t ToNative(const Type& c) {
    xen_add_to_physmap_t n{};
    n.domid = c.domid;
    n.size = c.size;
    n.space = c.space;
    n.idx = c.idx;
    n.gpfn = c.gpfn;
    return n;
  }
};

template <>
struct CompatLayout<physdev_map_pirq_t> {
  using Type = abi::CompatPhysdevMapPirq;
  static physdev_map_pirq_t ToNative(const Type& c) {
    physdev_map_pirq_t n{};
    n.domid = c.domid;
    n.type = c.type;
    n.index = c.index;
    n.pirq = c.pirq;
    n.bus = c.bus;
    n.devfn = c.devfn;
    n.entry_nr = c.entry_nr;
    n.table_base = c.table_base;
    return n;
  }
  static Type FromNative(const physdev_map_pirq_t& n) {
    return Type{n.domid, n.type, n.index, n.pirq, n.bus, n.devfn, n.entry_nr, n.table_base};
  }
};

template <>
struct CompatLayout<xen_memory_map_t> {
  using Type = abi::CompatMemoryMap;
  static xen_memory_map_t ToNative(const Type& c) {
    xen_memory_map_t n{};
    n.nr_entries = c.nr_entries;
    SetHandleGva(n.buffer, c.buffer);
    return n;
  }
  static Type FromNative(const xen_memory_map_t& n) {
    return Type{n.nr_entries, static_cast<uint32_t>(HandleGva(n.buffer))};
  }
};

template <>
struct CompatLayout<xen_foreign_memory_map_t> {
  using Type = abi::CompatForeignMemoryMap;
  static xen_foreign_memory_map_t ToNative(const Type& c) {
    xen_foreign_memory_map_t n{};
    n.domid = c.domid;
    n.map = CompatLayout<xen_memory_map_t>::ToNative(c.map);
    return n;
  }
};

template <>
struct CompatLayout<xen_memory_reservation_t> {
  using Type = abi::CompatMemoryReservation;
  static xen_memory_reservation_t ToNative(const Type& c) {
    xen_memory_reservation_t n{};
    SetHandleGva(n.extent_start, c.extent_start);
    n.nr_extents = c.nr_extents;
    n.extent_order = c.extent_order;
    n.mem_flags = c.mem_flags;
    n.domid = c.domid;
    return n;
  }
};

template <>
struct CompatLayout<sched_poll_t> {
  using Type = abi::CompatSchedPoll;
  static sched_poll_t ToNative(const Type& c) {
    sched_poll_t n{};
    SetHandleGva(n.ports, c.ports);
    n.nr_ports = c.nr_ports;
    n.timeout = c.timeout;
    return n;
  }
};

// register_runstate_memory_area and register_time_memory_area share this shape.
template <>
struct CompatLayout<vcpu_register_runstate_memory_area_t> {
  using Type = abi::CompatVcpuRegisterArea;
  static vcpu_register_runstate_memory_area_t ToNative(const Type& c) {
    vcpu_register_runstate_memory_area_t n{};
    n.addr.p = c.handle;
    return n;
  }
};
template <>
struct CompatLayout<vcpu_register_time_memory_area_t> {
  using Type = abi::CompatVcpuRegisterArea;
  static vcpu_register_time_memory_area_t ToNative(const Type& c) {
    vcpu_register_time_memory_area_t n{};
    n.addr.p = c.handle;
    return n;
  }
};

template <>
struct CompatLayout<vcpu_runstate_info_t> {
  using Type = abi::CompatVcpuRunstateInfo;
  static Type FromNative(const vcpu_runstate_info_t& n) {
    Type c{};
    c.state = n.state;
    c.state_entry_time = n.state_entry_time;
    for (int i = 0; i < 4; ++i) c.time[i] = n.time[i];
    return c;
  }
};

template <>
struct CompatLayout<vcpu_set_singleshot_timer_t> {
  using Type = abi::CompatVcpuSetSingleshotTimer;
  static vcpu_set_singleshot_timer_t ToNative(const Type& c) {
    vcpu_set_singleshot_timer_t n{};
    n.timeout_abs_ns = c.timeout_abs_ns;
    n.flags = c.flags;
    return n;
  }
};

template <>
struct CompatLayout<gnttab_setup_table_t> {
  using Type = abi::CompatGnttabSetupTable;
  static gnttab_setup_table_t ToNative(const Type& c) {
    gnttab_setup_table_t n{};
    n.dom = c.dom;
    n.nr_frames = c.nr_frames;
    n.status = c.status;
    SetHandleGva(n.frame_list, c.frame_list);
    return n;
  }
  static Type FromNative(const gnttab_setup_table_t& n) {
    return Type{n.dom, n.nr_frames, n.status, static_cast<uint32_t>(HandleGva(n.frame_list))};
  }
};

template <>
struct CompatLayout<xen_platform_parameters_t> {
  using Type = abi::CompatPlatformParameters;
  static Type FromNative(const xen_platform_parameters_t& n) {
    return Type{static_cast<uint32_t>(n.virt_start)};
  }
};

inline Result<uint64_t> HypercallArgs::ReadUlong(uint64_t array_gva, uint64_t i) const {
  if (compat_) return TRY(guest_.ReadObj<uint32_t>(array_gva + i * 4));
  return guest_.ReadObj<uint64_t>(array_gva + i * 8);
}

inline Result<> HypercallArgs::WriteUlong(uint64_t array_gva, uint64_t i, uint64_t value) const {
  if (!compat_) return guest_.WriteObj<uint64_t>(array_gva + i * 8, value);
  if (value > UINT32_MAX) return Fail(XEN_ERANGE, "value too big for a compat guest");
  return guest_.WriteObj<uint32_t>(array_gva + i * 4, static_cast<uint32_t>(value));
}

}  // namespace xenkvm::xen
