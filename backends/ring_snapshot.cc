// Save / Restore of the console and xenstore ring backends (docs/snapshots.md): the host-side
// state of io/console.h and io/xs_wire.h rings. Both rings' pages (indexes and the bytes in
// them) are guest memory and travel with it; what is saved here is what the VMM holds.
#include "backends/console_ring.h"
#include "backends/xenstore_ring.h"

namespace xenkvm::backends {

namespace {
void EncodeCounters(snapshot::Encoder& out, std::initializer_list<uint64_t> counters) {
  for (uint64_t c : counters) out.U64(c);
}
}  // namespace

void ConsoleRing::Save(snapshot::Encoder& out) {
  MutexLock lock(mutex_);
  const std::string input(input_.begin(), input_.end());
  out.String(input);
  EncodeCounters(
      out, {counters_.out_bytes, counters_.in_bytes, counters_.notifies, counters_.bad_indexes});
}

Result<> ConsoleRing::Restore(snapshot::Decoder& in) {
  const std::string input = in.String(kMaxPendingInput);
  Counters counters;
  counters.out_bytes = in.U64();
  counters.in_bytes = in.U64();
  counters.notifies = in.U64();
  counters.bad_indexes = in.U64();
  TRY(in.Finish());
  MutexLock lock(mutex_);
  // Input taken since this process started follows what the saved guest had not read yet.
  const size_t keep = std::min(input_.size(), kMaxPendingInput - input.size());
  input_.erase(input_.begin() + ptrdiff_t(keep), input_.end());
  input_.insert(input_.begin(), input.begin(), input.end());
  counters_ = counters;
  return {};
}

void XenstoreRing::Save(snapshot::Encoder& out) {
  MutexLock lock(mutex_);
  out.Bool(failed_);
  EncodeCounters(out, {counters_.requests_bytes, counters_.reply_bytes, counters_.notifies,
                       counters_.errors, counters_.reconnections});
  wire_->Save(out);
}

Result<> XenstoreRing::Restore(snapshot::Decoder& in) {
  const bool failed = in.Bool();
  Counters counters;
  counters.requests_bytes = in.U64();
  counters.reply_bytes = in.U64();
  counters.notifies = in.U64();
  counters.errors = in.U64();
  counters.reconnections = in.U64();
  MutexLock lock(mutex_);
  TRY(wire_->Restore(in));  // checks the rest and Finish()es; changes nothing on failure
  failed_ = failed;
  counters_ = counters;
  return {};
}

}  // namespace xenkvm::backends
