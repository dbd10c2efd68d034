// Page-by-page guest-virtual copies; see guest_access.h.
#include "xen/guest_access.h"

#include <algorithm>

#include "abi/xen.h"

namespace xenkvm::xen {

namespace {
// Bytes from gva to the end of its page, capped at `left`.
uint64_t ChunkAt(uint64_t gva, uint64_t left) {
  return std::min<uint64_t>(left, abi::kPageSize - (gva & (abi::kPageSize - 1)));
}
}  // namespace

Result<uint64_t> GuestAccess::Translate(uint64_t gva) const {
  uint64_t gpa = TRY(platform_.TranslateGva(vcpu_, gva));
  if (reservation_ != nullptr && reservation_->IsHole(gpa >> 12)) return Fail(XEN_EFAULT, "ballooned-out gfn");
  return gpa;
}

Result<> GuestAccess::Read(uint64_t gva, std::span<std::byte> out) const {
  if (gva + out.size() < gva) return Fail(XEN_EFAULT, "guest range wraps");
  uint64_t done = 0;
  while (done < out.size()) {
    uint64_t chunk = ChunkAt(gva + done, out.size() - done);
    uint64_t gpa = TRY(Translate(gva + done));
    TRY(memory_.Read(gpa, out.subspan(done, chunk)));
    done += chunk;
  }
  return {};
}

Result<> GuestAccess::Write(uint64_t gva, std::span<const std::byte> in) const {
  if (gva + in.size() < gva) return Fail(XEN_EFAULT, "guest range wraps");
  uint64_t done = 0;
  while (done < in.size()) {
    uint64_t chunk = ChunkAt(gva + done, in.size() - done);
    uint64_t gpa = TRY(Translate(gva + done));
    TRY(memory_.Write(gpa, in.subspan(done, chunk)));
    done += chunk;
  }
  return {};
}

}  // namespace xenkvm::xen
