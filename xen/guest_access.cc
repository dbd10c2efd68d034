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

Result<uint64_t> GuestAccess::Translate(uint64_t gva, Access access) const {
  uint64_t gpa = TRY(platform_.TranslateGva(vcpu_, gva, access));
  if (reservation_ != nullptr && reservation_->IsHole(gpa >> 12))
    return Fail(XEN_EFAULT, "ballooned-out gfn");
  return gpa;
}

// Calls copy(gpa, offset, length) for each piece of [gva, gva+size) that lies in one page: a
// struct may straddle pages that are not contiguous in guest-physical memory.
template <class Copy>
Result<> GuestAccess::ForEachPiece(uint64_t gva, uint64_t size, Access access, Copy&& copy) const {
  if (gva + size < gva) return Fail(XEN_EFAULT, "guest range wraps");
  for (uint64_t done = 0; done < size;) {
    const uint64_t chunk = ChunkAt(gva + done, size - done);
    const uint64_t gpa = TRY(Translate(gva + done, access));
    TRY(copy(gpa, done, chunk));
    done += chunk;
  }
  return {};
}

Result<> GuestAccess::Read(uint64_t gva, std::span<std::byte> out) const {
  return ForEachPiece(gva, out.size(), Access::kRead,
                      [&](uint64_t gpa, uint64_t offset, uint64_t length) {
                        return memory_.Read(gpa, out.subspan(offset, length));
                      });
}

Result<> GuestAccess::Write(uint64_t gva, std::span<const std::byte> in) const {
  return ForEachPiece(gva, in.size(), Access::kWrite,
                      [&](uint64_t gpa, uint64_t offset, uint64_t length) {
                        return memory_.Write(gpa, in.subspan(offset, length));
                      });
}

}  // namespace xenkvm::xen
