// 2-level event delivery (xen/include/public/xen.h: shared_info.evtchn_pending/evtchn_mask,
// vcpu_info.evtchn_pending_sel/evtchn_upcall_pending), written once and instantiated for the
// 64-bit layout (4096 ports, 64-bit words) and the compat layout (1024 ports, 32-bit words).
// Order, as Xen does it: pending -> mask -> selector -> upcall_pending -> inject.
#pragma once

#include "evtchn/port_ops.h"
#include "evtchn/sink.h"
#include "mem/guest_memory.h"

namespace xenkvm::evtchn {

template <class Layout>
class TwoLevel final : public PortOps {
  using Word = typename Layout::Word;
  static constexpr uint32_t kBits = Layout::kBitsPerWord;

 public:
  explicit TwoLevel(const mem::GuestMemory& memory) : memory_(memory) {}

  uint32_t MaxPorts() const override { return Layout::kPorts; }
  uint64_t AllSelectorBits() const override { return Word(~Word(0)); }

  [[gnu::always_inline]] RaiseOutcome Raise(Port port, VcpuState& vcpu,
                                            uint8_t* shared_info) override {
    const Word bit = Bit(port);
    // seq_cst: pairs with SCHEDOP_poll registering before it looks (see Engine::BeginPoll).
    if (PendingWord(shared_info, port).fetch_or(bit, std::memory_order_seq_cst) & bit)
      return RaiseOutcome::kCoalesced;
    if (MaskWord(shared_info, port).load(std::memory_order_acquire) & bit)
      return RaiseOutcome::kMasked;
    return MarkSelector(vcpu, port / kBits) ? RaiseOutcome::kDelivered : RaiseOutcome::kShadowed;
  }

  bool Unmask(Port port, VcpuState& vcpu, uint8_t* shared_info) override {
    const Word bit = Bit(port);
    if ((MaskWord(shared_info, port).fetch_and(Word(~bit), std::memory_order_acq_rel) & bit) &&
        (PendingWord(shared_info, port).load(std::memory_order_acquire) & bit))
      return !MarkSelector(vcpu, port / kBits);
    return false;
  }

  void ClearPending(Port port, uint8_t* shared_info) override {
    PendingWord(shared_info, port).fetch_and(Word(~Bit(port)), std::memory_order_acq_rel);
  }
  bool IsPending(Port port, uint8_t* shared_info) const override {
    return PendingWord(shared_info, port).load(std::memory_order_seq_cst) & Bit(port);
  }
  bool IsMasked(Port port, uint8_t* shared_info) const override {
    return MaskWord(shared_info, port).load(std::memory_order_acquire) & Bit(port);
  }

  void SyncShadow(VcpuState& vcpu, uint8_t* vcpu_info) override {
    const uint64_t bits = vcpu.shadow_sel.load(std::memory_order_acquire);
    if (bits == 0) return;
    const Word word_bits = Word(bits);
    const Word before = Selector(vcpu_info).fetch_or(word_bits, std::memory_order_acq_rel);
    vcpu.shadow_sel.fetch_and(~bits, std::memory_order_acq_rel);
    if ((before & word_bits) != word_bits) MarkUpcallPending(vcpu, vcpu_info);
  }

 private:
  static Word Bit(Port port) { return Word(1) << (port % kBits); }
  static std::atomic_ref<Word> PendingWord(uint8_t* shared_info, Port port) {
    return mem::GuestAtomic<Word>(shared_info + Layout::kEvtchnPending +
                                  (port / kBits) * sizeof(Word));
  }
  static std::atomic_ref<Word> MaskWord(uint8_t* shared_info, Port port) {
    return mem::GuestAtomic<Word>(shared_info + Layout::kEvtchnMask +
                                  (port / kBits) * sizeof(Word));
  }
  static std::atomic_ref<Word> Selector(uint8_t* vcpu_info) {
    return mem::GuestAtomic<Word>(vcpu_info + Layout::kPendingSel);
  }

  // Returns false if vcpu_info was unmapped and the bit went to the shadow instead.
  [[gnu::always_inline]] bool MarkSelector(VcpuState& vcpu, uint32_t word_index) {
    const Word sel_bit = Word(1) << word_index;
    uint8_t* vcpu_info = vcpu.vcpu_info.Get(memory_);
    if (vcpu_info == nullptr) vcpu_info = vcpu.vcpu_info.TryRefresh(memory_);
    if (vcpu_info == nullptr) {
      vcpu.shadow_sel.fetch_or(sel_bit, std::memory_order_acq_rel);
      return false;
    }
    if (!(Selector(vcpu_info).fetch_or(sel_bit, std::memory_order_acq_rel) & sel_bit))
      MarkUpcallPending(vcpu, vcpu_info);
    return true;
  }

  static void MarkUpcallPending(VcpuState& vcpu, uint8_t* vcpu_info) {
    auto upcall_pending = mem::GuestAtomic<uint8_t>(vcpu_info + Layout::kUpcallPending);
    if (upcall_pending.exchange(1, std::memory_order_acq_rel) == 0) vcpu.sink->InjectUpcall();
  }

  const mem::GuestMemory& memory_;
};

}  // namespace xenkvm::evtchn
