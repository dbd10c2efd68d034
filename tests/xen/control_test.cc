// What an unprivileged guest gets from the calls it may not use: sysctl and domctl (Xen 4.17's
// do_sysctl/do_domctl: -EFAULT, then -EACCES for a wrong interface version, then the domain
// lookup, then XSM's -EPERM), and the FIFO event-channel ops' argument decoding.
#include <gtest/gtest.h>

#include "tests/xen/hypercall_fixture.h"
#include "xen/toolstack_abi.h"

namespace xenkvm::xen {
namespace {

using testing::HypercallTest;
using testing::kArg;
using testing::kRamSize;

constexpr uint64_t kEventChannelOp = __HYPERVISOR_event_channel_op;

TEST_F(HypercallTest, FifoOpsBeforeInitControl) {
  // xsa-188: a bad control frame is -EINVAL and leaves expand_array refused.
  evtchn_init_control_t bad_frame{};
  bad_frame.control_gfn = uint64_t(-2);
  Put(kArg, bad_frame);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_init_control, kArg), -XEN_EINVAL);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_init_control, kRamSize + 0x1000), -XEN_EFAULT);
  Put(kArg, evtchn_expand_array_t{.array_gfn = 1});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_expand_array, kArg), -XEN_EOPNOTSUPP);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_expand_array, kRamSize + 0x1000), -XEN_EFAULT);
  // set_priority: a port that exists has no priority under 2-level (-ENOSYS); one beyond the
  // port space is -EINVAL.
  Put(kArg, evtchn_set_priority_t{1, 7});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_set_priority, kArg), -XEN_ENOSYS);
  Put(kArg, evtchn_set_priority_t{4096, 7});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_set_priority, kArg), -XEN_EINVAL);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_set_priority, kRamSize + 0x1000), -XEN_EFAULT);
  // Nothing was written back.
  EXPECT_EQ(Get<evtchn_set_priority_t>(kArg).port, 4096u);
}

// The FIFO ops decoded and answered: init_control copies link_bits back on success only,
// expand_array adds pages, set_priority reaches the port.
TEST_F(HypercallTest, FifoOpsThroughTheHypercall) {
  evtchn_init_control init{};
  init.control_gfn = 0x20;
  init.offset = 4;  // not 8-aligned: -EINVAL, nothing written back
  Put(kArg, init);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_init_control, kArg), -XEN_EINVAL);
  EXPECT_EQ(Get<evtchn_init_control_t>(kArg).link_bits, 0);
  init.offset = 8;
  Put(kArg, init);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_init_control, kArg), 0);
  EXPECT_EQ(Get<evtchn_init_control_t>(kArg).link_bits, EVTCHN_FIFO_LINK_BITS);
  Put(kArg, evtchn_expand_array_t{.array_gfn = 0x21});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_expand_array, kArg), 0);
  Put(kArg, evtchn_bind_ipi_t{.vcpu = 0, .port = 0});
  ASSERT_EQ(Call(kEventChannelOp, EVTCHNOP_bind_ipi, kArg), 0);
  const uint32_t port = Get<evtchn_bind_ipi_t>(kArg).port;
  Put(kArg, evtchn_set_priority_t{port, 16});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_set_priority, kArg), -XEN_EINVAL);
  Put(kArg, evtchn_set_priority_t{port, 3});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_set_priority, kArg), 0);
  Put(kArg, evtchn_reset_t{.dom = DOMID_SELF});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_reset, kArg), 0);
  Put(kArg, evtchn_expand_array_t{.array_gfn = 0x22});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_expand_array, kArg), -XEN_EOPNOTSUPP);
}

TEST_F(HypercallTest, SysctlRefused) {
  Put(kArg, SysctlHead{0 /* XEN_SYSCTL_readconsole */, kSysctlInterfaceVersion});
  EXPECT_EQ(Call(__HYPERVISOR_sysctl, kArg), -XEN_EPERM);
  Put(kArg, SysctlHead{0, kSysctlInterfaceVersion - 1});
  EXPECT_EQ(Call(__HYPERVISOR_sysctl, kArg), -XEN_EACCES);
  EXPECT_EQ(Call(__HYPERVISOR_sysctl, kRamSize + 0x1000), -XEN_EFAULT);
  // The whole struct is copied in, not just its head.
  Put(kRamSize - 8, SysctlHead{0, kSysctlInterfaceVersion});
  EXPECT_EQ(Call(__HYPERVISOR_sysctl, kRamSize - 8), -XEN_EFAULT);
}

TEST_F(HypercallTest, DomctlRefused) {
  auto domctl = [&](uint32_t cmd, domid_t dom, uint32_t version = kDomctlInterfaceVersion) {
    Put(kArg, DomctlHead{cmd, version, dom, {}});
    return Call(__HYPERVISOR_domctl, kArg);
  };
  constexpr uint32_t kPauseDomain = 3;  // XEN_DOMCTL_pausedomain
  EXPECT_EQ(domctl(kPauseDomain, 1), -XEN_EPERM);
  EXPECT_EQ(domctl(kPauseDomain, 0), -XEN_EPERM);
  EXPECT_EQ(domctl(kPauseDomain, 1, kDomctlInterfaceVersion + 1), -XEN_EACCES);
  EXPECT_EQ(domctl(kPauseDomain, 9), -XEN_ESRCH);
  EXPECT_EQ(domctl(kPauseDomain, DOMID_SELF), -XEN_ESRCH);  // looked up by id only
  EXPECT_EQ(domctl(kDomctlCreateDomain, 9), -XEN_EPERM);
  EXPECT_EQ(domctl(kDomctlGetDomainInfo, 1), -XEN_EPERM);
  EXPECT_EQ(domctl(kDomctlGetDomainInfo, DOMID_SELF), -XEN_EINVAL);
  EXPECT_EQ(domctl(kDomctlGetDomainInfo, 9), -XEN_ESRCH);
  EXPECT_EQ(domctl(kDomctlAssignDevice, DOMID_INVALID), -XEN_ESRCH);
  EXPECT_EQ(domctl(kDomctlAssignDevice, DOMID_IO), -XEN_EPERM);
  EXPECT_EQ(domctl(kDomctlTestAssignDevice, DOMID_INVALID), -XEN_EPERM);
  EXPECT_EQ(domctl(kDomctlVmEventOp, 9), -XEN_ESRCH);
  EXPECT_EQ(Call(__HYPERVISOR_domctl, kRamSize + 0x1000), -XEN_EFAULT);
  Put(kRamSize - 16, DomctlHead{kPauseDomain, kDomctlInterfaceVersion, 1, {}});
  EXPECT_EQ(Call(__HYPERVISOR_domctl, kRamSize - 16), -XEN_EFAULT);
}

}  // namespace
}  // namespace xenkvm::xen
