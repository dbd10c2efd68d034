// The hypercall surface (xen/domain.h) on in-process guest memory with a fake Platform: Xen's
// return values and error codes per hypercall, pointer handling (faults, page straddling),
// shared_info / vcpu_info placement, and the hypercall page and CPUID leaves.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "abi/platform.h"
#include "evtchn/engine.h"
#include "mem/guest_memory.h"
#include "tests/xen/fake_platform.h"
#include "tests/xen/hypercall_fixture.h"
#include "xen/cpuid.h"
#include "xen/domain.h"
#include "xen/hypercall_page.h"

namespace xenkvm::xen {
namespace {

using testing::HypercallTest;
using testing::kArg;
using testing::kRamSize;
using testing::kVcpus;

constexpr uint64_t kSchedOp = __HYPERVISOR_sched_op;
constexpr uint64_t kEventChannelOp = __HYPERVISOR_event_channel_op;
static_assert(kSchedOp == 29 && kEventChannelOp == 32, "abi/xen.h must use the current interface");

TEST_F(HypercallTest, UnknownHypercallIsEnosys) {
  EXPECT_EQ(Call(100), -XEN_ENOSYS);
  EXPECT_EQ(Call(kSchedOp, 99), -XEN_ENOSYS);
  EXPECT_EQ(Call(kEventChannelOp, 99, kArg), -XEN_ENOSYS);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, 999, kArg), -XEN_ENOSYS);
}

TEST_F(HypercallTest, UserModeMayNotCall) {
  HypercallCall c;
  c.nr = __HYPERVISOR_xen_version;
  c.args = {XENVER_version, 0, 0, 0, 0};
  c.cpl = 3;
  EXPECT_EQ(domain_->Hypercall(c), -XEN_EPERM);
}

TEST_F(HypercallTest, XenVersion) {
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_version), (4 << 16) | 17);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_extraversion, kArg), 0);
  EXPECT_STREQ(reinterpret_cast<char*>(ram_.get() + kArg), ".0-xenkvm");
  xen_feature_info_t fi{0, 0};
  Put(kArg, fi);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_get_features, kArg), 0);
  fi = Get<xen_feature_info_t>(kArg);
  EXPECT_TRUE(fi.submap & (1u << XENFEAT_hvm_callback_vector));
  EXPECT_TRUE(fi.submap & (1u << XENFEAT_auto_translated_physmap));
  Put(kArg, xen_feature_info_t{1, 0});
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_get_features, kArg), -XEN_EINVAL);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_capabilities, kArg), 0);
  EXPECT_NE(std::strstr(reinterpret_cast<char*>(ram_.get() + kArg), "hvm-3.0-x86_64"), nullptr);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_pagesize), 4096);
  EXPECT_EQ(Call(__HYPERVISOR_xen_version, XENVER_extraversion, kRamSize + 0x1000), -XEN_EFAULT);
}

TEST_F(HypercallTest, ConsoleWriteStraddlesUnrelatedPages) {
  // GVA page 0x200000 -> GPA 0x30000, GVA page 0x201000 -> GPA 0x20000: the string crosses.
  platform_.remap[0x200000] = 0x30000;
  platform_.remap[0x201000] = 0x20000;
  std::memcpy(ram_.get() + 0x30ffc, "hell", 4);
  std::memcpy(ram_.get() + 0x20000, "o!", 2);
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_write, 6, 0x200ffc), 0);
  EXPECT_EQ(platform_.console, "hello!");
  platform_.unmapped_pages.push_back(0x201000);
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_write, 6, 0x200ffc), -XEN_EFAULT);
  EXPECT_EQ(Call(__HYPERVISOR_console_io, CONSOLEIO_read, 16, kArg), 0);
  EXPECT_EQ(Call(__HYPERVISOR_console_io, 7, 0, 0), -XEN_ENOSYS);
}

