// PV console backend; see console_backend.h.
#include "vmm/console_backend.h"

#include <atomic>
#include <vector>

extern "C" {
#include <xen/io/console.h>
}

namespace xenkvm::vmm {

void ConsoleBackend::OnGuestSend(evtchn::Port guest_port) {
  std::vector<char> out;
  {
    MutexLock lock(mutex_);
    mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory_);
    auto host = memory_.TranslateGuarded(ring_gpa_, sizeof(xencons_interface));
    if (!host) return;
    // The ring is shared with a running guest: indices through atomics, data after acquire.
    auto* ring = reinterpret_cast<xencons_interface*>(*host);
    const uint32_t prod = mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(&ring->out_prod)).load(std::memory_order_acquire);
    uint32_t cons = mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(&ring->out_cons)).load(std::memory_order_relaxed);
    // A hostile guest can set any indices: never read more than one ring's worth.
    if (prod - cons > sizeof(ring->out)) cons = prod - static_cast<uint32_t>(sizeof(ring->out));
    for (; cons != prod; ++cons) out.push_back(ring->out[MASK_XENCONS_IDX(cons, ring->out)]);
    mem::GuestAtomic<uint32_t>(reinterpret_cast<uint8_t*>(&ring->out_cons)).store(cons, std::memory_order_release);
  }
  if (!out.empty()) sink_(out);
  engine_.RaisePort(guest_port);  // "consumed": the guest may be polling for space
}

}  // namespace xenkvm::vmm
