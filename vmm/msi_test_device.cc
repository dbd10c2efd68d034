// MsiTestDevice: the --test-device MMIO page and its firing thread (see the header).
#include "vmm/msi_test_device.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "abi/platform.h"
#include "evtchn/msi.h"

namespace xenkvm::vmm {

namespace {

uint64_t NowNs() {
  return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

// How long a paced run waits for the guest's ACK before it gives the rest up.
constexpr auto kAckTimeout = std::chrono::seconds(10);

std::string Percentiles(const char* kind, std::vector<uint64_t> ns) {
  if (ns.empty()) return "";
  std::sort(ns.begin(), ns.end());
  char line[160];
  std::snprintf(line, sizeof(line),
                "xenkvm: test-device %s: %zu paced interrupts, signal->ack median %.1f us, "
                "p90 %.1f us\n",
                kind, ns.size(), double(ns[ns.size() / 2]) / 1000.0,
                double(ns[ns.size() * 9 / 10]) / 1000.0);
  return line;
}

}  // namespace

Result<std::unique_ptr<MsiTestDevice>> MsiTestDevice::Create(kvm::Vm& vm,
                                                             evtchn::EventfdRouter& router) {
  const int pirq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int msi_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::unique_ptr<MsiTestDevice> d(new MsiTestDevice(vm, router, pirq_fd, msi_fd));
  if (pirq_fd < 0 || msi_fd < 0) return HostFail(errno, "eventfd for the test device");
  TRY(router.AddRouteBinding(pirq_fd, kRouteId));
  TRY(vm.AddIrqfd(msi_fd, kMsiGsi));
  d->thread_ = std::thread([dev = d.get()] { dev->Loop(); });
  return d;
}

MsiTestDevice::~MsiTestDevice() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (pirq_fd_ >= 0) {
    (void)router_.Remove(pirq_fd_);
    close(pirq_fd_);
  }
  if (msi_fd_ >= 0) {
    (void)vm_.RemoveIrqfd(msi_fd_, kMsiGsi);
    close(msi_fd_);
  }
}

bool MsiTestDevice::Contains(uint64_t gpa) {
  return gpa >= XENKVM_TEST_DEVICE_GPA && gpa - XENKVM_TEST_DEVICE_GPA < 0x1000;
}

void MsiTestDevice::ProgramLocked() {
  // vector 0: a PIRQ (Xen's hvm_inject_msi decoding); the route follows it. PIRQ 0 and PIRQs
  // beyond the table are not interrupts (Xen: -ERANGE / -EINVAL): the device stays silent.
  if (auto pirq = evtchn::PirqFromMsi(msi_addr_, msi_data_)) {
    evtchn::EventfdRouter::RouteTarget target;
    target.is_pirq = true;
    target.pirq = *pirq;
    const bool ok = *pirq != 0 && router_.SetRoute(kRouteId, target).has_value();
    if (!ok) (void)router_.RemoveRoute(kRouteId);
    kind_ = ok ? Kind::kPirq : Kind::kNone;
    return;
  }
  (void)router_.RemoveRoute(kRouteId);
  kind_ = vm_.SetMsiRoute(kMsiGsi, msi_addr_, msi_data_) ? Kind::kMsi : Kind::kNone;
}

void MsiTestDevice::Access(uint64_t gpa, std::span<uint8_t> data, bool is_write) {
  const uint64_t offset = gpa - XENKVM_TEST_DEVICE_GPA;
  const uint64_t ack_ns = NowNs();  // before the lock: the guest's ACK is now
  uint64_t value = 0;
  std::memcpy(&value, data.data(), std::min(data.size(), sizeof(value)));
  if (!is_write) {
    uint64_t out = 0;
    {
      MutexLock lock(mutex_);
      if (offset == XENKVM_TEST_DEVICE_MSI_ADDR) out = msi_addr_;
      if (offset == XENKVM_TEST_DEVICE_MSI_DATA) out = msi_data_;
    }
    if (offset == XENKVM_TEST_DEVICE_SEQ) out = seq_.load(std::memory_order_acquire);
    std::memset(data.data(), 0, data.size());
    std::memcpy(data.data(), &out, std::min(data.size(), sizeof(out)));
    return;
  }
  MutexLock lock(mutex_);
  switch (offset) {
    case XENKVM_TEST_DEVICE_MSI_ADDR:
      msi_addr_ = value;
      ProgramLocked();
      return;
    case XENKVM_TEST_DEVICE_MSI_DATA:
      msi_data_ = uint32_t(value);
      ProgramLocked();
      return;
    case XENKVM_TEST_DEVICE_FIRE:
    case XENKVM_TEST_DEVICE_FIRE_PACED:
      // One request at a time: a new one replaces what is left of the last.
      // acked_ is left alone: the loop may still wait for the ACK of the last request's last
      // interrupt, which the guest may already have sent (clearing it here lost that ACK and
      // stalled the new run for kAckTimeout, then dropped it).
      to_fire_ = std::min<uint64_t>(value, XENKVM_TEST_DEVICE_MAX_FIRE);
      paced_ = offset == XENKVM_TEST_DEVICE_FIRE_PACED;
      cv_.notify_all();
      return;
    case XENKVM_TEST_DEVICE_CLEAR_TIMES:
      pirq_ns_.clear();
      msi_ns_.clear();
      return;
    case XENKVM_TEST_DEVICE_ACK:
      if (!acked_) {
        acked_ = true;
        if (awaiting_ack_) {
          awaiting_ack_ = false;
          std::vector<uint64_t>& samples = fired_kind_ == Kind::kPirq ? pirq_ns_ : msi_ns_;
          if (samples.size() < kMaxSamples) samples.push_back(ack_ns - fired_ns_);
        }
        cv_.notify_all();
      }
      return;
    default:
      return;
  }
}

void MsiTestDevice::WaitRouteSettled(int fd) {
  const auto limit = std::chrono::steady_clock::now() + kAckTimeout;
  while (std::chrono::steady_clock::now() < limit) {
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, 0) == 0 && router_.Settled()) return;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void MsiTestDevice::Loop() {
  MutexLock lock(mutex_);
  for (;;) {
    cv_.wait(lock.native(), [&] {
      mutex_.AssertHeld();
      return stopping_ || to_fire_ > 0;
    });
    if (stopping_) return;
    --to_fire_;
    const Kind kind = kind_;
    const bool paced = paced_;
    const int fd = kind == Kind::kPirq ? pirq_fd_ : kind == Kind::kMsi ? msi_fd_ : -1;
    if (fd < 0) continue;  // not programmed with a deliverable MSI: nothing to signal
    acked_ = false;
    const uint64_t start = NowNs();
    const uint64_t one = 1;
    // The eventfd never blocks (non-blocking; the counter can't reach its limit here).
    (void)!write(fd, &one, sizeof(one));
    // The last signal of a PIRQ burst: SEQ may say "all signalled" only once the route has
    // read the eventfd empty and raised what it read, or a guest that looks right then finds
    // nothing pending yet and its event still to come.
    if (!paced && to_fire_ == 0 && kind == Kind::kPirq) {
      lock.native().unlock();
      WaitRouteSettled(fd);
      lock.native().lock();
    }
    seq_.fetch_add(1, std::memory_order_release);
    if (!paced) continue;
    awaiting_ack_ = true;
    fired_ns_ = start;
    fired_kind_ = kind;
    if (!cv_.wait_for(lock.native(), kAckTimeout, [&] {
          mutex_.AssertHeld();
          return stopping_ || acked_;
        })) {
      to_fire_ = 0;  // the guest stopped answering: give the run up
      awaiting_ack_ = false;
      continue;
    }
    if (stopping_) return;
  }
}

std::string MsiTestDevice::Summary() {
  MutexLock lock(mutex_);
  return Percentiles("PIRQ route", pirq_ns_) + Percentiles("irqfd MSI", msi_ns_);
}

}  // namespace xenkvm::vmm
