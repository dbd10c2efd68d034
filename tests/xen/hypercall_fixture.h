// The fixture the hypercall tests share: a Domain on in-process guest memory (identity
// GVA = GPA through the fake Platform), an engine without its worker, and argument helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>

#include "evtchn/engine.h"
#include "mem/guest_memory.h"
#include "tests/xen/fake_platform.h"
#include "xen/domain.h"

namespace xenkvm::xen::testing {

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kArg = 0x10000;  // scratch GPA (= GVA, identity) for argument structs
constexpr uint32_t kVcpus = 2;

struct NullSink : evtchn::VcpuSink {
  int injected = 0;
  void InjectUpcall() override { ++injected; }
  void RequestSync() override {}
  void WakePoller() override {}
};

class HypercallTest : public ::testing::Test {
 protected:
  HypercallTest()
      : ram_(static_cast<uint8_t*>(std::aligned_alloc(4096, kRamSize))),
        platform_(kVcpus, kRamSize) {
    std::memset(ram_.get(), 0, kRamSize);
    EXPECT_TRUE(memory_.AddSlot(0, 0, kRamSize, ram_.get()));
    engine_ = std::make_unique<evtchn::Engine>(
        memory_, evtchn::Engine::Options{.domid = 1, .start_worker = false});
    engine_->SetAbi(evtchn::Abi::k64);
    for (uint32_t i = 0; i < kVcpus; ++i) EXPECT_TRUE(engine_->AddVcpu(i, &sinks_[i]));
    platform_.ram = ram_.get();
    platform_.memory = &memory_;
    domain_ = std::make_unique<Domain>(platform_, memory_, *engine_, Domain::Options{.domid = 1});
  }

  long Call(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
            uint32_t vcpu = 0) {
    HypercallCall c;
    c.compat = compat_;
    c.vcpu = vcpu;
    c.nr = nr;
    c.args = {a0, a1, a2, a3, 0};
    return domain_->Hypercall(c);
  }
  template <class T>
  void Put(uint64_t gpa, const T& v) {
    std::memcpy(ram_.get() + gpa, &v, sizeof(T));
  }
  template <class T>
  T Get(uint64_t gpa) {
    T v;
    std::memcpy(&v, ram_.get() + gpa, sizeof(T));
    return v;
  }
  long MapSharedInfo(uint64_t gfn) {
    xen_add_to_physmap_t x{};
    x.domid = DOMID_SELF;
    x.space = XENMAPSPACE_shared_info;
    x.idx = 0;
    x.gpfn = gfn;
    Put(kArg, x);
    return Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg);
  }

  bool compat_ = false;  // calls come from a 32-bit vCPU

  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> ram_;
  mem::GuestMemory memory_;
  testing::FakePlatform platform_;
  NullSink sinks_[kVcpus];
  std::unique_ptr<evtchn::Engine> engine_;
  std::unique_ptr<Domain> domain_;
};

}  // namespace xenkvm::xen::testing
