// The hand-mirrored compat layout against Xen's own description of the x86_32 ABI
// (xen/foreign/x86_32.h), and the traits the 2-level code reads.
#include <gtest/gtest.h>

#include "abi/result.h"
#include "abi/xen.h"

#include <cerrno>
#include <cstring>
#include <string>

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

namespace xenkvm {
namespace {

// Guest refusals, host failures and usage errors stay apart and each reads as one line.
TEST(Result, GuestHostAndUsageErrorsStayApart) {
  const Result<> guest = Fail(XEN_EINVAL, "bad port");
  EXPECT_EQ(guest.error().kind, ErrorKind::kGuest);
  EXPECT_EQ(guest.error().xen_errno, XEN_EINVAL);
  EXPECT_EQ(guest.error().host_errno, 0);
  EXPECT_EQ(Describe(guest.error()), "bad port (Xen errno 22)");

  const Result<> host = HostFail(EBADF, "KVM_RUN");
  EXPECT_EQ(host.error().kind, ErrorKind::kHost);
  EXPECT_EQ(host.error().xen_errno, XEN_EIO);  // what a guest would see
  EXPECT_EQ(host.error().host_errno, EBADF);
  EXPECT_EQ(Describe(host.error()), std::string("KVM_RUN: ") + std::strerror(EBADF) + " (errno 9)");

  const Result<> usage = UsageFail("--vcpus must be 1..64");
  EXPECT_EQ(usage.error().kind, ErrorKind::kUsage);
  EXPECT_EQ(Describe(usage.error()), "--vcpus must be 1..64");
}

}  // namespace
}  // namespace xenkvm
