// The Xen public ABI as xenkvm uses it: Xen's own headers (libxen-dev) for the native 64-bit
// layout and the hypercall argument structs, a hand mirror of the compat (32-bit guest)
// shared_info/vcpu_info, and one traits type per layout that the 2-level code is templated on.
// Offsets are pinned by static_assert against xen/xen.h and xen/foreign/x86_32.h.
#pragma once

#include <cstddef>
#include <cstdint>

// Without this, Xen's headers describe the legacy (pre-3.0) interface: other hypercall numbers
// and struct shapes. 0x00040e00 is the newest interface libxen-dev's headers know.
#ifndef __XEN_INTERFACE_VERSION__
#define __XEN_INTERFACE_VERSION__ 0x00040e00
#endif

extern "C" {
#include <xen/arch-x86/cpuid.h>
#include <xen/arch-x86/hvm/start_info.h>
#include <xen/elfnote.h>
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/memory.h>
#include <xen/physdev.h>
#include <xen/sched.h>
#include <xen/vcpu.h>
#include <xen/version.h>
#include <xen/xen.h>
}

namespace xenkvm::abi {

// ---- compat (32-bit guest) mirror; i386 aligns 64-bit fields to 4 bytes, hence pack(4) ----
#pragma pack(push, 4)
struct CompatVcpuTimeInfo {
  uint32_t version;
  uint32_t pad0;
  uint64_t tsc_timestamp;
  uint64_t system_time;
  uint32_t tsc_to_system_mul;
  int8_t tsc_shift;
  uint8_t flags;
  uint8_t pad1[2];
};
struct CompatVcpuInfo {
  uint8_t evtchn_upcall_pending;
  uint8_t evtchn_upcall_mask;
  uint32_t evtchn_pending_sel;
  uint32_t arch_cr2;
  uint32_t arch_pad[5];
  CompatVcpuTimeInfo time;
};
struct CompatSharedInfo {
  CompatVcpuInfo vcpu_info[32];
  uint32_t evtchn_pending[32];
  uint32_t evtchn_mask[32];
  uint32_t wc_version;
  uint32_t wc_sec;
  uint32_t wc_nsec;
  uint32_t arch_max_pfn;
  uint32_t arch_pfn_to_mfn_frame_list_list;
  uint32_t arch_nmi_reason;
  uint32_t arch_p2m_cr3;
  uint32_t arch_p2m_vaddr;
  uint32_t arch_p2m_generation;
  uint32_t wc_sec_hi;  // i386 keeps it in arch_shared_info, after the fields above
};
#pragma pack(pop)

// ---- layout traits: everything the 2-level delivery path needs to know about a layout ----
struct Layout64 {
  using Word = uint64_t;  // xen_ulong_t
  static constexpr const char* kName = "64-bit";
  static constexpr uint32_t kPorts = sizeof(Word) * 8 * sizeof(Word) * 8;  // 4096
  static constexpr uint32_t kBitsPerWord = sizeof(Word) * 8;
  static constexpr size_t kVcpuInfoSize = sizeof(vcpu_info);
  static constexpr size_t kUpcallPending = offsetof(vcpu_info, evtchn_upcall_pending);
  static constexpr size_t kUpcallMask = offsetof(vcpu_info, evtchn_upcall_mask);
  static constexpr size_t kPendingSel = offsetof(vcpu_info, evtchn_pending_sel);
  static constexpr size_t kVcpuTime = offsetof(vcpu_info, time);
  static constexpr size_t kEvtchnPending = offsetof(shared_info, evtchn_pending);
  static constexpr size_t kEvtchnMask = offsetof(shared_info, evtchn_mask);
  static constexpr size_t kWcVersion = offsetof(shared_info, wc_version);
  static constexpr size_t kWcSec = offsetof(shared_info, wc_sec);
  static constexpr size_t kWcNsec = offsetof(shared_info, wc_nsec);
  static constexpr size_t kWcSecHi = offsetof(shared_info, wc_sec_hi);
  static constexpr uint32_t kLegacyVcpus = XEN_LEGACY_MAX_VCPUS;
};

struct LayoutCompat {
  using Word = uint32_t;
  static constexpr const char* kName = "compat";
  static constexpr uint32_t kPorts = sizeof(Word) * 8 * sizeof(Word) * 8;  // 1024
  static constexpr uint32_t kBitsPerWord = sizeof(Word) * 8;
  static constexpr size_t kVcpuInfoSize = sizeof(CompatVcpuInfo);
  static constexpr size_t kUpcallPending = offsetof(CompatVcpuInfo, evtchn_upcall_pending);
  static constexpr size_t kUpcallMask = offsetof(CompatVcpuInfo, evtchn_upcall_mask);
  static constexpr size_t kPendingSel = offsetof(CompatVcpuInfo, evtchn_pending_sel);
  static constexpr size_t kVcpuTime = offsetof(CompatVcpuInfo, time);
  static constexpr size_t kEvtchnPending = offsetof(CompatSharedInfo, evtchn_pending);
  static constexpr size_t kEvtchnMask = offsetof(CompatSharedInfo, evtchn_mask);
  static constexpr size_t kWcVersion = offsetof(CompatSharedInfo, wc_version);
  static constexpr size_t kWcSec = offsetof(CompatSharedInfo, wc_sec);
  static constexpr size_t kWcNsec = offsetof(CompatSharedInfo, wc_nsec);
  static constexpr size_t kWcSecHi = offsetof(CompatSharedInfo, wc_sec_hi);
  static constexpr uint32_t kLegacyVcpus = 32;
};

// Largest port count of any ABI (FIFO: 2^17); port tables are sized for the mode in force.
inline constexpr uint32_t kFifoPorts = 1u << 17;
inline constexpr size_t kPageSize = 4096;

// docs/design.md §8, checked against the real headers.
static_assert(Layout64::kPorts == 4096 && LayoutCompat::kPorts == 1024);
static_assert(Layout64::kVcpuInfoSize == 64 && LayoutCompat::kVcpuInfoSize == 64);
static_assert(Layout64::kUpcallPending == 0 && Layout64::kUpcallMask == 1 &&
              Layout64::kPendingSel == 8);
static_assert(LayoutCompat::kUpcallPending == 0 && LayoutCompat::kUpcallMask == 1 &&
              LayoutCompat::kPendingSel == 4);
static_assert(Layout64::kVcpuTime == 0x20 && LayoutCompat::kVcpuTime == 0x20);
static_assert(Layout64::kEvtchnPending == 0x800 && Layout64::kEvtchnMask == 0xa00);
static_assert(LayoutCompat::kEvtchnPending == 0x800 && LayoutCompat::kEvtchnMask == 0x880);
static_assert(Layout64::kWcVersion == 0xc00 && Layout64::kWcSec == 0xc04 &&
              Layout64::kWcNsec == 0xc08 && Layout64::kWcSecHi == 0xc0c);
static_assert(LayoutCompat::kWcVersion == 0x900 && LayoutCompat::kWcSecHi == 0x924);
static_assert(sizeof(shared_info) <= kPageSize && sizeof(CompatSharedInfo) <= kPageSize);
static_assert(sizeof(vcpu_time_info) == 32 && sizeof(CompatVcpuTimeInfo) == 32);

}  // namespace xenkvm::abi
