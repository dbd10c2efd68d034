// ACPI table builder; see acpi_tables.h. Offsets and encodings are those of the ACPI 6.x spec
// (5.2 tables, 20.2 AML grammar), written out field by field so the layout is visible here.
#include "boot/acpi_tables.h"

#include <cstring>
#include <initializer_list>
#include <string_view>

#include "abi/platform.h"

namespace xenkvm::boot {

namespace {
constexpr uint64_t kPage = 4096;
constexpr size_t kHeaderSize = 36;    // the common description header (5.2.6)
constexpr size_t kChecksumAt = 9;     // its checksum byte
constexpr size_t kRsdpSize = 36;      // RSDP revision 2 (5.2.5.3)
constexpr size_t kRsdpV1Size = 20;    // the part the first checksum covers
constexpr size_t kFadtSize = 268;     // FADT revision 5 ends after SLEEP_STATUS_REG
constexpr size_t kMadtLapicSize = 8;  // processor Local APIC structure (5.2.12.2)

constexpr uint8_t kFadtRevision = 5;
constexpr uint8_t kMadtRevision = 3;  // ACPI 5.0's
constexpr uint8_t kDsdtRevision = 2;  // 2 and up: AML integers are 64-bit
constexpr uint8_t kXsdtRevision = 1;

// FADT fixed feature flags (5.2.9 table 5.10) and IA-PC boot architecture flags (5.2.9.3).
constexpr uint32_t kFadtWbinvd = 1u << 0;
constexpr uint32_t kFadtProcC1 = 1u << 2;
constexpr uint32_t kFadtPwrButton = 1u << 4;  // no fixed-feature power button
constexpr uint32_t kFadtSlpButton = 1u << 5;  // no fixed-feature sleep button
constexpr uint32_t kFadtResetRegSup = 1u << 10;
constexpr uint32_t kFadtHwReduced = 1u << 20;
constexpr uint16_t kBootNoVga = 1u << 2;
constexpr uint16_t kBootNoCmosRtc = 1u << 5;
constexpr uint32_t kMadtLapicEnabled = 1u << 0;

// AML opcodes (20.3).
constexpr uint8_t kAmlZero = 0x00;
constexpr uint8_t kAmlOne = 0x01;
constexpr uint8_t kAmlName = 0x08;
constexpr uint8_t kAmlBytePrefix = 0x0a;
constexpr uint8_t kAmlWordPrefix = 0x0b;
constexpr uint8_t kAmlDwordPrefix = 0x0c;
constexpr uint8_t kAmlStringPrefix = 0x0d;
constexpr uint8_t kAmlQwordPrefix = 0x0e;
constexpr uint8_t kAmlPackage = 0x12;
constexpr uint8_t kAmlScope = 0x10;
constexpr uint8_t kAmlExtPrefix = 0x5b;
constexpr uint8_t kAmlDevice = 0x82;  // after kAmlExtPrefix
constexpr uint8_t kAmlRootChar = 0x5c;

constexpr char kOemId[6] = {'X', 'E', 'N', 'K', 'V', 'M'};
constexpr char kOemTableId[8] = {'X', 'E', 'N', 'K', 'V', 'M', 'P', 'V'};
constexpr char kCreatorId[4] = {'X', 'K', 'V', 'M'};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

class Bytes {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Raw(&v, 2); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void Chars(std::string_view s) { Raw(s.data(), s.size()); }
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void Append(const std::vector<uint8_t>& v) { out_.insert(out_.end(), v.begin(), v.end()); }
  void Zeros(size_t n) { out_.insert(out_.end(), n, 0); }
  std::vector<uint8_t>& vec() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

// The description header with length and checksum left 0 (Finish fills both).
void Header(Bytes& b, std::string_view signature, uint8_t revision) {
  b.Chars(signature);
  b.U32(0);  // length
  b.U8(revision);
  b.U8(0);  // checksum
  b.Raw(kOemId, sizeof(kOemId));
  b.Raw(kOemTableId, sizeof(kOemTableId));
  b.U32(1);  // OEM revision
  b.Raw(kCreatorId, sizeof(kCreatorId));
  b.U32(1);  // creator revision
}

std::vector<uint8_t> Finish(Bytes& b) {
  std::vector<uint8_t>& t = b.vec();
  const auto length = static_cast<uint32_t>(t.size());
  std::memcpy(t.data() + 4, &length, 4);
  t[kChecksumAt] = static_cast<uint8_t>(0x100 - AcpiSum(t.data(), t.size()));
  return std::move(t);
}

// A Generic Address Structure (5.2.3.2) that names nothing.
void NullGas(Bytes& b) { b.Zeros(12); }

// A Generic Address Structure naming one 8-bit I/O port.
void PortGas(Bytes& b, uint16_t port) {
  b.U8(1);  // address space: system I/O
  b.U8(8);  // register bit width
  b.U8(0);  // bit offset
  b.U8(1);  // access size: byte
  b.U64(port);
}

// ---- AML ----

// PkgLength (20.2.4): the length of the package *including* the PkgLength bytes themselves;
// one byte up to 63, else a lead byte with the count of following bytes in bits 7:6 and the
// low nibble in bits 3:0, the following bytes carrying the rest.
void AmlPkgLength(Bytes& b, size_t body) {
  if (body + 1 < 0x40) {
    b.U8(static_cast<uint8_t>(body + 1));
    return;
  }
  for (size_t extra = 1; extra <= 3; ++extra) {
    const size_t total = body + 1 + extra;
    if (total >> (4 + 8 * extra) != 0) continue;
    b.U8(static_cast<uint8_t>((extra << 6) | (total & 0xf)));
    for (size_t i = 0; i < extra; ++i) b.U8(static_cast<uint8_t>(total >> (4 + 8 * i)));
    return;
  }
}

void AmlInteger(Bytes& b, uint64_t v) {
  if (v == 0) return b.U8(kAmlZero);
  if (v == 1) return b.U8(kAmlOne);
  if (v <= 0xff) {
    b.U8(kAmlBytePrefix);
    return b.U8(static_cast<uint8_t>(v));
  }
  if (v <= 0xffff) {
    b.U8(kAmlWordPrefix);
    return b.U16(static_cast<uint16_t>(v));
  }
  if (v <= 0xffffffff) {
    b.U8(kAmlDwordPrefix);
    return b.U32(static_cast<uint32_t>(v));
  }
  b.U8(kAmlQwordPrefix);
  b.U64(v);
}

void AmlNameString(Bytes& b, std::string_view name, std::string_view value) {
  b.U8(kAmlName);
  b.Chars(name);
  b.U8(kAmlStringPrefix);
  b.Chars(value);
  b.U8(0);
}

void AmlNameInteger(Bytes& b, std::string_view name, uint64_t value) {
  b.U8(kAmlName);
  b.Chars(name);
  AmlInteger(b, value);
}

// Name (\_S5, Package () { SLP_TYPa, SLP_TYPb, 0, 0 }): the soft-off state's sleep type, which
// a hardware-reduced guest writes to SLEEP_CONTROL_REG (both halves the same, as one register).
void AmlSoftOffPackage(Bytes& b) {
  Bytes body;
  body.U8(4);  // NumElements
  AmlInteger(body, XENKVM_ACPI_SLP_TYP_S5);
  AmlInteger(body, XENKVM_ACPI_SLP_TYP_S5);
  AmlInteger(body, 0);
  AmlInteger(body, 0);
  b.U8(kAmlName);
  b.U8(kAmlRootChar);
  b.Chars("_S5_");
  b.U8(kAmlPackage);
  AmlPkgLength(b, body.vec().size());
  b.Append(body.vec());
}

// Device (Cxxx) { Name (_HID, "ACPI0007") Name (_UID, id) }, xxx the id in hex.
void AmlProcessorDevice(Bytes& b, uint32_t id) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  const char seg[4] = {'C', kHex[(id >> 8) & 0xf], kHex[(id >> 4) & 0xf], kHex[id & 0xf]};
  Bytes body;
  body.Raw(seg, sizeof(seg));
  AmlNameString(body, "_HID", "ACPI0007");
  AmlNameInteger(body, "_UID", id);
  b.U8(kAmlExtPrefix);
  b.U8(kAmlDevice);
  AmlPkgLength(b, body.vec().size());
  b.Append(body.vec());
}

std::vector<uint8_t> BuildDsdt(uint32_t vcpus) {
  Bytes scope;  // Scope (\_SB_) { ... }
  scope.U8(kAmlRootChar);
  scope.Chars("_SB_");
  for (uint32_t i = 0; i < vcpus; ++i) AmlProcessorDevice(scope, i);
  Bytes b;
  Header(b, "DSDT", kDsdtRevision);
  AmlSoftOffPackage(b);
  b.U8(kAmlScope);
  AmlPkgLength(b, scope.vec().size());
  b.Append(scope.vec());
  return Finish(b);
}

std::vector<uint8_t> BuildMadt(uint32_t vcpus) {
  Bytes b;
  Header(b, "APIC", kMadtRevision);
  b.U32(kLapicGpa);
  b.U32(0);  // flags: PCAT_COMPAT clear, there is no 8259
  for (uint32_t i = 0; i < vcpus; ++i) {
    b.U8(0);  // type: processor Local APIC
    b.U8(kMadtLapicSize);
    b.U8(static_cast<uint8_t>(i));  // ACPI processor UID = the DSDT device's _UID
    b.U8(static_cast<uint8_t>(i));  // APIC id = KVM vCPU id
    b.U32(kMadtLapicEnabled);
  }
  return Finish(b);
}

std::vector<uint8_t> BuildFadt(uint64_t dsdt_gpa) {
  Bytes b;
  Header(b, "FACP", kFadtRevision);
  b.U32(0);                                // 36 FIRMWARE_CTRL: no FACS (reduced hardware)
  b.U32(static_cast<uint32_t>(dsdt_gpa));  // 40 DSDT
  b.U8(0);                                 // 44 reserved
  b.U8(0);                                 // 45 preferred PM profile: unspecified
  b.U16(0);                                // 46 SCI_INT: none
  b.U32(0);                                // 48 SMI_CMD: no SMM, ACPI mode is fixed
  b.Zeros(4);                              // 52 ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
  b.Zeros(32);                             // 56 PM1a..GPE1 block addresses: none
  b.Zeros(8);                              // 88 their lengths, GPE1_BASE, CST_CNT
  b.U16(0x0fff);                           // 96 P_LVL2_LAT > 100: no C2
  b.U16(0x0fff);                           // 98 P_LVL3_LAT > 1000: no C3
  b.Zeros(9);                              // 100 flush, duty cycle, RTC alarm/century
  b.U16(kBootNoVga | kBootNoCmosRtc);      // 109 IAPC_BOOT_ARCH
  b.U8(0);                                 // 111 reserved
  b.U32(kFadtWbinvd | kFadtProcC1 | kFadtPwrButton | kFadtSlpButton | kFadtResetRegSup |
        kFadtHwReduced);                   // 112 flags
  PortGas(b, XENKVM_ACPI_RESET_PORT);      // 116 RESET_REG
  b.U8(XENKVM_ACPI_RESET_VALUE);           // 128 RESET_VALUE
  b.U16(0);                                // 129 ARM_BOOT_ARCH
  b.U8(0);                                 // 131 FADT minor version
  b.U64(0);                                // 132 X_FIRMWARE_CTRL
  b.U64(dsdt_gpa);                         // 140 X_DSDT
  for (int i = 0; i < 8; ++i) NullGas(b);  // 148 X_PM1a_EVT_BLK .. X_GPE1_BLK: none
  PortGas(b, XENKVM_ACPI_SLEEP_PORT);      // 244 SLEEP_CONTROL_REG
  PortGas(b, XENKVM_ACPI_SLEEP_PORT);      // 256 SLEEP_STATUS_REG (reads 0: never awake again)
  return Finish(b);
}

std::vector<uint8_t> BuildXsdt(std::initializer_list<uint64_t> entries) {
  Bytes b;
  Header(b, "XSDT", kXsdtRevision);
  for (uint64_t e : entries) b.U64(e);
  return Finish(b);
}

std::vector<uint8_t> BuildRsdp(uint64_t xsdt_gpa) {
  Bytes b;
  b.Chars("RSD PTR ");
  b.U8(0);  // checksum of the first 20 bytes
  b.Raw(kOemId, sizeof(kOemId));
  b.U8(2);   // revision 2: the XSDT fields follow
  b.U32(0);  // RSDT address: none, the XSDT is the root
  b.U32(static_cast<uint32_t>(kRsdpSize));
  b.U64(xsdt_gpa);
  b.U8(0);  // extended checksum (all 36 bytes)
  b.Zeros(3);
  std::vector<uint8_t>& r = b.vec();
  r[8] = static_cast<uint8_t>(0x100 - AcpiSum(r.data(), kRsdpV1Size));
  r[32] = static_cast<uint8_t>(0x100 - AcpiSum(r.data(), kRsdpSize));
  return std::move(r);
}
}  // namespace

uint8_t AcpiSum(const uint8_t* data, size_t length) {
  uint8_t sum = 0;
  for (size_t i = 0; i < length; ++i) sum = static_cast<uint8_t>(sum + data[i]);
  return sum;
}

Result<AcpiTables> BuildAcpiTables(uint32_t vcpus, uint64_t base_gpa) {
  if (vcpus == 0 || vcpus > kMaxAcpiVcpus) return Fail(XEN_EINVAL, "ACPI tables: 1..255 vCPUs");
  if (base_gpa % kPage != 0) return Fail(XEN_EINVAL, "ACPI tables: base not page aligned");
  if (base_gpa >= (uint64_t{1} << 32)) return Fail(XEN_EINVAL, "ACPI tables: base above 4 GiB");

  // Layout, each table 16-byte aligned: RSDP, XSDT, FADT, MADT, DSDT (the one that grows most).
  AcpiTables t;
  t.base_gpa = base_gpa;
  const std::vector<uint8_t> madt = BuildMadt(vcpus);
  const std::vector<uint8_t> dsdt = BuildDsdt(vcpus);
  t.rsdp_gpa = base_gpa;
  t.xsdt_gpa = AlignUp(t.rsdp_gpa + kRsdpSize, 16);
  t.fadt_gpa = AlignUp(t.xsdt_gpa + kHeaderSize + 2 * 8, 16);
  t.madt_gpa = AlignUp(t.fadt_gpa + kFadtSize, 16);
  t.dsdt_gpa = AlignUp(t.madt_gpa + madt.size(), 16);
  const uint64_t end = t.dsdt_gpa + dsdt.size();
  if (end > (uint64_t{1} << 32)) return Fail(XEN_EINVAL, "ACPI tables: would cross 4 GiB");

  const std::vector<uint8_t> fadt = BuildFadt(t.dsdt_gpa);
  const std::vector<uint8_t> xsdt = BuildXsdt({t.fadt_gpa, t.madt_gpa});
  const std::vector<uint8_t> rsdp = BuildRsdp(t.xsdt_gpa);
  t.bytes.assign(AlignUp(end - base_gpa, kPage), 0);
  const auto put = [&t](uint64_t gpa, const std::vector<uint8_t>& table) {
    std::memcpy(t.bytes.data() + (gpa - t.base_gpa), table.data(), table.size());
  };
  put(t.rsdp_gpa, rsdp);
  put(t.xsdt_gpa, xsdt);
  put(t.fadt_gpa, fadt);
  put(t.madt_gpa, madt);
  put(t.dsdt_gpa, dsdt);
  return t;
}

}  // namespace xenkvm::boot
