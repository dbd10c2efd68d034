// The Xen PV console backend (xen/io/console.h: struct xencons_interface): the VMM owns a ring
// page the guest finds through HVM_PARAM_CONSOLE_PFN / CONSOLE_EVTCHN, like xenconsoled does.
// Each send on the port drains the guest's output ring and notifies it back.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "abi/sync.h"
#include "evtchn/engine.h"
#include "mem/guest_memory.h"

namespace xenkvm::vmm {

// Threads: OnGuestSend on the sending vCPU's thread. Lock: mutex_ serialises ring draining.
class ConsoleBackend : public evtchn::Backend {
 public:
  using Sink = std::function<void(std::span<const char>)>;
  ConsoleBackend(mem::GuestMemory& memory, evtchn::Engine& engine, uint64_t ring_gpa, Sink sink)
      : memory_(memory), engine_(engine), ring_gpa_(ring_gpa), sink_(std::move(sink)) {}
  void OnGuestSend(evtchn::Port guest_port) override;

 private:
  mem::GuestMemory& memory_;
  evtchn::Engine& engine_;
  const uint64_t ring_gpa_;
  Sink sink_;
  Mutex mutex_;
};

}  // namespace xenkvm::vmm
