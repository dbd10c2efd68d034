// Request validation; the rules follow blkif.h and the answers blkback gives (docs/block.md).
#include "backends/blkif/request.h"

#include <cstring>

namespace xenkvm::blkif {
namespace {

bool AddSegment(const blkif_request_segment& seg, ParsedRequest& out) {
  if (seg.last_sect >= kSectorsPerPage || seg.last_sect < seg.first_sect) return false;
  const uint32_t sectors = uint32_t(seg.last_sect) - seg.first_sect + 1;
  out.segments.push_back(
      Segment{seg.gref, uint16_t(seg.first_sect * kSectorSize), uint16_t(sectors * kSectorSize)});
  out.length += sectors * kSectorSize;
  return true;
}

// Sector range [sector, sector + bytes/512) inside the disk, without overflow.
bool InsideDisk(uint64_t sector, uint64_t sectors, uint64_t disk_sectors) {
  return sector <= disk_sectors && sectors <= disk_sectors - sector;
}

int16_t ParseIndirect(const Request& req, const DiskLimits& limits, GrantAccess& grants,
                      ParsedRequest& out) {
  if (limits.max_indirect_segments == 0) return BLKIF_RSP_EOPNOTSUPP;
  if (req.indirect_op == BLKIF_OP_READ) {
    out.op = Op::kRead;
  } else if (req.indirect_op == BLKIF_OP_WRITE) {
    out.op = Op::kWrite;
  } else {
    return BLKIF_RSP_ERROR;
  }
  const uint32_t nseg = req.nr_segments;
  if (nseg == 0 || nseg > limits.max_indirect_segments) return BLKIF_RSP_ERROR;
  const uint32_t pages = (nseg + kSegmentsPerIndirectPage - 1) / kSegmentsPerIndirectPage;
  for (uint32_t p = 0; p < pages; ++p) {
    auto map = grants.Map(req.indirect_grefs[p], /*writable=*/false);
    if (!map) return BLKIF_RSP_ERROR;
    const uint32_t first = p * kSegmentsPerIndirectPage;
    const uint32_t count = std::min(nseg - first, kSegmentsPerIndirectPage);
    for (uint32_t i = 0; i < count; ++i) {
      blkif_request_segment seg;  // copied once: the guest may change the page meanwhile
      std::memcpy(&seg, map->data() + i * sizeof(seg), sizeof(seg));
      if (!AddSegment(seg, out)) return BLKIF_RSP_ERROR;
    }
  }
  return BLKIF_RSP_OKAY;
}

}  // namespace

int16_t ParseRequest(const Request& req, const DiskLimits& limits, GrantAccess& grants,
                     ParsedRequest& out) {
  out.id = req.id;
  // The response names the operation done: an indirect request's indirect_op, as blkback
  // answers (Linux's blkfront drops the disk on a response saying BLKIF_OP_INDIRECT).
  out.operation = req.operation == BLKIF_OP_INDIRECT ? req.indirect_op : req.operation;
  out.flush_first = false;
  out.secure = false;
  out.length = 0;
  out.offset = 0;
  out.segments.clear();

  switch (req.operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
    case BLKIF_OP_FLUSH_DISKCACHE:
    case BLKIF_OP_WRITE_BARRIER: {
      if (req.operation == BLKIF_OP_FLUSH_DISKCACHE && !limits.flush) return BLKIF_RSP_EOPNOTSUPP;
      if (req.operation == BLKIF_OP_WRITE_BARRIER && !limits.barrier) return BLKIF_RSP_EOPNOTSUPP;
      const bool flush = req.operation >= BLKIF_OP_WRITE_BARRIER;
      out.op = req.operation == BLKIF_OP_READ ? Op::kRead : Op::kWrite;
      out.flush_first = flush;
      // A flush alone carries no segments; every other request carries 1..11.
      if ((req.nr_segments == 0 && !flush) || req.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST)
        return BLKIF_RSP_ERROR;
      if (req.nr_segments == 0) out.op = Op::kFlush;
      for (uint32_t i = 0; i < req.nr_segments; ++i)
        if (!AddSegment(req.seg[i], out)) return BLKIF_RSP_ERROR;
      break;
    }
    case BLKIF_OP_INDIRECT: {
      const int16_t status = ParseIndirect(req, limits, grants, out);
      if (status != BLKIF_RSP_OKAY) return status;
      break;
    }
    case BLKIF_OP_DISCARD: {
      if (!limits.discard) return BLKIF_RSP_EOPNOTSUPP;
      out.op = Op::kDiscard;
      // The secure flag is ignored unless discard-secure was advertised (blkif.h).
      out.secure = limits.discard_secure && (req.discard_flag & BLKIF_DISCARD_SECURE) != 0;
      if (req.nr_sectors > UINT64_MAX / kSectorSize) return BLKIF_RSP_ERROR;
      out.length = req.nr_sectors * kSectorSize;
      break;
    }
    default:
      return BLKIF_RSP_EOPNOTSUPP;
  }

  if (out.op != Op::kRead && limits.read_only) return BLKIF_RSP_ERROR;
  // A flush alone names no sectors; blkback checks the range only when there are some.
  if (out.length != 0 && !InsideDisk(req.sector_number, out.length / kSectorSize, limits.sectors))
    return BLKIF_RSP_ERROR;
  out.offset = req.sector_number * kSectorSize;
  return BLKIF_RSP_OKAY;
}

bool MapSegments(const ParsedRequest& req, GrantAccess& grants, std::vector<GrantMapping>& maps) {
  maps.clear();
  const bool writable = req.op == Op::kRead;
  for (const Segment& seg : req.segments) {
    auto map = grants.Map(seg.gref, writable);
    if (!map) {
      maps.clear();
      return false;
    }
    maps.push_back(std::move(*map));
  }
  return true;
}

}  // namespace xenkvm::blkif
