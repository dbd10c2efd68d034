// The port table's changes (xen/common/event_channel.c's bookkeeping: allocation, VIRQ/PIRQ
// bindings, __evtchn_close's unhooking, interdomain peers); see port_table.h for the locks.
#include "evtchn/port_table.h"

#include <thread>

#include "evtchn/sink.h"

namespace xenkvm::evtchn {

PortTable::PortTable() {
  MutexLock lock(mutex);
  Publish(EnsureBucketLocked(0).ports[0], Binding{PortState::kReserved});
}

Port PortTable::VirqPort(uint32_t virq, uint32_t xen_vcpu_id) const {
  if (virq >= NR_VIRQS) return 0;
  VcpuState* owner = FindVcpu(VirqIsPerVcpu(virq) ? xen_vcpu_id : 0);
  return owner ? owner->virq_ports[virq].load(std::memory_order_acquire) : 0;
}

Backend* PortTable::AcquireBackend(Port endpoint) {
  Endpoint& ep = endpoints_[endpoint];
  ep.senders.fetch_add(1, std::memory_order_seq_cst);  // CloseEndpointLocked waits for us
  return ep.backend.load(std::memory_order_seq_cst);
}

void PortTable::ReleaseBackend(Port endpoint) {
  endpoints_[endpoint].senders.fetch_sub(1, std::memory_order_release);
}

Result<VcpuState*> PortTable::AddVcpuLocked(uint32_t xen_vcpu_id, VcpuSink* sink) {
  if (xen_vcpu_id >= kMaxVcpus || sink == nullptr) return Fail(XEN_EINVAL, "bad vCPU");
  if (FindVcpu(xen_vcpu_id)) return Fail(XEN_EEXIST, "vCPU already registered");
  vcpu_storage_.push_back(std::make_unique<VcpuState>(xen_vcpu_id, sink));
  VcpuState* vcpu = vcpu_storage_.back().get();
  vcpus_[xen_vcpu_id].store(vcpu, std::memory_order_release);
  return vcpu;
}

void PortTable::SetVirqPortLocked(VcpuState& vcpu, uint32_t virq, Port port) {
  vcpu.virq_ports[virq].store(port, std::memory_order_release);
}

void PortTable::SetPirqPortLocked(uint32_t pirq, Port port) {
  pirq_ports_[pirq].store(port, std::memory_order_release);
}

Result<> PortTable::UnbindLocked(Port port, uint16_t domid) {
  PortEntry* entry = Find(port);
  if (!entry) return Fail(XEN_EINVAL, "bad port");
  const Binding binding = BindingOf(*entry);
  switch (binding.state) {
    case PortState::kFree:
    case PortState::kReserved:
      return Fail(XEN_EINVAL, "port not in use");
    case PortState::kUnbound:
    case PortState::kIpi:
      break;
    case PortState::kPirq:
      pirq_ports_[entry->source].store(0, std::memory_order_release);
      break;
    case PortState::kVirq: {
      VcpuState* owner = FindVcpu(VirqIsPerVcpu(entry->source) ? binding.vcpu : 0);
      if (owner) owner->virq_ports[entry->source].store(0, std::memory_order_release);
      break;
    }
    case PortState::kInterdomain: {
      // The peer goes back to waiting for a connection from this domain, as in Xen.
      PortEntry* peer = Find(binding.peer);
      if (peer && binding.peer != port) {
        const Binding peer_binding = BindingOf(*peer);
        peer->remote_domid = domid;
        Publish(*peer, Binding{PortState::kUnbound, peer_binding.vcpu, 0});
      }
      break;
    }
    case PortState::kBackend:
      endpoints_[binding.peer].guest_port = 0;
      break;
  }
  Publish(*entry, Binding{PortState::kFree, 0, 0});
  if (port < lowest_free_hint_) lowest_free_hint_ = port;
  return {};
}

std::vector<Port> PortTable::OpenPortsLocked(Port first, Port end) const {
  std::vector<Port> open;
  for (Port port = first; port < end; ++port) {
    const PortEntry* entry = Find(port);
    if (!entry) continue;
    const PortState state = BindingOf(*entry).state;
    if (state != PortState::kFree && state != PortState::kReserved) open.push_back(port);
  }
  return open;
}

void PortTable::SetMaxPortsLocked(uint32_t max_ports) {
  max_ports_.store(max_ports, std::memory_order_release);
  if (lowest_free_hint_ > max_ports) lowest_free_hint_ = max_ports;
}

void PortTable::ClearLocked() {
  ForEachEntryLocked([](PortEntry& entry) { Publish(entry, Binding{PortState::kFree, 0, 0}); });
  Publish(EntryLocked(0), Binding{PortState::kReserved});
  for (Endpoint& ep : endpoints_) ep.guest_port = 0;
  for (auto& slot : pirq_ports_) slot.store(0, std::memory_order_relaxed);
  ForEachVcpu([](VcpuState& v) {
    for (auto& virq : v.virq_ports) virq.store(0, std::memory_order_relaxed);
  });
  lowest_free_hint_ = 1;
}

PortBucket& PortTable::EnsureBucketLocked(uint32_t index) {
  PortBucket* bucket = buckets_[index].load(std::memory_order_relaxed);
  if (bucket) return *bucket;
  bucket_storage_.push_back(std::make_unique<PortBucket>());
  bucket = bucket_storage_.back().get();
  buckets_[index].store(bucket, std::memory_order_release);
  return *bucket;
}

Result<Port> PortTable::AddEndpointLocked(Backend* backend) {
  Port endpoint = 1;
  while (endpoint <= endpoint_count_ && endpoints_[endpoint].in_use) ++endpoint;
  if (endpoint >= kMaxEndpoints) return Fail(XEN_ENOSPC, "too many endpoints");
  if (endpoint > endpoint_count_) endpoint_count_ = endpoint;
  endpoints_[endpoint].in_use = true;
  endpoints_[endpoint].guest_port = 0;
  endpoints_[endpoint].backend.store(backend, std::memory_order_release);
  return endpoint;
}

Result<> PortTable::AddEndpointAtLocked(Port endpoint, Backend* backend) {
  if (endpoint == 0 || endpoint >= kMaxEndpoints) return Fail(XEN_EINVAL, "bad endpoint");
  if (endpoints_[endpoint].in_use) return Fail(XEN_EEXIST, "endpoint in use");
  if (endpoint > endpoint_count_) endpoint_count_ = endpoint;
  endpoints_[endpoint].in_use = true;
  endpoints_[endpoint].guest_port = 0;
  endpoints_[endpoint].backend.store(backend, std::memory_order_release);
  return {};
}

bool PortTable::EndpointInUseLocked(Port endpoint) const {
  return endpoint != 0 && endpoint <= endpoint_count_ && endpoints_[endpoint].in_use;
}

bool PortTable::EndpointUnboundLocked(Port endpoint) const {
  return EndpointInUseLocked(endpoint) && endpoints_[endpoint].guest_port == 0;
}

Port PortTable::EndpointGuestPortLocked(Port endpoint) const {
  return endpoints_[endpoint].guest_port;
}

void PortTable::ConnectEndpointLocked(Port endpoint, Port guest_port) {
  endpoints_[endpoint].guest_port = guest_port;
}

void PortTable::CloseEndpointLocked(Port endpoint) {
  Endpoint& ep = endpoints_[endpoint];
  ep.guest_port = 0;
  ep.backend.store(nullptr, std::memory_order_seq_cst);
  // A send that loaded the pointer before the store may still be inside OnGuestSend.
  while (ep.senders.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  ep.in_use = false;
}

}  // namespace xenkvm::evtchn
