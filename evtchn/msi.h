// Xen's "MSI that is really a PIRQ": a guest that routes a device MSI to an event channel
// programs the MSI with vector 0 and puts the PIRQ number in the address's destination-id
// bits: address bits 19:12 are PIRQ bits 7:0, address bits 63:40 are PIRQ bits 31:8
// (docs/design.md §8). A device model asks here before injecting an MSI.
#pragma once

#include <cstdint>
#include <optional>

namespace xenkvm::evtchn {

inline std::optional<uint32_t> PirqFromMsi(uint64_t address, uint32_t data) {
  if ((data & 0xff) != 0) return std::nullopt;  // a real vector: an ordinary MSI
  return uint32_t((address >> 12) & 0xff) | uint32_t((address >> 40) << 8);
}

}  // namespace xenkvm::evtchn