TEST_F(HypercallTest, UpcallVectorErrors) {
  xen_hvm_evtchn_upcall_vector_t op{0, 0x0f};
  Put(kArg, op);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg), -XEN_EINVAL);
  op = {kVcpus, 0xf3};
  Put(kArg, op);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg), -XEN_ENOENT);
  op = {1, 0xf3};
  Put(kArg, op);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg), 0);
  EXPECT_EQ(platform_.upcall_vectors[1], 0xf3);
}

TEST_F(HypercallTest, HvmParams) {
  xen_hvm_param_t p{};
  p.domid = DOMID_SELF;
  p.index = HVM_PARAM_CALLBACK_IRQ;
  p.value = (uint64_t{HVM_PARAM_CALLBACK_TYPE_VECTOR} << 56) | 0xf4;
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg), 0);
  EXPECT_EQ(platform_.callback_vector, 0xf4);
  p.value = 0;
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_get_param, kArg), 0);
  EXPECT_EQ(Get<xen_hvm_param_t>(kArg).value, (uint64_t{2} << 56) | 0xf4);

  p.index = HVM_NR_PARAMS;
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_get_param, kArg), -XEN_EINVAL);
  p.index = HVM_PARAM_STORE_PFN;  // toolstack-only to set
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg), -XEN_EPERM);
  domain_->SetParamFromVmm(HVM_PARAM_CONSOLE_EVTCHN, 3);
  p.index = HVM_PARAM_CONSOLE_EVTCHN;
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_get_param, kArg), 0);
  EXPECT_EQ(Get<xen_hvm_param_t>(kArg).value, 3u);
  p.domid = 7;
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_get_param, kArg), -XEN_ESRCH);
}

TEST_F(HypercallTest, PagetableDyingIsEinvalWithoutShadowPaging) {
  xen_hvm_pagetable_dying_t op{};
  op.domid = DOMID_SELF;
  op.gpa = ~uint64_t{0};  // Linux's probe
  Put(kArg, op);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_pagetable_dying, kArg), -XEN_EINVAL);
  op.domid = 7;
  Put(kArg, op);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_pagetable_dying, kArg), -XEN_ESRCH);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_pagetable_dying, kRamSize + 0x1000), -XEN_EFAULT);
}

TEST_F(HypercallTest, CallbackGsiAfterPerVcpuVectorIsAccepted) {
  Put(kArg, xen_hvm_evtchn_upcall_vector_t{0, 0xf3});
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg), 0);
  xen_hvm_param_t p{};
  p.domid = DOMID_SELF;
  p.index = HVM_PARAM_CALLBACK_IRQ;
  p.value = 1;  // type 0 (GSI), GSI 1: what Linux writes after its per-vCPU vectors
  Put(kArg, p);
  EXPECT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg), 0);
  EXPECT_EQ(platform_.upcall_vectors[0], 0xf3);
}

TEST_F(HypercallTest, MemoryMapAndReservation) {
  uint32_t nr = 1;
  Put(kArg, nr);
  Put<uint64_t>(kArg + 8, kArg + 0x100);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_memory_map, kArg), 0);
  EXPECT_EQ(Get<uint32_t>(kArg), 1u);  // min(buffer, ours)
  auto e = Get<MemoryMapEntry>(kArg + 0x100);
  EXPECT_EQ(e.addr, 0u);
  EXPECT_EQ(e.size, kRamSize);
  EXPECT_EQ(e.type, XEN_HVM_MEMMAP_TYPE_RAM);
  Put<domid_t>(kArg, DOMID_SELF);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_current_reservation, kArg),
            static_cast<long>(kRamSize >> 12));
  Put<domid_t>(kArg, 9);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_maximum_reservation, kArg), -XEN_ESRCH);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, 63, kArg), -XEN_ENOSYS);
}

