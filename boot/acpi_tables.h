// The ACPI tables a Xen PVH guest finds through hvm_start_info.rsdp_paddr, built as bytes for a
// given vCPU count and guest-physical base (ACPI 6.x spec, chapter 5; the set libxl builds for
// PVH in tools/libs/light/libxl_x86_acpi.c: RSDP, XSDT, FADT, DSDT, MADT; no IO-APIC).
//
// Pure: no guest memory, no KVM. The VMM copies `bytes` to `base_gpa` (docs/acpi-smp.md).
// Choices and why:
//  - FADT revision 5, hardware-reduced (flags bit 20): we emulate no PM1 event/control blocks,
//    PM timer, SCI or FACS, and a reduced-hardware guest looks for none of them. Its sleep
//    control/status and reset registers are the VMM's ports of abi/platform.h, so a guest that
//    powers off or resets through ACPI (Linux's `poweroff -f`, which finds no Xen-specific
//    power-off on x86) ends the run as SCHEDOP_shutdown would.
//  - MADT: one enabled Local APIC entry per vCPU, APIC id = ACPI processor UID = vCPU id (KVM's
//    APIC id is the id given to KVM_CREATE_VCPU; Linux takes a CPU's Xen vCPU id from its UID).
//    No 8259 (PCAT_COMPAT clear), no IO-APIC entry: the PVH platform has neither.
//  - DSDT: \_S5 (SLP_TYP 5, what the sleep control port takes), then \_SB.Cxxx devices with
//    _HID "ACPI0007" and _UID = vCPU id (the processor object of ACPI 6; the older Processor()
//    term is deprecated), in AML generated here.
#pragma once

#include <cstdint>
#include <vector>

#include "abi/result.h"

namespace xenkvm::boot {

// Where libxl puts PVH ACPI data (its ACPI_INFO_PHYSICAL_ADDRESS): below the LAPIC page and
// outside any RAM the VMM gives (RAM ends at 3 GiB at most).
inline constexpr uint64_t kAcpiTablesGpa = 0xfc000000;
inline constexpr uint32_t kLapicGpa = 0xfee00000;
// Local APIC entries carry an 8-bit APIC id and 0xff is the broadcast id: 255 vCPUs at most
// (more would need x2APIC entries, which no VMM config here asks for).
inline constexpr uint32_t kMaxAcpiVcpus = 255;

struct AcpiTables {
  uint64_t base_gpa = 0;
  std::vector<uint8_t> bytes;  // the region from base_gpa, a whole number of 4 KiB pages
  // Guest-physical addresses of each table (rsdp_gpa goes in hvm_start_info.rsdp_paddr).
  uint64_t rsdp_gpa = 0;
  uint64_t xsdt_gpa = 0;
  uint64_t fadt_gpa = 0;
  uint64_t madt_gpa = 0;
  uint64_t dsdt_gpa = 0;
};

// XEN_EINVAL for vcpus outside 1..kMaxAcpiVcpus, a base not 4 KiB aligned, or tables that would
// not end below 4 GiB (the FADT's 32-bit DSDT field and the RSDP's RSDT field need that).
Result<AcpiTables> BuildAcpiTables(uint32_t vcpus, uint64_t base_gpa = kAcpiTablesGpa);

// The ACPI checksum rule: every byte of a table (its length) sums to 0 mod 256.
uint8_t AcpiSum(const uint8_t* data, size_t length);

}  // namespace xenkvm::boot
