// Linux's xen_hypercall_amd/intel pair, found by its shape and rewritten; see hypercall_sites.h.
// The shape follows what arch/x86/xen/xen-head.S assembles to (SYM_FUNC_START aligns to 16 and,
// with IBT, starts with ENDBR64; CALL_PADDING puts 16 bytes of nops before each function; RET
// is the return-thunk jump, `ret; int3` or `ret`), checked against Debian's 6.1 and 6.12 builds.
#include "boot/hypercall_sites.h"

#include <cstring>
#include <optional>

namespace xenkvm::boot {

namespace {
constexpr uint8_t kVmmcall[3] = {0x0f, 0x01, 0xd9};
constexpr uint8_t kVmcall[3] = {0x0f, 0x01, 0xc1};
constexpr uint8_t kEndbr64[4] = {0xf3, 0x0f, 0x1e, 0xfa};
constexpr uint8_t kNopl[2] = {0x0f, 0x1f};  // the multi-byte nop's opcode
constexpr size_t kFunctionAlign = 16;
// How far the intel body may start after the amd one (16: no padding; 32: CALL_PADDING's 16
// nops; up to 64 for larger function alignments), and the dispatcher's jumps before it.
constexpr size_t kMaxPairDistance = 64;
constexpr size_t kMaxTailDistance = 64;

bool Matches(std::span<const uint8_t> code, size_t pos, std::span<const uint8_t> bytes) {
  return pos <= code.size() && bytes.size() <= code.size() - pos &&
         std::memcmp(code.data() + pos, bytes.data(), bytes.size()) == 0;
}

int32_t Rel32(std::span<const uint8_t> code, size_t pos) {  // the caller checked the bounds
  int32_t value;
  std::memcpy(&value, code.data() + pos, sizeof(value));
  return value;
}

// The length of one padding instruction at pos (0: none): nop, int3, or one of the multi-byte
// nops assemblers emit (0x66 prefixes, an optional cs prefix, `0f 1f` with a zero
// displacement).
size_t PaddingAt(std::span<const uint8_t> code, size_t pos) {
  if (pos >= code.size()) return 0;
  if (code[pos] == 0x90 || code[pos] == 0xcc) return 1;
  size_t p = pos;
  while (p < code.size() && p - pos < 14 && code[p] == 0x66) ++p;
  if (p < code.size() && p > pos && code[p] == 0x90) return p + 1 - pos;  // xchg %ax,%ax
  if (p < code.size() && code[p] == 0x2e) ++p;
  if (!Matches(code, p, kNopl) || p + 2 >= code.size()) return 0;
  const uint8_t modrm = code[p + 2];
  size_t zeros;  // SIB and displacement bytes after the ModRM, all zero
  switch (modrm) {
    case 0x00:
      zeros = 0;
      break;
    case 0x40:
      zeros = 1;
      break;
    case 0x44:
      zeros = 2;
      break;
    case 0x80:
      zeros = 4;
      break;
    case 0x84:
      zeros = 5;
      break;
    default:
      return 0;
  }
  const size_t end = p + 3 + zeros;
  if (end > code.size()) return 0;
  for (size_t i = p + 3; i < end; ++i)
    if (code[i] != 0) return 0;
  return end - pos;
}

// Whether [from, to) is nothing but padding instructions.
bool AllPadding(std::span<const uint8_t> code, size_t from, size_t to) {
  if (from > to || to > code.size()) return false;
  while (from < to) {
    const size_t n = PaddingAt(code, from);
    if (n == 0 || n > to - from) return false;
    from += n;
  }
  return true;
}

enum class Ret : uint8_t { kJmp, kRetInt3, kRet };

struct Body {
  size_t insn = 0;  // offset of the vmcall/vmmcall
  size_t end = 0;   // first byte after RET
  bool endbr = false;
  Ret ret = Ret::kRet;
  int64_t target = 0;  // kJmp: the jump's destination, as an offset into code
};

// One function body [endbr64] insn RET starting at `start`.
std::optional<Body> ParseBody(std::span<const uint8_t> code, size_t start,
                              std::span<const uint8_t> insn) {
  Body body;
  size_t p = start;
  if (Matches(code, p, kEndbr64)) {
    body.endbr = true;
    p += sizeof(kEndbr64);
  }
  if (!Matches(code, p, insn)) return std::nullopt;
  body.insn = p;
  p += insn.size();
  if (p >= code.size()) return std::nullopt;
  if (code[p] == 0xe9) {
    if (code.size() - p < 5) return std::nullopt;
    body.ret = Ret::kJmp;
    body.end = p + 5;
    body.target = static_cast<int64_t>(body.end) + Rel32(code, p + 1);
  } else if (code[p] == 0xc3) {
    const bool int3 = p + 1 < code.size() && code[p + 1] == 0xcc;
    body.ret = int3 ? Ret::kRetInt3 : Ret::kRet;
    body.end = p + (int3 ? 2 : 1);
  } else {
    return std::nullopt;
  }
  return body;
}

bool SameForm(const Body& a, const Body& b) {
  return a.endbr == b.endbr && a.ret == b.ret && (a.ret != Ret::kJmp || a.target == b.target);
}

// xen_hypercall_hvm's last two instructions, `jz amd; jmp intel`, ending before `amd` with
// only padding in between.
bool DispatcherTailBefore(std::span<const uint8_t> code, size_t amd, size_t intel) {
  const size_t lowest = amd > kMaxTailDistance ? amd - kMaxTailDistance : 0;
  const auto to = [](size_t from, int64_t rel, size_t dest) {
    return static_cast<int64_t>(from) + rel == static_cast<int64_t>(dest);
  };
  for (size_t j = lowest; j < amd; ++j) {
    size_t jmp_end = 0;
    if (code[j] == 0xeb && j + 2 <= amd && to(j + 2, static_cast<int8_t>(code[j + 1]), intel)) {
      jmp_end = j + 2;
    } else if (code[j] == 0xe9 && j + 5 <= amd && to(j + 5, Rel32(code, j + 1), intel)) {
      jmp_end = j + 5;
    } else {
      continue;
    }
    const bool jz8 = j >= 2 && code[j - 2] == 0x74 && to(j, static_cast<int8_t>(code[j - 1]), amd);
    const bool jz32 =
        j >= 6 && code[j - 6] == 0x0f && code[j - 5] == 0x84 && to(j, Rel32(code, j - 4), amd);
    if ((jz8 || jz32) && AllPadding(code, jmp_end, amd)) return true;
  }
  return false;
}

bool Aligned(uint64_t base, size_t offset) { return (base + offset) % kFunctionAlign == 0; }
}  // namespace

std::vector<HypercallSite> FindXenHypercallSites(std::span<const uint8_t> code, uint64_t base) {
  std::vector<HypercallSite> sites;
  for (size_t i = 0; i + sizeof(kVmmcall) <= code.size(); ++i) {
    if (code[i] != kVmmcall[0] || !Matches(code, i, kVmmcall)) continue;
    // The function starts at the vmmcall or at an ENDBR64 right before it.
    size_t amd;
    if (Aligned(base, i)) {
      amd = i;
    } else if (i >= sizeof(kEndbr64) && Aligned(base, i - sizeof(kEndbr64)) &&
               Matches(code, i - sizeof(kEndbr64), kEndbr64)) {
      amd = i - sizeof(kEndbr64);
    } else {
      continue;
    }
    const auto amd_body = ParseBody(code, amd, kVmmcall);
    if (!amd_body || amd_body->insn != i) continue;
    for (size_t intel = amd + kFunctionAlign; intel <= amd + kMaxPairDistance;
         intel += kFunctionAlign) {
      if (intel < amd_body->end || !AllPadding(code, amd_body->end, intel)) continue;
      const auto intel_body = ParseBody(code, intel, kVmcall);
      if (!intel_body || !SameForm(*amd_body, *intel_body)) continue;
      if (!DispatcherTailBefore(code, amd, intel)) break;
      sites.push_back({amd_body->insn, true});
      sites.push_back({intel_body->insn, false});
      break;
    }
  }
  return sites;
}

size_t RewriteXenHypercallSites(std::span<uint8_t> code, uint64_t base) {
  const std::vector<HypercallSite> sites = FindXenHypercallSites(code, base);
  for (const HypercallSite& site : sites)
    std::memcpy(code.data() + site.offset, kPortTrap, sizeof(kPortTrap));
  return sites.size();
}

}  // namespace xenkvm::boot
