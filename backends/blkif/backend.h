// A blkif backend for one virtual disk (xen/include/public/io/blkif.h): the disk, what it
// advertises, and while connected one Queue (ring + I/O thread) per frontend queue.
// No xenstore and no KVM: the integrator feeds it the frontend's keys (xenbus_keys.h), a
// GrantAccess and a notify callback, and routes each queue's event channel to QueueEndpoint().
//
// Threads: Connect/Disconnect/Quiesce/Resume from one control thread; Stats() from any.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/blkif/disk.h"
#include "backends/blkif/queue.h"
#include "backends/blkif/stats.h"
#include "backends/blkif/xenbus_keys.h"

namespace xenkvm::blkif {

struct DiskOptions {
  std::string path;
  bool read_only = false;
  bool removable = false;
  uint32_t max_queues = 4;
  uint32_t max_indirect_segments = 256;
};

class BlkifBackend {
 public:
  // Opens the image and works out what to advertise (discard on regular files, sizes).
  static Result<std::unique_ptr<BlkifBackend>> Open(const DiskOptions& options);
  ~BlkifBackend();

  const DiskFeatures& features() const { return features_; }
  // The keys to write before switching to XenbusStateInitWait.
  KeyValues Keys() const { return BackendKeys(features_); }

  // Maps every queue's ring and starts its I/O thread. notify(q) raises queue q's interdomain
  // port toward the guest. Errors: a ring grant refused (XEN_EINVAL), already connected
  // (XEN_EBUSY).
  // A restored connection passes each queue's ring position (QuiescedPositions when saved) and
  // starts quiesced: Resume starts it once the rest of the machine is restored.
  Result<> Connect(const ConnectionParams& params, GrantAccess& grants,
                   std::function<void(uint32_t queue)> notify,
                   std::span<const uint32_t> start = {});
  // What the guest's send on queue q's port calls (EVTCHNOP_send -> evtchn::Backend).
  evtchn::Backend* QueueEndpoint(uint32_t queue);
  uint32_t num_queues() const { return uint32_t(queues_.size()); }

  // Drain in-flight I/O and take no new requests (snapshots), then go on.
  void Quiesce();
  void Resume();
  // Between Quiesce and Resume: each queue's ring position, for a snapshot.
  std::vector<uint32_t> QuiescedPositions() const;
  // Drains and drops the queues and unmaps the rings (frontend Closing/Closed); Connect may follow.
  void Disconnect();

  DiskStatsSnapshot Stats() const { return stats_.Snapshot(); }
  // The alignment O_DIRECT needs on this image, 0 if it goes through the page cache.
  uint32_t direct_alignment() const { return disk_.dio_align; }

 private:
  explicit BlkifBackend(Disk disk) : disk_(std::move(disk)) {}

  Disk disk_;
  DiskFeatures features_;
  DiskStats stats_;
  std::vector<std::string> labels_;
  std::vector<std::unique_ptr<Queue>> queues_;
};

}  // namespace xenkvm::blkif
