// The queue's I/O loop on io_uring. Data moves between the image and the guest's granted pages
// directly (O_DIRECT when the request is aligned as the file requires, else through the page
// cache on the buffered fd, which does the bouncing for us).
#include "backends/blkif/queue.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace xenkvm::blkif {
namespace {
constexpr uint64_t kKickTag = UINT64_MAX;
// user_data: slot index << 1 | 1 for the data part of a request, 0 for its flush.
uint64_t Tag(uint32_t slot, bool data) { return uint64_t(slot) << 1 | (data ? 1 : 0); }
}  // namespace

Queue::Queue(const Disk& disk, const DiskLimits& limits, GrantAccess& grants, BackRing ring,
             std::function<void()> notify, DiskStats& stats)
    : disk_(disk),
      limits_(limits),
      grants_(grants),
      ring_(std::move(ring)),
      notify_(std::move(notify)),
      stats_(stats),
      slots_(ring_.size()) {
  for (uint32_t i = ring_.size(); i-- > 0;) free_.push_back(i);
  const size_t max_segments =
      std::max<size_t>(BLKIF_MAX_SEGMENTS_PER_REQUEST, limits.max_indirect_segments);
  for (Slot& slot : slots_) {
    slot.req.segments.reserve(max_segments);
    slot.maps.reserve(max_segments);
    slot.iov.reserve(max_segments);
  }
}

Queue::~Queue() {
  Stop();
  if (uring_ready_) io_uring_queue_exit(&uring_);
}

Result<> Queue::Start(bool quiesced) {
  if (quiesced) state_.store(State::kQuiescing, std::memory_order_release);
  kick_fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC));
  if (!kick_fd_) return Fail(XEN_ENOMEM, "blkif: eventfd failed");
  // Room for every slot's flush + data, and the kick read.
  if (io_uring_queue_init(2 * ring_.size() + 2, &uring_, 0) < 0)
    return Fail(XEN_ENOMEM, "blkif: io_uring_queue_init failed");
  uring_ready_ = true;
  thread_ = std::thread([this] { Run(); });
  return {};
}

void Queue::Kick() {
  if (!kick_fd_) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(kick_fd_.get(), &one, sizeof(one));
}

void Queue::Quiesce() {
  if (!thread_.joinable()) return;
  MutexLock lock(mutex_);
  state_.store(State::kQuiescing, std::memory_order_release);
  Kick();
  quiesced_cv_.wait(lock.native(), [&] {
    mutex_.AssertHeld();
    return quiesced_;
  });
}

void Queue::Resume() {
  {
    MutexLock lock(mutex_);
    quiesced_ = false;
    state_.store(State::kRunning, std::memory_order_release);
  }
  Kick();  // requests may have arrived while we were quiesced
}

void Queue::Stop() {
  if (!thread_.joinable()) return;
  state_.store(State::kStopping, std::memory_order_release);
  Kick();
  thread_.join();
}

io_uring_sqe* Queue::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&uring_);
  if (sqe == nullptr) {  // full: hand what we have to the kernel
    io_uring_submit(&uring_);
    unsubmitted_ = 0;
    sqe = io_uring_get_sqe(&uring_);
  }
  ++unsubmitted_;
  return sqe;
}

void Queue::ArmKick() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, kick_fd_.get(), &kick_buf_, sizeof(kick_buf_), 0);
  io_uring_sqe_set_data64(sqe, kKickTag);
}

void Queue::Run() {
  ArmKick();
  for (;;) {
    const State state = state_.load(std::memory_order_acquire);
    // A held flush goes once everything before it has completed (it is the only slot in use).
    if (held_flush_ && free_.size() + 1 == slots_.size()) {
      flush_in_flight_ = held_flush_;
      held_flush_.reset();
      Submit(*flush_in_flight_);
    }
    if (state == State::kRunning) Consume();
    if (ring_.PushResponses()) notify_();
    if (state != State::kRunning && free_.size() == slots_.size()) {
      if (state == State::kStopping) return;
      MutexLock lock(mutex_);
      // Re-read under the lock: a Resume since the load above must not be acknowledged as a
      // quiesce (a later Quiesce would then return without draining).
      if (state_.load(std::memory_order_acquire) == State::kQuiescing && !quiesced_) {
        quiesced_ = true;
        quiesced_cv_.notify_all();
      }
    }
    io_uring_submit_and_wait(&uring_, 1);
    unsubmitted_ = 0;
    io_uring_cqe* cqes[64];
    unsigned n;
    while ((n = io_uring_peek_batch_cqe(&uring_, cqes, 64)) > 0) {
      for (unsigned i = 0; i < n; ++i) Complete(*cqes[i]);
      io_uring_cq_advance(&uring_, n);
    }
  }
}

void Queue::Consume() {
  // Bounded: each pass takes at most one ring's worth (the slots), and FinalCheck only repeats
  // the pass when a request arrived and a slot is free.
  for (uint32_t pass = 0; pass < 2 * ring_.size() + 2; ++pass) {
    while (!free_.empty() && !held_flush_ && !flush_in_flight_) {
      auto req = ring_.Next();
      if (!req) break;
      Handle(*req);
    }
    if (free_.empty() || held_flush_ || flush_in_flight_ || !ring_.FinalCheckForRequests()) return;
  }
}

