// KVM virtual machine; see vm.h.
#include "kvm/vm.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "kvm/flex_ioctl.h"

namespace xenkvm::kvm {

Result<Vm> Vm::Create(const System& system) {
  int fd = -1;
  do {
    fd = ::ioctl(system.fd(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return HostFail(errno, "KVM_CREATE_VM");
  Vm vm(system, Fd(fd));
  // Needed on VMX for real-mode emulation; PVH starts in protected mode, so failure is benign.
  (void)::ioctl(vm.fd(), KVM_SET_TSS_ADDR, 0xfffbd000ul);
  return vm;
}

Result<> Vm::SetMemory(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    return HostFail(errno, "KVM_SET_USER_MEMORY_REGION");
  }
  return {};
}

Result<> Vm::EnableCap(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap enable{};
  enable.cap = cap;
  enable.args[0] = arg0;
  if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &enable) < 0) return HostFail(errno, "KVM_ENABLE_CAP");
  return {};
}

Result<> Vm::EnableSplitIrqchip(uint32_t ioapic_routes) {
  if (!system_->CheckExtension(KVM_CAP_SPLIT_IRQCHIP))
    return HostFail(ENOSYS, "KVM_CHECK_EXTENSION(KVM_CAP_SPLIT_IRQCHIP)");
  return EnableCap(KVM_CAP_SPLIT_IRQCHIP, ioapic_routes);
}

Result<> Vm::EnableX2apicApi() {
  if (!system_->CheckExtension(KVM_CAP_X2APIC_API))
    return HostFail(ENOSYS, "KVM_CHECK_EXTENSION(KVM_CAP_X2APIC_API)");
  return EnableCap(KVM_CAP_X2APIC_API, KVM_X2APIC_API_USE_32BIT_IDS);
}

Result<> Vm::EnableUserSpaceMsrExits() {
  if (!system_->CheckExtension(KVM_CAP_X86_USER_SPACE_MSR)) {
    return HostFail(ENOSYS, "KVM_CHECK_EXTENSION(KVM_CAP_X86_USER_SPACE_MSR)");
  }
  return EnableCap(KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER);
}

Result<> Vm::InterceptXenHypercalls() {
  if (!(system_->XenHvmFlags() & KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL))
    return HostFail(ENOTSUP, "KVM_CHECK_EXTENSION(KVM_CAP_XEN_HVM) has no INTERCEPT_HCALL");
  kvm_xen_hvm_config config{};
  config.flags = KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL;
  if (::ioctl(fd_.get(), KVM_XEN_HVM_CONFIG, &config) < 0)
    return HostFail(errno, "KVM_XEN_HVM_CONFIG(INTERCEPT_HCALL)");
  return {};
}

Result<> Vm::TrapMsrs(uint32_t base, uint32_t count) {
  // A range's bitmap bit = 1 allows the access in the kernel; 0 denies it, which (with
  // KVM_MSR_EXIT_REASON_FILTER) becomes a user-space exit. All-zero bitmap: trap them all.
  std::vector<uint8_t> bitmap((count + 7) / 8, 0);
  kvm_msr_filter filter{};
  filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  filter.ranges[0].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
  filter.ranges[0].nmsrs = count;
  filter.ranges[0].base = base;
  filter.ranges[0].bitmap = bitmap.data();
  if (::ioctl(fd_.get(), KVM_X86_SET_MSR_FILTER, &filter) < 0)
    return HostFail(errno, "KVM_X86_SET_MSR_FILTER");
  return {};
}

Result<bool> Vm::SignalMsi(uint64_t address, uint32_t data) {
  kvm_msi msi{};
  msi.address_lo = static_cast<uint32_t>(address);
  msi.address_hi = static_cast<uint32_t>(address >> 32);
  msi.data = data;
  int r = ::ioctl(fd_.get(), KVM_SIGNAL_MSI, &msi);
  if (r < 0) return HostFail(errno, "KVM_SIGNAL_MSI");
  return r > 0;
}

Result<> Vm::SetMsiRoute(uint32_t gsi, uint64_t address, uint32_t data) {
  MutexLock lock(gsi_routes_->mutex);
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_MSI;
  e.u.msi.address_lo = static_cast<uint32_t>(address);
  e.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  e.u.msi.data = data;
  auto& entries = gsi_routes_->entries;
  const auto old = entries.find(gsi);
  const std::optional<kvm_irq_routing_entry> previous =
      old == entries.end() ? std::nullopt : std::optional(old->second);
  entries[gsi] = e;
  FlexArg<kvm_irq_routing_entry> routing(static_cast<uint32_t>(entries.size()));
  size_t i = 0;
  for (const auto& [unused_gsi, entry] : entries) routing.entries()[i++] = entry;
  if (::ioctl(fd_.get(), kIoctlSetGsiRouting, routing.data()) < 0) {
    const int error = errno;
    // KVM kept its old table: so do we.
    if (previous)
      entries[gsi] = *previous;
    else
      entries.erase(gsi);
    return HostFail(error, "KVM_SET_GSI_ROUTING");
  }
  return {};
}

Result<> Vm::AddIrqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) < 0) return HostFail(errno, "KVM_IRQFD");
  return {};
}

Result<> Vm::RemoveIrqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) < 0) return HostFail(errno, "KVM_IRQFD deassign");
  return {};
}

Result<Vcpu> Vm::CreateVcpu(uint32_t id) {
  int fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return HostFail(errno, "KVM_CREATE_VCPU");
  Fd vcpu_fd(fd);
  void* run = ::mmap(nullptr, static_cast<size_t>(system_->VcpuMmapSize()), PROT_READ | PROT_WRITE,
                     MAP_SHARED, fd, 0);
  if (run == MAP_FAILED) return HostFail(errno, "mmap kvm_run");
  return Vcpu(id, std::move(vcpu_fd), static_cast<kvm_run*>(run),
              static_cast<size_t>(system_->VcpuMmapSize()));
}

}  // namespace xenkvm::kvm
