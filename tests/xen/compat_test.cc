// 32-bit (compat) guests through the hypercall layer: every struct whose layout differs is
// decoded in the i386 layout, the shared_info layout is latched as Xen latches it, Xen pages go
// to any gfn (special pages outside RAM), rings, runstate and the calls GRUB and Mini-OS make.
#include "abi/compat.h"

#include <gtest/gtest.h>

#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kAboveRam = kRamSize >> 12;  // first gfn above RAM, where GRUB maps pages

class CompatTest : public HypercallTest {
 protected:
  CompatTest() { compat_ = true; }

  long CompatMapSpace(uint32_t space, uint32_t idx, uint32_t gfn) {
    abi::CompatAddToPhysmap x{DOMID_SELF, 0, space, idx, gfn};
    Put(kArg, x);
    return Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg);
  }
  long SetCallbackIrq(uint64_t value) {
    xen_hvm_param_t p{};
    p.domid = DOMID_SELF;
    p.index = HVM_PARAM_CALLBACK_IRQ;
    p.value = value;
    Put(kArg, p);
    return Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg);
  }
  // Read guest-physical memory wherever it is (RAM or a special page).
  template <class T>
  T Phys(uint64_t gpa) {
    return *memory_.ReadObj<T>(gpa);
  }
};

TEST_F(CompatTest, AddToPhysmapInCompatLayoutMapsAboveRam) {
  // GRUB's sequence: grant table frame 0 then shared_info at the first gfns above RAM.
  EXPECT_EQ(CompatMapSpace(XENMAPSPACE_grant_table, 0, kAboveRam), 0);
  EXPECT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam + 1), 0);
  EXPECT_EQ(domain_->SharedInfoGpa(), (kAboveRam + 1) << 12);
  EXPECT_EQ(platform_.special.size(), 2u);
  // The native layout read by mistake would see idx = gfn and fail: check a wrong idx fails.
  EXPECT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 1, kAboveRam + 2), -XEN_EINVAL);
  // Another Xen page at the same gfn is refused; RAM-backed host memory elsewhere too.
  EXPECT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam), -XEN_EBUSY);
}

TEST_F(CompatTest, LatchFollowsCallbackIrqAndDrivesEngineLayout) {
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam), 0);
  const uint64_t si = kAboveRam << 12;
  EXPECT_FALSE(domain_->shinfo_compat());
  EXPECT_EQ(engine_->MaxPorts(), 4096u);
  ASSERT_EQ(SetCallbackIrq((uint64_t{HVM_PARAM_CALLBACK_TYPE_VECTOR} << 56) | 0xf3), 0);
  EXPECT_TRUE(domain_->shinfo_compat());
  EXPECT_EQ(engine_->abi(), evtchn::Abi::kCompat);
  EXPECT_EQ(engine_->MaxPorts(), 1024u);
  // The wall clock is rewritten in the compat layout, with an even version.
  EXPECT_EQ(Phys<uint32_t>(si + abi::LayoutCompat::kWcSec), 1'700'000'000u);
  EXPECT_EQ(Phys<uint32_t>(si + abi::LayoutCompat::kWcVersion) % 2, 0u);
  EXPECT_GT(Phys<uint32_t>(si + abi::LayoutCompat::kWcVersion), 0u);

  // An IPI sets its pending bit in 32-bit words: port p is bit p%32 of word p/32 at 0x800.
  evtchn_bind_ipi_t ipi{};
  ipi.vcpu = 0;
  Put(kArg, ipi);
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_ipi, kArg), 0);
  const evtchn_port_t port = Get<evtchn_bind_ipi_t>(kArg).port;
  Put(kArg, evtchn_send_t{port});
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_send, kArg), 0);
  EXPECT_EQ(
      Phys<uint32_t>(si + abi::LayoutCompat::kEvtchnPending + 4 * (port / 32)) >> (port % 32) & 1,
      1u);
  // The selector is a 32-bit word at offset 4 of vcpu_info[0].
  EXPECT_EQ(Phys<uint32_t>(si + abi::LayoutCompat::kPendingSel) >> (port / 32) & 1, 1u);

  // A 64-bit caller latches back (Xen samples the mode at each of these points).
  compat_ = false;
  ASSERT_EQ(SetCallbackIrq((uint64_t{HVM_PARAM_CALLBACK_TYPE_VECTOR} << 56) | 0xf3), 0);
  EXPECT_EQ(engine_->MaxPorts(), 4096u);
  domain_->LatchShinfoLayout(true);  // what the VMM does at the hypercall-page MSR
  EXPECT_EQ(engine_->MaxPorts(), 1024u);
}

