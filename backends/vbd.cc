// A guest's PV disk, assembled; see vbd.h. The order of Connect and Disconnect follows
// docs/block.md "Wiring it": the ports are routed only once the queues exist, and unrouted
// before they go.
#include "backends/vbd.h"

#include <cstdio>

namespace xenkvm::backends {

Result<std::unique_ptr<Vbd>> Vbd::Create(xenstore::Store& store, evtchn::Engine& engine,
                                         xen::GrantTable& grants, const VbdConfig& config) {
  auto backend = TRY(blkif::BlkifBackend::Open(config.disk));
  std::unique_ptr<Vbd> vbd(new Vbd(engine, grants, config, std::move(backend)));
  XenbusDeviceConfig device{
      .domid = config.domid,
      .kind = "vbd",
      .devid = config.devid,
      .frontend = {{"virtual-device", std::to_string(config.devid)}, {"device-type", "disk"}},
      .backend = {{"dev", config.vdev},
                  {"type", "file"},
                  {"params", config.disk.path},
                  {"bootable", "1"},
                  {"removable", config.disk.removable ? "1" : "0"}}};
  for (auto& kv : vbd->backend_->Keys()) device.backend.push_back(std::move(kv));
  vbd->device_ = TRY(XenbusDevice::Create(store, std::move(device), *vbd));
  return vbd;
}

Vbd::~Vbd() {
  device_.reset();  // disconnects us if connected; no watch event after this
}

Result<> Vbd::Connect(const ReadKey& frontend) {
  const blkif::ConnectionParams params =
      TRY(blkif::ParseFrontendKeys(frontend, backend_->features()));
  std::vector<evtchn::Port> ports;
  for (const auto& queue : params.queues) ports.push_back(queue.event_channel);
  TRY(backend_->Connect(params, grants_, [this, ports](uint32_t queue) {
    if (queue < ports.size()) engine_.RaisePort(ports[queue]);
  }));
  guest_ports_ = ports;
  params_ = params;
  for (uint32_t q = 0; q < ports.size(); ++q) {
    auto endpoint = engine_.AttachBackend(ports[q], backend_->QueueEndpoint(q));
    if (!endpoint) {
      CloseEndpoints();
      backend_->Disconnect();
      return Fail(XEN_EINVAL, "event-channel is not a port unbound for domain 0");
    }
    endpoints_.push_back(*endpoint);
  }
  // A kick sent before we were bound went nowhere: look at the rings once.
  for (uint32_t q = 0; q < ports.size(); ++q) backend_->QueueEndpoint(q)->OnGuestSend(ports[q]);
  return {};
}

void Vbd::CloseEndpoints() {
  for (evtchn::Port endpoint : endpoints_) (void)engine_.CloseBackend(endpoint);
  endpoints_.clear();
  guest_ports_.clear();
}

void Vbd::Disconnect() {
  CloseEndpoints();  // first: a send must not reach a queue being torn down
  backend_->Disconnect();
}

}  // namespace xenkvm::backends
