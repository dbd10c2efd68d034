// Connecting a blkif disk: ring grants mapped per queue, one Queue thread each.
#include "backends/blkif/backend.h"

#include <algorithm>

namespace xenkvm::blkif {

Result<std::unique_ptr<BlkifBackend>> BlkifBackend::Open(const DiskOptions& options) {
  Disk disk = TRY(Disk::Open(options.path, options.read_only));
  std::unique_ptr<BlkifBackend> backend(new BlkifBackend(std::move(disk)));
  DiskFeatures& f = backend->features_;
  f.sectors = backend->disk_.size_bytes / kSectorSize;
  f.physical_sector_size = backend->disk_.physical_block_size;
  f.read_only = options.read_only;
  f.removable = options.removable;
  // Punching holes is what discard means for an image file (offered only where the file system
  // can: a discard that always fails would be worse than none); block devices keep it off until
  // we query their discard support.
  f.discard = backend->disk_.punch_hole;
  f.max_queues = std::max(options.max_queues, 1u);
  f.max_indirect_segments = std::min(options.max_indirect_segments, kMaxIndirectSegments);
  return backend;
}

BlkifBackend::~BlkifBackend() { Disconnect(); }

Result<> BlkifBackend::Connect(const ConnectionParams& params, GrantAccess& grants,
                               std::function<void(uint32_t)> notify,
                               std::span<const uint32_t> start) {
  if (!queues_.empty()) return Fail(XEN_EBUSY, "blkif: already connected");
  if (!start.empty() && start.size() != params.queues.size())
    return Fail(XEN_EINVAL, "blkif: ring positions do not match the queues");
  if (params.queues.empty() || params.queues.size() > features_.max_queues ||
      params.ring_page_order > std::min(features_.max_ring_page_order, kMaxRingPageOrder))
    return Fail(XEN_EINVAL, "blkif: connection parameters beyond what was advertised");
  labels_.clear();
  for (size_t q = 0; q < params.queues.size(); ++q) labels_.push_back("queue " + std::to_string(q));
  const DiskLimits limits = features_.Limits();
  std::vector<std::unique_ptr<Queue>> queues;
  for (uint32_t q = 0; q < params.queues.size(); ++q) {
    const QueueParams& qp = params.queues[q];
    if (qp.ring_refs.size() != (size_t{1} << params.ring_page_order))
      return Fail(XEN_EINVAL, "blkif: ring-ref count does not match ring-page-order");
    std::vector<GrantMapping> pages;
    for (GrantRef ref : qp.ring_refs) {
      auto page = grants.Map(ref, /*writable=*/true);
      if (!page) return Fail(XEN_EINVAL, "blkif: ring grant refused");
      pages.push_back(std::move(*page));
    }
    queues.push_back(std::make_unique<Queue>(
        disk_, limits, grants,
        BackRing(std::move(pages), params.abi, labels_[q].c_str(), start.empty() ? 0 : start[q]),
        [notify, q] { notify(q); }, stats_));
  }
  for (auto& queue : queues) TRY(queue->Start(/*quiesced=*/!start.empty()));
  queues_ = std::move(queues);
  return {};
}

evtchn::Backend* BlkifBackend::QueueEndpoint(uint32_t queue) {
  return queue < queues_.size() ? queues_[queue].get() : nullptr;
}

void BlkifBackend::Quiesce() {
  for (auto& queue : queues_) queue->Quiesce();
}

std::vector<uint32_t> BlkifBackend::QuiescedPositions() const {
  std::vector<uint32_t> positions;
  for (const auto& queue : queues_) positions.push_back(queue->QuiescedPosition());
  return positions;
}

void BlkifBackend::Resume() {
  for (auto& queue : queues_) queue->Resume();
}

void BlkifBackend::Disconnect() {
  for (auto& queue : queues_) queue->Stop();
  queues_.clear();
}

}  // namespace xenkvm::blkif