TEST_F(HypercallTest, SharedInfoMoveKeepsContentsAndDefaultVcpuInfo) {
  xen_add_to_physmap_t x{};
  x.domid = DOMID_SELF;
  x.space = XENMAPSPACE_shared_info;
  x.idx = 1;
  Put(kArg, x);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), -XEN_EINVAL);
  EXPECT_EQ(MapSharedInfo(Domain::kMaxGfn), -XEN_EINVAL);  // beyond any guest-physical address

  ASSERT_EQ(MapSharedInfo(0x40), 0);
  EXPECT_EQ(domain_->SharedInfoGpa(), 0x40000u);
  EXPECT_EQ(Get<uint32_t>(0x40000 + offsetof(shared_info, wc_sec)), 1'700'000'000u);
  // An event on an IPI port of vCPU1 lands in the default slot vcpu_info[1].
  evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
  ASSERT_TRUE(engine_->BindIpi(ipi));
  ASSERT_TRUE(engine_->Send(evtchn_send{.port = ipi.port}));
  EXPECT_EQ(Get<uint8_t>(0x40000 + sizeof(vcpu_info) * 1), 1);

  // Move: contents (pending bit, vcpu_info) come along.
  ASSERT_EQ(MapSharedInfo(0x50), 0);
  EXPECT_EQ(Get<uint64_t>(0x50000 + offsetof(shared_info, evtchn_pending)) >> ipi.port & 1, 1u);
  EXPECT_EQ(Get<uint8_t>(0x50000 + sizeof(vcpu_info) * 1), 1);
  // Later events go to the new page.
  std::memset(ram_.get() + 0x50000, 0, 0x800);
  std::memset(ram_.get() + 0x50800, 0, 8);
  ASSERT_TRUE(engine_->Send(evtchn_send{.port = ipi.port}));
  EXPECT_EQ(Get<uint8_t>(0x50000 + sizeof(vcpu_info) * 1), 1);
}

TEST_F(HypercallTest, RegisterVcpuInfo) {
  ASSERT_EQ(MapSharedInfo(0x40), 0);
  vcpu_register_vcpu_info info{0x60, 4096 - 32, 0};
  Put(kArg, info);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), -XEN_EINVAL);  // offset
  info = {0x60, 0x40, 1};
  Put(kArg, info);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), -XEN_EINVAL);  // rsvd
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, kVcpus, kArg), -XEN_ENOENT);
  info = {0x60, 0x40, 0};
  Put(kArg, info);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), 0);
  // Xen marks everything pending after a move so nothing is lost.
  EXPECT_EQ(Get<uint8_t>(0x60040), 1);
  EXPECT_EQ(Get<uint64_t>(0x60040 + 8), ~uint64_t{0});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), -XEN_EINVAL);  // twice
  // pvclock filled in.
  EXPECT_EQ(Get<vcpu_time_info>(0x60040 + offsetof(vcpu_info, time)).tsc_to_system_mul, 1u << 31);
}

TEST_F(HypercallTest, VcpuLifecycle) {
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 0), 1);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1), 0);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, kVcpus), -XEN_ENOENT);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_up, 1), -XEN_EINVAL);
  vcpu_hvm_context ctx{};
  ctx.mode = 7;
  Put(kArg, ctx);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1, kArg), -XEN_EINVAL);
  ctx.mode = VCPU_HVM_MODE_64B;
  ctx.cpu_regs.x86_64.rip = 0x1234;
  Put(kArg, ctx);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1, kArg), 0);
  EXPECT_EQ(platform_.contexts[1].cpu_regs.x86_64.rip, 0x1234u);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_up, 1), 0);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1), 1);
}

TEST_F(HypercallTest, Timers) {
  vcpu_set_singleshot_timer_t t{platform_.now_ns - 1, VCPU_SSHOTTMR_future};
  Put(kArg, t);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, kArg), -XEN_ETIME);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 1, kArg),
            -XEN_EINVAL);  // not own
  t = {platform_.now_ns + 500, 0};
  Put(kArg, t);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, kArg), 0);
  EXPECT_EQ(platform_.timers[0].first, platform_.now_ns + 500);
  EXPECT_EQ(Call(__HYPERVISOR_set_timer_op, 0), 0);
  EXPECT_EQ(platform_.timers[0].first, 0u);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_stop_periodic_timer, 0), 0);
}