TEST_F(CompatTest, CompatLayoutHits1024PortLimit) {
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam), 0);
  domain_->LatchShinfoLayout(true);
  int bound = 0;
  long rc = 0;
  for (int i = 0; i < 2000 && rc == 0; ++i) {
    evtchn_alloc_unbound_t op{};
    op.dom = DOMID_SELF;
    op.remote_dom = 0;
    Put(kArg, op);
    rc = Call(__HYPERVISOR_event_channel_op, EVTCHNOP_alloc_unbound, kArg);
    if (rc == 0) {
      ++bound;
      EXPECT_LT(Get<evtchn_alloc_unbound_t>(kArg).port, 1024u);
    }
  }
  EXPECT_EQ(rc, -XEN_ENOSPC);
  EXPECT_EQ(bound, 1023);  // ports 1..1023; port 0 is reserved
}

TEST_F(CompatTest, SharedInfoMovesBetweenSpecialPagesAndRam) {
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam + 5), 0);
  domain_->LatchShinfoLayout(true);
  evtchn_bind_ipi_t ipi{};
  Put(kArg, ipi);
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_ipi, kArg), 0);
  const evtchn_port_t port = Get<evtchn_bind_ipi_t>(kArg).port;
  ASSERT_TRUE(engine_->Send(evtchn_send{.port = port}));
  // Move to another gfn above RAM: the old special page is removed, contents come along.
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam + 9), 0);
  EXPECT_EQ(platform_.special.count(kAboveRam + 5), 0u);
  EXPECT_EQ(platform_.special.count(kAboveRam + 9), 1u);
  const uint64_t si = (kAboveRam + 9) << 12;
  EXPECT_EQ(Phys<uint32_t>(si + abi::LayoutCompat::kEvtchnPending) >> port & 1, 1u);
  // Into RAM: the special page goes, the RAM page shows shared_info.
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, 0x60), 0);
  EXPECT_TRUE(platform_.special.empty());
  EXPECT_EQ(Get<uint32_t>(0x60000 + abi::LayoutCompat::kEvtchnPending) >> port & 1, 1u);
}

TEST_F(CompatTest, MemoryMapAndSetMemoryMap) {
  // compat xen_memory_map: {nr_entries; 4-byte handle}; a short buffer gets a prefix.
  Put(kArg, abi::CompatMemoryMap{1, 0x20000});
  ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_memory_map, kArg), 0);
  EXPECT_EQ(Get<abi::CompatMemoryMap>(kArg).nr_entries, 1u);
  EXPECT_EQ(Get<MemoryMapEntry>(0x20000).size, kRamSize);
  // The guest sets its own map (GRUB adds its pages above RAM); memory_map reports it.
  MemoryMapEntry mine[3] = {{0, 0x1000, 1}, {0x1000, 0x2000, 2}, {0x8000000, 0x2000, 2}};
  Put(0x21000, mine);
  Put(kArg, abi::CompatForeignMemoryMap{DOMID_SELF, {3, 0x21000}});
  ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_set_memory_map, kArg), 0);
  Put(kArg, abi::CompatMemoryMap{8, 0x22000});
  ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_memory_map, kArg), 0);
  EXPECT_EQ(Get<abi::CompatMemoryMap>(kArg).nr_entries, 3u);
  EXPECT_EQ(Get<MemoryMapEntry>(0x22000 + 2 * sizeof(MemoryMapEntry)).addr, 0x8000000u);
  // More than E820MAX entries, another domain, an empty map.
  Put(kArg, abi::CompatForeignMemoryMap{DOMID_SELF, {1025, 0x21000}});
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_set_memory_map, kArg), -XEN_EINVAL);
  Put(kArg, abi::CompatForeignMemoryMap{7, {1, 0x21000}});
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_set_memory_map, kArg), -XEN_ESRCH);
  Put(kArg, abi::CompatForeignMemoryMap{DOMID_SELF, {0, 0x21000}});
  ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_set_memory_map, kArg), 0);
  Put(kArg, abi::CompatMemoryMap{8, 0x22000});
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_memory_map, kArg), -XEN_ENOSYS);
}

