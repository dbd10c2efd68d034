// boot/acpi_tables: the tables parsed back as a guest's ACPI code would (ACPI 6.x 5.2 and the
// AML subset 20.2 our DSDT uses): checksums, lengths, pointers, one MADT entry and one
// processor device per vCPU, \_S5 and the power/reset ports, the vCPU-count limits.
#include "boot/acpi_tables.h"

#include "abi/platform.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace xenkvm::boot {
namespace {

constexpr uint64_t kBase = kAcpiTablesGpa;

template <class T>
T Get(const AcpiTables& t, uint64_t gpa) {
  T v;
  EXPECT_LE(gpa - t.base_gpa + sizeof(T), t.bytes.size());
  std::memcpy(&v, t.bytes.data() + (gpa - t.base_gpa), sizeof(T));
  return v;
}

std::string Sig(const AcpiTables& t, uint64_t gpa, size_t n = 4) {
  return std::string(reinterpret_cast<const char*>(t.bytes.data() + (gpa - t.base_gpa)), n);
}

// A table's header: signature, its length inside the region, checksum 0. Returns the length.
uint32_t CheckTable(const AcpiTables& t, uint64_t gpa, const char* signature) {
  EXPECT_EQ(Sig(t, gpa), signature);
  const auto length = Get<uint32_t>(t, gpa + 4);
  EXPECT_GE(length, 36u);
  EXPECT_LE(gpa - t.base_gpa + length, t.bytes.size()) << signature;
  EXPECT_EQ(AcpiSum(t.bytes.data() + (gpa - t.base_gpa), length), 0) << signature;
  EXPECT_EQ(Sig(t, gpa + 10, 6), "XENKVM");
  return length;
}

// ---- a reader for the AML our DSDT holds ----
struct Aml {
  const uint8_t* p;
  const uint8_t* end;
  uint8_t U8() {
    EXPECT_LT(p, end);
    return p < end ? *p++ : 0;
  }
  size_t PkgLength() {  // returns the bytes left in the package after its PkgLength
    const uint8_t* start = p;
    const uint8_t lead = U8();
    const unsigned extra = lead >> 6;
    size_t length = extra == 0 ? lead & 0x3f : lead & 0xf;
    if (extra != 0) {
      EXPECT_EQ(lead & 0x30, 0) << "reserved PkgLength bits";
    }
    for (unsigned i = 0; i < extra; ++i) length |= size_t{U8()} << (4 + 8 * i);
    return length - static_cast<size_t>(p - start);
  }
  std::string Seg() {
    std::string s;
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(U8()));
    return s;
  }
  uint64_t Integer() {
    const uint8_t op = U8();
    uint64_t v = 0;
    size_t n = 0;
    switch (op) {
      case 0x00:
        return 0;
      case 0x01:
        return 1;
      case 0x0a:
        n = 1;
        break;
      case 0x0b:
        n = 2;
        break;
      case 0x0c:
        n = 4;
        break;
      case 0x0e:
        n = 8;
        break;
      default:
        ADD_FAILURE() << "not an integer opcode " << int(op);
        return ~0ull;
    }
    for (size_t i = 0; i < n; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }
  std::string String() {
    EXPECT_EQ(U8(), 0x0d);
    std::string s;
    while (p < end && *p != 0) s.push_back(static_cast<char>(*p++));
    U8();  // NUL
    return s;
  }
};

// The DSDT: Name (\_S5, Package { SLP_TYPa, SLP_TYPb, ... }) whose SLP_TYP the sleep port
// takes, then the \_SB_ scope. Returns the (_HID, _UID) of each device, in order.
std::vector<std::pair<std::string, uint64_t>> ParseDsdt(const AcpiTables& t) {
  const uint32_t length = CheckTable(t, t.dsdt_gpa, "DSDT");
  EXPECT_EQ(Get<uint8_t>(t, t.dsdt_gpa + 8), 2);  // 64-bit integers
  const uint8_t* table = t.bytes.data() + (t.dsdt_gpa - t.base_gpa);
  Aml aml{table + 36, table + length};
  EXPECT_EQ(aml.U8(), 0x08);  // NameOp
  EXPECT_EQ(aml.U8(), '\\');
  EXPECT_EQ(aml.Seg(), "_S5_");
  EXPECT_EQ(aml.U8(), 0x12);  // PackageOp
  const size_t package_left = aml.PkgLength();
  const uint8_t* package_end = aml.p + package_left;
  const uint8_t elements = aml.U8();
  EXPECT_GE(elements, 2);
  EXPECT_EQ(aml.Integer(), XENKVM_ACPI_SLP_TYP_S5) << "SLP_TYPa";
  EXPECT_EQ(aml.Integer(), XENKVM_ACPI_SLP_TYP_S5) << "SLP_TYPb";
  for (uint8_t i = 2; i < elements; ++i) aml.Integer();
  EXPECT_EQ(aml.p, package_end);
  EXPECT_EQ(aml.U8(), 0x10);  // ScopeOp
  const size_t scope_left = aml.PkgLength();
  EXPECT_EQ(aml.p + scope_left, aml.end) << "the scope is the whole DSDT body";
  EXPECT_EQ(aml.U8(), '\\');
  EXPECT_EQ(aml.Seg(), "_SB_");
  std::vector<std::pair<std::string, uint64_t>> devices;
  while (aml.p < aml.end && !testing::Test::HasFailure()) {
    EXPECT_EQ(aml.U8(), 0x5b);
    EXPECT_EQ(aml.U8(), 0x82);  // DeviceOp
    const size_t left = aml.PkgLength();
    const uint8_t* device_end = aml.p + left;
    const std::string name = aml.Seg();
    EXPECT_EQ(aml.U8(), 0x08);
    EXPECT_EQ(aml.Seg(), "_HID");
    const std::string hid = aml.String();
    EXPECT_EQ(aml.U8(), 0x08);
    EXPECT_EQ(aml.Seg(), "_UID");
    const uint64_t uid = aml.Integer();
    EXPECT_EQ(aml.p, device_end) << name;
    char want[8];
    std::snprintf(want, sizeof(want), "C%03X", static_cast<unsigned>(devices.size()));
    EXPECT_EQ(name, want);
    devices.emplace_back(hid, uid);
  }
  return devices;
}

struct MadtLapic {
  uint8_t uid, apic_id;
  uint32_t flags;
};

std::vector<MadtLapic> ParseMadt(const AcpiTables& t) {
  const uint32_t length = CheckTable(t, t.madt_gpa, "APIC");
  EXPECT_EQ(Get<uint32_t>(t, t.madt_gpa + 36), kLapicGpa);
  EXPECT_EQ(Get<uint32_t>(t, t.madt_gpa + 40), 0u) << "no 8259";
  std::vector<MadtLapic> out;
  for (uint64_t at = t.madt_gpa + 44; at < t.madt_gpa + length;) {
    const auto type = Get<uint8_t>(t, at);
    const auto len = Get<uint8_t>(t, at + 1);
    EXPECT_EQ(type, 0) << "only processor Local APIC entries";
    EXPECT_EQ(len, 8);
    if (len == 0) break;
    out.push_back({Get<uint8_t>(t, at + 2), Get<uint8_t>(t, at + 3), Get<uint32_t>(t, at + 4)});
    at += len;
  }
  return out;
}

void CheckAll(uint32_t vcpus) {
  SCOPED_TRACE("vcpus " + std::to_string(vcpus));
  auto built = BuildAcpiTables(vcpus, kBase);
  ASSERT_TRUE(built) << Describe(built.error());
  const AcpiTables& t = *built;
  EXPECT_EQ(t.base_gpa, kBase);
  EXPECT_EQ(t.bytes.size() % 4096, 0u);

  // RSDP v2: both checksums, the XSDT as root.
  ASSERT_EQ(t.rsdp_gpa, kBase);
  EXPECT_EQ(Sig(t, t.rsdp_gpa, 8), "RSD PTR ");
  EXPECT_EQ(t.rsdp_gpa % 16, 0u);
  EXPECT_EQ(AcpiSum(t.bytes.data(), 20), 0);
  EXPECT_EQ(AcpiSum(t.bytes.data(), 36), 0);
  EXPECT_EQ(Get<uint8_t>(t, t.rsdp_gpa + 15), 2);
  EXPECT_EQ(Get<uint32_t>(t, t.rsdp_gpa + 20), 36u);
  EXPECT_EQ(Get<uint64_t>(t, t.rsdp_gpa + 24), t.xsdt_gpa);

  // XSDT: FADT and MADT.
  EXPECT_EQ(CheckTable(t, t.xsdt_gpa, "XSDT"), 36u + 2 * 8);
  EXPECT_EQ(Get<uint64_t>(t, t.xsdt_gpa + 36), t.fadt_gpa);
  EXPECT_EQ(Get<uint64_t>(t, t.xsdt_gpa + 44), t.madt_gpa);

  // FADT revision 5, hardware-reduced, both DSDT pointers.
  EXPECT_EQ(CheckTable(t, t.fadt_gpa, "FACP"), 268u);
  EXPECT_EQ(Get<uint8_t>(t, t.fadt_gpa + 8), 5);
  EXPECT_EQ(Get<uint32_t>(t, t.fadt_gpa + 36), 0u) << "no FACS";
  EXPECT_EQ(Get<uint32_t>(t, t.fadt_gpa + 40), t.dsdt_gpa);
  EXPECT_EQ(Get<uint64_t>(t, t.fadt_gpa + 140), t.dsdt_gpa);
  EXPECT_NE(Get<uint32_t>(t, t.fadt_gpa + 112) & (1u << 20), 0u) << "HW_REDUCED_ACPI";
  EXPECT_EQ(Get<uint16_t>(t, t.fadt_gpa + 109), (1u << 2) | (1u << 5)) << "no VGA, no CMOS RTC";
  for (uint64_t block = 56; block < 88; block += 4)
    EXPECT_EQ(Get<uint32_t>(t, t.fadt_gpa + block), 0u) << "no PM/GPE block at " << block;
  // Reset and sleep registers: 8-bit system I/O ports (GAS: space 1, width 8, byte access).
  EXPECT_NE(Get<uint32_t>(t, t.fadt_gpa + 112) & (1u << 10), 0u) << "RESET_REG_SUP";
  for (auto [at, port] : {std::pair<uint64_t, uint16_t>{116, XENKVM_ACPI_RESET_PORT},
                          {244, XENKVM_ACPI_SLEEP_PORT},
                          {256, XENKVM_ACPI_SLEEP_PORT}}) {
    EXPECT_EQ(Get<uint8_t>(t, t.fadt_gpa + at), 1) << at;
    EXPECT_EQ(Get<uint8_t>(t, t.fadt_gpa + at + 1), 8) << at;
    EXPECT_EQ(Get<uint8_t>(t, t.fadt_gpa + at + 3), 1) << at;
    EXPECT_EQ(Get<uint64_t>(t, t.fadt_gpa + at + 4), port) << at;
  }
  EXPECT_EQ(Get<uint8_t>(t, t.fadt_gpa + 128), XENKVM_ACPI_RESET_VALUE);

  // Tables don't overlap, in the layout order.
  EXPECT_LE(t.xsdt_gpa, t.fadt_gpa - 36 - 16);
  EXPECT_GE(t.madt_gpa, t.fadt_gpa + 268);
  EXPECT_GE(t.dsdt_gpa, t.madt_gpa + 44 + 8 * vcpus);
  for (uint64_t gpa : {t.xsdt_gpa, t.fadt_gpa, t.madt_gpa, t.dsdt_gpa}) EXPECT_EQ(gpa % 16, 0u);

  // MADT: one enabled LAPIC per vCPU, UID = APIC id = vCPU id.
  EXPECT_EQ(Get<uint32_t>(t, t.madt_gpa + 4), 44u + 8 * vcpus);
  const auto lapics = ParseMadt(t);
  ASSERT_EQ(lapics.size(), vcpus);
  for (uint32_t i = 0; i < vcpus; ++i) {
    EXPECT_EQ(lapics[i].uid, i);
    EXPECT_EQ(lapics[i].apic_id, i);
    EXPECT_EQ(lapics[i].flags, 1u);
  }

  // DSDT: one ACPI0007 device per vCPU whose _UID matches its MADT entry.
  const auto devices = ParseDsdt(t);
  ASSERT_EQ(devices.size(), vcpus);
  for (uint32_t i = 0; i < vcpus; ++i) {
    EXPECT_EQ(devices[i].first, "ACPI0007");
    EXPECT_EQ(devices[i].second, lapics[i].uid);
  }
}

TEST(AcpiTables, OneVcpu) { CheckAll(1); }
TEST(AcpiTables, TwoVcpus) { CheckAll(2); }
TEST(AcpiTables, FourVcpus) { CheckAll(4); }
// 128: the DSDT's scope needs a 2-byte PkgLength; 255 (the most LAPIC entries can name) a
// 3-byte one; UIDs from 2 up are ByteConst.
TEST(AcpiTables, ManyVcpus) {
  CheckAll(64);
  CheckAll(128);
  CheckAll(255);
}

TEST(AcpiTables, SizesGrowPerVcpu) {
  const auto one = BuildAcpiTables(1);
  const auto many = BuildAcpiTables(255);
  ASSERT_TRUE(one && many);
  EXPECT_EQ(one->bytes.size(), 4096u);
  EXPECT_LE(many->bytes.size(), 3u * 4096);
  EXPECT_EQ(many->rsdp_gpa, kAcpiTablesGpa) << "the default base is libxl's";
}

TEST(AcpiTables, Limits) {
  EXPECT_EQ(BuildAcpiTables(0).error().xen_errno, XEN_EINVAL);
  EXPECT_EQ(BuildAcpiTables(256).error().xen_errno, XEN_EINVAL);
  EXPECT_EQ(BuildAcpiTables(1, kBase + 16).error().xen_errno, XEN_EINVAL);
  EXPECT_EQ(BuildAcpiTables(1, uint64_t{1} << 32).error().xen_errno, XEN_EINVAL);
  // The last page below 4 GiB holds one vCPU's tables but not 255's.
  EXPECT_TRUE(BuildAcpiTables(1, 0xfffff000));
  EXPECT_EQ(BuildAcpiTables(255, 0xfffff000).error().xen_errno, XEN_EINVAL);
  // Elsewhere the pointers follow the base.
  auto low = BuildAcpiTables(4, 0x10000);
  ASSERT_TRUE(low);
  EXPECT_EQ(low->rsdp_gpa, 0x10000u);
  EXPECT_EQ(Get<uint64_t>(*low, low->rsdp_gpa + 24), low->xsdt_gpa);
}

}  // namespace
}  // namespace xenkvm::boot
