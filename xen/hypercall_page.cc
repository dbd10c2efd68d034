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

}  // namespace xenkvm::xen
