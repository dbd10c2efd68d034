// Backend ring operations with the barriers ring.h prescribes, over non-contiguous page mappings.
#include "backends/blkif/ring.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

namespace xenkvm::blkif {
namespace {
constexpr size_t kReqProd = 0, kReqEvent = 4, kRspProd = 8, kRspEvent = 12;
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free);
}  // namespace

BackRing::BackRing(std::vector<GrantMapping> pages, Abi abi, const char* label, uint32_t start)
    : pages_(std::move(pages)),
      abi_(abi),
      label_(label),
      req_cons_(start),
      rsp_prod_pvt_(start),
      rsp_pushed_(start) {
  uint32_t order = 0;
  while ((size_t{1} << order) < pages_.size()) ++order;
  size_ = RingEntries(abi, order);
}

uint32_t* BackRing::Index(size_t offset) const {
  return reinterpret_cast<uint32_t*>(pages_[0].data() + offset);
}

void BackRing::CopyOut(size_t offset, uint8_t* dst, size_t len) const {
  while (len > 0) {
    const size_t in_page = offset % kPageSize;
    const size_t n = std::min(len, kPageSize - in_page);
    std::memcpy(dst, pages_[offset / kPageSize].data() + in_page, n);
    offset += n, dst += n, len -= n;
  }
}

void BackRing::CopyIn(size_t offset, const uint8_t* src, size_t len) {
  while (len > 0) {
    const size_t in_page = offset % kPageSize;
    const size_t n = std::min(len, kPageSize - in_page);
    std::memcpy(pages_[offset / kPageSize].data() + in_page, src, n);
    offset += n, src += n, len -= n;
  }
}

void BackRing::Break(const char* why) {
  if (!broken_) std::fprintf(stderr, "blkif %s: %s; ring stopped\n", label_, why);
  broken_ = true;
}

std::optional<Request> BackRing::Next() {
  if (broken_) return std::nullopt;
  const uint32_t prod = std::atomic_ref(*Index(kReqProd)).load(std::memory_order_acquire);
  if (prod - rsp_prod_pvt_ > size_) {
    Break("req_prod beyond the ring");
    return std::nullopt;
  }
  if (prod == req_cons_ || req_cons_ - rsp_prod_pvt_ >= size_) return std::nullopt;
  const size_t entry = EntrySize(abi_);
  alignas(8) uint8_t slot[sizeof(abi64::Request)];
  CopyOut(kRingHeaderSize + size_t(req_cons_ & (size_ - 1)) * entry, slot, entry);
  ++req_cons_;
  return DecodeRequest(abi_, slot);
}

bool BackRing::FinalCheckForRequests() {
  if (broken_) return false;
  // seq_cst store then seq_cst load: the full barrier ring.h puts between them (xchg on x86).
  std::atomic_ref(*Index(kReqEvent)).store(req_cons_ + 1, std::memory_order_seq_cst);
  return std::atomic_ref(*Index(kReqProd)).load(std::memory_order_seq_cst) != req_cons_;
}

void BackRing::PutResponse(uint64_t id, uint8_t operation, int16_t status) {
  alignas(8) uint8_t slot[sizeof(abi64::Response)];
  const size_t n = EncodeResponse(abi_, id, operation, status, slot);
  CopyIn(kRingHeaderSize + size_t(rsp_prod_pvt_ & (size_ - 1)) * EntrySize(abi_), slot, n);
  ++rsp_prod_pvt_;
}

bool BackRing::PushResponses() {
  auto rsp_prod = std::atomic_ref(*Index(kRspProd));
  // Our own copy of the last published index: the guest may scribble on rsp_prod.
  const uint32_t old_prod = rsp_pushed_;
  const uint32_t new_prod = rsp_prod_pvt_;
  if (old_prod == new_prod) return false;
  rsp_pushed_ = new_prod;
  rsp_prod.store(new_prod, std::memory_order_seq_cst);  // responses visible, then read rsp_event
  const uint32_t event = std::atomic_ref(*Index(kRspEvent)).load(std::memory_order_seq_cst);
  return uint32_t(new_prod - event) < uint32_t(new_prod - old_prod);
}

}  // namespace xenkvm::blkif
