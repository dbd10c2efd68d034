// Domain::Save / Domain::Restore: a restored domain saves to the same bytes and answers as the
// original (params, shared_info, special pages mapped again, grant frames, balloon holes,
// upcall routing told to the platform again); a hostile snapshot is refused before it changes
// anything.
#include <gtest/gtest.h>

#include "tests/xen/hypercall_fixture.h"

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kList = 0x11000;
constexpr uint64_t kOutsideRamGfn = (kRamSize >> 12) + 0x10;

struct NullBackend : evtchn::Backend {
  void OnGuestSend(evtchn::Port) override {}
};

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

// A second machine, set up as the VMM sets one up before restoring into it.
struct Target {
  Target()
      : ram(static_cast<uint8_t*>(std::aligned_alloc(4096, kRamSize))), platform(kVcpus, kRamSize) {
    std::memset(ram.get(), 0, kRamSize);
    EXPECT_TRUE(memory.AddSlot(0, 0, kRamSize, ram.get()));
    engine = std::make_unique<evtchn::Engine>(
        memory, evtchn::Engine::Options{.domid = 1, .start_worker = false});
    for (uint32_t i = 0; i < kVcpus; ++i) EXPECT_TRUE(engine->AddVcpu(i, &sinks[i]));
    platform.ram = ram.get();
    platform.memory = &memory;
    domain = std::make_unique<Domain>(platform, memory, *engine, Domain::Options{.domid = 1});
    EXPECT_TRUE(domain->SetupRing(SpecialRing::kConsole, Domain::kConsoleRingGfn, &backend));
  }
  std::unique_ptr<uint8_t, FreeDeleter> ram;
  mem::GuestMemory memory;
  FakePlatform platform;
  NullSink sinks[kVcpus];
  NullBackend backend;
  std::unique_ptr<evtchn::Engine> engine;
  std::unique_ptr<Domain> domain;
};

class DomainSnapshotTest : public HypercallTest {
 protected:
  std::vector<std::byte> Save(const Domain& d) {
    snapshot::Encoder out;
    d.Save(out);
    return out.Take();
  }
  Result<> Restore(Domain& d, std::span<const std::byte> bytes) {
    snapshot::Decoder in(bytes);
    return d.Restore(in);
  }
  // The source guest: rings, shared_info and a grant frame outside RAM, a registered
  // vcpu_info, both upcall routes, a ballooned-out page.
  void Populate() {
    ASSERT_TRUE(domain_->SetupRing(SpecialRing::kConsole, Domain::kConsoleRingGfn, &backend_));
    ASSERT_EQ(MapSharedInfo(kOutsideRamGfn), 0);
    xen_add_to_physmap_t x{};
    x.domid = DOMID_SELF;
    x.space = XENMAPSPACE_grant_table;
    x.idx = 1;
    x.gpfn = kOutsideRamGfn + 1;
    Put(kArg, x);
    ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), 0);
    xen_hvm_param_t p{};
    p.domid = DOMID_SELF;
    p.index = HVM_PARAM_CALLBACK_IRQ;
    p.value = uint64_t(HVM_PARAM_CALLBACK_TYPE_VECTOR) << 56 | 0xf0;
    Put(kArg, p);
    ASSERT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_param, kArg), 0);
    xen_hvm_evtchn_upcall_vector_t v{.vcpu = 1, .vector = 0xf3};
    Put(kArg, v);
    ASSERT_EQ(Call(__HYPERVISOR_hvm_op, HVMOP_set_evtchn_upcall_vector, kArg), 0);
    vcpu_register_vcpu_info_t info{.mfn = 0x50, .offset = 0x40, .rsvd = 0};
    Put(kArg, info);
    ASSERT_EQ(Call(__HYPERVISOR_vcpu_op, VCPUOP_register_vcpu_info, 1, kArg), 0);
    Put<uint64_t>(kList, 0x123);
    xen_memory_reservation_t r{};
    set_xen_guest_handle(r.extent_start, reinterpret_cast<xen_pfn_t*>(kList));
    r.nr_extents = 1;
    r.domid = DOMID_SELF;
    Put(kArg, r);
    ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_decrease_reservation, kArg), 1);
  }
  NullBackend backend_;
};

TEST_F(DomainSnapshotTest, RoundTripsExactly) {
  Populate();
  const std::vector<std::byte> saved = Save(*domain_);
  Target t;
  ASSERT_TRUE(Restore(*t.domain, saved));
  EXPECT_EQ(Save(*t.domain), saved);
  EXPECT_EQ(t.domain->SharedInfoGpa(), kOutsideRamGfn << 12);
  EXPECT_EQ(t.domain->Param(HVM_PARAM_CONSOLE_PFN), Domain::kConsoleRingGfn);
  EXPECT_EQ(t.domain->Param(HVM_PARAM_CALLBACK_IRQ), domain_->Param(HVM_PARAM_CALLBACK_IRQ));
  // Special pages are mapped again (their contents are the VMM's to copy).
  EXPECT_EQ(t.platform.special.size(), platform_.special.size());
  for (const auto& [gfn, page] : platform_.special) EXPECT_TRUE(t.platform.special.count(gfn));
  EXPECT_EQ(t.domain->SpecialGfns(), domain_->SpecialGfns());
  EXPECT_EQ(t.domain->grants().nr_frames(), 2u);
  EXPECT_EQ(t.domain->grants().FrameGfn(1), kOutsideRamGfn + 1);
  // The VMM's upcall routing is told again.
  EXPECT_EQ(t.platform.callback_vector, 0xf0);
  EXPECT_EQ(t.platform.upcall_vectors[1], 0xf3);
  EXPECT_EQ(t.domain->HypercallCounts(), domain_->HypercallCounts());
}

TEST_F(DomainSnapshotTest, HostileSnapshotsAreRefusedBeforeAnyChange) {
  Populate();
  const std::vector<std::byte> saved = Save(*domain_);
  Target t;
  const std::vector<std::byte> clean = Save(*t.domain);
  for (size_t len = 0; len < saved.size(); ++len)
    EXPECT_FALSE(Restore(*t.domain, std::span(saved).first(len))) << len;
  EXPECT_EQ(Save(*t.domain), clean);
  // Single-byte changes (the hypercall counts at the end take any value): refused with nothing
  // changed, or accepted (then the next try starts from a fresh machine).
  int refused = 0;
  auto fresh = std::make_unique<Target>();
  for (size_t i = 0; i + 64 * 8 < saved.size(); i += 3) {
    std::vector<std::byte> bad = saved;
    bad[i] ^= std::byte{0x80};
    if (!Restore(*fresh->domain, bad)) {
      ++refused;
      EXPECT_EQ(Save(*fresh->domain), clean) << i;
    } else {
      fresh = std::make_unique<Target>();
    }
  }
  EXPECT_GT(refused, 0);
}

TEST_F(DomainSnapshotTest, AnotherVcpuCountIsRefused) {
  Populate();
  snapshot::Encoder e;
  domain_->Save(e);
  std::vector<std::byte> bytes = e.Take();
  bytes[8] = std::byte{kVcpus + 1};  // the vcpu_info count after the shared_info address
  Target t;
  auto r = Restore(*t.domain, bytes);
  ASSERT_FALSE(r);
}

}  // namespace
}  // namespace xenkvm::xen::testing
