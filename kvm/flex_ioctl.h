// KVM ioctls whose argument ends in a flexible array (kvm_cpuid2, kvm_msrs, kvm_irq_routing).
// In C++ the uapi headers' __DECLARE_FLEX_ARRAY adds an empty struct member, which moves the
// array to offset 12/16 and changes sizeof — and with it the ioctl numbers. The kernel's
// layout is an 8-byte header with the array at offset 8; we build exactly that here.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace xenkvm::kvm {

inline constexpr unsigned long kIoctlGetSupportedCpuid =
    _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
inline constexpr unsigned long kIoctlSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
inline constexpr unsigned long kIoctlGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
inline constexpr unsigned long kIoctlSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long kIoctlSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 8);

// {u32 count; u32 pad_or_flags; Entry entries[count]} with the kernel's C layout.
template <class Entry>
class FlexArg {
 public:
  explicit FlexArg(uint32_t count) : storage_((8 + count * sizeof(Entry) + 7) / 8, 0) {
    set_count(count);
  }
  void* data() { return storage_.data(); }
  uint32_t count() const {
    uint32_t n;
    std::memcpy(&n, storage_.data(), 4);
    return n;
  }
  void set_count(uint32_t n) { std::memcpy(storage_.data(), &n, 4); }
  void set_flags(uint32_t f) {
    std::memcpy(reinterpret_cast<uint8_t*>(storage_.data()) + 4, &f, 4);
  }
  Entry* entries() {
    return reinterpret_cast<Entry*>(reinterpret_cast<uint8_t*>(storage_.data()) + 8);
  }

 private:
  std::vector<uint64_t> storage_;  // 8-byte aligned, zeroed (KVM rejects non-zero padding)
};

}  // namespace xenkvm::kvm
