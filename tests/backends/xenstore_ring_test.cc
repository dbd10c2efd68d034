// The xenstore ring backend against a fake guest in plain memory: round trips, wrap-around,
// watch events, notify-only-when-moved, hostile indexes, oversized messages, reconnection,
// and the outstanding-reply bound.
#include "backends/xenstore_ring.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backends/ring_bytes.h"
#include "tests/backends/fake_ring_page.h"

namespace xenkvm::backends {
namespace {

using xenstore::kPrivilegedDomid;

std::string S(std::string_view text) { return std::string(text) + '\0'; }

std::string Encode(uint32_t type, std::string_view payload, uint32_t req_id = 1) {
  xsd_sockmsg h{.type = type, .req_id = req_id, .tx_id = 0, .len = uint32_t(payload.size())};
  std::string bytes(reinterpret_cast<const char*>(&h), sizeof(h));
  return bytes.append(payload);
}

struct Reply {
  uint32_t type;
  uint32_t req_id;
  std::string payload;
};

class XenstoreRingTest : public ::testing::Test {
 protected:
  XenstoreRingTest() {
    dom0_ = store_.Connect(kPrivilegedDomid);
    EXPECT_TRUE(store_.Mkdir(dom0_, 0, "/local/domain/1/data"));
    EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1/data", {{1, xenstore::kNone}}));
    EXPECT_TRUE(
        store_.SetPerms(dom0_, 0, "/local/domain/1", {{0, xenstore::kNone}, {1, xenstore::kRead}}));
  }

  // The guest side: put request bytes in, take reply bytes out, as a frontend does.
  size_t Send(std::string_view bytes) {
    const uint32_t cons = LoadIndex(&ring()->req_cons);
    const uint32_t prod = LoadIndex(&ring()->req_prod);
    const size_t n = std::min<size_t>(bytes.size(), XENSTORE_RING_SIZE - (prod - cons));
    CopyToRing(ring()->req, prod, bytes.substr(0, n));
    StoreIndex(&ring()->req_prod, prod + uint32_t(n));
    return n;
  }
  void Receive() {
    const uint32_t cons = LoadIndex(&ring()->rsp_cons);
    const uint32_t prod = LoadIndex(&ring()->rsp_prod);
    std::string chunk(prod - cons, '\0');
    CopyFromRing(ring()->rsp, cons, chunk);
    StoreIndex(&ring()->rsp_cons, prod);
    received_ += chunk;
  }
  std::vector<Reply> Replies() {
    Receive();
    std::vector<Reply> out;
    while (received_.size() >= sizeof(xsd_sockmsg)) {
      xsd_sockmsg h;
      std::memcpy(&h, received_.data(), sizeof(h));
      if (received_.size() < sizeof(h) + h.len) break;
      out.push_back(Reply{h.type, h.req_id, received_.substr(sizeof(h), h.len)});
      received_.erase(0, sizeof(h) + h.len);
    }
    return out;
  }
  // Sends everything, kicking the backend and draining replies as a polling guest would.
  std::vector<Reply> Transact(std::string_view bytes) {
    std::vector<Reply> all;
    for (int round = 0; round < 1000 && !bytes.empty(); ++round) {
      bytes.remove_prefix(Send(bytes));
      backend_.OnGuestSend(1);
      for (auto& r : Replies()) all.push_back(std::move(r));
    }
    EXPECT_TRUE(bytes.empty());
    backend_.OnGuestSend(1);
    for (auto& r : Replies()) all.push_back(std::move(r));
    return all;
  }
  xenstore_domain_interface* ring() { return page_.As<xenstore_domain_interface>(); }

