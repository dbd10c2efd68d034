// Where a KVM leaves rip at a port-I/O exit. Hardware KVM reports rip at the `out` and skips
// it when the exit is completed (the next KVM_RUN); PVM (kvm_pvm: software virtualization
// behind the same API) reports rip already past it. The VMM needs to know which to find the
// trapping instruction (a hypercall stub's slot) and to re-run a hypercall that a snapshot
// interrupted. Measured once per process on a throwaway VM: what this KVM itself reports.
#pragma once

#include <cstdint>

#include "abi/result.h"
#include "kvm/system.h"

namespace xenkvm::kvm {

enum class PioExitRip : uint8_t {
  kAtInstruction,    // hardware KVM (also nested under QEMU)
  kPastInstruction,  // PVM
};

const char* PioExitRipName(PioExitRip rip);

// How far rip at the exit is past the start of a trapped `out` of `length` bytes.
inline uint64_t PioExitRipOffset(PioExitRip rip, uint32_t length) {
  return rip == PioExitRip::kPastInstruction ? length : 0;
}

// Threads: any; the first call runs the probe (a one-page VM running `out %al,$0x80` in flat
// 32-bit protected mode, as a PVH entry runs), later calls return its answer.
Result<PioExitRip> ProbePioExitRip(const System& system);

}  // namespace xenkvm::kvm
