// KVM's dirty page log; see dirty_log.h.
#include "kvm/dirty_log.h"

#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <utility>

namespace xenkvm::kvm {

Result<DirtyLog> DirtyLog::Start(Vm& vm, uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  if (size == 0 || size % 4096 != 0 || size / 4096 > UINT32_MAX)
    return UsageFail("dirty log: bad memslot size");
  // Manual protection when KVM has it: a page is re-protected only when it is about to be read
  // (each Fetch clears exactly the bits it returns) instead of all at once inside GET.
  bool manual = false;
  const int caps = vm.system().CheckExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
  if ((caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0) {
    kvm_enable_cap enable{};
    enable.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
    enable.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;  // not INITIALLY_SET: we send all first
    manual = ::ioctl(vm.fd(), KVM_ENABLE_CAP, &enable) == 0;
  }
  TRY(vm.SetMemory(slot, gpa, size, host, KVM_MEM_LOG_DIRTY_PAGES));
  return DirtyLog(vm, slot, gpa, size, host, manual);
}

DirtyLog::DirtyLog(DirtyLog&& other) noexcept
    : vm_(std::exchange(other.vm_, nullptr)),
      slot_(other.slot_),
      gpa_(other.gpa_),
      size_(other.size_),
      host_(other.host_),
      manual_protect_(other.manual_protect_),
      bitmap_(std::move(other.bitmap_)) {}

DirtyLog::~DirtyLog() {
  if (vm_ == nullptr) return;
  if (auto r = vm_->SetMemory(slot_, gpa_, size_, host_, 0); !r)
    std::fprintf(stderr, "xenkvm: dirty log off: %s\n", Describe(r.error()).c_str());
}

Result<std::span<const uint64_t>> DirtyLog::Fetch() {
  std::fill(bitmap_.begin(), bitmap_.end(), 0);
  kvm_dirty_log log{};
  log.slot = slot_;
  log.dirty_bitmap = bitmap_.data();
  if (::ioctl(vm_->fd(), KVM_GET_DIRTY_LOG, &log) < 0) return HostFail(errno, "KVM_GET_DIRTY_LOG");
  if (manual_protect_) {
    // Re-arm the pages we are about to copy: a write after this is logged again; one before it
    // is in the copy the caller makes next.
    kvm_clear_dirty_log clear{};
    clear.slot = slot_;
    clear.first_page = 0;
    clear.num_pages = uint32_t(size_ / 4096);
    clear.dirty_bitmap = bitmap_.data();
    if (::ioctl(vm_->fd(), KVM_CLEAR_DIRTY_LOG, &clear) < 0)
      return HostFail(errno, "KVM_CLEAR_DIRTY_LOG");
  }
  return std::span<const uint64_t>(bitmap_);
}

}  // namespace xenkvm::kvm
