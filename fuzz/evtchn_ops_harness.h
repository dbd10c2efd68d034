// Hostile-guest harness for the engine: interprets bytes as a sequence of EVTCHNOP_* calls and
// event sources with guest-chosen (often absurd) arguments, and checks what Xen guarantees:
// only Xen error codes come back, ports handed out are valid and the lowest free, status
// agrees with what was bound, and the engine never crashes or hangs. Shared by the libFuzzer
// target (fuzz/, clang) and a seeded unit test (tests/evtchn/random_ops_test.cc).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <span>
#include <vector>

#include "evtchn/engine.h"

namespace xenkvm::fuzz {

struct NullSink : evtchn::VcpuSink {
  void InjectUpcall() override {}
  void RequestSync() override {}
  void WakePoller() override {}
};

struct EchoBackend : evtchn::Backend {
  evtchn::Engine* engine = nullptr;
  void OnGuestSend(evtchn::Port port) override { engine->RaisePort(port); }
};

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> data) : data_(data) {}
  bool empty() const { return pos_ >= data_.size(); }
  uint8_t U8() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  uint32_t U32() {
    // Mostly small values (real ports, vCPUs), sometimes anything at all.
    uint8_t kind = U8();
    if (kind < 200) return U8() % 24;
    if (kind < 250) return uint32_t(U8()) << 4 | U8() % 16;
    return uint32_t(U8()) | uint32_t(U8()) << 8 | uint32_t(U8()) << 16 | uint32_t(U8()) << 24;
  }
  uint16_t Dom() {
    switch (U8() % 4) {
      case 0:
        return DOMID_SELF;
      case 1:
        return 1;  // our own id
      case 2:
        return 0;  // the VMM's backends
      default:
        return uint16_t(U32());
    }
  }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

// What a harness checks after each call: the invariants it states, and that an error carries
// one of the Xen errnos it allows. Says on stderr which one broke.
class Invariants {
 public:
  explicit Invariants(std::initializer_list<int> allowed_errnos) : allowed_(allowed_errnos) {}
  void Check(bool condition, const char* what) {
    if (condition) return;
    std::fprintf(stderr, "invariant broken: %s\n", what);
    ok_ = false;
  }
  void Allowed(const Result<>& r) {
    if (!r)
      Check(std::find(allowed_.begin(), allowed_.end(), r.error().xen_errno) != allowed_.end(),
            "unexpected errno");
  }
  bool ok() const { return ok_; }

 private:
  std::vector<int> allowed_;
  bool ok_ = true;
};

