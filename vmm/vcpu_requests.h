// Requests to a vCPU thread as one bitmask, as KVM's kvm_make_request/kvm_check_request: any
// thread sets bits and kicks; the vCPU's own thread takes them before its next KVM_RUN (or
// while it sleeps in a hypercall). A request set twice before it is taken is done once.
#pragma once

#include <atomic>
#include <cstdint>

namespace xenkvm::vmm {

enum VcpuRequest : uint32_t {
  kRequestSyncEvents = 1u << 0,      // Engine::SyncVcpu (deferred event work for this vCPU)
  kRequestFixLvt0 = 1u << 1,         // set LVT0 = ExtINT (the global callback vector needs it)
  kRequestCallbackUpcall = 1u << 2,  // re-check upcall_pending and queue the callback ExtINT
  kRequestPause = 1u << 3,           // park before the next KVM_RUN (Machine::Pause)
};

class VcpuRequests {
 public:
  // Any thread. Release: what the requester wrote before is visible to the taker.
  void Make(uint32_t bits) { bits_.fetch_or(bits, std::memory_order_release); }
  // Own thread: whether `bit` was requested, clearing it (cheap when it was not).
  bool Check(uint32_t bit) {
    if ((bits_.load(std::memory_order_acquire) & bit) == 0) return false;
    return (bits_.fetch_and(~bit, std::memory_order_acq_rel) & bit) != 0;
  }
  // Own thread: every pending request, cleared.
  uint32_t TakeAll() {
    if (bits_.load(std::memory_order_acquire) == 0) return 0;
    return bits_.exchange(0, std::memory_order_acq_rel);
  }

 private:
  std::atomic<uint32_t> bits_{0};
};

}  // namespace xenkvm::vmm
