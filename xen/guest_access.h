// Copying hypercall arguments to and from guest-virtual addresses of the calling vCPU, page by
// page (Xen's copy_from_guest/copy_to_guest): a struct may straddle two pages whose
// guest-physical frames are unrelated. Any unmapped byte fails the whole copy with -EFAULT, and
// so does a gfn the guest ballooned out (Xen's p2m has no page there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "abi/result.h"
#include "mem/guest_memory.h"
#include "xen/platform.h"
#include "xen/reservation.h"

namespace xenkvm::xen {

// Threads: the calling vCPU's thread (translation uses its paging state). Stateless.
class GuestAccess {
 public:
  // reservation: the domain's ballooned-out gfns (none if null).
  GuestAccess(Platform& platform, mem::GuestMemory& memory, uint32_t vcpu,
              const Reservation* reservation = nullptr)
      : platform_(platform), memory_(memory), vcpu_(vcpu), reservation_(reservation) {}

  Result<> Read(uint64_t gva, std::span<std::byte> out) const;
  Result<> Write(uint64_t gva, std::span<const std::byte> in) const;

  template <class T>
  Result<T> ReadObj(uint64_t gva) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    TRY(Read(gva, std::as_writable_bytes(std::span(&value, 1))));
    return value;
  }
  template <class T>
  Result<> WriteObj(uint64_t gva, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(gva, std::as_bytes(std::span(&value, 1)));
  }

 private:
  Result<uint64_t> Translate(uint64_t gva, Access access) const;
  template <class Copy>
  Result<> ForEachPiece(uint64_t gva, uint64_t size, Access access, Copy&& copy) const;

  Platform& platform_;
  mem::GuestMemory& memory_;
  uint32_t vcpu_;
  const Reservation* reservation_;
};

}  // namespace xenkvm::xen
