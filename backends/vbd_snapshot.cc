// Vbd::Save / Vbd::Restore: a PV disk's connection in a snapshot (docs/snapshots.md). The rings'
// pages and the grant entries are guest memory and travel with it; what the backend holds is
// the negotiated connection (blkif.h keys the frontend wrote), the endpoints its ports reach and
// where each ring stands. Saved quiesced: no request is in flight, every one consumed is
// answered, so a ring's position is one index.
#include <set>

#include "backends/vbd.h"

namespace xenkvm::backends {

namespace {
constexpr uint32_t kMaxSavedQueues = 64;
}

void Vbd::Save(snapshot::Encoder& out) {
  const XenbusDevice::SavedState device = device_->Saved();
  out.U32(uint32_t(device.state));
  out.Bool(device.connected);
  out.Bool(device.unplugging);
  out.Bool(device.removed);
  if (!device.connected) return;
  out.U8(uint8_t(params_.abi));
  out.U32(params_.ring_page_order);
  const std::vector<uint32_t> positions = backend_->QuiescedPositions();
  out.U32(uint32_t(params_.queues.size()));
  for (size_t q = 0; q < params_.queues.size(); ++q) {
    const blkif::QueueParams& queue = params_.queues[q];
    out.U32(uint32_t(queue.ring_refs.size()));
    for (blkif::GrantRef ref : queue.ring_refs) out.U32(ref);
    out.U32(queue.event_channel);
    out.U32(q < endpoints_.size() ? endpoints_[q] : 0);
    out.U32(q < positions.size() ? positions[q] : 0);
  }
}

Result<> Vbd::Restore(snapshot::Decoder& in) {
  XenbusDevice::SavedState device;
  const uint32_t state = in.U32();
  device.state = XenbusState(state);
  device.connected = in.Bool();
  device.unplugging = in.Bool();
  device.removed = in.Bool();
  blkif::ConnectionParams params;
  std::vector<evtchn::Port> endpoints;
  std::vector<uint32_t> positions;
  if (device.connected) {
    const uint8_t abi = in.U8();
    params.abi = blkif::Abi(abi);
    params.ring_page_order = in.U32();
    params.queues.resize(in.Count(kMaxSavedQueues, 16));
    for (blkif::QueueParams& queue : params.queues) {
      queue.ring_refs.resize(in.Count(1u << blkif::kMaxRingPageOrder, 4));
      for (blkif::GrantRef& ref : queue.ring_refs) ref = in.U32();
      queue.event_channel = in.U32();
      endpoints.push_back(in.U32());
      positions.push_back(in.U32());
    }
    if (abi > uint8_t(blkif::Abi::k32)) in.Invalid("snapshot: bad disk ring protocol");
  }
  TRY(in.Finish());
  auto bad = [](const char* what) { return snapshot::Corrupt(what); };
  if (state > uint32_t(XenbusState::kReconfigured)) return bad("snapshot: bad disk xenbus state");
  if (device.connected && (params.queues.empty() || device.removed))
    return bad("snapshot: bad disk connection");
  std::set<evtchn::Port> seen;
  for (evtchn::Port ep : endpoints)
    if (ep == 0 || !seen.insert(ep).second) return bad("snapshot: bad disk event channel");

  if (device.connected) {
    std::vector<evtchn::Port> ports;
    for (const auto& queue : params.queues) ports.push_back(queue.event_channel);
    if (auto r = backend_->Connect(
            params, grants_,
            [this, ports](uint32_t q) {
              if (q < ports.size()) engine_.RaisePort(ports[q]);
            },
            positions);
        !r)
      return bad("snapshot: a disk's rings cannot be mapped again");
    for (uint32_t q = 0; q < endpoints.size(); ++q) {
      if (!engine_.AddBackendEndpointAt(endpoints[q], backend_->QueueEndpoint(q))) {
        CloseEndpoints();
        backend_->Disconnect();
        return bad("snapshot: a disk's event channel endpoint is taken here");
      }
      endpoints_.push_back(endpoints[q]);
    }
    guest_ports_ = ports;
    params_ = params;
  }
  device_->RestoreState(device);
  return {};
}

}  // namespace xenkvm::backends
