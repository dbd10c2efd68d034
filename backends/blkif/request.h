// Validation of one blkif request (xen/include/public/io/blkif.h) against the disk, at the one
// boundary where guest input enters the backend. Answers as Linux's blkback does: malformed or
// out-of-range requests and writes to a read-only disk get BLKIF_RSP_ERROR, operations the
// backend did not advertise get BLKIF_RSP_EOPNOTSUPP.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/blkif/grant_access.h"
#include "backends/blkif/protocol.h"

namespace xenkvm::blkif {

// What the backend advertised (xenbus_keys.h) and the disk's size, as validation needs them.
struct DiskLimits {
  uint64_t sectors = 0;  // 512-byte sectors
  bool read_only = false;
  bool flush = true;    // feature-flush-cache
  bool barrier = true;  // feature-barrier
  bool discard = false;
  bool discard_secure = false;
  uint32_t max_indirect_segments = 0;  // 0: BLKIF_OP_INDIRECT not advertised
};

// Upper bound for feature-max-indirect-segments: one iovec per segment (IOV_MAX), and no more
// than BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST pages of segments.
inline constexpr uint32_t kMaxIndirectSegments = 1024;

struct Segment {
  GrantRef gref;
  uint16_t offset;  // bytes into the granted page, a multiple of 512
  uint16_t length;  // bytes, 512..4096
};

enum class Op : uint8_t { kRead, kWrite, kFlush, kDiscard };

struct ParsedRequest {
  uint64_t id = 0;
  uint8_t operation = 0;  // echoed in the response
  Op op = Op::kRead;
  bool flush_first = false;  // flush (draining earlier requests) before the data, if any
  bool secure = false;       // secure discard
  uint64_t offset = 0;       // bytes on the disk
  uint64_t length = 0;       // bytes
  std::vector<Segment> segments;
};

// Fills `out` from `req`; returns BLKIF_RSP_OKAY or the status to answer with. Maps the indirect
// segment pages (read-only) through `grants` and copies them once. `out.segments` keeps its
// capacity between calls so a reused ParsedRequest does not allocate.
int16_t ParseRequest(const Request& req, const DiskLimits& limits, GrantAccess& grants,
                     ParsedRequest& out);

// Maps every data segment (writable for reads from disk); false if any grant is refused.
bool MapSegments(const ParsedRequest& req, GrantAccess& grants, std::vector<GrantMapping>& maps);

}  // namespace xenkvm::blkif
