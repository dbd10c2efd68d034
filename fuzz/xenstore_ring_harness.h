// Hostile-guest harness for the xenstore ring and the xs_wire parser: interprets bytes as guest
// actions — well-formed and malformed requests (any type, tx id, payload), raw bytes, wild ring
// indexes, reconnections — mixed with host-side writes that fire watches. Checks what xenstored
// guarantees: the backend never crashes or hangs, the reply stream stays well formed (headers
// within XENSTORE_PAYLOAD_MAX, errors named as xsd_errors), the response index never runs more
// than a ring ahead, the connection's queued output and the guest's nodes stay within quota.
// Shared by the libFuzzer target (fuzz/xenstore_fuzz.cc) and a seeded unit test.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "backends/ring_bytes.h"
#include "backends/xenstore_ring.h"

namespace xenkvm::fuzz {

class XsByteReader {
 public:
  explicit XsByteReader(std::span<const uint8_t> data) : data_(data) {}
  bool empty() const { return pos_ >= data_.size(); }
  uint8_t U8() { return pos_ < data_.size() ? data_[pos_++] : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = v << 8 | U8();
    return v;
  }
  // Mostly paths and values a guest would use, sometimes junk.
  std::string Word() {
    static const char* kWords[] = {"data",
                                   "data/a",
                                   "data/a/b",
                                   "/local/domain/1",
                                   "control",
                                   "/tool",
                                   "@releaseDomain",
                                   "device",
                                   "data/xyz",
                                   "/",
                                   "T",
                                   "F",
                                   "1",
                                   "0",
                                   "n1",
                                   "r0",
                                   "b2",
                                   "relative",
                                   "/local/domain/0"};
    const uint8_t k = U8();
    if (k < 200) return kWords[k % (sizeof(kWords) / sizeof(kWords[0]))];
    std::string junk(U8() % 24, '\0');
    for (char& c : junk) c = char(U8());
    return junk;
  }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

// Returns false (and says why on stderr) if an invariant broke.
// `replies`, if given, accumulates the reply bytes the backend produced (so a seeded test can
// tell the traffic reached the protocol layer).
inline bool RunXenstoreRing(std::span<const uint8_t> input, uint64_t* replies = nullptr) {
  constexpr uint64_t kGpa = 0x4000;
  auto* page = static_cast<uint8_t*>(std::aligned_alloc(4096, 4096));
  std::memset(page, 0, 4096);
  bool ok = true;
  {
    mem::GuestMemory memory;
    (void)memory.AddSlot(0, kGpa, 4096, page);
    xenstore::Store store;
    const xenstore::ConnId dom0 = store.Connect(xenstore::kPrivilegedDomid);
    (void)store.Mkdir(dom0, 0, "/local/domain/1/data");
    (void)store.SetPerms(dom0, 0, "/local/domain/1", {{0, xenstore::kNone}, {1, xenstore::kRead}});
    (void)store.SetPerms(dom0, 0, "/local/domain/1/data", {{1, xenstore::kNone}});
    const xenstore::WireConnection::Limits limits{};
    backends::XenstoreRing ring(
        memory, kGpa, store, 1, [] {}, limits);
    auto* intf = reinterpret_cast<xenstore_domain_interface*>(page);

    auto check = [&](bool condition, const char* what) {
      if (!condition) {
        std::fprintf(stderr, "invariant broken: %s\n", what);
        ok = false;
      }
    };
    std::string stream;   // reply bytes the guest read, while the stream is in sync
    bool in_sync = true;  // false once the guest scribbled on the response indexes
    auto guest_send = [&](std::string_view bytes) {
      const uint32_t cons = backends::LoadIndex(&intf->req_cons);
      const uint32_t prod = backends::LoadIndex(&intf->req_prod);
      if (prod - cons > XENSTORE_RING_SIZE) return;
      const size_t n = std::min<size_t>(bytes.size(), XENSTORE_RING_SIZE - (prod - cons));
      backends::CopyToRing(intf->req, prod, bytes.substr(0, n));
      backends::StoreIndex(&intf->req_prod, prod + uint32_t(n));
    };
    auto guest_receive = [&] {
      const uint32_t cons = backends::LoadIndex(&intf->rsp_cons);
      const uint32_t prod = backends::LoadIndex(&intf->rsp_prod);
      if (in_sync) check(prod - cons <= XENSTORE_RING_SIZE, "response index ran ahead");
      if (prod - cons > XENSTORE_RING_SIZE) return;
      std::string chunk(prod - cons, '\0');
      backends::CopyFromRing(intf->rsp, cons, chunk);
      backends::StoreIndex(&intf->rsp_cons, prod);
      if (!in_sync) return;
      stream += chunk;
      while (stream.size() >= sizeof(xsd_sockmsg)) {
        xsd_sockmsg h;
        std::memcpy(&h, stream.data(), sizeof(h));
        check(h.len <= XENSTORE_PAYLOAD_MAX, "reply beyond XENSTORE_PAYLOAD_MAX");
        check(h.type < XS_TYPE_COUNT, "reply of unknown type");
        if (stream.size() < sizeof(h) + h.len) break;
        if (h.type == XS_ERROR) {
          static const std::string kNames[] = {
              "EINVAL",    "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM",  "ENOSPC", "EIO",
              "ENOTEMPTY", "ENOSYS", "EROFS",  "EBUSY",  "EAGAIN", "EISCONN", "E2BIG",  "EPERM"};
          const std::string name = stream.substr(sizeof(h), h.len);
          bool known = false;
          for (const auto& n : kNames) known = known || name == n + '\0';
          check(known, "error reply is not an xsd_errors name");
        }
        stream.erase(0, sizeof(h) + h.len);
      }
    };

    XsByteReader in(input);
    for (int steps = 0; !in.empty() && steps < 256 && ok; ++steps) {
      switch (in.U8() % 16) {
        default: {  // a framed request built from words
          std::string payload;
          const int words = in.U8() % 4;
          for (int i = 0; i < words; ++i) payload += in.Word() + '\0';
          if (in.U8() % 4 == 0) payload += in.Word();  // trailing bytes without a NUL
          const uint8_t kind = in.U8();
          xsd_sockmsg h{.type = kind < 230 ? uint32_t(kind % XS_TYPE_COUNT) : in.U32(),
                        .req_id = in.U32(),
                        .tx_id = in.U8() % 4 == 0 ? in.U32() : in.U8() % 3,
                        .len = uint32_t(payload.size())};
          std::string bytes(reinterpret_cast<const char*>(&h), sizeof(h));
          guest_send(bytes + payload);
          ring.OnGuestSend(1);
          break;
        }
        case 8: {  // raw bytes
          std::string raw(in.U8() % 64, '\0');
          for (char& c : raw) c = char(in.U8());
          guest_send(raw);
          in_sync = false;  // a raw header may announce anything: stop parsing replies
          ring.OnGuestSend(1);
          break;
        }
        case 9:
        case 10:
          guest_receive();
          ring.OnGuestSend(1);
          break;
        case 11: {  // wild indexes
          uint32_t* indexes[] = {&intf->req_cons, &intf->req_prod, &intf->rsp_cons,
                                 &intf->rsp_prod};
          backends::StoreIndex(indexes[in.U8() % 4], in.U32());
          in_sync = false;
          ring.OnGuestSend(1);
          break;
        }
        case 12:  // reconnection
          backends::StoreIndex(&intf->connection, XENSTORE_RECONNECT);
          ring.OnGuestSend(1);
          check(intf->connection == XENSTORE_CONNECTED, "reconnection not finished");
          stream.clear();
          in_sync = true;
          break;
        case 13:
        case 14:  // the host changes something (fires the guest's watches)
          (void)store.Write(dom0, 0, "/local/domain/1/" + in.Word(), in.Word());
          break;
        case 15:
          (void)store.Rm(dom0, 0, "/local/domain/1/" + in.Word());
          break;
      }
      check(store.NodesOwnedBy(1) < store.quotas().nodes, "node quota exceeded");
    }
    if (replies) *replies += ring.counters().reply_bytes;
  }
  std::free(page);
  return ok;
}

}  // namespace xenkvm::fuzz
