// The xenbus side of a vbd as data (xen/include/public/io/blkif.h, "Backend"/"Frontend" key
// lists): the keys the backend advertises, and the connection parameters parsed from the
// frontend's keys. Pure functions: the integrator reads and writes xenstore around them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "abi/result.h"
#include "backends/blkif/protocol.h"
#include "backends/blkif/request.h"

namespace xenkvm::blkif {

// What this backend offers for one disk.
struct DiskFeatures {
  uint64_t sectors = 0;  // disk size in 512-byte sectors
  uint32_t sector_size = 512;
  uint32_t physical_sector_size = 512;
  bool read_only = false;
  bool removable = false;
  bool cdrom = false;
  bool flush = true;
  bool barrier = true;
  bool discard = false;
  uint32_t discard_granularity = 4096;  // bytes
  uint32_t discard_alignment = 0;       // bytes
  bool discard_secure = false;
  uint32_t max_indirect_segments = 256;  // 0: no BLKIF_OP_INDIRECT; at most kMaxIndirectSegments
  uint32_t max_ring_page_order = kMaxRingPageOrder;
  uint32_t max_queues = 4;

  DiskLimits Limits() const;
};

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// The keys the backend writes into its directory (backend/vbd/<domid>/<vdev>/) before it moves
// to XenbusStateInitWait. Relative names; values as decimal strings.
KeyValues BackendKeys(const DiskFeatures& features);

struct QueueParams {
  std::vector<GrantRef> ring_refs;  // 2^ring_page_order refs
  uint32_t event_channel = 0;       // the frontend's port (the integrator binds interdomain)
};

struct ConnectionParams {
  Abi abi = Abi::k64;
  uint32_t ring_page_order = 0;
  std::vector<QueueParams> queues;  // multi-queue-num-queues entries (1 by default)
};

// Reads the frontend's keys (device/vbd/<vdev>/ relative names such as "ring-ref",
// "queue-1/event-channel") through `read`, which returns nothing for a missing key, and checks
// them against what was advertised. Called when the frontend reaches XenbusStateInitialised
// (or Connected). Errors: XEN_EINVAL with a message naming the key.
Result<ConnectionParams> ParseFrontendKeys(
    const std::function<std::optional<std::string>(const std::string&)>& read,
    const DiskFeatures& features);

}  // namespace xenkvm::blkif