TEST_F(CompatTest, PollDecodesCompatHandleAndRefusesUnusablePorts) {
  ASSERT_EQ(CompatMapSpace(XENMAPSPACE_shared_info, 0, kAboveRam), 0);
  domain_->LatchShinfoLayout(true);
  evtchn_bind_ipi_t ipi{};
  Put(kArg, ipi);
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_ipi, kArg), 0);
  const evtchn_port_t port = Get<evtchn_bind_ipi_t>(kArg).port;
  auto poll = [&](evtchn_port_t p) {
    Put<uint32_t>(0x20000, p);
    Put(kArg, abi::CompatSchedPoll{0x20000, 1, platform_.now_ns + 1000});
    return Call(__HYPERVISOR_sched_op, SCHEDOP_poll, kArg);
  };
  EXPECT_EQ(poll(port), 0);                // times out (the fake advances time to the deadline)
  EXPECT_EQ(poll(0), -XEN_EINVAL);         // reserved port 0
  EXPECT_EQ(poll(port + 1), -XEN_EINVAL);  // free
  EXPECT_EQ(poll(1024), -XEN_EINVAL);      // beyond the compat table
  Put(kArg, abi::CompatSchedPoll{0x20000, 129, 0});
  EXPECT_EQ(Call(__HYPERVISOR_sched_op, SCHEDOP_poll, kArg), -XEN_EINVAL);
}

TEST_F(CompatTest, SingleshotTimerIs12Bytes) {
  // At the very end of RAM: the compat struct fits, the native 16 bytes would not.
  const uint64_t at = kRamSize - sizeof(abi::CompatVcpuSetSingleshotTimer);
  Put(at, abi::CompatVcpuSetSingleshotTimer{5'000'000, 0});
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, at), 0);
  EXPECT_EQ(platform_.timers[0].first, 5'000'000u);
  compat_ = false;
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_set_singleshot_timer, 0, at), -XEN_EFAULT);
}

TEST_F(CompatTest, PlatformParametersIsFourBytesAndZero) {
  Put<uint64_t>(kArg, ~uint64_t{0});
  ASSERT_EQ(Call(__HYPERVISOR_xen_version, XENVER_platform_parameters, kArg), 0);
  EXPECT_EQ(Get<uint64_t>(kArg), 0xffffffff00000000ull);  // only 4 bytes written, as 0
}

TEST_F(CompatTest, RunstateAreaProtocolAndInfo) {
  domain_->LatchShinfoLayout(true);
  // vm_assist: only runstate_update_flag is valid for an HVM domain.
  EXPECT_EQ(Call(__HYPERVISOR_vm_assist, VMASST_CMD_enable, VMASST_TYPE_writable_pagetables),
            -XEN_EINVAL);
  EXPECT_EQ(Call(__HYPERVISOR_vm_assist, 7, VMASST_TYPE_runstate_update_flag), -XEN_ENOSYS);
  ASSERT_EQ(Call(__HYPERVISOR_vm_assist, VMASST_CMD_enable, VMASST_TYPE_runstate_update_flag), 0);
  // Register vCPU 0's area (compat: 4-byte handle in an 8-byte union).
  Put(kArg, abi::CompatVcpuRegisterArea{0x30000, 0xdeadbeef});
  ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_runstate_memory_area, 0, kArg), 0);
  auto area = Get<abi::CompatVcpuRunstateInfo>(0x30000);
  EXPECT_EQ(area.state, RUNSTATE_running);
  const uint64_t t0 = platform_.now_ns;
  platform_.now_ns += 500;
  domain_->NoteRunstate(0, RUNSTATE_blocked);
  area = Get<abi::CompatVcpuRunstateInfo>(0x30000);
  EXPECT_EQ(area.state, RUNSTATE_blocked);
  EXPECT_EQ(+area.state_entry_time, t0 + 500);  // XEN_RUNSTATE_UPDATE cleared at the end
  EXPECT_EQ(+area.time[RUNSTATE_running], 500u);
  platform_.now_ns += 300;
  domain_->NoteRunstate(0, RUNSTATE_running);
  // get_runstate_info includes the time in the current state so far (44-byte compat struct).
  platform_.now_ns += 200;
  Put<uint32_t>(0x31000 + sizeof(abi::CompatVcpuRunstateInfo), 0x5a5a5a5a);
  ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_get_runstate_info, 0, 0x31000), 0);
  auto info = Get<abi::CompatVcpuRunstateInfo>(0x31000);
  EXPECT_EQ(+info.time[RUNSTATE_running], 700u);
  EXPECT_EQ(+info.time[RUNSTATE_blocked], 300u);
  EXPECT_EQ(Get<uint32_t>(0x31000 + sizeof(abi::CompatVcpuRunstateInfo)), 0x5a5a5a5au);
  // vCPU 1 was never up: offline all along.
  ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_get_runstate_info, 1, 0x31000), 0);
  EXPECT_EQ(Get<abi::CompatVcpuRunstateInfo>(0x31000).state, RUNSTATE_offline);
}