TEST_F(HypercallTest, PollArguments) {
  ASSERT_EQ(MapSharedInfo(0x40), 0);
  sched_poll_t poll{};
  uint64_t ports_gva = kArg + 0x100;
  std::memcpy(&poll.ports, &ports_gva, 8);
  poll.nr_ports = 129;
  Put(kArg, poll);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_poll, kArg), -XEN_EINVAL);
  poll.nr_ports = 1;
  Put<uint32_t>(ports_gva, 5000);  // beyond 4096 ports
  Put(kArg, poll);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_poll, kArg), -XEN_EINVAL);
  // A pending (even masked) port returns at once without sleeping.
  evtchn_bind_ipi ipi{.vcpu = 0, .port = 0};
  ASSERT_TRUE(engine_->BindIpi(ipi));
  ASSERT_TRUE(engine_->Send(evtchn_send{.port = ipi.port}));
  Put<uint32_t>(ports_gva, ipi.port);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_poll, kArg), 0);
  EXPECT_EQ(platform_.sleeps, 0);
  // Not pending: sleeps until the absolute timeout.
  evtchn_bind_ipi quiet{.vcpu = 0, .port = 0};
  ASSERT_TRUE(engine_->BindIpi(quiet));
  Put<uint32_t>(ports_gva, quiet.port);
  poll.timeout = platform_.now_ns + 1000;
  Put(kArg, poll);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_poll, kArg), 0);
  EXPECT_EQ(platform_.sleeps, 1);
  std::memcpy(&poll.ports, &(const uint64_t&)kRamSize, 8);
  Put(kArg, poll);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_poll, kArg), -XEN_EFAULT);
}

TEST_F(HypercallTest, ShutdownReasons) {
  sched_shutdown_t s{SHUTDOWN_crash};
  Put(kArg, s);
  EXPECT_EQ(Call(kSchedOp, SCHEDOP_shutdown, kArg), 0);
  EXPECT_EQ(platform_.shutdown_reason, static_cast<uint32_t>(SHUTDOWN_crash));
}

TEST_F(HypercallTest, EventChannelOpsCopyOutOnSuccessOnly) {
  evtchn_alloc_unbound_t op{DOMID_SELF, DOMID_SELF, 0};
  Put(kArg, op);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_alloc_unbound, kArg), 0);
  EXPECT_EQ(Get<evtchn_alloc_unbound_t>(kArg).port, 1u);
  evtchn_bind_virq_t v{VIRQ_TIMER, 0, 0};
  Put(kArg, v);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_bind_virq, kArg), 0);
  const uint32_t port = Get<evtchn_bind_virq_t>(kArg).port;
  EXPECT_EQ(port, 2u);
  Put(kArg, evtchn_bind_virq_t{VIRQ_TIMER, 0, 77});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_bind_virq, kArg), -XEN_EEXIST);
  EXPECT_EQ(Get<evtchn_bind_virq_t>(kArg).port, 77u);  // untouched on failure
  Put(kArg, evtchn_close_t{999});
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_close, kArg), -XEN_EINVAL);
  EXPECT_EQ(Call(kEventChannelOp, EVTCHNOP_send, kRamSize + 64), -XEN_EFAULT);
  // The legacy event_channel_op_compat form: struct evtchn_op { cmd; union u; }.
  evtchn_op legacy{};
  legacy.cmd = EVTCHNOP_bind_ipi;
  legacy.u.bind_ipi.vcpu = 1;
  Put(kArg, legacy);
  EXPECT_EQ(Call(__HYPERVISOR_event_channel_op_compat, kArg), 0);
  EXPECT_EQ(Get<evtchn_op>(kArg).u.bind_ipi.port, 3u);
}