// Returns false (and says why on stderr) if an invariant broke.
inline bool RunEvtchnOps(std::span<const uint8_t> input) {
  constexpr uint64_t kRam = 64 * 1024;
  // One buffer for every run: fresh pages each run (page faults) cost more than the run.
  alignas(4096) static uint8_t ram[kRam];
  std::fill(ram, ram + kRam, uint8_t{0});
  Invariants invariants{XEN_EINVAL, XEN_ENOENT, XEN_EEXIST, XEN_ENOSPC,
                        XEN_ESRCH,  XEN_EPERM,  XEN_EFAULT};
  {
    mem::GuestMemory memory;
    (void)memory.AddSlot(0, 0, kRam, ram);
    evtchn::Engine engine(memory, evtchn::Engine::Options{.domid = 1, .start_worker = false});
    NullSink sinks[3];
    EchoBackend echo;
    echo.engine = &engine;
    (void)engine.AddBackendEndpoint(&echo);
    for (uint32_t v = 0; v < 3; ++v) (void)engine.AddVcpu(v, &sinks[v]);
    (void)engine.SetSharedInfoGpa(0x1000);
    for (uint32_t v = 0; v < 2; ++v) (void)engine.SetVcpuInfoGpa(v, 0x1000 + 64 * v);

    auto check = [&](bool condition, const char* what) { invariants.Check(condition, what); };
    auto allowed = [&](const Result<>& r) { invariants.Allowed(r); };
    auto status_of = [&](evtchn::Port port) {
      evtchn_status st{};
      st.dom = DOMID_SELF;
      st.port = port;
      return engine.Status(st) ? st.status : UINT32_MAX;
    };
    // A port just handed out must be in range and the lowest free one.
    auto fresh = [&](const Result<>& r, evtchn::Port port, uint32_t expected_status) {
      allowed(r);
      if (!r) return;
      check(port > 0 && port < engine.MaxPorts(), "allocated port out of range");
      check(status_of(port) == expected_status, "status disagrees with binding");
      for (evtchn::Port below = 1; below < port && below < 64; ++below)
        check(status_of(below) != EVTCHNSTAT_closed, "allocation skipped a free port");
    };

    ByteReader in(input);
    for (int steps = 0; !in.empty() && steps < 512 && invariants.ok(); ++steps) {
      switch (in.U8() % 16) {
        case 0: {
          evtchn_alloc_unbound op{.dom = in.Dom(), .remote_dom = in.Dom(), .port = 0};
          Result<> r = engine.AllocUnbound(op);  // before reading op.port
          fresh(r, op.port, EVTCHNSTAT_unbound);
          break;
        }
        case 1: {
          evtchn_bind_interdomain op{
              .remote_dom = in.Dom(), .remote_port = in.U32(), .local_port = 0};
          Result<> r = engine.BindInterdomain(op);  // before reading op.local_port
          fresh(r, op.local_port, EVTCHNSTAT_interdomain);
          break;
        }
        case 2: {
          evtchn_bind_virq op{.virq = in.U32(), .vcpu = in.U32(), .port = 0};
          Result<> r = engine.BindVirq(op);  // before reading op.port
          fresh(r, op.port, EVTCHNSTAT_virq);
          break;
        }
        case 3: {
          evtchn_bind_ipi op{.vcpu = in.U32(), .port = 0};
          Result<> r = engine.BindIpi(op);  // before reading op.port
          fresh(r, op.port, EVTCHNSTAT_ipi);
          break;
        }
        case 4: {
          evtchn_bind_pirq op{.pirq = in.U32(), .flags = in.U32(), .port = 0};
          Result<> r = engine.BindPirq(op);  // before reading op.port
          fresh(r, op.port, EVTCHNSTAT_pirq);
          break;
        }
        case 5: {
          const evtchn::Port port = in.U32();
          Result<> r = engine.Close(evtchn_close{.port = port});
          allowed(r);
          if (r) check(status_of(port) == EVTCHNSTAT_closed, "closed port not closed");
          break;
        }
        case 6:
          allowed(engine.Send(evtchn_send{.port = in.U32()}));
          break;
        case 7: {
          evtchn_status st{};
          st.dom = in.Dom();
          st.port = in.U32();
          allowed(engine.Status(st));
          break;
        }
        case 8:
          allowed(engine.BindVcpu(evtchn_bind_vcpu{.port = in.U32(), .vcpu = in.U32()}));
          break;
        case 9:
          allowed(engine.Unmask(evtchn_unmask{.port = in.U32()}));
          break;
        case 10:
          allowed(engine.Reset(evtchn_reset{.dom = in.Dom()}));
          break;
        case 11:
          engine.RaiseVirq(in.U32(), in.U32());
          break;
        case 12:
          engine.RaisePirq(in.U32());
          break;
        case 13: {
          evtchn::Port ports[3] = {in.U32(), in.U32(), in.U32()};
          auto r = engine.BeginPoll(in.U32(), std::span(ports, 1 + in.U8() % 3));
          if (!r) allowed(tl::unexpected(r.error()));
          engine.EndPoll(0);
          engine.EndPoll(1);
          engine.EndPoll(2);
          break;
        }
        case 14: {
          // The guest moves shared_info or registers a vcpu_info anywhere it likes.
          const uint64_t gpa = uint64_t(in.U32()) << (in.U8() % 2 ? 12 : 3);
          if (in.U8() % 2)
            allowed(engine.SetSharedInfoGpa(gpa));
          else
            allowed(engine.SetVcpuInfoGpa(in.U32(), gpa));
          break;
        }
        case 15:
          engine.SetAbi(in.U8() % 2 ? evtchn::Abi::k64 : evtchn::Abi::kCompat);
          break;
      }
    }
    engine.RunDeferredWork();
  }
  return invariants.ok();
}

}  // namespace xenkvm::fuzz