  FakeRingPage page_;
  xenstore::Store store_;
  xenstore::ConnId dom0_;
  std::atomic<int> notifies_{0};
  XenstoreRing backend_{page_.memory(), FakeRingPage::kGpa, store_, 1, [this] { ++notifies_; }};
  std::string received_;
};

TEST_F(XenstoreRingTest, AdvertisesFeaturesAndAnswersARequest) {
  EXPECT_EQ(ring()->server_features,
            uint32_t(XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR));
  auto replies = Transact(Encode(XS_GET_DOMAIN_PATH, S("1"), 42));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].type, uint32_t(XS_GET_DOMAIN_PATH));
  EXPECT_EQ(replies[0].req_id, 42u);
  EXPECT_EQ(replies[0].payload, S("/local/domain/1"));
  EXPECT_GE(notifies_, 1);
}

TEST_F(XenstoreRingTest, NotifiesOnlyWhenBytesMoved) {
  Transact(Encode(XS_GET_DOMAIN_PATH, S("1")));
  const int before = notifies_.load();
  for (int i = 0; i < 100; ++i) backend_.OnGuestSend(1);  // a guest that notifies back forever
  EXPECT_EQ(notifies_, before);
  EXPECT_EQ(backend_.counters().notifies, uint64_t(before));
}

TEST_F(XenstoreRingTest, ManyRequestsWrapBothRingsAndLargeMessagesCross) {
  std::string requests;
  for (int i = 0; i < 200; ++i)
    requests += Encode(XS_WRITE, S("data/k" + std::to_string(i)) + std::to_string(i), i);
  const std::string big(1900, 'b');  // larger than the ring, within the node-size quota
  requests += Encode(XS_WRITE, S("data/big") + big, 500) + Encode(XS_READ, S("data/big"), 501);
  auto replies = Transact(requests);
  ASSERT_EQ(replies.size(), 202u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(replies[i].payload, S("OK")) << i;
  EXPECT_EQ(replies[201].req_id, 501u);
  EXPECT_EQ(replies[201].payload, big);
  EXPECT_EQ(*store_.Read(dom0_, 0, "/local/domain/1/data/k199"), "199");
}

TEST_F(XenstoreRingTest, WatchEventsFromTheHostReachTheRingAndNotify) {
  auto replies = Transact(Encode(XS_WATCH, S("data") + S("tok")));
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[1].type, uint32_t(XS_WATCH_EVENT));
  const int before = notifies_.load();
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "1"));  // another thread's change
  EXPECT_EQ(notifies_, before + 1);
  replies = Replies();
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].payload, S("data/x") + S("tok"));
}

TEST_F(XenstoreRingTest, WildRequestIndexIsAConnectionError) {
  StoreIndex(&ring()->req_prod, 5000);
  backend_.OnGuestSend(1);
  EXPECT_EQ(ring()->error, uint32_t(XENSTORE_ERROR_RINGIDX));
  EXPECT_EQ(ring()->req_cons, 0u);
  EXPECT_EQ(notifies_, 0);
  EXPECT_EQ(backend_.counters().errors, 1u);
  backend_.OnGuestSend(1);  // stays stopped, quietly
  EXPECT_EQ(backend_.counters().errors, 1u);
  EXPECT_EQ(notifies_, 0);
}

TEST_F(XenstoreRingTest, WildResponseIndexIsAConnectionError) {
  StoreIndex(&ring()->rsp_cons, 0x80000000u);
  Send(Encode(XS_GET_DOMAIN_PATH, S("1")));
  backend_.OnGuestSend(1);
  EXPECT_EQ(ring()->error, uint32_t(XENSTORE_ERROR_RINGIDX));
}