TEST_F(HypercallTest, GrantTable) {
  gnttab_query_size_t q{};
  q.dom = DOMID_SELF;
  Put(kArg, q);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, kArg, 2), -XEN_EINVAL);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, kArg, 1), 0);
  q = Get<gnttab_query_size_t>(kArg);
  EXPECT_EQ(q.status, GNTST_okay);
  EXPECT_EQ(q.nr_frames, 1u);
  EXPECT_EQ(q.max_nr_frames, Domain::kMaxGrantFrames);
  Put<uint32_t>(kArg, 1);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, kArg, 1), 0);
  Put<uint32_t>(kArg, 2);
  // Refused as by a Xen whose domain has max grant version 1.
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, kArg, 1), -XEN_ENOSYS);
  EXPECT_EQ(Get<uint32_t>(kArg), 1u);
  Put<uint32_t>(kArg, 3);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_set_version, kArg, 1), -XEN_EINVAL);

  xen_add_to_physmap_t x{};
  x.domid = DOMID_SELF;
  x.space = XENMAPSPACE_grant_table;
  x.idx = 2;
  x.gpfn = 0x70;
  Put(kArg, x);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), 0);
  x.idx = Domain::kMaxGrantFrames;
  Put(kArg, x);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), -XEN_EINVAL);
  q.dom = DOMID_SELF;
  Put(kArg, q);
  EXPECT_EQ(Call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, kArg, 1), 0);
  EXPECT_EQ(Get<gnttab_query_size_t>(kArg).nr_frames, 3u);
}

// A hostile guest: random hypercall numbers, sub-ops and arguments (pointers into and out of
// RAM, page-straddling, huge counts). Nothing may crash or hang, and every answer is 0, a
// positive value from an op that returns one, or -errno.
// Native and compat (32-bit caller) decoding alike.
class RandomHypercallTest : public HypercallTest, public ::testing::WithParamInterface<bool> {};

TEST_P(RandomHypercallTest, NeverCrash) {
  ASSERT_EQ(MapSharedInfo(0x40), 0);
  compat_ = GetParam();
  if (compat_) domain_->LatchShinfoLayout(true);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  auto next = [&seed] {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
  };
  const uint64_t nrs[] = {__HYPERVISOR_set_timer_op,
                          __HYPERVISOR_event_channel_op_compat,
                          __HYPERVISOR_xen_version,
                          __HYPERVISOR_console_io,
                          __HYPERVISOR_grant_table_op,
                          __HYPERVISOR_memory_op,
                          __HYPERVISOR_vcpu_op,
                          kSchedOp,
                          __HYPERVISOR_sched_op_compat,
                          kEventChannelOp,
                          __HYPERVISOR_hvm_op,
                          __HYPERVISOR_vm_assist,
                          0,
                          127,
                          1000};
  for (int i = 0; i < 20000; ++i) {
    // Fill the scratch area with noise so copied-in structs are garbage too.
    for (int w = 0; w < 64; ++w) Put<uint64_t>(kArg + 8 * w, next());
    auto pointerish = [&]() -> uint64_t {
      switch (next() % 4) {
        case 0:
          return kArg + next() % 256;
        case 1:
          return kRamSize - 1 - next() % 64;  // straddles the end of RAM
        case 2:
          return next();
        default:
          return next() % 16;
      }
    };
    const uint64_t nr = nrs[next() % std::size(nrs)];
    if (nr == kSchedOp || nr == __HYPERVISOR_sched_op_compat) {
      // Shutdown and block end or stop the run in this fake; keep them rare.
      if (next() % 16 != 0) continue;
    }
    platform_.shutdown_reason = UINT32_MAX;
    platform_.sleeps = 0;
    const uint64_t cmd = next() % 40;
    const long r = Call(nr, cmd, pointerish(), next() % 2 ? pointerish() : next() % 300,
                        pointerish(), static_cast<uint32_t>(next() % kVcpus));
    EXPECT_GE(r, -200L) << "nr " << nr << " cmd " << cmd;
  }
}
INSTANTIATE_TEST_SUITE_P(Layouts, RandomHypercallTest, ::testing::Bool());

