// How the block backend reaches guest pages: by grant reference (xen/include/public/grant_table.h).
// The integrator adapts the domain's grant table to GrantAccess; tests use a fake over plain
// memory. A mapping lives as long as its GrantMapping (the RAII handle) and covers one 4 KiB page.
#pragma once

#include <cstdint>
#include <span>
#include <utility>

#include "abi/result.h"

namespace xenkvm::blkif {

using GrantRef = uint32_t;
inline constexpr size_t kPageSize = 4096;

class GrantAccess;

// One mapped grant: a host view of the granted page, released on destruction. Move-only.
class GrantMapping {
 public:
  GrantMapping() = default;
  GrantMapping(GrantAccess* owner, std::span<uint8_t, kPageSize> page, uintptr_t cookie)
      : owner_(owner), page_(page.data()), cookie_(cookie) {}
  GrantMapping(GrantMapping&& other) noexcept { *this = std::move(other); }
  GrantMapping& operator=(GrantMapping&& other) noexcept;
  GrantMapping(const GrantMapping&) = delete;
  GrantMapping& operator=(const GrantMapping&) = delete;
  ~GrantMapping() { Reset(); }

  // The guest's page: guest-controlled contents, may change under us at any time.
  uint8_t* data() const { return page_; }
  std::span<uint8_t, kPageSize> page() const {
    return std::span<uint8_t, kPageSize>(page_, kPageSize);
  }
  explicit operator bool() const { return page_ != nullptr; }
  void Reset();

 private:
  GrantAccess* owner_ = nullptr;
  uint8_t* page_ = nullptr;
  uintptr_t cookie_ = 0;
};

// Threads: Map and Release may be called from any backend I/O thread concurrently.
class GrantAccess {
 public:
  virtual ~GrantAccess() = default;
  // Maps the guest's grant `ref` (granted to us, the backend domain). writable: the backend
  // will write into the page (a read from disk). Errors: a bad or unused ref, a read-only grant
  // asked for writing, a frame outside guest memory -> any Error (the request fails).
  virtual Result<GrantMapping> Map(GrantRef ref, bool writable) = 0;

 protected:
  friend class GrantMapping;
  // Ends the mapping that Map handed out with this cookie.
  virtual void Release(uintptr_t cookie) = 0;
};

inline void GrantMapping::Reset() {
  if (owner_ != nullptr) owner_->Release(cookie_);
  owner_ = nullptr;
  page_ = nullptr;
}

inline GrantMapping& GrantMapping::operator=(GrantMapping&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = std::exchange(other.owner_, nullptr);
    page_ = std::exchange(other.page_, nullptr);
    cookie_ = other.cookie_;
  }
  return *this;
}

}  // namespace xenkvm::blkif
