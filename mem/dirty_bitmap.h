// A bitmap of guest pages for live migration, one bit per 4 KiB page, laid out as KVM's dirty
// log is (KVM_GET_DIRTY_LOG, Documentation/virt/kvm/api.rst: page i of a memslot is bit i % 64
// of 64-bit word i / 64). KVM's log is merged into it, and the VMM marks the pages it hands out
// host pointers to (GuestMemory), since KVM does not see writes through the VMM's own mapping.
//
// Threads: Mark/MarkRange from any thread (atomic word updates); everything else from the one
// thread that owns the migration.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace xenkvm::mem {

class DirtyBitmap {
 public:
  explicit DirtyBitmap(uint64_t pages);

  uint64_t pages() const { return pages_; }
  size_t words() const { return words_; }

  // Any thread. Pages past the end are ignored (the caller covers only part of the space).
  void Mark(uint64_t page);
  // The pages overlapping the byte range [addr, addr + len).
  void MarkBytes(uint64_t addr, uint64_t len);

  bool Test(uint64_t page) const;
  uint64_t Count() const;
  // ORs in a bitmap in KVM's layout (bits past pages() are dropped).
  void Merge(std::span<const uint64_t> words);
  void Merge(const DirtyBitmap& other);
  void Clear();
  // The set pages, ascending.
  std::vector<uint64_t> SetPages() const;

 private:
  uint64_t pages_;
  size_t words_;
  std::unique_ptr<std::atomic<uint64_t>[]> bits_;
};

}  // namespace xenkvm::mem
