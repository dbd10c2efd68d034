// Test doubles for the blkif backend: grants over plain memory (with hostile cases: unknown
// refs, read-only grants) and a synthetic frontend that drives a ring as blkfront would, in
// either layout. Shared by the unit tests, the fuzz harness and the benchmark.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "abi/sync.h"
#include "backends/blkif/grant_access.h"
#include "backends/blkif/protocol.h"

namespace xenkvm::blkif::testing {

class FakeGrants : public GrantAccess {
 public:
  explicit FakeGrants(uint32_t pages)
      : pages_(pages),
        memory_(static_cast<uint8_t*>(std::aligned_alloc(kPageSize, pages * kPageSize))) {
    std::memset(memory_, 0, pages * kPageSize);
  }
  ~FakeGrants() override { std::free(memory_); }

  uint8_t* Page(uint32_t page) { return memory_ + size_t(page) * kPageSize; }
  // Grants `page` to the backend; refs start at 8 as Xen reserves the first ones.
  GrantRef Grant(uint32_t page, bool read_only = false) {
    MutexLock lock(mutex_);
    entries_.push_back(Entry{page, read_only, true});
    return GrantRef(entries_.size() - 1 + kFirstRef);
  }
  void Revoke(GrantRef ref) {
    MutexLock lock(mutex_);
    if (ref >= kFirstRef && ref - kFirstRef < entries_.size())
      entries_[ref - kFirstRef].valid = false;
  }
  int active_mappings() const { return active_.load(); }
  uint64_t maps() const { return maps_.load(); }

  Result<GrantMapping> Map(GrantRef ref, bool writable) override {
    uint32_t page;
    {
      MutexLock lock(mutex_);
      if (ref < kFirstRef || ref - kFirstRef >= entries_.size() || !entries_[ref - kFirstRef].valid)
        return Fail(XEN_EINVAL, "bad grant ref");
      const Entry& e = entries_[ref - kFirstRef];
      if (writable && e.read_only) return Fail(XEN_EPERM, "read-only grant");
      if (e.page >= pages_) return Fail(XEN_EFAULT, "frame outside memory");
      page = e.page;
    }
    active_.fetch_add(1);
    maps_.fetch_add(1, std::memory_order_relaxed);
    return GrantMapping(this, std::span<uint8_t, kPageSize>(Page(page), kPageSize), ref);
  }

 protected:
  void Release(uintptr_t) override { active_.fetch_sub(1); }

 private:
  static constexpr GrantRef kFirstRef = 8;
  struct Entry {
    uint32_t page;
    bool read_only;
    bool valid;
  };
  uint32_t pages_;
  uint8_t* memory_;
  Mutex mutex_;
  std::vector<Entry> entries_ XENKVM_GUARDED_BY(mutex_);
  std::atomic<int> active_{0};
  std::atomic<uint64_t> maps_{0};
};

// The frontend end of one ring (blkfront's side of io/ring.h). Its pages are taken from the
// fake memory in reverse order so the backend cannot rely on them being contiguous.
class SyntheticFrontend {
 public:
  SyntheticFrontend(FakeGrants& grants, uint32_t first_page, Abi abi, uint32_t order)
      : abi_(abi), size_(RingEntries(abi, order)) {
    const uint32_t pages = 1u << order;
    for (uint32_t i = 0; i < pages; ++i) {
      pages_.push_back(grants.Page(first_page + pages - 1 - i));
      std::memset(pages_.back(), 0, kPageSize);
      refs_.push_back(grants.Grant(first_page + pages - 1 - i));
    }
    Index(4)->store(1);   // req_event
    Index(12)->store(1);  // rsp_event
  }

  const std::vector<GrantRef>& ring_refs() const { return refs_; }
  uint32_t size() const { return size_; }
  uint32_t free_slots() const { return size_ - (req_prod_pvt_ - rsp_cons_); }

  // The notify callback the backend calls for this ring.
  void Notified() {
    notifications_.fetch_add(1);
    notifications_.notify_all();
  }
  uint32_t notifications() const { return notifications_.load(); }

