// The xenbus backend handshake; see xenbus_device.h. Transitions follow xen-blkback's
// frontend_changed (Linux drivers/block/xen-blkback/xenbus.c) and libxl's device removal.
#include "backends/xenbus_device.h"

#include <charconv>
#include <cstdio>

#include "xenstore/domain_tree.h"

namespace xenkvm::backends {

using xenstore::Store;

XenbusDevice::XenbusDevice(Store& store, XenbusDeviceConfig config, XenbusDriver& driver)
    : store_(store),
      config_(std::move(config)),
      driver_(driver),
      front_(Store::DomainPath(config_.domid) + "/device/" + config_.kind + "/" +
             std::to_string(config_.devid)),
      back_(Store::DomainPath(xenstore::kPrivilegedDomid) + "/backend/" + config_.kind + "/" +
            std::to_string(config_.domid) + "/" + std::to_string(config_.devid)) {}

Result<std::unique_ptr<XenbusDevice>> XenbusDevice::Create(Store& store, XenbusDeviceConfig config,
                                                           XenbusDriver& driver) {
  std::unique_ptr<XenbusDevice> device(new XenbusDevice(store, std::move(config), driver));
  XenbusDevice* self = device.get();
  self->conn_ =
      store.Connect(xenstore::kPrivilegedDomid,
                    [self](const std::string&, const std::string&) { self->OnFrontendChanged(); });
  TRY(xenstore::AddDevice(store, self->conn_, self->config_.domid,
                          {.kind = self->config_.kind,
                           .devid = self->config_.devid,
                           .frontend = self->config_.frontend,
                           .backend = self->config_.backend}));
  {
    MutexLock lock(self->mutex_);
    self->SetStateLocked(XenbusState::kInitWait);
  }
  // The initial event runs the handshake once for a frontend that is already further along.
  TRY(store.Watch(self->conn_, self->front_ + "/state", "state"));
  return device;
}

XenbusDevice::~XenbusDevice() {
  store_.Disconnect(conn_);  // no watch event runs after this
  MutexLock lock(mutex_);
  DisconnectLocked();
}

std::optional<XenbusState> XenbusDevice::ReadFrontendState() {
  auto value = store_.Read(conn_, 0, front_ + "/state");
  if (!value) return std::nullopt;  // gone: the frontend directory was removed
  uint32_t n = 0;
  auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
  if (ec != std::errc() || end != value->data() + value->size() ||
      n > uint32_t(XenbusState::kReconfigured))
    return XenbusState::kUnknown;  // guest-written garbage: treated as xenbus does, unknown
  return XenbusState(n);
}

void XenbusDevice::SetStateLocked(XenbusState state) {
  state_ = state;
  if (auto r = store_.Write(conn_, 0, back_ + "/state", std::to_string(uint32_t(state))); !r)
    std::fprintf(stderr, "xenbus %s: writing state: %s\n", back_.c_str(),
                 Describe(r.error()).c_str());
}

void XenbusDevice::DisconnectLocked() {
  if (!connected_) return;
  connected_ = false;
  driver_.Disconnect();
}

void XenbusDevice::OnFrontendChanged() {
  const std::optional<XenbusState> front = ReadFrontendState();
  bool remove = false;
  {
    MutexLock lock(mutex_);
    if (removed_) return;
    XenbusState front_state = front.value_or(XenbusState::kClosed);
    // A frontend that has not started using the device needs no closing handshake to unplug.
    if (unplugging_ && front_state == XenbusState::kInitialising)
      front_state = XenbusState::kClosed;
    switch (front_state) {
      case XenbusState::kInitialising:
        // The frontend starts over after closing (GRUB, then the OS): offer the device again.
        if (state_ == XenbusState::kClosed && !unplugging_) SetStateLocked(XenbusState::kInitWait);
        break;
      case XenbusState::kInitialised:
      case XenbusState::kConnected: {
        // Two quick writes may fire twice with the same value: connect once.
        if (connected_ || unplugging_ || state_ != XenbusState::kInitWait) break;
        const std::string front_dir = front_;
        auto read = [this, &front_dir](const std::string& key) -> std::optional<std::string> {
          auto value = store_.Read(conn_, 0, front_dir + "/" + key);
          if (!value) return std::nullopt;
          return std::move(*value);
        };
        if (auto r = driver_.Connect(read); !r) {
          std::fprintf(stderr, "xenbus %s: connecting: %s\n", back_.c_str(),
                       Describe(r.error()).c_str());
          (void)store_.Write(conn_, 0, back_ + "/error", r.error().message);
          SetStateLocked(XenbusState::kClosing);
          break;
        }
        connected_ = true;
        SetStateLocked(XenbusState::kConnected);
        break;
      }
      case XenbusState::kClosing:
        DisconnectLocked();
        SetStateLocked(XenbusState::kClosing);
        break;
      case XenbusState::kClosed:
      case XenbusState::kUnknown:
        // Closed, removed or unreadable: the frontend is not using the device.
        DisconnectLocked();
        if (state_ != XenbusState::kClosed) SetStateLocked(XenbusState::kClosed);
        if (unplugging_) {
          removed_ = true;
          remove = true;
        }
        break;
      default:
        break;  // InitWait/Reconfiguring are not frontend states for a vbd: ignored
    }
  }
  if (remove) {
    // Outside mutex_: removing the frontend directory fires our own watch (ignored: removed_).
    for (const std::string& dir : {front_, back_}) (void)store_.Rm(conn_, 0, dir);
    (void)store_.Unwatch(conn_, front_ + "/state", "state");
  }
}

Result<> XenbusDevice::RequestUnplug() {
  {
    MutexLock lock(mutex_);
    if (removed_) return {};
    unplugging_ = true;
    TRY(store_.Write(conn_, 0, back_ + "/online", "0"));
    if (state_ != XenbusState::kClosed) SetStateLocked(XenbusState::kClosing);
  }
  // A frontend that never connected (or already closed) will not answer: decide now.
  OnFrontendChanged();
  return {};
}

XenbusDevice::SavedState XenbusDevice::Saved() {
  MutexLock lock(mutex_);
  return SavedState{state_, connected_, unplugging_, removed_};
}

void XenbusDevice::RestoreState(const SavedState& saved) {
  MutexLock lock(mutex_);
  state_ = saved.state;
  connected_ = saved.connected;
  unplugging_ = saved.unplugging;
  removed_ = saved.removed;
}

bool XenbusDevice::removed() {
  MutexLock lock(mutex_);
  return removed_;
}

bool XenbusDevice::connected() {
  MutexLock lock(mutex_);
  return connected_;
}

XenbusState XenbusDevice::backend_state() {
  MutexLock lock(mutex_);
  return state_;
}

}  // namespace xenkvm::backends
