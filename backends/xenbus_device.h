// The backend half of a xenbus PV device (xen/include/public/io/xenbus.h): the frontend and
// backend directories a toolstack writes, and the XenbusState handshake driven by a watch on
// the frontend's `state`, as Linux's xen-blkback/xenbus.c frontend_changed runs it.
//
// Backend states: Initialising -> InitWait (keys written) -> Connected (frontend Initialised or
// Connected, driver connected) -> Closing (frontend Closing, driver disconnected) -> Closed
// (frontend Closed) -> InitWait again when the frontend returns to Initialising (GRUB, then the
// OS, open the same disk one after the other). Hot-unplug: backend `online`=0 and Closing; once
// the frontend is Closed (or gone) the driver is disconnected and both directories removed.
//
// Threads: watch events run on whichever thread wrote the frontend's state (a guest's xenstore
// ring, a test). Lock: mutex_ guards the handshake state and serialises the driver's calls; it
// is taken inside Store callbacks (Store holds no lock then) and never held across a Store call
// that could fire this device's own watch (removing the frontend directory).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "xenstore/store.h"

namespace xenkvm::backends {

// xenbus.h enum xenbus_state.
enum class XenbusState : uint32_t {
  kUnknown = 0,
  kInitialising = 1,
  kInitWait = 2,
  kInitialised = 3,
  kConnected = 4,
  kClosing = 5,
  kClosed = 6,
  kReconfiguring = 7,
  kReconfigured = 8,
};

// The device-specific half (a blkif backend). Calls are serialised by the device.
class XenbusDriver {
 public:
  using ReadKey = std::function<std::optional<std::string>(const std::string& key)>;
  virtual ~XenbusDriver() = default;
  // The frontend is Initialised/Connected: read its keys (relative names, e.g. "ring-ref")
  // and connect. An error closes the device (backend Closing) with the message logged and
  // written to the backend's `error` node.
  virtual Result<> Connect(const ReadKey& frontend) = 0;
  // The frontend closes or the device goes away. Called only after a successful Connect.
  virtual void Disconnect() = 0;
};

struct XenbusDeviceConfig {
  xenstore::DomId domid = 1;  // the frontend's domain
  std::string kind = "vbd";
  uint32_t devid = 0;  // vbd: the virtual-device number (51712 for xvda)
  std::vector<std::pair<std::string, std::string>> frontend;  // besides backend/-id and state
  std::vector<std::pair<std::string, std::string>> backend;   // besides frontend/-id, online
};

class XenbusDevice {
 public:
  // Writes both directories as dom0 (xenstore::AddDevice), the backend keys, then backend
  // state InitWait, and starts watching the frontend's state.
  static Result<std::unique_ptr<XenbusDevice>> Create(xenstore::Store& store,
                                                      XenbusDeviceConfig config,
                                                      XenbusDriver& driver);
  // Disconnects the driver if connected; leaves the directories (the domain is going away).
  ~XenbusDevice();
  XenbusDevice(const XenbusDevice&) = delete;
  XenbusDevice& operator=(const XenbusDevice&) = delete;

  // Hot-unplug: asks the frontend to close (backend online=0, state Closing). The directories
  // disappear when the frontend has closed; removed() says when.
  Result<> RequestUnplug();
  bool removed();
  bool connected();
  XenbusState backend_state();
  const std::string& frontend_path() const { return front_; }

  // Snapshots: the handshake's state. The directories and the watch travel with the store;
  // RestoreState puts the rest back (the driver already reconnected if `connected`).
  struct SavedState {
    XenbusState state = XenbusState::kUnknown;
    bool connected = false;
    bool unplugging = false;
    bool removed = false;
  };
  SavedState Saved();
  void RestoreState(const SavedState& saved);
  const std::string& backend_path() const { return back_; }

 private:
  XenbusDevice(xenstore::Store& store, XenbusDeviceConfig config, XenbusDriver& driver);
  void OnFrontendChanged();
  void SetStateLocked(XenbusState state) XENKVM_REQUIRES(mutex_);
  void DisconnectLocked() XENKVM_REQUIRES(mutex_);
  std::optional<XenbusState> ReadFrontendState();

  xenstore::Store& store_;
  const XenbusDeviceConfig config_;
  XenbusDriver& driver_;
  const std::string front_;
  const std::string back_;
  xenstore::ConnId conn_ = 0;  // dom0's connection, set before the watch
  Mutex mutex_;
  XenbusState state_ XENKVM_GUARDED_BY(mutex_) = XenbusState::kInitialising;
  bool connected_ XENKVM_GUARDED_BY(mutex_) = false;
  bool unplugging_ XENKVM_GUARDED_BY(mutex_) = false;
  bool removed_ XENKVM_GUARDED_BY(mutex_) = false;
};

}  // namespace xenkvm::backends
