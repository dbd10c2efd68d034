// One blkif queue: its ring and the I/O thread that serves it on io_uring. The thread takes a
// batch of requests off the ring, submits them with one syscall, answers them in completion
// order and notifies the guest once per batch (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
// In-flight requests are bounded by the ring size (one slot each, preallocated).
//
// Threads: the I/O thread owns the ring, the slots and the io_uring. Kick/OnGuestSend, Quiesce,
// Resume and Stop may be called from any thread. Lock: mutex_ guards the quiesce handshake
// (quiesced_, and changes of state_ between running and quiescing); it is a leaf lock.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "abi/sync.h"
#include "backends/blkif/disk.h"
#include "backends/blkif/request.h"
#include "backends/blkif/ring.h"
#include "backends/blkif/stats.h"
#include "evtchn/sink.h"

namespace xenkvm::blkif {

class Queue : public evtchn::Backend {
 public:
  // notify raises the queue's interdomain port toward the guest; called on the I/O thread.
  Queue(const Disk& disk, const DiskLimits& limits, GrantAccess& grants, BackRing ring,
        std::function<void()> notify, DiskStats& stats);
  ~Queue() override;

  // A restored queue starts quiesced: it takes no request before Resume (the rest of the
  // machine is not restored yet).
  Result<> Start(bool quiesced = false);
  // The guest notified us: look at the ring.
  void Kick();
  void OnGuestSend(evtchn::Port) override { Kick(); }
  // Stops taking requests and returns once every in-flight request has been answered.
  void Quiesce();
  void Resume();
  // Between Quiesce and Resume: where the ring stands (BackRing::consumed), for a snapshot.
  uint32_t QuiescedPosition() const { return ring_.consumed(); }
  // Quiesce, then end the thread. Idempotent.
  void Stop();

 private:
  enum class State : uint8_t { kRunning, kQuiescing, kStopping };
  struct Slot {
    ParsedRequest req;
    std::vector<GrantMapping> maps;
    std::vector<iovec> iov;
    uint32_t pending = 0;  // CQEs still due
    int16_t status = BLKIF_RSP_OKAY;
  };

  void Run();
  void Consume();
  void Handle(const Request& req);
  void Submit(uint32_t slot_index);
  io_uring_sqe* GetSqe();
  void ArmKick();
  void Complete(const io_uring_cqe& cqe);
  void Answer(uint64_t id, uint8_t operation, int16_t status, Op op, uint64_t bytes);
  void Finish(uint32_t slot_index);

  const Disk& disk_;
  const DiskLimits limits_;
  GrantAccess& grants_;
  BackRing ring_;
  std::function<void()> notify_;
  DiskStats& stats_;

  io_uring uring_{};
  bool uring_ready_ = false;
  UniqueFd kick_fd_;
  uint64_t kick_buf_ = 0;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;
  uint32_t unsubmitted_ = 0;
  // Flushes and barriers are ordered against every other request: one waits (held) until the
  // requests before it completed, and no request is taken while it runs.
  std::optional<uint32_t> held_flush_;
  std::optional<uint32_t> flush_in_flight_;

  std::atomic<State> state_{State::kRunning};
  Mutex mutex_;
  std::condition_variable quiesced_cv_;
  bool quiesced_ XENKVM_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace xenkvm::blkif
