// vCPU state capture and restore for snapshots (see vcpu_snapshot.h).
#include "kvm/vcpu_snapshot.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "snapshot/format.h"

namespace xenkvm::kvm {

namespace {

constexpr uint32_t kMsrTsc = 0x10;
constexpr uint32_t kMsrTscDeadline = 0x6e0;
// The MSRs a guest's kernel sets up that are not in kvm_sregs (QEMU's kvm_put_msrs list, cut to
// what a PVH guest without PMU, MCE or nested virtualization touches). TSC first: KVM matches
// TSC writes that land close together across vCPUs. TSC_DEADLINE last: it needs the LAPIC.
constexpr std::array<uint32_t, 13> kSavedMsrs = {
    kMsrTsc,    0x174,      0x175,      0x176,      0x277,      0x1a0,          0xc0000081,
    0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102, 0xc0000103, kMsrTscDeadline};

constexpr uint32_t kMaxXsaveBytes = 1 << 20;

// Bytes KVM may read or write for this host's XSAVE area: what CPUID says all supported
// features take, and never less than struct kvm_xsave.
size_t XsaveBytes(size_t at_least) {
  size_t bytes = std::max<size_t>(sizeof(kvm_xsave), snapshot::CurrentHostFacts().xsave_size);
  bytes = std::max(bytes, at_least);
  return (bytes + 3) / 4 * 4;
}

}  // namespace

void VcpuSnapshot::Encode(snapshot::Encoder& out) const {
  out.Pod(regs);
  out.Pod(sregs);
  out.Bytes(std::as_bytes(std::span(xsave)));
  out.Pod(fpu);
  out.Bool(has_xcrs);
  out.Pod(xcrs);
  out.Pod(lapic);
  out.Pod(events);
  out.Pod(mp_state);
  out.Pod(debugregs);
  out.U32(uint32_t(msrs.size()));
  for (const kvm_msr_entry& m : msrs) {
    out.U32(m.index);
    out.U64(m.data);
  }
}

Result<VcpuSnapshot> VcpuSnapshot::Decode(snapshot::Decoder& in) {
  VcpuSnapshot s;
  s.regs = in.Pod<kvm_regs>();
  s.sregs = in.Pod<kvm_sregs>();
  const std::vector<std::byte> xsave = in.Bytes(kMaxXsaveBytes);
  if (in.ok() && !xsave.empty() && (xsave.size() < sizeof(kvm_xsave) || xsave.size() % 4 != 0))
    in.Invalid("snapshot: bad XSAVE area");
  s.xsave.resize(xsave.size() / 4);
  // Empty where this KVM saves no XSAVE area (PVM): memcpy's pointers must not be null then.
  if (!s.xsave.empty()) std::memcpy(s.xsave.data(), xsave.data(), s.xsave.size() * 4);
  s.fpu = in.Pod<kvm_fpu>();
  s.has_xcrs = in.Bool();
  s.xcrs = in.Pod<kvm_xcrs>();
  s.lapic = in.Pod<kvm_lapic_state>();
  s.events = in.Pod<kvm_vcpu_events>();
  s.mp_state = in.Pod<kvm_mp_state>();
  s.debugregs = in.Pod<kvm_debugregs>();
  s.msrs.resize(in.Count(kSavedMsrs.size(), 12));
  for (kvm_msr_entry& m : s.msrs) {
    m = kvm_msr_entry{};
    m.index = in.U32();
    m.data = in.U64();
  }
  if (!in.ok()) return tl::unexpected(in.Finish().error());
  for (size_t i = 0; i < s.msrs.size(); ++i) {
    const uint32_t index = s.msrs[i].index;
    if (std::find(kSavedMsrs.begin(), kSavedMsrs.end(), index) == kSavedMsrs.end() ||
        std::count_if(s.msrs.begin(), s.msrs.end(),
                      [&](const kvm_msr_entry& m) { return m.index == index; }) != 1)
      return snapshot::Corrupt("snapshot: a vCPU MSR this VMM does not restore");
  }
  if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) return snapshot::Corrupt("snapshot: bad XCR count");
  return s;
}

