// Save/Restore of the console and xenstore ring backends: the page is copied as guest memory
// travels, the backend's own state through its section. Pending console input reaches the
// restored guest in order; a xenstore request half read when saved is answered after the
// restore; every truncation is refused and changes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

extern "C" {
#include <xen/io/console.h>
}

#include "backends/console_ring.h"
#include "backends/ring_bytes.h"
#include "backends/xenstore_ring.h"
#include "tests/backends/fake_ring_page.h"

namespace xenkvm::backends {
namespace {

template <class Ring>
std::vector<std::byte> Save(Ring& ring) {
  snapshot::Encoder out;
  ring.Save(out);
  return out.Take();
}
template <class Ring>
Result<> Restore(Ring& ring, std::span<const std::byte> bytes) {
  snapshot::Decoder in(bytes);
  return ring.Restore(in);
}

struct Console {
  FakeRingPage page;
  std::string output;
  ConsoleRing ring{page.memory(), FakeRingPage::kGpa,
                   [this](std::span<const char> b) { output.append(b.data(), b.size()); }};
  xencons_interface* iface() { return page.As<xencons_interface>(); }
  std::string GuestRead() {
    const uint32_t cons = LoadIndex(&iface()->in_cons);
    const uint32_t prod = LoadIndex(&iface()->in_prod);
    std::string text(prod - cons, '\0');
    CopyFromRing(iface()->in, cons, text);
    StoreIndex(&iface()->in_cons, prod);
    return text;
  }
};

TEST(ConsoleRingSnapshot, PendingInputReachesTheRestoredGuestInOrder) {
  Console source;
  // More than the ring holds: the rest waits in the backend.
  std::string typed;
  for (int i = 0; typed.size() < 3000; ++i) typed += "line " + std::to_string(i) + "\n";
  ASSERT_EQ(source.ring.Input(typed), typed.size());
  ASSERT_GT(source.ring.PendingInput(), 0u);
  const std::vector<std::byte> saved = Save(source.ring);

  Console target;
  std::memcpy(target.iface(), source.iface(), sizeof(xencons_interface));  // guest memory
  ASSERT_TRUE(target.ring.Input(std::string_view("later")));               // typed after restore
  ASSERT_TRUE(Restore(target.ring, saved));
  EXPECT_EQ(target.ring.counters().in_bytes, source.ring.counters().in_bytes);
  std::string read = target.GuestRead();
  for (int i = 0; i < 10 && target.ring.PendingInput() > 0; ++i) {
    target.ring.Service();
    read += target.GuestRead();
  }
  EXPECT_EQ(read, typed + "later");
}

TEST(ConsoleRingSnapshot, EveryTruncationIsRefusedAndChangesNothing) {
  Console source, target;
  ASSERT_EQ(source.ring.Input(std::string(2000, 'x')), 2000u);
  const std::vector<std::byte> saved = Save(source.ring);
  const std::vector<std::byte> before = Save(target.ring);
  for (size_t len = 0; len < saved.size(); ++len) {
    auto r = Restore(target.ring, std::span(saved).first(len));
    ASSERT_FALSE(r) << len;
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL);
  }
  EXPECT_EQ(Save(target.ring), before);
}

std::string Encode(uint32_t type, std::string_view payload, uint32_t req_id) {
  xsd_sockmsg h{.type = type, .req_id = req_id, .tx_id = 0, .len = uint32_t(payload.size())};
  std::string bytes(reinterpret_cast<const char*>(&h), sizeof(h));
  return bytes.append(payload);
}

struct StoreSide {
  StoreSide() {
    dom0 = store.Connect(xenstore::kPrivilegedDomid);
    EXPECT_TRUE(store.Write(dom0, 0, "/local/domain/1/name", "guest"));
    EXPECT_TRUE(store.SetPerms(dom0, 0, "/local/domain/1/name", {{1, xenstore::kNone}}));
  }
  FakeRingPage page;
  xenstore::Store store;
  xenstore::ConnId dom0;
  int notifies = 0;
  XenstoreRing ring{page.memory(), FakeRingPage::kGpa, store, 1, [this] { ++notifies; }};
  xenstore_domain_interface* iface() { return page.As<xenstore_domain_interface>(); }
  void Send(std::string_view bytes) {
    const uint32_t prod = LoadIndex(&iface()->req_prod);
    CopyToRing(iface()->req, prod, bytes);
    StoreIndex(&iface()->req_prod, prod + uint32_t(bytes.size()));
    ring.OnGuestSend(1);
  }
  std::string Receive() {
    const uint32_t cons = LoadIndex(&iface()->rsp_cons);
    const uint32_t prod = LoadIndex(&iface()->rsp_prod);
    std::string out(prod - cons, '\0');
    CopyFromRing(iface()->rsp, cons, out);
    StoreIndex(&iface()->rsp_cons, prod);
    return out;
  }
};

TEST(XenstoreRingSnapshot, RequestHalfReadWhenSavedIsAnsweredAfterTheRestore) {
  StoreSide source;
  const std::string request = Encode(XS_READ, std::string("name\0", 5), 9);
  source.Send(std::string_view(request).substr(0, 10));  // part of the header
  ASSERT_EQ(source.Receive(), "");
  snapshot::Encoder store_state;
  source.store.Save(store_state);
  const std::vector<std::byte> saved = Save(source.ring);

  StoreSide target;
  std::memcpy(target.iface(), source.iface(), sizeof(xenstore_domain_interface));
  snapshot::Decoder store_in(store_state.bytes());
  ASSERT_TRUE(target.store.Restore(store_in));
  ASSERT_TRUE(Restore(target.ring, saved));
  EXPECT_EQ(Save(target.ring), saved);
  target.Send(std::string_view(request).substr(10));
  EXPECT_EQ(target.Receive(), Encode(XS_READ, std::string("guest", 5), 9));
  EXPECT_EQ(target.ring.counters().requests_bytes, request.size());
}

TEST(XenstoreRingSnapshot, EveryTruncationIsRefusedAndChangesNothing) {
  StoreSide source, target;
  const std::string request = Encode(XS_READ, std::string("name\0", 5), 9);
  source.Send(std::string_view(request).substr(0, 18));
  const std::vector<std::byte> saved = Save(source.ring);
  const std::vector<std::byte> before = Save(target.ring);
  for (size_t len = 0; len < saved.size(); ++len) {
    auto r = Restore(target.ring, std::span(saved).first(len));
    ASSERT_FALSE(r) << len;
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL);
  }
  EXPECT_EQ(Save(target.ring), before);
}

}  // namespace
}  // namespace xenkvm::backends