void Queue::Answer(uint64_t id, uint8_t operation, int16_t status, Op op, uint64_t bytes) {
  ring_.PutResponse(id, operation, status);
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  if (status != BLKIF_RSP_OKAY) {
    stats_.errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  switch (op) {
    case Op::kRead:
      stats_.reads.fetch_add(1, std::memory_order_relaxed);
      stats_.read_bytes.fetch_add(bytes, std::memory_order_relaxed);
      break;
    case Op::kWrite:
      stats_.writes.fetch_add(1, std::memory_order_relaxed);
      stats_.write_bytes.fetch_add(bytes, std::memory_order_relaxed);
      break;
    case Op::kFlush:
      stats_.flushes.fetch_add(1, std::memory_order_relaxed);
      break;
    case Op::kDiscard:
      stats_.discards.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

void Queue::Handle(const Request& req) {
  const uint32_t index = free_.back();
  Slot& slot = slots_[index];
  int16_t status = ParseRequest(req, limits_, grants_, slot.req);
  if (status == BLKIF_RSP_OKAY && !MapSegments(slot.req, grants_, slot.maps))
    status = BLKIF_RSP_ERROR;
  if (status == BLKIF_RSP_OKAY && slot.req.op == Op::kDiscard &&
      (slot.req.length == 0 || slot.req.secure)) {
    // Nothing to discard, or a secure discard (only advertised for block devices): done here.
    if (slot.req.secure) {
      uint64_t range[2] = {slot.req.offset, slot.req.length};
      if (!disk_.block_device || ioctl(disk_.buffered.get(), BLKSECDISCARD, range) != 0)
        status = BLKIF_RSP_EOPNOTSUPP;
    }
    Answer(slot.req.id, slot.req.operation, status, Op::kDiscard, 0);
    return;
  }
  if (status != BLKIF_RSP_OKAY) {
    slot.maps.clear();
    Answer(slot.req.id, slot.req.operation, status, slot.req.op, 0);
    return;
  }
  free_.pop_back();
  if (!slot.req.flush_first) {
    Submit(index);
  } else if (free_.size() + 1 == slots_.size()) {
    flush_in_flight_ = index;
    Submit(index);
  } else {
    held_flush_ = index;  // waits in Run until the requests before it complete
  }
}

void Queue::Submit(uint32_t index) {
  Slot& slot = slots_[index];
  const ParsedRequest& req = slot.req;
  slot.status = BLKIF_RSP_OKAY;
  slot.pending = 0;
  if (req.flush_first) {
    // Submitted alone (Handle/Run drained the queue first); IO_LINK: the data part, if any,
    // starts after the flush. Not IOSQE_IO_DRAIN: it would also wait for the pending kick read.
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_fsync(sqe, disk_.buffered.get(), IORING_FSYNC_DATASYNC);
    if (req.op != Op::kFlush) sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(sqe, Tag(index, false));
    ++slot.pending;
  }
  if (req.op == Op::kFlush) return;

  io_uring_sqe* sqe = GetSqe();
  if (req.op == Op::kDiscard) {
    io_uring_prep_fallocate(sqe, disk_.buffered.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            req.offset, req.length);
  } else {
    slot.iov.clear();
    uint64_t misaligned = req.offset | req.length;
    for (size_t i = 0; i < req.segments.size(); ++i) {
      uint8_t* base = slot.maps[i].data() + req.segments[i].offset;
      slot.iov.push_back(iovec{base, req.segments[i].length});
      misaligned |= reinterpret_cast<uintptr_t>(base) | req.segments[i].length;
    }
    const bool direct = disk_.dio_align != 0 && (misaligned & (disk_.dio_align - 1)) == 0;
    const int fd = direct ? disk_.direct.get() : disk_.buffered.get();
    if (req.op == Op::kRead) {
      io_uring_prep_readv(sqe, fd, slot.iov.data(), unsigned(slot.iov.size()), req.offset);
    } else {
      io_uring_prep_writev(sqe, fd, slot.iov.data(), unsigned(slot.iov.size()), req.offset);
    }
  }
  io_uring_sqe_set_data64(sqe, Tag(index, true));
  ++slot.pending;
}

void Queue::Complete(const io_uring_cqe& cqe) {
  const uint64_t tag = io_uring_cqe_get_data64(&cqe);
  if (tag == kKickTag) {
    if (state_.load(std::memory_order_relaxed) != State::kStopping) ArmKick();
    return;
  }
  const uint32_t index = uint32_t(tag >> 1);
  Slot& slot = slots_[index];
  const bool data = (tag & 1) != 0;
  const bool ok =
      data && slot.req.op != Op::kDiscard ? cqe.res == int64_t(slot.req.length) : cqe.res == 0;
  if (!ok && slot.status == BLKIF_RSP_OKAY) {
    slot.status = cqe.res == -EOPNOTSUPP ? BLKIF_RSP_EOPNOTSUPP : BLKIF_RSP_ERROR;
  }
  if (--slot.pending == 0) Finish(index);
}

void Queue::Finish(uint32_t index) {
  Slot& slot = slots_[index];
  slot.maps.clear();  // unmap before the guest may reuse the grants
  if (flush_in_flight_ == index) flush_in_flight_.reset();
  Answer(slot.req.id, slot.req.operation, slot.status, slot.req.op, slot.req.length);
  free_.push_back(index);
}

}  // namespace xenkvm::blkif
