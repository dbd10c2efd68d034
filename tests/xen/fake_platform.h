// A Platform for unit tests: identity GVA->GPA except for explicitly remapped pages, a
// recorded console, and vCPU/upcall/timer calls recorded for assertions. Single-threaded.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mem/guest_memory.h"
#include "xen/platform.h"

namespace xenkvm::xen::testing {

class FakePlatform : public Platform {
 public:
  explicit FakePlatform(uint32_t vcpus, uint64_t ram_size) : vcpus_(vcpus), ram_size_(ram_size) {
    map_ = {{0, ram_size, XEN_HVM_MEMMAP_TYPE_RAM},
            {0xfee00000, 0x1000, XEN_HVM_MEMMAP_TYPE_RESERVED}};
  }

  // Guest-virtual page -> guest-physical page; unlisted pages map 1:1 below ram_size.
  std::map<uint64_t, uint64_t> remap;
  std::vector<uint64_t> unmapped_pages;
  std::vector<uint64_t> read_only_pages;  // writes fault, as a read-only PTE would
  std::string console;
  uint32_t shutdown_reason = UINT32_MAX;
  std::map<uint32_t, uint8_t> upcall_vectors;
  uint8_t callback_vector = 0;
  std::vector<uint32_t> raised;
  uint64_t now_ns = 1'000'000;
  std::map<uint32_t, std::pair<uint64_t, uint64_t>> timers;
  std::map<uint32_t, bool> up;
  std::map<uint32_t, vcpu_hvm_context> contexts;
  uint8_t* ram = nullptr;                               // guest RAM, for ReleaseRam
  std::vector<std::pair<uint64_t, uint64_t>> released;  // ReleaseRam(gpa, size) calls

  uint32_t VcpuCount() const override { return vcpus_; }
  Result<uint64_t> TranslateGva(uint32_t, uint64_t gva, Access access) override {
    const uint64_t page = gva & ~0xfffull;
    if (access == Access::kWrite) {
      for (uint64_t p : read_only_pages) {
        if (p == page) return Fail(XEN_EFAULT, "read-only");
      }
    }
    for (uint64_t p : unmapped_pages) {
      if (p == page) return Fail(XEN_EFAULT, "unmapped");
    }
    if (auto it = remap.find(page); it != remap.end()) return it->second | (gva & 0xfff);
    if (gva >= ram_size_) return Fail(XEN_EFAULT, "beyond RAM");
    return gva;
  }
  std::span<const MemoryMapEntry> MemoryMap() const override { return map_; }
  uint64_t RamPages() const override { return ram_size_ >> 12; }
  // Zeroes the range in `ram` (if set), as MADV_DONTNEED would, and records it.
  void ReleaseRam(uint64_t gpa, uint64_t size) override {
    released.emplace_back(gpa, size);
    if (ram != nullptr) std::memset(ram + gpa, 0, size);
  }
  // Special pages: a host page per gfn, added to `memory` (if set) as its own slot.
  Result<> MapSpecialPage(uint64_t gfn) override {
    if (special.count(gfn)) return Fail(XEN_EEXIST, "mapped twice");
    if (special.size() >= max_special) return Fail(XEN_ENOSPC, "no slot");
    auto& page = special[gfn];
    page.reset(new uint8_t[4096]());
    if (memory != nullptr) {
      uint32_t slot = next_slot++;
      slots[gfn] = slot;
      TRY(memory->AddSlot(slot, gfn << 12, 4096, page.get()));
    }
    return {};
  }
  void UnmapSpecialPage(uint64_t gfn) override {
    unmapped_special.push_back(gfn);
    if (memory != nullptr && slots.count(gfn)) (void)memory->RemoveSlot(slots[gfn]);
    slots.erase(gfn);
    special.erase(gfn);
  }
  void ConsoleWrite(std::span<const char> bytes) override {
    console.append(bytes.data(), bytes.size());
  }
  size_t ConsoleRead(std::span<char>) override { return 0; }
  void Shutdown(uint32_t reason) override { shutdown_reason = reason; }
  bool Stopping() const override { return shutdown_reason != UINT32_MAX; }
  Result<> InitialiseVcpu(uint32_t target, const vcpu_hvm_context& context) override {
    if (contexts.count(target)) return Fail(XEN_EEXIST, "initialised");
    contexts[target] = context;
    return {};
  }
  Result<> UpVcpu(uint32_t target) override {
    if (!contexts.count(target) && target != 0) return Fail(XEN_EINVAL, "not initialised");
    up[target] = true;
    return {};
  }
  Result<> DownVcpu(uint32_t target) override {
    up[target] = false;
    return {};
  }
  bool VcpuIsUp(uint32_t target) const override {
    return target == 0 || (up.count(target) && up.at(target));
  }
  void SetUpcallVector(uint32_t target, uint8_t vector) override {
    upcall_vectors[target] = vector;
  }
  void SetCallbackVector(uint8_t vector) override { callback_vector = vector; }
  void RaiseUpcall(uint32_t target) override { raised.push_back(target); }
  uint64_t SystemTimeNs() const override { return now_ns; }
  void BootWallclock(uint64_t* sec, uint32_t* nsec) const override {
    *sec = 1'700'000'000;
    *nsec = 5;
  }
  void SetTimer(uint32_t target, uint64_t deadline_ns, uint64_t period_ns) override {
    timers[target] = {deadline_ns, period_ns};
  }
  Result<vcpu_time_info> VcpuTime(uint32_t) override {
    vcpu_time_info t{};
    t.system_time = now_ns;
    t.tsc_to_system_mul = 1u << 31;
    return t;
  }
  uint64_t WakeSeq(uint32_t) override { return wake_seq_; }
  void Sleep(uint32_t, uint64_t, uint64_t deadline_ns) override {
    // Time "passes" to the deadline; a test that sleeps forever would be a bug: end it.
    now_ns = deadline_ns != 0 ? deadline_ns : now_ns + 1;
    ++wake_seq_;
    // SCHEDOP_block with nothing pending would wait forever: stop the "VM" instead.
    if (++sleeps > max_sleeps) shutdown_reason = SHUTDOWN_crash;
  }
  void Yield(uint32_t) override { ++yields; }

  mem::GuestMemory* memory = nullptr;  // where special pages appear
  std::map<uint64_t, std::unique_ptr<uint8_t[]>> special;
  std::map<uint64_t, uint32_t> slots;
  std::vector<uint64_t> unmapped_special;
  uint32_t next_slot = 1;
  size_t max_special = 80;

  int sleeps = 0;
  int max_sleeps = 1000;
  int yields = 0;

 private:
  uint32_t vcpus_;
  uint64_t ram_size_;
  std::vector<MemoryMapEntry> map_;
  uint64_t wake_seq_ = 0;
};

}  // namespace xenkvm::xen::testing
