// The hypercall page a guest asks for by writing its GPA to the MSR named in CPUID leaf
// base+2 (xen/arch-x86/cpuid.h). Without kernel Xen support each 32-byte slot traps by port I/O
// instead of vmcall: `out %eax,$XENKVM_HYPERCALL_PORT; ret` (abi/platform.h). The VMM knows
// the number from the slot the exit came from and completes the `ret` itself (docs/design.md,
// the trap scheme), so a hypercall is one guest instruction and one exit.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <span>

#include "abi/result.h"
#include "mem/guest_memory.h"
#include "snapshot/codec.h"

namespace xenkvm::xen {

inline constexpr uint32_t kHypercallSlots = 4096 / 32;

// Writes all 128 stubs into `page` (4096 bytes). eax is not read: some guests jump to a slot
// with eax holding anything (e.g. the slot's own address); the slot gives the number.
void FillHypercallPage(std::span<uint8_t, 4096> page);

// Handles a write of `msr_value` to the hypercall-page MSR: bits 63:12 are the GFN, bits 11:0
// the page index (only page 0 exists). -EINVAL for another index, -EFAULT for non-RAM.
Result<> WriteHypercallPage(mem::GuestMemory& memory, uint64_t msr_value);

// The last few hypercall pages the guest installed: a trap at the start of a slot there names
// its hypercall by the slot. A guest that installs more loses its oldest. Threads: any
// (lock-free; Add from the vCPU that wrote the MSR, Slot from any trapping vCPU).
class HypercallPageSet {
 public:
  static constexpr size_t kPages = 4;
  void Add(uint64_t page_gpa);
  // The slot whose trap starts at `trap_gpa`, or -1: not the start of a stub.
  int Slot(uint64_t trap_gpa) const;
  // Snapshots (the guest is paused).
  void Save(snapshot::Encoder& e) const;
  Result<> Restore(snapshot::Decoder& d);

 private:
  std::array<std::atomic<uint64_t>, kPages> pages_{};  // GPA | 1; 0 = none
  std::atomic<uint32_t> next_{0};
};

}  // namespace xenkvm::xen
