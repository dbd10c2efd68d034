// Hostile-guest harness for FIFO event channels: interprets bytes as init_control /
// expand_array / set_priority / bind / send / unmask / close / reset calls with guest-chosen
// arguments, interleaved with the guest scribbling over its own event words and control block
// and consuming queues. Checks: only Xen's errnos come back, FIFO is on exactly when the port
// space is 2^17, the engine's tails stay inside the array it was given, memory past the guest's
// RAM is untouched, and nothing hangs. Shared by the libFuzzer target (fuzz/, clang) and a
// seeded unit test (tests/evtchn/fifo_fuzz_test.cc).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <span>

#include "evtchn/engine.h"
#include "fuzz/evtchn_ops_harness.h"

namespace xenkvm::fuzz {

inline bool RunFifoOps(std::span<const uint8_t> input) {
  constexpr uint64_t kRamPages = 16, kRam = kRamPages * 4096, kCanary = 4096;
  auto* ram = static_cast<uint8_t*>(std::aligned_alloc(4096, kRam + kCanary));
  std::fill(ram, ram + kRam, uint8_t{0});
  std::fill(ram + kRam, ram + kRam + kCanary, uint8_t{0xa5});
  Invariants invariants{XEN_EINVAL, XEN_ENOENT,     XEN_EEXIST, XEN_ENOSPC, XEN_ESRCH,
                        XEN_EPERM,  XEN_EOPNOTSUPP, XEN_ENOSYS, XEN_EACCES};
  {
    mem::GuestMemory memory;
    (void)memory.AddSlot(0, 0, kRam, ram);
    evtchn::Engine engine(memory, evtchn::Engine::Options{.domid = 1, .start_worker = false});
    NullSink sinks[3];
    for (uint32_t v = 0; v < 3; ++v) (void)engine.AddVcpu(v, &sinks[v]);
    (void)engine.SetSharedInfoGpa(0);
    for (uint32_t v = 0; v < 3; ++v) (void)engine.SetVcpuInfoGpa(v, 64 * v);

    auto check = [&](bool condition, const char* what) { invariants.Check(condition, what); };
    auto allowed = [&](const Result<>& r) { invariants.Allowed(r); };
    // A guest frame: mostly inside RAM, sometimes beyond it or absurd.
    auto gfn = [&](ByteReader& in) -> uint64_t {
      const uint8_t kind = in.U8();
      if (kind < 220) return 1 + kind % (kRamPages - 1);
      if (kind < 250) return kRamPages + kind;
      return uint64_t(-1) - kind % 4;
    };
    auto word = [&](uint32_t page, uint32_t index) {
      return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(
          ram + (1 + page % (kRamPages - 1)) * 4096 + index % 1024 * 4));
    };

    ByteReader in(input);
    for (int steps = 0; !in.empty() && steps < 512 && invariants.ok(); ++steps) {
      switch (in.U8() % 12) {
        case 0: {
          evtchn_init_control op{};
          op.control_gfn = gfn(in);
          op.offset = in.U8() % 3 == 0 ? in.U32() : in.U8() * 8;
          op.vcpu = in.U8() % 4;
          allowed(engine.InitControl(op));
          break;
        }
        case 1:
          allowed(engine.ExpandArray({.array_gfn = gfn(in)}));
          break;
        case 2:
          allowed(engine.SetPriority({.port = in.U32(), .priority = in.U8() % 18u}));
          break;
        case 3: {
          evtchn_bind_ipi op{.vcpu = in.U8() % 4u, .port = 0};
          allowed(engine.BindIpi(op));
          break;
        }
        case 4: {
          evtchn_alloc_unbound un{.dom = DOMID_SELF, .remote_dom = DOMID_SELF, .port = 0};
          if (!engine.AllocUnbound(un)) break;
          evtchn_bind_interdomain op{
              .remote_dom = DOMID_SELF, .remote_port = un.port, .local_port = 0};
          allowed(engine.BindInterdomain(op));
          break;
        }
        case 5:
          allowed(engine.Send({.port = in.U32()}));
          break;
        case 6:
          engine.RaisePort(in.U32());
          break;
        case 7:
          allowed(engine.Unmask({.port = in.U32()}));
          break;
        case 8:
          allowed(engine.Close({.port = in.U32()}));
          break;
        case 9:
          allowed(engine.BindVcpu({.port = in.U32(), .vcpu = in.U8() % 4u}));
          break;
        case 10: {
          // The guest writes anything into any word of its RAM (event words, control blocks).
          const uint32_t page = in.U8(), index = in.U32();
          const uint32_t value = uint32_t(in.U8()) << 24 | in.U32();
          word(page, index).store(value);
          break;
        }
        case 11:
          if (in.U8() % 8 == 0) {
            allowed(engine.Reset({.dom = DOMID_SELF}));
            check(!engine.FifoEnabled(), "reset left FIFO on");
          } else {
            engine.RunDeferredWork();
          }
          break;
      }
      check(engine.FifoEnabled() == (engine.MaxPorts() == EVTCHN_FIFO_NR_CHANNELS),
            "FIFO mode and port space disagree");
    }
    engine.RunDeferredWork();
    const evtchn::FifoSnapshot s = engine.SaveFifo();
    check(s.array_gpas.size() <= evtchn::kFifoMaxArrayPages, "too many array pages");
    for (const auto& v : s.vcpus)
      for (evtchn::Port tail : v.tails)
        check(tail == 0 || tail < s.array_gpas.size() * evtchn::kFifoWordsPerPage,
              "tail outside the array");
  }
  invariants.Check(
      std::all_of(ram + kRam, ram + kRam + kCanary, [](uint8_t b) { return b == 0xa5; }),
      "wrote past guest RAM");
  std::free(ram);
  return invariants.ok();
}

}  // namespace xenkvm::fuzz