Result<VcpuSnapshot> SaveVcpu(Vcpu& vcpu) {
  VcpuSnapshot s;
  TRY(vcpu.Ioctl(KVM_GET_REGS, &s.regs, "KVM_GET_REGS"));
  TRY(vcpu.Ioctl(KVM_GET_SREGS, &s.sregs, "KVM_GET_SREGS"));
  s.xsave.assign(XsaveBytes(0) / 4, 0);
  // KVM_GET_XSAVE refuses (EINVAL) a guest whose area outgrew 4 KiB; XSAVE2 has no limit.
  if (!vcpu.Ioctl(KVM_GET_XSAVE2, s.xsave.data(), "KVM_GET_XSAVE2")) {
    s.xsave.resize(sizeof(kvm_xsave) / 4);
    if (!vcpu.Ioctl(KVM_GET_XSAVE, s.xsave.data(), "KVM_GET_XSAVE")) s.xsave.clear();
  }
  TRY(vcpu.Ioctl(KVM_GET_FPU, &s.fpu, "KVM_GET_FPU"));
  s.has_xcrs = bool(vcpu.Ioctl(KVM_GET_XCRS, &s.xcrs, "KVM_GET_XCRS"));
  TRY(vcpu.Ioctl(KVM_GET_LAPIC, &s.lapic, "KVM_GET_LAPIC"));
  TRY(vcpu.Ioctl(KVM_GET_VCPU_EVENTS, &s.events, "KVM_GET_VCPU_EVENTS"));
  TRY(vcpu.Ioctl(KVM_GET_MP_STATE, &s.mp_state, "KVM_GET_MP_STATE"));
  TRY(vcpu.Ioctl(KVM_GET_DEBUGREGS, &s.debugregs, "KVM_GET_DEBUGREGS"));
  for (uint32_t index : kSavedMsrs) {
    auto value = vcpu.GetMsr(index);
    if (!value) continue;  // not on this host (the restoring host then need not have it)
    kvm_msr_entry m{};
    m.index = index;
    m.data = *value;
    s.msrs.push_back(m);
  }
  return s;
}

Result<> RestoreVcpu(Vcpu& vcpu, const VcpuSnapshot& state) {
  VcpuSnapshot s = state;  // the SET ioctls take non-const pointers
  TRY(vcpu.Ioctl(KVM_SET_REGS, &s.regs, "KVM_SET_REGS"));
  // KVM reads as many bytes as this host's area takes: pad a smaller saved one with zeros
  // (features the guest could not have used).
  if (s.xsave.empty()) {
    TRY(vcpu.Ioctl(KVM_SET_FPU, &s.fpu, "KVM_SET_FPU"));
  } else {
    s.xsave.resize(XsaveBytes(s.xsave.size() * 4) / 4, 0);
    TRY(vcpu.Ioctl(KVM_SET_XSAVE, s.xsave.data(), "KVM_SET_XSAVE"));
  }
  if (s.has_xcrs) TRY(vcpu.Ioctl(KVM_SET_XCRS, &s.xcrs, "KVM_SET_XCRS"));
  TRY(vcpu.Ioctl(KVM_SET_SREGS, &s.sregs, "KVM_SET_SREGS"));
  for (const kvm_msr_entry& m : s.msrs)
    if (m.index != kMsrTscDeadline) TRY(vcpu.SetMsr(m.index, m.data));
  TRY(vcpu.Ioctl(KVM_SET_MP_STATE, &s.mp_state, "KVM_SET_MP_STATE"));
  TRY(vcpu.Ioctl(KVM_SET_LAPIC, &s.lapic, "KVM_SET_LAPIC"));
  for (const kvm_msr_entry& m : s.msrs)
    if (m.index == kMsrTscDeadline) TRY(vcpu.SetMsr(m.index, m.data));
  // Restore what was pending (exception, interrupt, NMI shadow) exactly as saved.
  s.events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
  TRY(vcpu.Ioctl(KVM_SET_VCPU_EVENTS, &s.events, "KVM_SET_VCPU_EVENTS"));
  TRY(vcpu.Ioctl(KVM_SET_DEBUGREGS, &s.debugregs, "KVM_SET_DEBUGREGS"));
  return {};
}

}  // namespace xenkvm::kvm
