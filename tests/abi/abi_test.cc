// The hand-mirrored compat layout against Xen's own description of the x86_32 ABI
// (xen/foreign/x86_32.h), and the traits the 2-level code reads.
#include <gtest/gtest.h>

#include "abi/xen.h"

extern "C" {
#include <xen/foreign/x86_32.h>
}

namespace xenkvm::abi {
namespace {

static_assert(sizeof(CompatVcpuInfo) == sizeof(vcpu_info_x86_32));
static_assert(offsetof(CompatVcpuInfo, evtchn_upcall_pending) ==
              offsetof(vcpu_info_x86_32, evtchn_upcall_pending));
static_assert(offsetof(CompatVcpuInfo, evtchn_pending_sel) ==
              offsetof(vcpu_info_x86_32, evtchn_pending_sel));
static_assert(offsetof(CompatVcpuInfo, time) == offsetof(vcpu_info_x86_32, time));
static_assert(offsetof(CompatSharedInfo, evtchn_pending) ==
              offsetof(shared_info_x86_32, evtchn_pending));
static_assert(offsetof(CompatSharedInfo, evtchn_mask) == offsetof(shared_info_x86_32, evtchn_mask));
static_assert(offsetof(CompatSharedInfo, wc_version) == offsetof(shared_info_x86_32, wc_version));
static_assert(offsetof(CompatSharedInfo, arch_max_pfn) ==
              offsetof(shared_info_x86_32, arch.max_pfn));
static_assert(sizeof(CompatVcpuTimeInfo) == sizeof(vcpu_time_info_x86_32));

TEST(Abi, LayoutTraitsMatchDesignTable) {
  EXPECT_EQ(Layout64::kPorts, 4096u);
  EXPECT_EQ(LayoutCompat::kPorts, 1024u);
  EXPECT_EQ(Layout64::kEvtchnMask - Layout64::kEvtchnPending, 64u * 8u);
  EXPECT_EQ(LayoutCompat::kEvtchnMask - LayoutCompat::kEvtchnPending, 32u * 4u);
  EXPECT_EQ(Layout64::kBitsPerWord * Layout64::kBitsPerWord, Layout64::kPorts);
  EXPECT_EQ(LayoutCompat::kBitsPerWord * LayoutCompat::kBitsPerWord, LayoutCompat::kPorts);
}

}  // namespace
}  // namespace xenkvm::abi
