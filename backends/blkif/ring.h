// The backend end of one shared blkif ring (xen/include/public/io/ring.h): consumes requests,
// produces responses, and keeps the req_event/rsp_event protocol. The ring's pages are mapped
// grants that need not be contiguous on the host, so slots are copied page by page.
//
// Hostile indexes: a req_prod more than one ring ahead of our responses
// (RING_REQUEST_PROD_OVERFLOW) marks the ring broken: we stop consuming it for good (logged once),
// never loop or read outside it. Threads: one owner (the queue's I/O thread); not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "backends/blkif/grant_access.h"
#include "backends/blkif/protocol.h"

namespace xenkvm::blkif {

class BackRing {
 public:
  // A fresh ring (SHARED_RING_INIT: all indexes zero), as the frontend sets it up before
  // connecting. pages: the 2^order mapped ring pages in ring-ref order (writable); label names the
  // ring in logs. A restored ring goes on from `start`: every request before it was consumed and
  // answered (what consumed() said of a quiesced ring).
  BackRing(std::vector<GrantMapping> pages, Abi abi, const char* label, uint32_t start = 0);

  uint32_t size() const { return size_; }
  bool broken() const { return broken_; }
  // Requests consumed but not yet answered.
  uint32_t in_flight() const { return req_cons_ - rsp_prod_pvt_; }
  // Requests consumed so far (a free-running index; snapshots of a quiesced ring).
  uint32_t consumed() const { return req_cons_; }

  // The next request, or nothing when the ring is empty, broken, or a full ring of requests is
  // already in flight (RING_REQUEST_CONS_OVERFLOW).
  std::optional<Request> Next();
  // RING_FINAL_CHECK_FOR_REQUESTS: asks for a notification on the next request and returns
  // whether one arrived meanwhile.
  bool FinalCheckForRequests();
  // Queues a response in the next free slot (not yet visible to the guest).
  void PutResponse(uint64_t id, uint8_t operation, int16_t status);
  // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY: publishes queued responses; true if the guest asked
  // to be notified.
  bool PushResponses();

 private:
  uint32_t* Index(size_t offset) const;
  void CopyOut(size_t offset, uint8_t* dst, size_t len) const;
  void CopyIn(size_t offset, const uint8_t* src, size_t len);
  void Break(const char* why);

  std::vector<GrantMapping> pages_;
  Abi abi_;
  const char* label_;
  uint32_t size_;
  uint32_t req_cons_ = 0;
  uint32_t rsp_prod_pvt_ = 0;
  uint32_t rsp_pushed_ = 0;  // the rsp_prod we last published
  bool broken_ = false;
};

}  // namespace xenkvm::blkif
