// WireConnection::Save / Restore: the xs_wire stream's state between the ring and the store
// (docs/snapshots.md): the bytes of a request read so far, and the replies and watch events
// queued for the guest in order, each a whole xsd_sockmsg (header + payload).
#include <cstring>

#include "xenstore/wire.h"

namespace xenkvm::xenstore {

namespace {
constexpr uint32_t kMaxQueued = 1u << 20;  // messages; the bytes left bound it too
}

void WireConnection::Save(snapshot::Encoder& out) {
  out.Raw(std::as_bytes(std::span(header_bytes_)));
  out.U32(uint32_t(header_used_));
  out.String(header_used_ == sizeof(xsd_sockmsg) ? std::string_view(payload_) : "");
  out.Bool(broken_);
  MutexLock lock(out_mutex_);
  out.U32(uint32_t(out_.size()));
  for (const Out& o : out_) {
    out.String(o.bytes);
    out.Bool(o.reply);
  }
  out.U32(uint32_t(out_offset_));
}

Result<> WireConnection::Restore(snapshot::Decoder& in) {
  char header_bytes[sizeof(xsd_sockmsg)];
  in.Raw(std::as_writable_bytes(std::span(header_bytes)));
  const uint32_t header_used = in.U32();
  std::string payload = in.String(XENSTORE_PAYLOAD_MAX);
  const bool broken = in.Bool();
  std::deque<Out> queued(in.Count(kMaxQueued, 5));
  size_t bytes = 0;
  uint32_t replies = 0;
  for (Out& o : queued) {
    o.bytes = in.String(sizeof(xsd_sockmsg) + XENSTORE_PAYLOAD_MAX);
    o.reply = in.Bool();
    xsd_sockmsg header{};
    if (o.bytes.size() >= sizeof(header)) std::memcpy(&header, o.bytes.data(), sizeof(header));
    if (o.bytes.size() < sizeof(header) || header.len != o.bytes.size() - sizeof(header) ||
        o.reply == (header.type == XS_WATCH_EVENT))
      in.Invalid("snapshot: bad queued xenstore message");
    bytes += o.bytes.size();
    replies += o.reply;
  }
  const uint32_t offset = in.U32();
  TRY(in.Finish());
  if (header_used > sizeof(xsd_sockmsg))
    return snapshot::Corrupt("snapshot: bad xenstore request header");
  if (header_used == sizeof(xsd_sockmsg)) {
    xsd_sockmsg header;
    std::memcpy(&header, header_bytes, sizeof(header));
    // A whole header with its payload incomplete (a complete one was handled when it came).
    if (header.len > XENSTORE_PAYLOAD_MAX || payload.size() >= header.len)
      return snapshot::Corrupt("snapshot: bad half-read xenstore request");
  } else if (!payload.empty()) {
    return snapshot::Corrupt("snapshot: bad half-read xenstore request");
  }
  if (queued.empty() ? offset != 0 : offset >= queued.front().bytes.size())
    return snapshot::Corrupt("snapshot: bad xenstore reply position");

  std::memcpy(header_bytes_, header_bytes, sizeof(header_bytes));
  header_used_ = header_used;
  payload_ = std::move(payload);
  broken_ = broken;
  MutexLock lock(out_mutex_);
  out_ = std::move(queued);
  out_offset_ = offset;
  out_bytes_ = bytes;
  outstanding_ = replies;
  return {};
}

}  // namespace xenkvm::xenstore
