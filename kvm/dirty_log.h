// KVM's dirty page log for one memslot (Documentation/virt/kvm/api.rst: KVM_MEM_LOG_DIRTY_PAGES,
// KVM_GET_DIRTY_LOG, and KVM_CLEAR_DIRTY_LOG with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2), on for as
// long as a DirtyLog lives. It records the guest's writes (and KVM's own writes to guest
// memory); writes the VMM makes through its own mapping are not in it: the caller tracks
// those (mem::GuestMemory::TrackTranslations).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "abi/result.h"
#include "kvm/vm.h"

namespace xenkvm::kvm {

// Threads: one owner (the migration's thread). KVM allows the memslot's flags to change and the
// log to be read while vCPUs run.
class DirtyLog {
 public:
  // Re-registers `slot` (same place, same memory) with KVM_MEM_LOG_DIRTY_PAGES. With
  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_GET_DIRTY_LOG stops re-protecting pages and Fetch
  // re-protects exactly the dirty ones with KVM_CLEAR_DIRTY_LOG.
  static Result<DirtyLog> Start(Vm& vm, uint32_t slot, uint64_t gpa, uint64_t size, void* host);
  DirtyLog(DirtyLog&& other) noexcept;
  DirtyLog& operator=(DirtyLog&&) = delete;
  ~DirtyLog();  // logging off again (the memslot re-registered without the flag)

  // The pages the guest wrote since Start or the previous Fetch, in KVM's layout (page i is bit
  // i % 64 of word i / 64), logging re-armed for them. Valid until the next call.
  Result<std::span<const uint64_t>> Fetch();
  bool manual_protect() const { return manual_protect_; }

 private:
  DirtyLog(Vm& vm, uint32_t slot, uint64_t gpa, uint64_t size, void* host, bool manual)
      : vm_(&vm),
        slot_(slot),
        gpa_(gpa),
        size_(size),
        host_(host),
        manual_protect_(manual),
        bitmap_((size / 4096 + 63) / 64) {}

  Vm* vm_;  // nullptr once moved from
  uint32_t slot_;
  uint64_t gpa_;
  uint64_t size_;
  void* host_;
  bool manual_protect_;
  std::vector<uint64_t> bitmap_;
};

}  // namespace xenkvm::kvm
