// The MSI-capable test device of `xenkvm run --test-device` (registers in abi/platform.h,
// docs/library.md): one MMIO page a guest programs with an MSI address/data pair and tells to
// fire N interrupts from a host thread through the device's eventfd. An MSI with vector 0 is
// Xen's PIRQ form (hvm_inject_msi): the eventfd is bound to an EventfdRouter route whose target
// the device sets to that PIRQ when the guest programs it (as QEMU updates an irqfd's route),
// so each signal goes eventfd -> route -> PirqTable -> port -> upcall. Any other vector is an
// ordinary MSI: a second eventfd is a KVM irqfd on an MSI route (the benchmark's baseline).
//
// Threads: Access from vCPU threads (MMIO exits); the device thread signals. Lock: mutex_
// guards the registers and the firing state; it is a leaf (the router's and KVM's calls made
// under it take only their own locks).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "evtchn/eventfd_router.h"
#include "kvm/vm.h"

namespace xenkvm::vmm {

class MsiTestDevice {
 public:
  static constexpr uint32_t kRouteId = 0;  // its route in the router
  // Its KVM MSI route: past the IO-APIC's 24 pins and the upcall routes (24 + one per vCPU,
  // up to 64: vmm/upcall_injector.cc).
  static constexpr uint32_t kMsiGsi = 128;

  static Result<std::unique_ptr<MsiTestDevice>> Create(kvm::Vm& vm, evtchn::EventfdRouter& router);
  ~MsiTestDevice();
  MsiTestDevice(const MsiTestDevice&) = delete;
  MsiTestDevice& operator=(const MsiTestDevice&) = delete;

  static bool Contains(uint64_t gpa);
  // An MMIO access by the guest inside the page (any vCPU thread). Reads of unknown registers
  // see 0; writes to them are ignored.
  void Access(uint64_t gpa, std::span<uint8_t> data, bool is_write);
  // What the paced runs measured, one line per MSI kind used (for stderr at the end).
  std::string Summary();

 private:
  enum class Kind { kNone, kPirq, kMsi };
  MsiTestDevice(kvm::Vm& vm, evtchn::EventfdRouter& router, int pirq_fd, int msi_fd)
      : vm_(vm), router_(router), pirq_fd_(pirq_fd), msi_fd_(msi_fd) {}
  // The guest changed the MSI: point the route (PIRQ) or the KVM MSI route at it.
  void ProgramLocked() XENKVM_REQUIRES(mutex_);
  void Loop();
  // Until the router has read `fd` empty and raised what it read (bounded by kAckTimeout).
  void WaitRouteSettled(int fd);

  kvm::Vm& vm_;
  evtchn::EventfdRouter& router_;
  const int pirq_fd_;  // bound to route kRouteId
  const int msi_fd_;   // a KVM irqfd on kMsiGsi

  Mutex mutex_;
  std::condition_variable cv_;
  uint64_t msi_addr_ XENKVM_GUARDED_BY(mutex_) = 0;
  uint32_t msi_data_ XENKVM_GUARDED_BY(mutex_) = 0;
  Kind kind_ XENKVM_GUARDED_BY(mutex_) = Kind::kNone;
  uint64_t to_fire_ XENKVM_GUARDED_BY(mutex_) = 0;
  bool paced_ XENKVM_GUARDED_BY(mutex_) = false;
  bool acked_ XENKVM_GUARDED_BY(mutex_) = false;
  // The paced signal waiting for its ACK: when it was sent and on which kind. The ACK records
  // its latency itself, so a guest that acks its last one and powers off at once loses none.
  bool awaiting_ack_ XENKVM_GUARDED_BY(mutex_) = false;
  uint64_t fired_ns_ XENKVM_GUARDED_BY(mutex_) = 0;
  Kind fired_kind_ XENKVM_GUARDED_BY(mutex_) = Kind::kNone;
  bool stopping_ XENKVM_GUARDED_BY(mutex_) = false;
  // Signal -> ACK latencies of paced runs, per kind (bounded: the first kMaxSamples).
  static constexpr size_t kMaxSamples = 100000;
  std::vector<uint64_t> pirq_ns_ XENKVM_GUARDED_BY(mutex_);
  std::vector<uint64_t> msi_ns_ XENKVM_GUARDED_BY(mutex_);
  std::atomic<uint64_t> seq_{0};
  std::thread thread_;
};

}  // namespace xenkvm::vmm
