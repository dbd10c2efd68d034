// physdev_op through the hypercall layer (Xen's hvm_physdev_op / do_physdev_op): the PIRQ
// operations with Xen's answers, copy-back as Xen does it, compat decoding of map_pirq, and a
// device's PIRQ MSI reaching the port the guest bound with EVTCHNOP_bind_pirq.
#include <gtest/gtest.h>

#include "abi/compat.h"
#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kSharedInfoGfn = 0x40;

class PhysdevTest : public HypercallTest {
 protected:
  long Physdev(uint64_t cmd) { return Call(__HYPERVISOR_physdev_op, cmd, kArg); }
  long MapPirq(int type, int index, int pirq, uint16_t domid = DOMID_SELF) {
    physdev_map_pirq_t op{};
    op.domid = domid;
    op.type = type;
    op.index = index;
    op.pirq = pirq;
    Put(kArg, op);
    return Physdev(PHYSDEVOP_map_pirq);
  }
  long SetCallbackVector() {
    xen_hvm_param_t p{};
    p.domid = DOMID_SELF;
    p.index = HVM_PARAM_CALLBACK_IRQ;
    p.value = (uint64_t{HVM_PARAM_CALLBACK_TYPE_VECTOR} << 56) | 0xf3;
    Put(kArg, p);
    return Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg);
  }
  long SetUpcallVector(uint32_t vcpu) {
    xen_hvm_evtchn_upcall_vector_t v{vcpu, 0xf3};
    Put(kArg, v);
    return Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg);
  }
  long StatusQuery(uint32_t pirq, uint32_t* flags = nullptr) {
    Put(kArg, physdev_irq_status_query_t{pirq, 0});
    long rc = Physdev(PHYSDEVOP_irq_status_query);
    if (flags != nullptr) *flags = Get<physdev_irq_status_query_t>(kArg).flags;
    return rc;
  }
  long Eoi(uint32_t pirq) {
    Put(kArg, physdev_eoi_t{pirq});
    return Physdev(PHYSDEVOP_eoi);
  }
  long Unmap(int pirq, uint16_t domid = DOMID_SELF) {
    Put(kArg, physdev_unmap_pirq_t{domid, pirq});
    return Physdev(PHYSDEVOP_unmap_pirq);
  }
  long GetFree(int type, uint32_t* pirq) {
    Put(kArg, physdev_get_free_pirq_t{type, 0});
    long rc = Physdev(PHYSDEVOP_get_free_pirq);
    *pirq = Get<physdev_get_free_pirq_t>(kArg).pirq;
    return rc;
  }
  long BindPirq(uint32_t pirq, evtchn_port_t* port) {
    Put(kArg, evtchn_bind_pirq_t{pirq, 0, 0});
    long rc = Call(__HYPERVISOR_event_channel_op, EVTCHNOP_bind_pirq, kArg);
    *port = Get<evtchn_bind_pirq_t>(kArg).port;
    return rc;
  }
  bool PortPending(evtchn_port_t port) {
    const uint64_t word =
        Get<uint64_t>((kSharedInfoGfn << 12) + abi::Layout64::kEvtchnPending + 8 * (port / 64));
    return (word >> (port % 64)) & 1;
  }
};

TEST_F(PhysdevTest, MapPirqOnlyWithAVectorCallback) {
  // physdev_map_pirq: "only makes sense for vector-based callback".
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), -XEN_EINVAL);
  ASSERT_EQ(SetUpcallVector(1), 0);  // vCPU1's vector does not count: Xen looks at vCPU0
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), -XEN_EINVAL);
  ASSERT_EQ(SetUpcallVector(0), 0);
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), 0);
  EXPECT_EQ(Get<physdev_map_pirq_t>(kArg).pirq, 16);  // the lowest non-ISA PIRQ
}

TEST_F(PhysdevTest, MapPirqGsiAsXen) {
  ASSERT_EQ(SetCallbackVector(), 0);
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), 0);
  EXPECT_EQ(Get<physdev_map_pirq_t>(kArg).pirq, 16);
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 21, 40, /*domid=*/1), 0);  // its own id names itself
  EXPECT_EQ(Get<physdev_map_pirq_t>(kArg).pirq, 40);
  // A second PIRQ for GSI 20, or a second GSI for PIRQ 16: 0 and nothing changes.
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, 30), 0);
  EXPECT_EQ(StatusQuery(30), -XEN_EINVAL);
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 22, 16), 0);
  uint32_t flags = 0;
  ASSERT_EQ(StatusQuery(16, &flags), 0);
  EXPECT_EQ(flags, uint32_t{XENIRQSTAT_needs_eoi});
  EXPECT_EQ(Eoi(16), 0);

  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 48, -1), -XEN_EINVAL);  // beyond the IO-APIC's pins
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, -2, -1), -XEN_EINVAL);
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 23, 1024), -XEN_EINVAL);  // beyond nr_pirqs
  EXPECT_EQ(MapPirq(7, 0, -1), -XEN_EINVAL);                     // unknown type
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 23, -1, /*domid=*/0), -XEN_EPERM);
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 23, -1, /*domid=*/5), -XEN_ESRCH);
}