  // Queues one request (any layout struct of the right ABI) without publishing it.
  template <class T>
  void Put(const T& request) {
    static_assert(sizeof(T) <= sizeof(abi64::Request));
    alignas(8) uint8_t slot[sizeof(abi64::Request)] = {};
    std::memcpy(slot, &request, sizeof(T));
    Copy(kRingHeaderSize + size_t(req_prod_pvt_ & (size_ - 1)) * EntrySize(abi_), slot,
         EntrySize(abi_), true);
    ++req_prod_pvt_;
  }
  // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
  bool Push() {
    const uint32_t old_prod = Index(0)->load(std::memory_order_relaxed);
    Index(0)->store(req_prod_pvt_, std::memory_order_seq_cst);
    const uint32_t event = Index(4)->load(std::memory_order_seq_cst);
    return uint32_t(req_prod_pvt_ - event) < uint32_t(req_prod_pvt_ - old_prod);
  }
  // Hostile: set req_prod to anything.
  void SetReqProd(uint32_t value) { Index(0)->store(value, std::memory_order_release); }

  struct Response {
    uint64_t id;
    uint8_t operation;
    int16_t status;
  };
  // Takes every published response (RING_FINAL_CHECK_FOR_RESPONSES re-arms rsp_event).
  void Collect(std::vector<Response>& out) {
    for (;;) {
      const uint32_t prod = Index(8)->load(std::memory_order_acquire);
      while (rsp_cons_ != prod) {
        alignas(8) uint8_t slot[sizeof(abi64::Response)];
        const size_t n = abi_ == Abi::k64 ? sizeof(abi64::Response) : sizeof(abi32::Response);
        Copy(kRingHeaderSize + size_t(rsp_cons_ & (size_ - 1)) * EntrySize(abi_), slot, n, false);
        if (abi_ == Abi::k64) {
          abi64::Response r;
          std::memcpy(&r, slot, sizeof(r));
          out.push_back({r.id, r.operation, r.status});
        } else {
          abi32::Response r;
          std::memcpy(&r, slot, sizeof(r));
          out.push_back({r.id, r.operation, r.status});
        }
        ++rsp_cons_;
      }
      Index(12)->store(rsp_cons_ + 1, std::memory_order_seq_cst);
      if (Index(8)->load(std::memory_order_seq_cst) == rsp_cons_) return;
    }
  }
  // Collects until `count` responses are in `out` or 20 s pass (then the test fails on count).
  void WaitFor(std::vector<Response>& out, size_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      const uint32_t seen = notifications_.load();
      Collect(out);
      if (out.size() >= count || std::chrono::steady_clock::now() > deadline) return;
      // Notifications wake us; the timed poll covers a lost one so a test fails instead of hanging.
      for (int i = 0; i < 100 && notifications_.load() == seen; ++i)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  // Blocks until the backend notifies after `seen` (benchmark path: no polling).
  void WaitNotification(uint32_t seen) { notifications_.wait(seen); }

 private:
  struct AtomicIndex {
    std::atomic_ref<uint32_t> ref;
    std::atomic_ref<uint32_t>* operator->() { return &ref; }
  };
  AtomicIndex Index(size_t offset) const {
    return AtomicIndex{std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(pages_[0] + offset))};
  }
  void Copy(size_t offset, uint8_t* buf, size_t len, bool to_ring) {
    while (len > 0) {
      const size_t in_page = offset % kPageSize;
      const size_t n = std::min(len, kPageSize - in_page);
      uint8_t* ring = pages_[offset / kPageSize] + in_page;
      if (to_ring) {
        std::memcpy(ring, buf, n);
      } else {
        std::memcpy(buf, ring, n);
      }
      offset += n, buf += n, len -= n;
    }
  }

  Abi abi_;
  uint32_t size_;
  std::vector<uint8_t*> pages_;
  std::vector<GrantRef> refs_;
  uint32_t req_prod_pvt_ = 0;
  uint32_t rsp_cons_ = 0;
  std::atomic<uint32_t> notifications_{0};
};

}  // namespace xenkvm::blkif::testing
