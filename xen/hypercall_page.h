// The hypercall page a guest asks for by writing its GPA to the MSR named in CPUID leaf
// base+2 (xen/arch-x86/cpuid.h). Without kernel Xen support each 32-byte slot traps by port I/O
// instead of vmcall: `out %eax,$XENKVM_HYPERCALL_PORT; ret` (abi/platform.h). The VMM knows
// the number from the slot the exit came from and completes the `ret` itself (docs/design.md,
// the trap scheme), so a hypercall is one guest instruction and one exit.
#pragma once

#include <cstdint>
#include <span>

#include "abi/result.h"
#include "mem/guest_memory.h"

namespace xenkvm::xen {

inline constexpr uint32_t kHypercallSlots = 4096 / 32;

// Writes all 128 stubs into `page` (4096 bytes). eax is not read: some guests jump to a slot
// with eax holding anything (e.g. the slot's own address); the slot gives the number.
void FillHypercallPage(std::span<uint8_t, 4096> page);

// Handles a write of `msr_value` to the hypercall-page MSR: bits 63:12 are the GFN, bits 11:0
// the page index (only page 0 exists). -EINVAL for another index, -EFAULT for non-RAM.
Result<> WriteHypercallPage(mem::GuestMemory& memory, uint64_t msr_value);

}  // namespace xenkvm::xen