TEST_F(PhysdevTest, MapPirqMsiIsNotForHvmGuests) {
  ASSERT_EQ(SetCallbackVector(), 0);
  // physdev_hvm_map_pirq knows GSIs only; the struct still goes back (type normalised).
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_MSI, -1, -1), -XEN_EINVAL);
  EXPECT_EQ(MapPirq(MAP_PIRQ_TYPE_MSI_SEG, -1, -1), -XEN_EINVAL);
  EXPECT_EQ(Get<physdev_map_pirq_t>(kArg).type, MAP_PIRQ_TYPE_MSI);
  // Multi-MSI with a table base is refused before anything, and nothing is copied back.
  physdev_map_pirq_t op{};
  op.domid = DOMID_SELF;
  op.type = MAP_PIRQ_TYPE_MULTI_MSI;
  op.pirq = -1;
  op.table_base = 0x1000;
  Put(kArg, op);
  EXPECT_EQ(Physdev(PHYSDEVOP_map_pirq), -XEN_EINVAL);
  EXPECT_EQ(Get<physdev_map_pirq_t>(kArg).table_base, 0x1000u);
}

TEST_F(PhysdevTest, UnmapEoiStatusAndFreePirqErrors) {
  ASSERT_EQ(SetCallbackVector(), 0);
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), 0);
  EXPECT_EQ(Unmap(16, /*domid=*/0), -XEN_EPERM);
  EXPECT_EQ(Unmap(16, /*domid=*/9), -XEN_ESRCH);
  EXPECT_EQ(Unmap(16), 0);
  EXPECT_EQ(StatusQuery(16), -XEN_EINVAL);
  EXPECT_EQ(Unmap(16), 0);    // not mapped: 0 for the guest itself
  EXPECT_EQ(Unmap(5000), 0);  // out of range too
  EXPECT_EQ(StatusQuery(1024), -XEN_EINVAL);
  EXPECT_EQ(Eoi(1024), -XEN_EINVAL);
  EXPECT_EQ(Eoi(500), -XEN_EINVAL);  // never mapped or allocated

  uint32_t pirq = 0;
  ASSERT_EQ(GetFree(MAP_PIRQ_TYPE_MSI, &pirq), 0);
  EXPECT_EQ(pirq, 1023u);
  EXPECT_EQ(StatusQuery(1023), -XEN_EINVAL);  // allocated, not mapped: Xen refuses
  EXPECT_EQ(Eoi(1023), 0);                    // but it knows the PIRQ
  ASSERT_EQ(GetFree(MAP_PIRQ_TYPE_GSI, &pirq), 0);
  EXPECT_EQ(pirq, 16u);                                  // the GSI range again (16 was unmapped)
  EXPECT_EQ(Physdev(PHYSDEVOP_setup_gsi), -XEN_ENOSYS);  // the hardware domain's
  EXPECT_EQ(Physdev(PHYSDEVOP_apic_read), -XEN_ENOSYS);
}

TEST_F(PhysdevTest, DeviceMsiReachesTheBoundPort) {
  ASSERT_EQ(MapSharedInfo(kSharedInfoGfn), 0);
  ASSERT_EQ(SetCallbackVector(), 0);
  // Linux's sequence for an MSI PIRQ: get_free_pirq, program the MSI (vector 0), bind.
  uint32_t pirq = 0;
  ASSERT_EQ(GetFree(MAP_PIRQ_TYPE_MSI, &pirq), 0);
  // Raised before the bind: kept, then delivered by EVTCHNOP_bind_pirq.
  EXPECT_FALSE(domain_->pirqs().RaiseMsi(pirq));
  EXPECT_TRUE(domain_->pirqs().KeptPending(pirq));
  evtchn_port_t port = 0;
  ASSERT_EQ(BindPirq(pirq, &port), 0);
  EXPECT_TRUE(PortPending(port));
  EXPECT_FALSE(domain_->pirqs().KeptPending(pirq));
  uint32_t flags = 0;
  ASSERT_EQ(StatusQuery(pirq, &flags), 0);  // the first MSI mapped it as an emulated MSI
  EXPECT_EQ(BindPirq(pirq, &port), -XEN_EEXIST);
  // An MSI cannot raise a GSI's PIRQ (hvm_inject_msi: -EINVAL), nor PIRQ 0 (-ERANGE).
  ASSERT_EQ(MapPirq(MAP_PIRQ_TYPE_GSI, 20, -1), 0);
  evtchn_port_t gsi_port = 0;
  ASSERT_EQ(BindPirq(16, &gsi_port), 0);
  EXPECT_FALSE(domain_->pirqs().RaiseMsi(16));
  EXPECT_FALSE(PortPending(gsi_port));
  EXPECT_FALSE(domain_->pirqs().RaiseMsi(0));
}

TEST_F(PhysdevTest, CompatMapPirqUsesTheI386Layout) {
  compat_ = true;
  ASSERT_EQ(SetCallbackVector(), 0);
  abi::CompatPhysdevMapPirq op{DOMID_SELF, MAP_PIRQ_TYPE_GSI, 20, -1, 0, 0, 0, 0};
  Put(kArg, op);
  Put(kArg + sizeof(op), uint32_t{0xa5a5a5a5});  // where a native struct would go on
  ASSERT_EQ(Physdev(PHYSDEVOP_map_pirq), 0);
  EXPECT_EQ(Get<abi::CompatPhysdevMapPirq>(kArg).pirq, 16);
  EXPECT_EQ(Get<uint32_t>(kArg + sizeof(op)), 0xa5a5a5a5u);  // 36 bytes written, no more
}

}  // namespace
}  // namespace xenkvm::xen::testing