TEST_F(XenstoreRingTest, OversizedMessageIsAProtocolErrorThenReconnectionRecovers) {
  xsd_sockmsg h{.type = XS_WRITE, .req_id = 1, .tx_id = 0, .len = 1u << 30};
  Send(std::string_view(reinterpret_cast<const char*>(&h), sizeof(h)));
  backend_.OnGuestSend(1);
  EXPECT_EQ(ring()->error, uint32_t(XENSTORE_ERROR_PROTO));
  // The guest asks for a reconnection (docs/misc/xenstore-ring.txt).
  StoreIndex(&ring()->connection, XENSTORE_RECONNECT);
  const int before = notifies_.load();
  backend_.OnGuestSend(1);
  EXPECT_EQ(ring()->connection, uint32_t(XENSTORE_CONNECTED));
  EXPECT_EQ(ring()->error, uint32_t(XENSTORE_ERROR_NONE));
  EXPECT_EQ(ring()->req_prod, 0u);
  EXPECT_EQ(notifies_, before + 1);
  auto replies = Transact(Encode(XS_GET_DOMAIN_PATH, S("1")));
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].payload, S("/local/domain/1"));
}

TEST_F(XenstoreRingTest, AGuestThatNeverReadsRepliesIsThrottled) {
  std::string requests;
  for (int i = 0; i < 100; ++i) requests += Encode(XS_GET_DOMAIN_PATH, S("1"), i);
  const size_t one = requests.size() / 100;
  size_t sent = Send(requests);
  backend_.OnGuestSend(1);
  // The response ring holds what fits; 20 more replies wait; the rest of the requests stay.
  const uint32_t consumed = ring()->req_cons;
  // 32 replies of 32 bytes fill the response ring, 20 more are outstanding: 52 taken.
  EXPECT_EQ(consumed, 52 * one);
  EXPECT_LT(consumed, sent);
  backend_.OnGuestSend(1);
  EXPECT_EQ(ring()->req_cons, consumed);  // no progress without the guest reading
  // Reading replies lets everything through.
  std::vector<Reply> all = Replies();
  for (int round = 0; round < 100 && all.size() < 100; ++round) {
    sent += Send(std::string_view(requests).substr(sent));
    backend_.OnGuestSend(1);
    for (auto& r : Replies()) all.push_back(std::move(r));
  }
  ASSERT_EQ(all.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(all[i].req_id, uint32_t(i));
}

TEST_F(XenstoreRingTest, GarbageRequestsGetErrorRepliesNotCrashes) {
  std::string requests = Encode(9999, S("x"), 1) + Encode(XS_READ, "no-nul", 2) +
                         Encode(XS_INTRODUCE, S("1") + S("2") + S("3"), 3) +
                         Encode(XS_WRITE, "", 4) + Encode(XS_DIRECTORY_PART, S("data"), 5);
  auto replies = Transact(requests);
  ASSERT_EQ(replies.size(), 5u);
  const char* expected[] = {"ENOSYS", "EINVAL", "EACCES", "EINVAL", "EINVAL"};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(replies[i].type, uint32_t(XS_ERROR));
    EXPECT_EQ(replies[i].payload, S(expected[i]));
  }
}

TEST_F(XenstoreRingTest, HostWritesFromAnotherThreadWhileTheGuestTalks) {
  // Watch events pushed from a host thread race the guest's own pumping: nothing deadlocks,
  // every request is answered, every event that was queued arrives whole.
  Transact(Encode(XS_WATCH, S("data") + S("tok")));
  std::atomic<bool> stop{false};
  std::thread host([&] {
    for (int i = 0; !stop.load(); ++i)
      (void)store_.Write(dom0_, 0, "/local/domain/1/data/h" + std::to_string(i % 50), "v");
  });
  std::vector<Reply> replies;
  std::string requests;
  for (int i = 0; i < 300; ++i) requests += Encode(XS_READ, S("data"), 1000 + i);
  std::string_view rest = requests;
  for (int round = 0; round < 100000 && (!rest.empty() || replies.size() < 300); ++round) {
    rest.remove_prefix(Send(rest));
    backend_.OnGuestSend(1);
    for (auto& r : Replies())
      if (r.type != XS_WATCH_EVENT) replies.push_back(std::move(r));
  }
  stop = true;
  host.join();
  ASSERT_EQ(replies.size(), 300u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(replies[i].req_id, uint32_t(1000 + i));
}

}  // namespace
}  // namespace xenkvm::backends
