// libFuzzer target: the whole hypercall dispatcher (xen::Domain) with guest-chosen numbers,
// arguments, vCPU ids and guest memory contents, page tables included: the input patches a
// small guest RAM, picks a paging mode, then makes hypercalls that translate their pointers
// through the real page walker (vmm/page_walk) over that RAM. Checked after every call: the
// result is >= 0 or a Xen errno, and nothing crashes, hangs or reads outside RAM (ASan).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "evtchn/engine.h"
#include "fuzz/evtchn_ops_harness.h"
#include "mem/guest_memory.h"
#include "tests/xen/fake_platform.h"
#include "vmm/page_walk.h"
#include "xen/domain.h"

namespace {

using namespace xenkvm;

constexpr uint64_t kRam = 256 * 1024;
constexpr uint32_t kVcpus = 2;

// The fake platform, translating through the guest's own page tables when paging is on.
class WalkingPlatform : public xen::testing::FakePlatform {
 public:
  explicit WalkingPlatform(mem::GuestMemory& guest_memory)
      : FakePlatform(kVcpus, kRam), memory_(guest_memory) {}
  vmm::PagingState paging;
  Result<uint64_t> TranslateGva(uint32_t, uint64_t gva, xen::Access access) override {
    return vmm::WalkPageTables(memory_, paging, gva, access);
  }

 private:
  mem::GuestMemory& memory_;
};

// Arguments: mostly addresses in RAM or small numbers, sometimes anything.
uint64_t Arg(fuzz::ByteReader& in) {
  switch (in.U8() % 6) {
    case 0:
      return in.U8() % 32;
    case 1:
    case 2: {  // a GVA in RAM (statements: the bytes are read in a defined order)
      const uint64_t hi = in.U8();
      const uint64_t mid = in.U8() % 4;
      const uint64_t lo = in.U8();
      return (hi << 10 | mid << 8 | lo) % kRam;
    }
    case 3:
      return in.U32();
    case 4:
      return UINT64_MAX - in.U8();
    default: {
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v = v << 8 | in.U8();
      return v;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::ByteReader in(std::span(data, size));
  // One buffer for every run: fresh pages each run (page faults) cost more than the run.
  alignas(4096) static uint8_t ram[kRam];
  std::memset(ram, 0, kRam);
  {
    mem::GuestMemory memory;
    (void)memory.AddSlot(0, 0, kRam, ram);
    evtchn::Engine engine(memory, evtchn::Engine::Options{.domid = 1, .start_worker = false});
    engine.SetAbi(evtchn::Abi::k64);
    fuzz::NullSink sinks[kVcpus];
    for (uint32_t v = 0; v < kVcpus; ++v) (void)engine.AddVcpu(v, &sinks[v]);
    WalkingPlatform platform(memory);
    platform.ram = ram;
    platform.max_sleeps = 3;
    // Paging: off, long mode, PAE or 2-level; CR3 somewhere in RAM; WP/NXE by choice.
    const uint8_t mode = in.U8();
    const uint64_t cr3 = (uint64_t{in.U8()} << 12) % kRam;
    const uint64_t wp = (mode & 4) ? 1ull << 16 : 0;
    const uint64_t nxe = (mode & 8) ? 1ull << 11 : 0;
    switch (mode % 4) {
      case 0:
        platform.paging = {0x11, 0, 0, 0};
        break;
      case 1:
        platform.paging = {0x80000011 | wp, cr3, 0x20, 0x500 | nxe};
        break;
      case 2:
        platform.paging = {0x80000011 | wp, cr3, 0x20, nxe};
        break;
      default:
        platform.paging = {0x80000011 | wp, cr3, 0x10, 0};
        break;
    }
    xen::Domain domain(
        platform, memory, engine,
        xen::Domain::Options{.domid = 1, .log_per_second = 0, .console_io_max_bytes = 4096});
    while (!in.empty()) {
      const uint8_t op = in.U8();
      if (op < 64) {
        // Patch guest memory (page tables, argument structs): 8 bytes at an 8-aligned GPA.
        const uint64_t hi = in.U8();
        const uint64_t gpa = ((hi << 8 | in.U8()) * 8) % kRam;
        for (int i = 0; i < 8; ++i) ram[gpa + i] = in.U8();
        continue;
      }
      xen::HypercallCall call;
      call.vcpu = in.U8() % kVcpus;
      call.nr = (op & 0x80) ? in.U8() % 48 : in.U32();
      call.compat = (op & 0x3f) == 0x3f;
      for (auto& a : call.args) a = Arg(in);
      const long r = domain.Hypercall(call);
      if (r < 0 && -r > 200) {
        std::fprintf(stderr, "hypercall %llu returned %ld: not a Xen errno\n",
                     static_cast<unsigned long long>(call.nr), r);
        std::abort();
      }
      // Each call starts afresh: a shutdown or an exhausted SCHEDOP_block ends only that call.
      platform.shutdown_reason = UINT32_MAX;
      platform.sleeps = 0;
    }
  }
  return 0;
}
