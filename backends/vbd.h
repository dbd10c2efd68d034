// One PV disk of a guest, assembled: a blkif backend (backends/blkif) on an image, its xenbus
// device (directories and handshake, xenbus_device.h), the domain's grant table as the way to
// the guest's pages (blkif/xen_grants.h), and each queue's event channel bound from dom0 to the
// port the frontend allocated (Engine::AttachBackend). KVM-free: the VMM makes one per --disk.
//
// Threads: the handshake runs on xenstore writers' threads (serialised by XenbusDevice);
// Stats() from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/blkif/backend.h"
#include "backends/blkif/xen_grants.h"
#include "backends/xenbus_device.h"
#include "evtchn/engine.h"
#include "snapshot/codec.h"
#include "xen/grants.h"
#include "xenstore/store.h"

namespace xenkvm::backends {

struct VbdConfig {
  blkif::DiskOptions disk;
  std::string vdev = "xvda";  // the name in the backend's `dev` key
  uint32_t devid = 51712;     // its virtual-device number
  xenstore::DomId domid = 1;
};

class Vbd final : public XenbusDriver {
 public:
  // Opens the image, writes the device's directories and waits for the frontend.
  static Result<std::unique_ptr<Vbd>> Create(xenstore::Store& store, evtchn::Engine& engine,
                                             xen::GrantTable& grants, const VbdConfig& config);
  ~Vbd() override;

  const VbdConfig& config() const { return config_; }
  blkif::DiskStatsSnapshot Stats() const { return backend_->Stats(); }
  XenbusDevice& xenbus() { return *device_; }
  // For snapshots: no request in flight between the two.
  void Quiesce() { backend_->Quiesce(); }
  void Resume() { backend_->Resume(); }
  // Snapshots (docs/snapshots.md), between Quiesce and Resume: the xenbus handshake's state and,
  // while connected, the negotiated connection (protocol, ring order, each queue's ring grants
  // and event channel), the endpoints the ports reach and each ring's position. Restore, on a
  // new Vbd of the same disk before the engine's port table is restored: maps the rings again
  // at those positions and takes back the same endpoint numbers, so the frontend notices
  // nothing. Hostile input: -EINVAL naming what is wrong.
  void Save(snapshot::Encoder& out);
  Result<> Restore(snapshot::Decoder& in);

  // XenbusDriver
  Result<> Connect(const ReadKey& frontend) override;
  void Disconnect() override;

 private:
  Vbd(evtchn::Engine& engine, xen::GrantTable& grants, VbdConfig config,
      std::unique_ptr<blkif::BlkifBackend> backend)
      : engine_(engine),
        grants_(grants),
        config_(std::move(config)),
        backend_(std::move(backend)) {}
  void CloseEndpoints();

  evtchn::Engine& engine_;
  blkif::XenGrantAccess grants_;
  const VbdConfig config_;
  std::unique_ptr<blkif::BlkifBackend> backend_;
  std::vector<evtchn::Port> guest_ports_;  // per queue, while connected (XenbusDevice's lock)
  std::vector<evtchn::Port> endpoints_;    // per queue, while connected (XenbusDevice's lock)
  blkif::ConnectionParams params_;         // while connected (XenbusDevice's lock)
  std::unique_ptr<XenbusDevice> device_;   // last: its watch may call us until it is gone
};

}  // namespace xenkvm::backends
