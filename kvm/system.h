// The /dev/kvm system handle: capability checks and the host's supported CPUID.
// Follows the KVM API (Documentation/virt/kvm/api.rst); every failure is a Result with errno.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "abi/result.h"
#include "kvm/fd.h"

namespace xenkvm::kvm {

// Threads: any; immutable after Open().
class System {
 public:
  static Result<System> Open(const char* path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION on the system fd: 0 = absent, else capability-specific value.
  int CheckExtension(long cap) const;
  int VcpuMmapSize() const { return vcpu_mmap_size_; }
  // KVM_CAP_XEN_HVM: the KVM_XEN_HVM_CONFIG_* flags the host kernel offers (0 where it was
  // built without CONFIG_KVM_XEN, as Debian's 6.1; 6.12 has them all, 0x1ff).
  uint32_t XenHvmFlags() const { return static_cast<uint32_t>(CheckExtension(KVM_CAP_XEN_HVM)); }
  // KVM_GET_SUPPORTED_CPUID: the leaves the host can expose.
  Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid() const;

 private:
  explicit System(Fd fd, int mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(mmap_size) {}
  Fd fd_;
  int vcpu_mmap_size_;
};

// Whether a KVM device node is usable at all (for tests that must skip without it).
bool KvmAvailable(const char* path = "/dev/kvm");

}  // namespace xenkvm::kvm
