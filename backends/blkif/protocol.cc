// Layout decoding for blkif requests/responses (xen/include/public/io/blkif.h), both ABIs.
#include "backends/blkif/protocol.h"

#include <cstring>

namespace xenkvm::blkif {
namespace {

template <class T>
T Load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

template <class Rw, class Discard, class Indirect>
Request Decode(const uint8_t* slot) {
  Request out;
  out.operation = slot[0];
  switch (out.operation) {
    case BLKIF_OP_DISCARD: {
      const auto d = Load<Discard>(slot);
      out.discard_flag = d.flag;
      out.id = d.id;
      out.sector_number = d.sector_number;
      out.nr_sectors = d.nr_sectors;
      break;
    }
    case BLKIF_OP_INDIRECT: {
      const auto in = Load<Indirect>(slot);
      out.indirect_op = in.indirect_op;
      out.nr_segments = in.nr_segments;
      out.id = in.id;
      out.sector_number = in.sector_number;
      std::memcpy(out.indirect_grefs.data(), in.indirect_grefs, sizeof(in.indirect_grefs));
      break;
    }
    default: {
      const auto rw = Load<Rw>(slot);
      out.nr_segments = rw.nr_segments;
      out.id = rw.id;
      out.sector_number = rw.sector_number;
      std::memcpy(out.seg.data(), rw.seg, sizeof(rw.seg));
      break;
    }
  }
  return out;
}

template <class Rsp>
size_t Encode(uint64_t id, uint8_t operation, int16_t status, uint8_t* slot) {
  Rsp rsp{};
  rsp.id = id;
  rsp.operation = operation;
  rsp.status = status;
  std::memcpy(slot, &rsp, sizeof(rsp));
  return sizeof(rsp);
}

}  // namespace

Request DecodeRequest(Abi abi, const uint8_t* slot) {
  return abi == Abi::k64
             ? Decode<abi64::Request, abi64::DiscardRequest, abi64::IndirectRequest>(slot)
             : Decode<abi32::Request, abi32::DiscardRequest, abi32::IndirectRequest>(slot);
}

size_t EncodeResponse(Abi abi, uint64_t id, uint8_t operation, int16_t status, uint8_t* slot) {
  return abi == Abi::k64 ? Encode<abi64::Response>(id, operation, status, slot)
                         : Encode<abi32::Response>(id, operation, status, slot);
}

}  // namespace xenkvm::blkif
