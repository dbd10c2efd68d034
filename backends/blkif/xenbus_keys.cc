// Backend keys and frontend connection parameters, as blkif.h documents them (the same keys
// blkback and QEMU's xen-block use).
#include "backends/blkif/xenbus_keys.h"

#include <algorithm>
#include <charconv>

extern "C" {
#include <xen/io/protocols.h>
}

namespace xenkvm::blkif {
namespace {

std::optional<uint64_t> ParseU64(const std::optional<std::string>& text) {
  if (!text || text->empty()) return std::nullopt;
  uint64_t value = 0;
  const char* end = text->data() + text->size();
  auto [ptr, ec] = std::from_chars(text->data(), end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

}  // namespace

DiskLimits DiskFeatures::Limits() const {
  return DiskLimits{.sectors = sectors,
                    .read_only = read_only,
                    .flush = flush,
                    .barrier = barrier,
                    .discard = discard,
                    .discard_secure = discard && discard_secure,
                    .max_indirect_segments = std::min(max_indirect_segments, kMaxIndirectSegments)};
}

KeyValues BackendKeys(const DiskFeatures& f) {
  const auto num = [](uint64_t v) { return std::to_string(v); };
  const uint32_t info = (f.cdrom ? VDISK_CDROM : 0u) | (f.removable ? VDISK_REMOVABLE : 0u) |
                        (f.read_only ? VDISK_READONLY : 0u);
  KeyValues kv = {
      {"sectors", num(f.sectors)},
      {"sector-size", num(f.sector_size)},
      {"physical-sector-size", num(f.physical_sector_size)},
      {"info", num(info)},
      {"mode", f.read_only ? "r" : "w"},
      {"feature-flush-cache", f.flush ? "1" : "0"},
      {"feature-barrier", f.barrier ? "1" : "0"},
      {"max-ring-page-order", num(std::min(f.max_ring_page_order, kMaxRingPageOrder))},
      {"multi-queue-max-queues", num(std::max(f.max_queues, 1u))},
  };
  if (f.discard && !f.read_only) {
    kv.emplace_back("feature-discard", "1");
    kv.emplace_back("discard-granularity", num(f.discard_granularity));
    kv.emplace_back("discard-alignment", num(f.discard_alignment));
    kv.emplace_back("discard-secure", f.discard_secure ? "1" : "0");
  }
  // Absent (not "0") when indirect requests are not offered: blkif.h asks for that.
  if (f.Limits().max_indirect_segments > 0)
    kv.emplace_back("feature-max-indirect-segments", num(f.Limits().max_indirect_segments));
  return kv;
}

Result<ConnectionParams> ParseFrontendKeys(
    const std::function<std::optional<std::string>(const std::string&)>& read,
    const DiskFeatures& f) {
  ConnectionParams params;

  const auto protocol = read("protocol");
  if (!protocol || *protocol == XEN_IO_PROTO_ABI_X86_64) {
    params.abi = Abi::k64;  // absent: the backend's native layout
  } else if (*protocol == XEN_IO_PROTO_ABI_X86_32) {
    params.abi = Abi::k32;
  } else {
    return Fail(XEN_EINVAL, "protocol: unsupported ABI");
  }

  uint64_t queues = 1;
  if (auto text = read("multi-queue-num-queues")) {
    auto value = ParseU64(text);
    if (!value || *value == 0 || *value > std::max(f.max_queues, 1u))
      return Fail(XEN_EINVAL, "multi-queue-num-queues: out of range");
    queues = *value;
  }

  if (auto text = read("ring-page-order")) {
    auto value = ParseU64(text);
    if (!value || *value > std::min(f.max_ring_page_order, kMaxRingPageOrder))
      return Fail(XEN_EINVAL, "ring-page-order: out of range");
    params.ring_page_order = uint32_t(*value);
  }

  for (uint64_t q = 0; q < queues; ++q) {
    // One queue: keys at the top; several: under queue-<n>/.
    const std::string dir = queues == 1 ? "" : "queue-" + std::to_string(q) + "/";
    QueueParams queue;
    const uint32_t pages = 1u << params.ring_page_order;
    for (uint32_t i = 0; i < pages; ++i) {
      const std::string key =
          params.ring_page_order == 0 ? dir + "ring-ref" : dir + "ring-ref" + std::to_string(i);
      auto ref = ParseU64(read(key));
      if (!ref || *ref > UINT32_MAX) return Fail(XEN_EINVAL, "ring-ref: missing or malformed");
      queue.ring_refs.push_back(GrantRef(*ref));
    }
    auto port = ParseU64(read(dir + "event-channel"));
    if (!port || *port == 0 || *port > UINT32_MAX)
      return Fail(XEN_EINVAL, "event-channel: missing or malformed");
    queue.event_channel = uint32_t(*port);
    params.queues.push_back(std::move(queue));
  }
  return params;
}

}  // namespace xenkvm::blkif
