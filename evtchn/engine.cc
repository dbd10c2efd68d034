// Engine: the public facade over a domain's event channels (event_channels.h: the port table,
// delivery and the EVTCHNOP_* ops on them). Raising a port inlines delivery's hot path here.
#include "evtchn/engine.h"

#include "evtchn/event_channels.h"

namespace xenkvm::evtchn {

struct Engine::Impl {
  Impl(mem::GuestMemory& memory, uint16_t domid) : channels(memory, domid) {}
  EventChannels channels;
};

Engine::Engine(mem::GuestMemory& memory, Options options)
    : impl_(std::make_unique<Impl>(memory, options.domid)) {
  if (options.start_worker) impl_->channels.delivery().StartWorker();
}

Engine::~Engine() = default;

// ---- setup ----
Result<> Engine::AddVcpu(uint32_t id, VcpuSink* sink) { return impl_->channels.AddVcpu(id, sink); }
Result<> Engine::SetVcpuInfoGpa(uint32_t id, uint64_t gpa) {
  return impl_->channels.SetVcpuInfoGpa(id, gpa);
}
Result<> Engine::SetSharedInfoGpa(uint64_t gpa, std::span<const uint32_t> default_slot_vcpus) {
  return impl_->channels.SetSharedInfoGpa(gpa, default_slot_vcpus);
}
void Engine::SetAbi(Abi abi) { impl_->channels.SetAbi(abi); }
Abi Engine::abi() const { return impl_->channels.abi(); }
uint32_t Engine::MaxPorts() const { return impl_->channels.ports().max_ports(); }
Result<Port> Engine::AddBackendEndpoint(Backend* backend) {
  return impl_->channels.AddBackendEndpoint(backend);
}
Result<> Engine::AddBackendEndpointAt(Port endpoint, Backend* backend) {
  return impl_->channels.AddBackendEndpointAt(endpoint, backend);
}
Result<Port> Engine::ConnectBackend(Backend* backend) {
  return impl_->channels.ConnectBackend(backend);
}
Result<Port> Engine::AttachBackend(Port guest_port, Backend* backend) {
  return impl_->channels.AttachBackend(guest_port, backend);
}
Result<> Engine::CloseBackend(Port endpoint) { return impl_->channels.CloseBackend(endpoint); }

// ---- EVTCHNOP_* ----
Result<> Engine::AllocUnbound(evtchn_alloc_unbound& op) { return impl_->channels.AllocUnbound(op); }
Result<> Engine::BindInterdomain(evtchn_bind_interdomain& op) {
  return impl_->channels.BindInterdomain(op);
}
Result<> Engine::BindVirq(evtchn_bind_virq& op) { return impl_->channels.BindVirq(op); }
Result<> Engine::BindIpi(evtchn_bind_ipi& op) { return impl_->channels.BindIpi(op); }
Result<> Engine::BindPirq(evtchn_bind_pirq& op) { return impl_->channels.BindPirq(op); }
Result<> Engine::Close(const evtchn_close& op) { return impl_->channels.Close(op); }
Result<> Engine::Send(const evtchn_send& op) { return impl_->channels.Send(op); }
Result<> Engine::Status(evtchn_status& op) { return impl_->channels.Status(op); }
Result<> Engine::BindVcpu(const evtchn_bind_vcpu& op) { return impl_->channels.BindVcpu(op); }
Result<> Engine::Unmask(const evtchn_unmask& op) { return impl_->channels.Unmask(op); }
Result<> Engine::Reset(const evtchn_reset& op) { return impl_->channels.Reset(op); }
Result<> Engine::InitControl(evtchn_init_control& op) { return impl_->channels.InitControl(op); }
Result<> Engine::ExpandArray(const evtchn_expand_array& op) {
  return impl_->channels.ExpandArray(op);
}
Result<> Engine::SetPriority(const evtchn_set_priority& op) {
  return impl_->channels.SetPriority(op);
}
bool Engine::FifoEnabled() const { return impl_->channels.delivery().fifo(); }
FifoSnapshot Engine::SaveFifo() const { return impl_->channels.SaveFifo(); }

// ---- event sources ----
void Engine::RaisePort(Port port) { impl_->channels.delivery().Raise(port); }

bool Engine::RaiseVirq(uint32_t virq, uint32_t xen_vcpu_id) {
  const Port port = impl_->channels.ports().VirqPort(virq, xen_vcpu_id);
  if (port == 0) return false;
  impl_->channels.delivery().Raise(port);
  return true;
}

bool Engine::RaisePirq(uint32_t pirq) {
  const Port port = impl_->channels.ports().PirqPort(pirq);
  if (port == 0) return false;
  impl_->channels.delivery().Raise(port);
  return true;
}

// ---- vCPU side ----
void Engine::SyncVcpu(uint32_t id) { impl_->channels.SyncVcpu(id); }
Result<bool> Engine::BeginPoll(uint32_t id, std::span<const Port> ports) {
  return impl_->channels.BeginPoll(id, ports);
}
void Engine::EndPoll(uint32_t id) { impl_->channels.EndPoll(id); }
bool Engine::UpcallPending(uint32_t id) { return impl_->channels.UpcallPending(id); }

// ---- deferred work and counters ----
void Engine::RunDeferredWork() { impl_->channels.delivery().RunDeferredWork(); }

void Engine::Save(snapshot::Encoder& out) const { impl_->channels.Save(out); }
Result<> Engine::Restore(snapshot::Decoder& in) { return impl_->channels.Restore(in); }

PortCounters Engine::Counters(Port port) const {
  if (!impl_->channels.ports().Find(port)) return {};
  return impl_->channels.delivery().counters().Get(port);
}

std::vector<std::pair<Port, PortCounters>> Engine::AllCounters() const {
  std::vector<std::pair<Port, PortCounters>> all;
  for (Port port = 1; port < MaxPorts(); ++port) {
    PortCounters c = Counters(port);
    if (c.sent || c.delivered || c.coalesced || c.masked || c.deferred) all.emplace_back(port, c);
  }
  return all;
}

}  // namespace xenkvm::evtchn
