// /dev/kvm system handle; see system.h.
#include "kvm/system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "kvm/flex_ioctl.h"

namespace xenkvm::kvm {

Result<System> System::Open(const char* path) {
  Fd fd(::open(path, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return HostFail(errno, "open /dev/kvm");
  int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) return HostFail(ENOTSUP, "KVM_GET_API_VERSION (not 12)");
  int mmap_size = ::ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run)))
    return HostFail(errno, "KVM_GET_VCPU_MMAP_SIZE");
  return System(std::move(fd), mmap_size);
}

int System::CheckExtension(long cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Result<std::vector<kvm_cpuid_entry2>> System::SupportedCpuid() const {
  // The ioctl reports E2BIG until the buffer is large enough.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    FlexArg<kvm_cpuid_entry2> cpuid(n);
    if (::ioctl(fd_.get(), kIoctlGetSupportedCpuid, cpuid.data()) == 0) {
      return std::vector<kvm_cpuid_entry2>(cpuid.entries(), cpuid.entries() + cpuid.count());
    }
    if (errno != E2BIG) return HostFail(errno, "KVM_GET_SUPPORTED_CPUID");
  }
  return HostFail(E2BIG, "KVM_GET_SUPPORTED_CPUID (more than 4096 leaves)");
}

bool KvmAvailable(const char* path) {
  Fd fd(::open(path, O_RDWR | O_CLOEXEC));
  return fd.valid() && ::ioctl(fd.get(), KVM_GET_API_VERSION, 0) == KVM_API_VERSION;
}

}  // namespace xenkvm::kvm
