// One xs_wire client of the store (xen/include/public/io/xs_wire.h, docs/misc/xenstore.txt):
// reassembles requests from the byte stream, answers each as xenstored answers that domain
// (errors as xsd_errors strings, req_id/tx_id echoed), and queues replies and XS_WATCH_EVENT
// messages for the response stream. Transport-free: the ring backend moves the bytes.
//
// Bounds (xenstored's): payloads <= XENSTORE_PAYLOAD_MAX (a longer header is a protocol error);
// no new request is taken while `outstanding` replies wait unread; watch events beyond
// `queued_bytes` of pending output are dropped, as are duplicates of an event still queued.
//
// Threads: ConsumeInput/CopyOutput/Reset from one thread at a time (the ring's owner). Watch
// events arrive from any thread. Lock: out_mutex_ guards the output queue; it is never held
// while calling the Store (order: Store -> out_mutex_).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>

extern "C" {
#include <xen/io/xs_wire.h>
}

#include "abi/result.h"
#include "abi/sync.h"
#include "snapshot/codec.h"
#include "xenstore/store.h"

namespace xenkvm::xenstore {

// The xsd_errors name of a Xen errno ("EINVAL" for one xenstored can't translate).
const char* XsdErrorName(int xen_errno);

class WireConnection {
 public:
  struct Limits {
    uint32_t outstanding = 20;                           // xenstored ACC_OUTST
    size_t queued_bytes = 2 * 1024 * 1024 + 512 * 1024;  // xenstored's hard memory quota
  };
  // on_output: called (without locks held) after a watch event was queued from outside
  // ConsumeInput, so the transport can push it out.
  WireConnection(Store& store, DomId domid, Limits limits, std::function<void()> on_output = {});
  WireConnection(Store& store, DomId domid) : WireConnection(store, domid, Limits{}) {}
  ~WireConnection();
  WireConnection(const WireConnection&) = delete;
  WireConnection& operator=(const WireConnection&) = delete;

  // Takes request bytes; returns how many it took. It stops at a message boundary while
  // `outstanding` replies are queued (the rest stays in the ring). Error: a header announced a
  // payload beyond XENSTORE_PAYLOAD_MAX; the connection is then dead until Reset.
  Result<size_t> ConsumeInput(std::span<const char> bytes);
  // Moves up to out.size() bytes of queued replies/events into `out`; returns the count.
  size_t CopyOutput(std::span<char> out);
  size_t OutputBytes();
  uint32_t OutstandingReplies();
  // Ring reconnection / connection error: drops partial input, queued output, watches and
  // transactions (docs/misc/xenstore-ring.txt).
  void Reset();

  // Stops watch events (waits for one in flight); the connection answers nothing afterwards.
  // The destructor does it too; owners whose callback target dies first call it earlier.
  void Detach();

  // Snapshots (docs/snapshots.md, wire_snapshot.cc): a half-read request and the queued
  // replies and watch events, with how much of the first was sent (the Store saves the
  // connection's watches and transactions). Called like ConsumeInput (one thread at a time).
  // Restore checks everything first (-EINVAL naming what is wrong) and changes nothing then.
  void Save(snapshot::Encoder& out);
  Result<> Restore(snapshot::Decoder& in);

  // One complete request; replies go to the output queue.
  void HandleMessage(const xsd_sockmsg& header, std::string_view payload);

 private:
  struct Out {
    std::string bytes;  // header + payload
    bool reply;         // counts as outstanding until fully written
  };
  Result<std::string> Dispatch(const xsd_sockmsg& header, std::string_view payload);
  void QueueReply(const xsd_sockmsg& request, uint32_t type, std::string_view payload);
  void QueueEvent(const std::string& path, const std::string& token, bool notify);

  Store& store_;
  const DomId domid_;
  const Limits limits_;
  std::function<void()> on_output_;
  ConnId conn_;

  // Input reassembly (the ConsumeInput thread only).
  char header_bytes_[sizeof(xsd_sockmsg)] = {};
  size_t header_used_ = 0;
  std::string payload_;
  bool broken_ = false;

  Mutex out_mutex_;
  std::deque<Out> out_ XENKVM_GUARDED_BY(out_mutex_);
  size_t out_offset_ XENKVM_GUARDED_BY(out_mutex_) = 0;  // bytes of out_.front() already sent
  size_t out_bytes_ XENKVM_GUARDED_BY(out_mutex_) = 0;
  uint32_t outstanding_ XENKVM_GUARDED_BY(out_mutex_) = 0;
};

}  // namespace xenkvm::xenstore
