// EventChannels::Save / Restore (Engine::Save / Restore): the engine's whole state in a snapshot
// (docs/snapshots.md). What lives in guest memory (2-level pending/mask bits and selectors, FIFO
// event words and control blocks) travels with guest RAM; this is everything the engine keeps
// beside it. Restore treats its input as hostile: it decodes and checks all of it first, then
// applies it under the table mutex with no event source running.
#include <algorithm>
#include <map>
#include <set>

#include "evtchn/event_channels.h"

namespace xenkvm::evtchn {

namespace {

constexpr uint64_t kNoGpa = mem::CachedMapping::kNoGpa;

struct SavedPort {
  Port port = 0;
  Binding binding;
  uint16_t remote_domid = 0;
  uint32_t source = 0;
};

struct SavedVcpu {
  uint32_t xen_id = 0;
  uint64_t vcpu_info_gpa = kNoGpa;
  uint64_t shadow_sel = 0;
};

struct Saved {
  Abi abi = Abi::k64;
  uint8_t mode = 0;
  uint64_t shared_info_gpa = kNoGpa;
  std::vector<SavedVcpu> vcpus;
  std::vector<SavedPort> ports;
  std::vector<Port> deferred;
  std::vector<std::pair<Port, PortCounters>> counters;
  FifoSnapshot fifo;
};

void EncodeFifo(const FifoSnapshot& s, snapshot::Encoder& out) {
  out.Bool(s.enabled);
  out.U32(uint32_t(s.array_gpas.size()));
  for (uint64_t gpa : s.array_gpas) out.U64(gpa);
  out.U32(uint32_t(s.vcpus.size()));
  for (const FifoSnapshot::Vcpu& v : s.vcpus) {
    out.U32(v.xen_id);
    out.U64(v.control_gpa);
    for (Port tail : v.tails) out.U32(tail);
  }
  out.U32(uint32_t(s.ports.size()));
  for (const FifoSnapshot::PortState& p : s.ports) {
    out.U32(p.port);
    out.U8(p.priority);
    out.U32(p.last_queue);
  }
  out.U32(uint32_t(s.parked.size()));
  for (Port port : s.parked) out.U32(port);
}

FifoSnapshot DecodeFifo(snapshot::Decoder& in) {
  FifoSnapshot s;
  s.enabled = in.Bool();
  s.array_gpas.resize(in.Count(kFifoMaxArrayPages, 8));
  for (uint64_t& gpa : s.array_gpas) gpa = in.U64();
  s.vcpus.resize(in.Count(kMaxVcpus, 12 + 4 * kFifoQueues));
  for (FifoSnapshot::Vcpu& v : s.vcpus) {
    v.xen_id = in.U32();
    v.control_gpa = in.U64();
    for (Port& tail : v.tails) tail = in.U32();
  }
  s.ports.resize(in.Count(abi::kFifoPorts, 9));
  for (FifoSnapshot::PortState& p : s.ports) {
    p.port = in.U32();
    p.priority = in.U8();
    p.last_queue = in.U32();
  }
  s.parked.resize(in.Count(abi::kFifoPorts, 4));
  for (Port& port : s.parked) port = in.U32();
  return s;
}

bool ValidState(uint8_t state) {
  return state >= uint8_t(PortState::kUnbound) && state <= uint8_t(PortState::kPirq);
}

}  // namespace

void EventChannels::Save(snapshot::Encoder& out) const {
  MutexLock lock(ports_.mutex);
  out.U8(uint8_t(abi_));
  out.U8(uint8_t(delivery_.mode()));
  out.U64(delivery_.shared_info_gpa());

  std::vector<const VcpuState*> vcpus;
  ports_.ForEachVcpu([&](const VcpuState& v) { vcpus.push_back(&v); });
  out.U32(uint32_t(vcpus.size()));
  for (const VcpuState* v : vcpus) {
    out.U32(v->xen_id);
    out.U64(v->vcpu_info.gpa());
    out.U64(v->shadow_sel.load(std::memory_order_acquire));
  }

  const uint32_t max_ports = ports_.max_ports();
  std::vector<Port> open = ports_.OpenPortsLocked(1, max_ports);
  out.U32(uint32_t(open.size()));
  for (Port port : open) {
    const PortEntry& entry = *ports_.Find(port);
    const Binding binding = PortTable::BindingOf(entry);
    out.U32(port);
    out.U8(uint8_t(binding.state));
    out.U16(binding.vcpu);
    out.U32(binding.peer);
    out.U16(entry.remote_domid);
    out.U32(entry.source);
  }

  const std::vector<Port> deferred = delivery_.DeferredPorts();
  out.U32(uint32_t(deferred.size()));
  for (Port port : deferred) out.U32(port);

  std::vector<std::pair<Port, PortCounters>> counters;
  for (Port port = 1; port < max_ports; ++port) {
    if (!ports_.Find(port)) continue;
    const PortCounters c = delivery_.counters().Get(port);
    if (c.sent || c.raised()) counters.emplace_back(port, c);
  }
  out.U32(uint32_t(counters.size()));
  for (const auto& [port, c] : counters) {
    out.U32(port);
    for (uint64_t v : {c.sent, c.delivered, c.coalesced, c.masked, c.deferred}) out.U64(v);
  }

  std::vector<PortEntry*> entries(max_ports);
  for (Port port = 0; port < max_ports; ++port) entries[port] = ports_.Find(port);
  EncodeFifo(delivery_.fifo_state().Save(entries), out);
}

Result<> EventChannels::Restore(snapshot::Decoder& in) {
  // ---- decode ----
  Saved s;
  const uint8_t abi = in.U8();
  s.mode = in.U8();
  s.shared_info_gpa = in.U64();
  s.vcpus.resize(in.Count(kMaxVcpus, 20));
  for (SavedVcpu& v : s.vcpus) {
    v.xen_id = in.U32();
    v.vcpu_info_gpa = in.U64();
    v.shadow_sel = in.U64();
  }
  s.ports.resize(in.Count(abi::kFifoPorts, 17));
  for (SavedPort& p : s.ports) {
    p.port = in.U32();
    const uint8_t state = in.U8();
    if (!ValidState(state)) in.Invalid("snapshot: event channel port in a bad state");
    p.binding.state = PortState(state);
    p.binding.vcpu = in.U16();
    p.binding.peer = in.U32();
    p.remote_domid = in.U16();
    p.source = in.U32();
  }
  s.deferred.resize(in.Count(abi::kFifoPorts, 4));
  for (Port& port : s.deferred) port = in.U32();
  s.counters.resize(in.Count(abi::kFifoPorts, 44));
  for (auto& [port, c] : s.counters) {
    port = in.U32();
    c = PortCounters{in.U64(), in.U64(), in.U64(), in.U64(), in.U64()};
  }
  s.fifo = DecodeFifo(in);
  TRY(in.Finish());

  // ---- check ----
  auto bad = [](const char* what) { return snapshot::Corrupt(what); };
  if (abi > uint8_t(Abi::kCompat)) return bad("snapshot: bad event channel ABI");
  s.abi = Abi(abi);
  if (s.mode > uint8_t(Delivery::Mode::kFifo)) return bad("snapshot: bad event channel mode");
  const Delivery::Mode mode = Delivery::Mode(s.mode);
  const Delivery::Mode two_level =
      s.abi == Abi::k64 ? Delivery::Mode::kTwoLevel64 : Delivery::Mode::kTwoLevelCompat;
  if (mode != Delivery::Mode::kFifo && mode != two_level)
    return bad("snapshot: event channel mode does not match its ABI");
  if (s.fifo.enabled != (mode == Delivery::Mode::kFifo))
    return bad("snapshot: FIFO state does not match the event channel mode");
  const uint32_t max_ports = Delivery::PortsOf(mode);

  auto in_memory = [&](uint64_t gpa, uint64_t len) {
    auto guard = mem::LayoutGuard::Acquire(memory_);
    return bool(memory_.TranslateGuarded(gpa, len));
  };
  if (s.shared_info_gpa != kNoGpa &&
      (s.shared_info_gpa % abi::kPageSize != 0 || !in_memory(s.shared_info_gpa, abi::kPageSize)))
    return bad("snapshot: shared_info is not a guest page");
  std::set<uint32_t> vcpu_ids;
  for (const SavedVcpu& v : s.vcpus) {
    if (!ports_.FindVcpu(v.xen_id) || !vcpu_ids.insert(v.xen_id).second)
      return bad("snapshot: event channel state for a vCPU this machine lacks");
    if (v.vcpu_info_gpa != kNoGpa &&
        (v.vcpu_info_gpa % 8 != 0 ||
         v.vcpu_info_gpa % abi::kPageSize > abi::kPageSize - abi::Layout64::kVcpuInfoSize ||
         !in_memory(v.vcpu_info_gpa, abi::Layout64::kVcpuInfoSize)))
      return bad("snapshot: vcpu_info is not in guest memory");
  }

  std::map<Port, const SavedPort*> by_port;
  for (const SavedPort& p : s.ports) {
    if (p.port == 0 || p.port >= max_ports || !by_port.emplace(p.port, &p).second)
      return bad("snapshot: bad or repeated event channel port");
    if (!ports_.FindVcpu(p.binding.vcpu)) return bad("snapshot: port bound to a missing vCPU");
  }
  std::set<std::pair<uint32_t, uint32_t>> virqs;  // (owner vCPU, VIRQ)
  std::set<uint32_t> pirqs, endpoints;
  for (const SavedPort& p : s.ports) {
    switch (p.binding.state) {
      case PortState::kInterdomain: {
        auto peer = by_port.find(p.binding.peer);
        if (p.binding.peer == p.port || peer == by_port.end() ||
            peer->second->binding.state != PortState::kInterdomain ||
            peer->second->binding.peer != p.port)
          return bad("snapshot: interdomain port without its peer");
        break;
      }
      case PortState::kBackend: {
        const uint32_t ep = p.binding.peer;
        if (ep == 0 || ep >= kMaxEndpoints || !endpoints.insert(ep).second)
          return bad("snapshot: port connected to a backend this machine lacks");
        break;
      }
      case PortState::kVirq: {
        if (p.source >= NR_VIRQS || (!VirqIsPerVcpu(p.source) && p.binding.vcpu != 0))
          return bad("snapshot: bad VIRQ binding");
        const uint32_t owner = VirqIsPerVcpu(p.source) ? p.binding.vcpu : 0;
        if (!virqs.emplace(owner, p.source).second) return bad("snapshot: VIRQ bound twice");
        break;
      }
      case PortState::kPirq:
        if (p.source >= kMaxPirqs || !pirqs.insert(p.source).second)
          return bad("snapshot: bad or repeated PIRQ binding");
        break;
      default:
        break;
    }
  }
  for (Port port : s.deferred)
    if (port >= max_ports) return bad("snapshot: deferred event beyond the port limit");
  for (const auto& [port, c] : s.counters)
    if (port >= max_ports) return bad("snapshot: counters beyond the port limit");

  const FifoSnapshot& f = s.fifo;
  if (!f.enabled && (!f.array_gpas.empty() || !f.ports.empty() || !f.parked.empty()))
    return bad("snapshot: FIFO state without FIFO");
  for (uint64_t gpa : f.array_gpas)
    if (gpa % abi::kPageSize != 0 || !in_memory(gpa, abi::kPageSize))
      return bad("snapshot: FIFO event array page is not guest memory");
  const uint32_t words = uint32_t(f.array_gpas.size()) * kFifoWordsPerPage;
  std::set<uint32_t> fifo_vcpus;
  for (const FifoSnapshot::Vcpu& v : f.vcpus) {
    if (!ports_.FindVcpu(v.xen_id) || !fifo_vcpus.insert(v.xen_id).second)
      return bad("snapshot: FIFO state for a vCPU this machine lacks");
    if (v.control_gpa != kNoGpa &&
        (!f.enabled || v.control_gpa % 8 != 0 ||
         v.control_gpa % abi::kPageSize > abi::kPageSize - sizeof(evtchn_fifo_control_block_t) ||
         !in_memory(v.control_gpa, sizeof(evtchn_fifo_control_block_t))))
      return bad("snapshot: FIFO control block is not guest memory");
    for (Port tail : v.tails)
      if (tail != 0 && (!f.enabled || tail >= words))
        return bad("snapshot: FIFO queue tail beyond the event array");
  }
  std::set<Port> fifo_ports;
  for (const FifoSnapshot::PortState& p : f.ports) {
    if (p.port >= max_ports || !fifo_ports.insert(p.port).second ||
        p.priority > EVTCHN_FIFO_PRIORITY_MIN || (p.last_queue & 0xff) >= kFifoQueues ||
        (p.last_queue >> 8) >= kMaxVcpus || !ports_.FindVcpu(p.last_queue >> 8))
      return bad("snapshot: bad FIFO port state");
  }
  for (Port port : f.parked)
    if (port >= max_ports || port < words) return bad("snapshot: bad parked FIFO event");

  // ---- apply ----
  MutexLock lock(ports_.mutex);
  for (uint32_t ep : endpoints)
    if (!ports_.EndpointInUseLocked(ep))
      return bad("snapshot: port connected to a backend this machine lacks");
  // Whatever the VMM connected before the restore goes: the snapshot's table replaces it.
  ports_.ClearLocked();
  delivery_.fifo_state().Clear();
  abi_ = s.abi;
  delivery_.SetMode(mode);
  ports_.SetMaxPortsLocked(max_ports);
  delivery_.shared_info().SetGpa(s.shared_info_gpa);
  ports_.ForEachVcpu([](VcpuState& v) {
    v.vcpu_info.SetGpa(kNoGpa);
    v.shadow_sel.store(0, std::memory_order_relaxed);
  });
  for (const SavedVcpu& saved : s.vcpus) {
    VcpuState& v = *ports_.FindVcpu(saved.xen_id);
    v.vcpu_info.SetGpa(saved.vcpu_info_gpa);
    v.shadow_sel.store(saved.shadow_sel, std::memory_order_release);
  }
  for (const SavedPort& p : s.ports) {
    PortEntry& entry = ports_.EntryLocked(p.port);
    entry.remote_domid = p.remote_domid;
    entry.source = p.source;
    entry.priority.store(EVTCHN_FIFO_PRIORITY_DEFAULT, std::memory_order_relaxed);
    entry.fifo_last_queue.store(0, std::memory_order_relaxed);
    switch (p.binding.state) {
      case PortState::kVirq:
        ports_.SetVirqPortLocked(*ports_.FindVcpu(VirqIsPerVcpu(p.source) ? p.binding.vcpu : 0),
                                 p.source, p.port);
        break;
      case PortState::kPirq:
        ports_.SetPirqPortLocked(p.source, p.port);
        break;
      case PortState::kBackend:
        ports_.ConnectEndpointLocked(p.binding.peer, p.port);
        break;
      default:
        break;
    }
    PortTable::Publish(entry, p.binding);
  }
  std::vector<PortEntry*> entries(max_ports);  // only those Fifo::Restore writes
  for (const FifoSnapshot::PortState& p : f.ports) entries[p.port] = &ports_.EntryLocked(p.port);
  delivery_.fifo_state().Restore(f, entries);
  for (const auto& [port, c] : s.counters) delivery_.counters().Seed(port, c);
  delivery_.RestoreDeferred(s.deferred);
  return {};
}

}  // namespace xenkvm::evtchn
