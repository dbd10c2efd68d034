// Hypercall argument structs as a 32-bit (compat) guest lays them out, for the structs whose
// i386 layout differs from the native one (xen_ulong_t, xen_pfn_t and guest handles are 4
// bytes, uint64_t is 4-byte aligned). Xen translates these in xen/common/compat/ and
// xen/arch/x86/x86_64/compat/; sizes and offsets below were taken from libxen-dev's public
// headers compiled for i386 (clang -target i386-linux-gnu) and are pinned by static_assert.
#pragma once

#include <cstddef>
#include <cstdint>

#include "abi/xen.h"

namespace xenkvm::abi {

#pragma pack(push, 4)
struct CompatAddToPhysmap {  // xen/memory.h struct xen_add_to_physmap
  uint16_t domid;
  uint16_t size;
  uint32_t space;
  uint32_t idx;
  uint32_t gpfn;
};
struct CompatMemoryMap {  // struct xen_memory_map
  uint32_t nr_entries;
  uint32_t buffer;  // handle of e820 entries
};
struct CompatForeignMemoryMap {  // struct xen_foreign_memory_map
  uint16_t domid;
  CompatMemoryMap map;
};
struct CompatMemoryReservation {  // struct xen_memory_reservation
  uint32_t extent_start;          // handle of compat_pfn_t
  uint32_t nr_extents;
  uint32_t extent_order;
  uint32_t mem_flags;
  uint16_t domid;
};
struct CompatSchedPoll {  // xen/sched.h struct sched_poll
  uint32_t ports;         // handle of evtchn_port_t
  uint32_t nr_ports;
  uint64_t timeout;
};
struct CompatVcpuRegisterArea {  // xen/vcpu.h register_{runstate,time}_memory_area
  uint32_t handle;  // the union's 4-byte handle; its 64-bit `p` member only pads it to 8
  uint32_t pad;
};
struct CompatVcpuRunstateInfo {  // struct vcpu_runstate_info
  int32_t state;
  uint64_t state_entry_time;
  uint64_t time[4];
};
struct CompatVcpuSetSingleshotTimer {  // struct vcpu_set_singleshot_timer
  uint64_t timeout_abs_ns;
  uint32_t flags;
};
struct CompatGnttabSetupTable {  // xen/grant_table.h struct gnttab_setup_table
  uint16_t dom;
  uint32_t nr_frames;
  int16_t status;
  uint32_t frame_list;  // handle of compat_pfn_t
};
struct CompatPlatformParameters {  // xen/version.h xen_platform_parameters_t
  uint32_t virt_start;
};
struct CompatPhysdevMapPirq {  // xen/physdev.h struct physdev_map_pirq
  uint16_t domid;
  int32_t type;
  int32_t index;
  int32_t pirq;
  int32_t bus;
  int32_t devfn;
  int32_t entry_nr;
  uint64_t table_base;  // 4-byte aligned on i386: the only field that moves
};
#pragma pack(pop)

static_assert(sizeof(CompatAddToPhysmap) == 16 && offsetof(CompatAddToPhysmap, idx) == 8 &&
              offsetof(CompatAddToPhysmap, gpfn) == 12);
static_assert(sizeof(CompatMemoryMap) == 8 && offsetof(CompatMemoryMap, buffer) == 4);
static_assert(sizeof(CompatForeignMemoryMap) == 12 && offsetof(CompatForeignMemoryMap, map) == 4);
static_assert(sizeof(CompatMemoryReservation) == 20 &&
              offsetof(CompatMemoryReservation, extent_order) == 8 &&
              offsetof(CompatMemoryReservation, domid) == 16);
static_assert(sizeof(CompatSchedPoll) == 16 && offsetof(CompatSchedPoll, nr_ports) == 4 &&
              offsetof(CompatSchedPoll, timeout) == 8);
static_assert(sizeof(CompatVcpuRegisterArea) == 8);
static_assert(sizeof(CompatVcpuRunstateInfo) == 44 &&
              offsetof(CompatVcpuRunstateInfo, state_entry_time) == 4 &&
              offsetof(CompatVcpuRunstateInfo, time) == 12);
static_assert(sizeof(CompatVcpuSetSingleshotTimer) == 12 &&
              offsetof(CompatVcpuSetSingleshotTimer, flags) == 8);
static_assert(sizeof(CompatGnttabSetupTable) == 16 &&
              offsetof(CompatGnttabSetupTable, status) == 8 &&
              offsetof(CompatGnttabSetupTable, frame_list) == 12);
static_assert(sizeof(CompatPlatformParameters) == 4);
static_assert(sizeof(CompatPhysdevMapPirq) == 36 && offsetof(CompatPhysdevMapPirq, type) == 4 &&
              offsetof(CompatPhysdevMapPirq, table_base) == 28);

// The native layouts the same headers give on x86_64, so a change in libxen-dev shows here.
static_assert(sizeof(xen_add_to_physmap) == 24 && sizeof(xen_memory_map) == 16 &&
              sizeof(xen_foreign_memory_map) == 24 && sizeof(xen_memory_reservation) == 32 &&
              sizeof(sched_poll) == 24 && sizeof(vcpu_runstate_info) == 48 &&
              sizeof(vcpu_set_singleshot_timer) == 16 && sizeof(gnttab_setup_table) == 24 &&
              sizeof(xen_platform_parameters_t) == 8 && sizeof(physdev_map_pirq) == 40);
// Structs a compat guest passes unchanged (only 16/32-bit fields, or 64-bit ones already at
// 8-byte offsets with no trailing padding): the same sizes on i386.
static_assert(sizeof(xen_hvm_param) == 16 && sizeof(vcpu_register_vcpu_info) == 16 &&
              sizeof(xen_feature_info) == 8 && sizeof(grant_entry_v1_t) == 8 &&
              sizeof(gnttab_query_size) == 16 && sizeof(vcpu_set_periodic_timer) == 8 &&
              sizeof(vcpu_time_info) == 32 && sizeof(physdev_unmap_pirq) == 8 &&
              sizeof(physdev_eoi) == 4 && sizeof(physdev_irq_status_query) == 8 &&
              sizeof(physdev_get_free_pirq) == 8);

}  // namespace xenkvm::abi