TEST(HypercallPage, StubsTrapAtTheSlotStart) {
  std::array<uint8_t, 4096> page;
  FillHypercallPage(page);
  for (uint32_t nr : {0u, 17u, 29u, 127u}) {
    const uint8_t* s = page.data() + nr * 32;
    EXPECT_EQ(s[0], 0xe7);  // out %eax, $port first: the exit's rip names the slot
    EXPECT_EQ(s[1], XENKVM_HYPERCALL_PORT);
    EXPECT_EQ(s[2], 0xc3);
    EXPECT_EQ(s[3], 0xcc);
    EXPECT_EQ(s[31], 0xcc);
  }
}

TEST(HypercallPageSet, SlotsOfTheLastFourPages) {
  HypercallPageSet pages;
  EXPECT_EQ(pages.Slot(0x5000), -1);
  pages.Add(0x5000);
  pages.Add(0x5000);  // again: still one entry
  EXPECT_EQ(pages.Slot(0x5000), 0);
  EXPECT_EQ(pages.Slot(0x5000 + 127 * 32), 127);
  EXPECT_EQ(pages.Slot(0x5000 + 2), -1);   // not a slot start
  EXPECT_EQ(pages.Slot(0x5000 + 33), -1);  // not a slot start
  EXPECT_EQ(pages.Slot(0x6000), -1);       // not a hypercall page
  for (uint64_t gpa : {0x6000, 0x7000, 0x8000}) pages.Add(gpa);
  EXPECT_EQ(pages.Slot(0x5000), 0);
  pages.Add(0x9000);  // a fifth: the oldest goes
  EXPECT_EQ(pages.Slot(0x5000), -1);
  EXPECT_EQ(pages.Slot(0x9000 + 64), 2);
}

TEST(HypercallPageSet, SnapshotRoundTripAndHostileInput) {
  HypercallPageSet pages;
  pages.Add(0x5000);
  pages.Add(0x7000);
  snapshot::Encoder e;
  pages.Save(e);
  HypercallPageSet restored;
  snapshot::Decoder d(e.bytes());
  ASSERT_TRUE(restored.Restore(d));
  EXPECT_EQ(restored.Slot(0x7000 + 32), 1);
  EXPECT_EQ(restored.Slot(0x5000), 0);

  snapshot::Encoder bad;  // a page address that Add never writes
  bad.U32(4);
  for (uint64_t p : {0x5001ull, 0x6003ull, 0ull, 0ull}) bad.U64(p);
  bad.U32(2);
  HypercallPageSet refused;
  snapshot::Decoder bad_d(bad.bytes());
  EXPECT_FALSE(refused.Restore(bad_d));
  EXPECT_EQ(refused.Slot(0x6000), -1);

  snapshot::Encoder short_list;  // a different page count
  short_list.U32(3);
  snapshot::Decoder short_d(short_list.bytes());
  EXPECT_FALSE(refused.Restore(short_d));
}

TEST(XenCpuid, Leaves) {
  auto sig = XenCpuid(XENKVM_CPUID_BASE, 0, 0, 1);
  ASSERT_TRUE(sig);
  char name[13] = {};
  std::memcpy(name, &sig->ebx, 4);
  std::memcpy(name + 4, &sig->ecx, 4);
  std::memcpy(name + 8, &sig->edx, 4);
  EXPECT_STREQ(name, "XenVMMXenVMM");
  EXPECT_EQ(XenCpuid(XENKVM_CPUID_BASE + 2, 0, 0, 1)->ebx, XENKVM_HYPERCALL_PAGE_MSR);
  auto hvm = XenCpuid(XENKVM_CPUID_BASE + 4, 0, 5, 1);
  EXPECT_TRUE(hvm->eax & XEN_HVM_CPUID_VCPU_ID_PRESENT);
  EXPECT_TRUE(hvm->eax & XEN_HVM_CPUID_UPCALL_VECTOR);
  EXPECT_EQ(hvm->ebx, 5u);
  EXPECT_FALSE(XenCpuid(XENKVM_CPUID_BASE + 5, 0, 0, 1));
}

}  // namespace
}  // namespace xenkvm::xen
