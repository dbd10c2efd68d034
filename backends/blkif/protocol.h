// The blkif wire formats (xen/include/public/io/blkif.h, io/ring.h) in both layouts a frontend
// may use (`protocol` = x86_64-abi or x86_32-abi), and the layout-independent Request the rest
// of the backend works with. The 64-bit layout is Xen's own struct; the 32-bit one is its
// i386 twin (8-byte fields aligned to 4), checked by size and offset below.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "abi/xen.h"  // first: it fixes __XEN_INTERFACE_VERSION__ for every public header

extern "C" {
#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/xen.h>
}

namespace xenkvm::blkif {

enum class Abi : uint8_t { k64, k32 };

// Ring header: req_prod, req_event, rsp_prod, rsp_event, then padding to 64 bytes.
inline constexpr size_t kRingHeaderSize = 64;
inline constexpr size_t kSectorSize = 512;  // blkif sector_number/first_sect unit
inline constexpr uint32_t kSectorsPerPage = 4096 / kSectorSize;
inline constexpr uint32_t kSegmentsPerIndirectPage = 4096 / sizeof(blkif_request_segment);
inline constexpr uint32_t kMaxRingPageOrder = 4;  // as Linux's XENBUS_MAX_RING_GRANT_ORDER

namespace abi32 {
#pragma pack(push, 4)
struct Request {
  uint8_t operation;
  uint8_t nr_segments;
  uint16_t handle;
  uint64_t id;
  uint64_t sector_number;
  blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};
struct DiscardRequest {
  uint8_t operation;
  uint8_t flag;
  uint16_t handle;
  uint64_t id;
  uint64_t sector_number;
  uint64_t nr_sectors;
};
struct IndirectRequest {
  uint8_t operation;
  uint8_t indirect_op;
  uint16_t nr_segments;
  uint64_t id;
  uint64_t sector_number;
  uint16_t handle;
  uint16_t pad0;
  grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
  uint64_t pad;
};
struct Response {
  uint64_t id;
  uint8_t operation;
  uint8_t pad0;
  int16_t status;
};
#pragma pack(pop)
static_assert(sizeof(Request) == 108 && offsetof(Request, id) == 4 &&
              offsetof(Request, sector_number) == 12 && offsetof(Request, seg) == 20);
static_assert(sizeof(DiscardRequest) == 28 && offsetof(DiscardRequest, nr_sectors) == 20);
static_assert(sizeof(IndirectRequest) == 64 && offsetof(IndirectRequest, handle) == 20 &&
              offsetof(IndirectRequest, indirect_grefs) == 24);
static_assert(sizeof(Response) == 12 && offsetof(Response, status) == 10);
}  // namespace abi32

namespace abi64 {
using Request = blkif_request;
using DiscardRequest = blkif_request_discard;
using IndirectRequest = blkif_request_indirect;
using Response = blkif_response;
static_assert(sizeof(Request) == 112 && offsetof(Request, seg) == 24);
static_assert(sizeof(DiscardRequest) == 32 && offsetof(DiscardRequest, nr_sectors) == 24);
static_assert(sizeof(IndirectRequest) == 64 && offsetof(IndirectRequest, indirect_grefs) == 28);
static_assert(sizeof(Response) == 16 && offsetof(Response, status) == 10);
}  // namespace abi64

// Size of one ring slot (a union of request and response), per layout.
constexpr size_t EntrySize(Abi abi) {
  return abi == Abi::k64 ? sizeof(abi64::Request) : sizeof(abi32::Request);
}

// Entries in a ring of 2^order pages: the largest power of two that fits (__CONST_RING_SIZE).
constexpr uint32_t RingEntries(Abi abi, uint32_t order) {
  const size_t fit = ((size_t{4096} << order) - kRingHeaderSize) / EntrySize(abi);
  uint32_t n = 1;
  while (size_t{n} * 2 <= fit) n *= 2;
  return n;
}
static_assert(RingEntries(Abi::k64, 0) == 32 && RingEntries(Abi::k32, 0) == 32);

// A request copied out of the ring once (no second fetch from guest memory), layout-free.
struct Request {
  uint8_t operation = 0;
  uint8_t indirect_op = 0;   // BLKIF_OP_INDIRECT only
  uint8_t discard_flag = 0;  // BLKIF_OP_DISCARD only
  uint16_t nr_segments = 0;  // u8 on the wire for direct requests, u16 for indirect
  uint64_t id = 0;
  uint64_t sector_number = 0;
  uint64_t nr_sectors = 0;  // BLKIF_OP_DISCARD only
  std::array<blkif_request_segment, BLKIF_MAX_SEGMENTS_PER_REQUEST> seg{};
  std::array<grant_ref_t, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST> indirect_grefs{};
};

// Decodes one ring slot (EntrySize(abi) bytes) of either layout.
Request DecodeRequest(Abi abi, const uint8_t* slot);
// Encodes a response into a ring slot; returns the bytes written.
size_t EncodeResponse(Abi abi, uint64_t id, uint8_t operation, int16_t status, uint8_t* slot);

}  // namespace xenkvm::blkif
