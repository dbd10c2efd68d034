// Hypercall page stubs; see hypercall_page.h.
#include "xen/hypercall_page.h"

#include <array>
#include <cstring>

#include "abi/platform.h"

namespace xenkvm::xen {

void FillHypercallPage(std::span<uint8_t, 4096> page) {
  // int3 padding: falling off a stub traps instead of running the next one.
  std::memset(page.data(), 0xcc, page.size());
  for (uint32_t nr = 0; nr < kHypercallSlots; ++nr) {
    uint8_t* stub = page.data() + nr * XENKVM_HYPERCALL_STUB_SIZE;
    stub[0] = 0xe7;  // out %eax, $imm8: the exit; the VMM normally returns to the caller
    stub[1] = static_cast<uint8_t>(XENKVM_HYPERCALL_PORT);
    stub[2] = 0xc3;  // ret: only run when the VMM could not read the caller's stack
  }
}

Result<> WriteHypercallPage(mem::GuestMemory& memory, uint64_t msr_value) {
  if ((msr_value & 0xfff) != 0) return Fail(XEN_EINVAL, "hypercall page index != 0");
  std::array<uint8_t, 4096> page;
  FillHypercallPage(page);
  return memory.Write(msr_value & ~uint64_t{0xfff}, std::as_bytes(std::span(page)));
}

void HypercallPageSet::Add(uint64_t page_gpa) {
  for (const auto& page : pages_)
    if (page.load(std::memory_order_acquire) == (page_gpa | 1)) return;
  const size_t i = next_.fetch_add(1) % pages_.size();
  pages_[i].store(page_gpa | 1, std::memory_order_release);
}

int HypercallPageSet::Slot(uint64_t trap_gpa) const {
  if (trap_gpa % XENKVM_HYPERCALL_STUB_SIZE != 0) return -1;
  for (const auto& page : pages_) {
    if (page.load(std::memory_order_acquire) == ((trap_gpa & ~uint64_t{0xfff}) | 1))
      return static_cast<int>((trap_gpa & 0xfff) / XENKVM_HYPERCALL_STUB_SIZE);
  }
  return -1;
}

void HypercallPageSet::Save(snapshot::Encoder& e) const {
  e.U32(uint32_t(pages_.size()));
  for (const auto& p : pages_) e.U64(p.load(std::memory_order_acquire));
  e.U32(next_.load());
}

Result<> HypercallPageSet::Restore(snapshot::Decoder& d) {
  if (d.U32() != pages_.size()) d.Invalid("snapshot: bad hypercall page list");
  std::array<uint64_t, kPages> pages{};
  for (uint64_t& p : pages) p = d.U64();
  const uint32_t next = d.U32();
  TRY(d.Finish());
  for (size_t i = 0; i < pages.size(); ++i) {
    // Only page-aligned GPAs marked present, as Add writes them.
    if (pages[i] != 0 && (pages[i] & 0xfff) != 1)
      return Fail(XEN_EINVAL, "snapshot: bad hypercall page address");
  }
  for (size_t i = 0; i < pages.size(); ++i) pages_[i].store(pages[i], std::memory_order_release);
  next_.store(next);
  return {};
}

}  // namespace xenkvm::xen
