// One guest page in plain host memory behind a GuestMemory, for ring backend tests.
#pragma once

#include <cstdlib>
#include <cstring>

#include "mem/guest_memory.h"

namespace xenkvm::backends {

class FakeRingPage {
 public:
  static constexpr uint64_t kGpa = 0x10000;
  FakeRingPage() : page_(static_cast<uint8_t*>(std::aligned_alloc(4096, 4096))) {
    std::memset(page_, 0, 4096);
    (void)memory_.AddSlot(0, kGpa, 4096, page_);
  }
  ~FakeRingPage() {
    (void)memory_.RemoveSlot(0);
    std::free(page_);
  }
  mem::GuestMemory& memory() { return memory_; }
  template <class T>
  T* As() {
    return reinterpret_cast<T*>(page_);
  }

 private:
  uint8_t* page_;
  mem::GuestMemory memory_;
};

}  // namespace xenkvm::backends