TEST_F(HypercallTest, RunstateNativeLayoutAndBlockReportsBlocked) {
  Put(kArg, uint64_t{0x30000});
  ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_runstate_memory_area, 0, kArg), 0);
  ASSERT_EQ(MapSharedInfo(0x40), 0);
  platform_.max_sleeps = 1;  // nothing pending: SCHEDOP_block sleeps once, then the "VM" stops
  ASSERT_EQ(Call(__HYPERVISOR_sched_op, SCHEDOP_block, 0), 0);
  auto area = Get<vcpu_runstate_info>(0x30000);
  EXPECT_EQ(area.state, RUNSTATE_running);
  EXPECT_GT(area.time[RUNSTATE_blocked], 0u);
  EXPECT_EQ(area.state_entry_time & XEN_RUNSTATE_UPDATE, 0u);
}

TEST_F(HypercallTest, TimeMemoryArea) {
  Put(kArg, uint64_t{0x30000});
  ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_time_memory_area, 0, kArg), 0);
  auto t = Get<vcpu_time_info>(0x30000);
  EXPECT_EQ(t.system_time, platform_.now_ns);
  EXPECT_EQ(t.version % 2, 0u);
  EXPECT_GT(t.version, 0u);
  EXPECT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_time_memory_area, 5, kArg),
            -XEN_ENOENT);
}

struct CountingBackend : evtchn::Backend {
  int sends = 0;
  void OnGuestSend(evtchn::Port) override { ++sends; }
};

TEST_F(HypercallTest, RingsAreSpecialPagesWithPortsToDomainZero) {
  CountingBackend console, store;
  auto console_port = domain_->SetupRing(SpecialRing::kConsole, Domain::kConsoleRingGfn, &console);
  ASSERT_TRUE(console_port);
  auto store_port = domain_->SetupRing(SpecialRing::kStore, Domain::kStoreRingGfn, &store);
  ASSERT_TRUE(store_port);
  EXPECT_FALSE(domain_->SetupRing(SpecialRing::kStore, 0x90000, &store));  // once only
  EXPECT_EQ(platform_.special.count(Domain::kConsoleRingGfn), 1u);
  EXPECT_TRUE(memory_.WriteObj<uint32_t>(Domain::kStoreRingGfn << 12, 7));
  // The guest reads the params, as GRUB and Mini-OS do.
  for (auto [index, want] : {std::pair{HVM_PARAM_CONSOLE_PFN, Domain::kConsoleRingGfn},
                             std::pair{HVM_PARAM_CONSOLE_EVTCHN, uint64_t{*console_port}},
                             std::pair{HVM_PARAM_STORE_PFN, Domain::kStoreRingGfn},
                             std::pair{HVM_PARAM_STORE_EVTCHN, uint64_t{*store_port}}}) {
    xen_hvm_param_t p{};
    p.domid = DOMID_SELF;
    p.index = index;
    Put(kArg, p);
    ASSERT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_get_param, kArg), 0);
    EXPECT_EQ(Get<xen_hvm_param_t>(kArg).value, want);
  }
  evtchn_status_t status{};
  status.dom = DOMID_SELF;
  status.port = *store_port;
  Put(kArg, status);
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_status, kArg), 0);
  status = Get<evtchn_status_t>(kArg);
  EXPECT_EQ(status.status, EVTCHNSTAT_interdomain);
  EXPECT_EQ(status.u.interdomain.dom, 0);
  Put(kArg, evtchn_send_t{*store_port});
  ASSERT_EQ(Call(__HYPERVISOR_event_channel_op, EVTCHNOP_send, kArg), 0);
  EXPECT_EQ(store.sends, 1);
  // A guest can't put shared_info over a ring.
  EXPECT_EQ(MapSharedInfo(Domain::kStoreRingGfn), -XEN_EBUSY);
}

TEST_F(HypercallTest, SpecialPageSlotsRunOut) {
  platform_.max_special = 1;
  ASSERT_EQ(MapSharedInfo(kAboveRam), 0);
  xen_add_to_physmap_t x{};
  x.domid = DOMID_SELF;
  x.space = XENMAPSPACE_grant_table;
  x.idx = 0;
  x.gpfn = kAboveRam + 1;
  Put(kArg, x);
  EXPECT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), -XEN_ENOSPC);
  EXPECT_EQ(domain_->grants().FrameGfn(0), GrantTable::kNoGfn);  // nothing half done
}

}  // namespace
}  // namespace xenkvm::xen::testing
