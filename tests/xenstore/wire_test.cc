// xs_wire round trips through a WireConnection: framing, every guest op, error strings,
// privileged ops refused, echoed ids, watch events, the outstanding-reply and event bounds.
#include "xenstore/wire.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace xenkvm::xenstore {
namespace {

struct Msg {
  uint32_t type;
  uint32_t req_id;
  uint32_t tx_id;
  std::string payload;
};

std::string Encode(uint32_t type, std::string_view payload, uint32_t req_id = 7,
                   uint32_t tx_id = 0) {
  xsd_sockmsg header{
      .type = type, .req_id = req_id, .tx_id = tx_id, .len = uint32_t(payload.size())};
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof(header));
  bytes.append(payload);
  return bytes;
}

std::string S(std::string_view text) { return std::string(text) + '\0'; }

class WireTest : public ::testing::Test {
 protected:
  WireTest() {
    dom0_ = store_.Connect(kPrivilegedDomid);
    EXPECT_TRUE(store_.Mkdir(dom0_, 0, "/local/domain/1/data"));
    EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1", {{0, kNone}, {1, kRead}}));
    EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1/data", {{1, kNone}}));
  }

  // Sends one request, returns every message the connection queued.
  std::vector<Msg> Call(uint32_t type, std::string_view payload, uint32_t tx_id = 0,
                        uint32_t req_id = 7) {
    const std::string bytes = Encode(type, payload, req_id, tx_id);
    auto used = wire_.ConsumeInput(bytes);
    EXPECT_TRUE(used);
    EXPECT_EQ(*used, bytes.size());
    return Drain();
  }
  std::vector<Msg> Drain() {
    std::string out(wire_.OutputBytes(), '\0');
    out.resize(wire_.CopyOutput(std::span(out.data(), out.size())));
    std::vector<Msg> msgs;
    size_t pos = 0;
    while (pos + sizeof(xsd_sockmsg) <= out.size()) {
      xsd_sockmsg h;
      std::memcpy(&h, out.data() + pos, sizeof(h));
      pos += sizeof(h);
      msgs.push_back(Msg{h.type, h.req_id, h.tx_id, out.substr(pos, h.len)});
      pos += h.len;
    }
    EXPECT_EQ(pos, out.size());
    return msgs;
  }
  // The single reply's payload, checking its type (XS_ERROR or the request's).
  std::string Reply(uint32_t type, std::string_view payload, uint32_t tx_id = 0) {
    auto msgs = Call(type, payload, tx_id);
    EXPECT_GE(msgs.size(), 1u);
    if (msgs.empty()) return "";
    EXPECT_EQ(msgs[0].req_id, 7u);
    EXPECT_EQ(msgs[0].tx_id, tx_id);
    if (msgs[0].type == XS_ERROR) return "error:" + msgs[0].payload;
    EXPECT_EQ(msgs[0].type, type);
    return msgs[0].payload;
  }

  Store store_;
  ConnId dom0_;
  WireConnection wire_{store_, 1};
};

TEST_F(WireTest, ReadWriteMkdirRmDirectory) {
  EXPECT_EQ(Reply(XS_WRITE, S("data/k") + std::string("va\0lue", 6)),
            S("OK"));  // values are binary
  EXPECT_EQ(Reply(XS_READ, S("data/k")), std::string("va\0lue", 6));
  EXPECT_EQ(Reply(XS_MKDIR, S("data/dir")), S("OK"));
  EXPECT_EQ(Reply(XS_DIRECTORY, S("data")), S("k") + S("dir"));
  EXPECT_EQ(Reply(XS_RM, S("data/k")), S("OK"));
  EXPECT_EQ(Reply(XS_READ, S("data/k")), "error:" + S("ENOENT"));
  EXPECT_EQ(Reply(XS_READ, S("data/none/deeper")), "error:" + S("ENOENT"));
  EXPECT_EQ(Reply(XS_READ, S("/local/domain/0")), "error:" + S("EACCES"));  // parent is n0
  EXPECT_EQ(Reply(XS_WRITE, S("/tool/x") + "v"), "error:" + S("EACCES"));
}

TEST_F(WireTest, MalformedArgumentsAreEinval) {
  EXPECT_EQ(Reply(XS_READ, ""), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_READ, "data/k"), "error:" + S("EINVAL"));  // no NUL
  EXPECT_EQ(Reply(XS_READ, S("data") + S("extra")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_WRITE, "no-nul"), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_WATCH, S("only-path")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_SET_PERMS, S("data")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_SET_PERMS, S("data") + S("q1")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_TRANSACTION_END, S("X")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_GET_DOMAIN_PATH, S("abc")), "error:" + S("EINVAL"));
  EXPECT_EQ(Reply(XS_GET_DOMAIN_PATH, S("70000")), "error:" + S("EINVAL"));
}

TEST_F(WireTest, UnknownTypesAreEnosysPrivilegedOnesEacces) {
  for (uint32_t type : {uint32_t(XS_WATCH_EVENT), uint32_t(XS_ERROR), 20u, uint32_t(XS_TYPE_COUNT),
                        1000u, uint32_t(XS_INVALID)})
    EXPECT_EQ(Reply(type, S("x")), "error:" + S("ENOSYS")) << type;
  for (uint32_t type :
       {XS_CONTROL, XS_INTRODUCE, XS_RELEASE, XS_IS_DOMAIN_INTRODUCED, XS_RESUME, XS_SET_TARGET})
    EXPECT_EQ(Reply(type, S("1")), "error:" + S("EACCES")) << type;
}

TEST_F(WireTest, PermsAndDomainPath) {
  ASSERT_EQ(Reply(XS_WRITE, S("data/p") + "v"), S("OK"));
  EXPECT_EQ(Reply(XS_GET_PERMS, S("data/p")), S("n1"));
  EXPECT_EQ(Reply(XS_SET_PERMS, S("data/p") + S("n1") + S("r0") + S("b2")), S("OK"));
  EXPECT_EQ(Reply(XS_GET_PERMS, S("data/p")), S("n1") + S("r0") + S("b2"));
  EXPECT_EQ(Reply(XS_SET_PERMS, S("data/p") + S("n5")), "error:" + S("EPERM"));
  EXPECT_EQ(Reply(XS_GET_PERMS, S("@releaseDomain")), S("n0") + S("r32757"));
  EXPECT_EQ(Reply(XS_GET_DOMAIN_PATH, S("3")), S("/local/domain/3"));
}

TEST_F(WireTest, TransactionsOverTheWire) {
  const std::string id = Reply(XS_TRANSACTION_START, S(""));
  const TxId tx = TxId(std::stoul(id));
  ASSERT_NE(tx, 0u);
  EXPECT_EQ(Reply(XS_WRITE, S("data/t") + "1", tx), S("OK"));
  EXPECT_EQ(Reply(XS_READ, S("data/t"), tx), "1");
  EXPECT_EQ(Reply(XS_READ, S("data/t")), "error:" + S("ENOENT"));
  EXPECT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/t", "other"));
  EXPECT_EQ(Reply(XS_TRANSACTION_END, S("T"), tx), "error:" + S("EAGAIN"));
  EXPECT_EQ(Reply(XS_READ, S("data/t"), tx), "error:" + S("ENOENT"));  // tx gone
  EXPECT_EQ(Reply(XS_TRANSACTION_END, S("T")), "error:" + S("ENOENT"));
}

TEST_F(WireTest, WatchAckThenInitialEventThenChanges) {
  auto msgs = Call(XS_WATCH, S("data") + S("tok"));
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].type, uint32_t(XS_WATCH));
  EXPECT_EQ(msgs[0].payload, S("OK"));
  EXPECT_EQ(msgs[1].type, uint32_t(XS_WATCH_EVENT));
  EXPECT_EQ(msgs[1].payload, S("data") + S("tok"));
  EXPECT_EQ(msgs[1].req_id, 0u);
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "1"));
  msgs = Drain();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].payload, S("data/x") + S("tok"));
  // Duplicates of a queued event are dropped.
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "2"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "3"));
  EXPECT_EQ(Drain().size(), 1u);
  EXPECT_EQ(Reply(XS_UNWATCH, S("data") + S("tok")), S("OK"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "4"));
  EXPECT_TRUE(Drain().empty());
  // RESET_WATCHES drops watches and transactions.
  Call(XS_WATCH, S("data") + S("tok"));
  const TxId tx = TxId(std::stoul(Reply(XS_TRANSACTION_START, S(""))));
  EXPECT_EQ(Reply(XS_RESET_WATCHES, ""), S("OK"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/x", "5"));
  EXPECT_TRUE(Drain().empty());
  EXPECT_EQ(Reply(XS_READ, S("data/x"), tx), "error:" + S("ENOENT"));
}

TEST_F(WireTest, DirectoryPartPagesThroughLongLists) {
  for (int i = 0; i < 300; ++i)
    ASSERT_TRUE(store_.Write(dom0_, 0,
                             "/local/domain/1/data/child-with-long-name-" + std::to_string(i), ""));
  std::string all;
  uint64_t offset = 0;
  std::string generation;
  for (int round = 0; round < 10; ++round) {
    const std::string part = Reply(XS_DIRECTORY_PART, S("data") + S(std::to_string(offset)));
    ASSERT_NE(part.substr(0, 6), "error:");
    const size_t nul = part.find('\0');
    if (round == 0) generation = part.substr(0, nul);
    EXPECT_EQ(part.substr(0, nul), generation);
    std::string chunk = part.substr(nul + 1);
    ASSERT_LE(part.size(), size_t(XENSTORE_PAYLOAD_MAX));
    const bool last = chunk.size() >= 1 && chunk.back() == '\0' &&
                      (chunk.size() == 1 || chunk[chunk.size() - 2] == '\0');
    if (last) chunk.pop_back();
    all += chunk;
    offset += chunk.size();
    if (last) break;
  }
  std::string expected;
  const auto children = *store_.Directory(dom0_, 0, "/local/domain/1/data");
  for (const auto& c : children) expected += S(c);
  EXPECT_EQ(all, expected);
  // Beyond the end: generation and an empty list.
  EXPECT_EQ(Reply(XS_DIRECTORY_PART, S("data") + S("999999")), S(generation) + S(""));
  // A full DIRECTORY of this list is too big for one message.
  EXPECT_EQ(Reply(XS_DIRECTORY, S("data")), "error:" + S("E2BIG"));
}

TEST_F(WireTest, OversizedHeaderBreaksTheConnectionUntilReset) {
  const std::string bad = Encode(XS_READ, "");
  xsd_sockmsg h{.type = XS_READ, .req_id = 1, .tx_id = 0, .len = XENSTORE_PAYLOAD_MAX + 1};
  auto r = wire_.ConsumeInput(std::span(reinterpret_cast<const char*>(&h), sizeof(h)));
  EXPECT_FALSE(r);
  EXPECT_FALSE(wire_.ConsumeInput(bad));
  wire_.Reset();
  EXPECT_EQ(Reply(XS_GET_DOMAIN_PATH, S("1")), S("/local/domain/1"));
}

TEST_F(WireTest, MessagesSplitAnywhereAreReassembled) {
  const std::string bytes = Encode(XS_WRITE, S("data/s") + "v") + Encode(XS_READ, S("data/s"));
  for (char c : bytes) ASSERT_EQ(*wire_.ConsumeInput(std::span(&c, 1)), 1u);
  auto msgs = Drain();
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[1].payload, "v");
}

TEST(WireLimits, OutstandingRepliesStopInput) {
  Store store;
  WireConnection wire(store, 1, WireConnection::Limits{.outstanding = 3});
  std::string bytes;
  for (int i = 0; i < 5; ++i) bytes += Encode(XS_GET_DOMAIN_PATH, S("1"));
  const size_t one = bytes.size() / 5;
  EXPECT_EQ(*wire.ConsumeInput(bytes), 3 * one);
  EXPECT_EQ(wire.OutstandingReplies(), 3u);
  std::vector<char> out(wire.OutputBytes());
  wire.CopyOutput(out);
  EXPECT_EQ(*wire.ConsumeInput(std::string_view(bytes).substr(3 * one)), 2 * one);
}

TEST(WireLimits, QueuedEventsAreBounded) {
  Store store;
  const ConnId dom0 = store.Connect(0);
  WireConnection wire(store, 0, WireConnection::Limits{.queued_bytes = 1000});
  const std::string watch = Encode(XS_WATCH, S("/w") + S("t"));
  ASSERT_EQ(*wire.ConsumeInput(watch), watch.size());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(store.Write(dom0, 0, "/w/" + std::to_string(i), ""));
  EXPECT_LE(wire.OutputBytes(), 1000u);
  EXPECT_GT(wire.OutputBytes(), 500u);
}

TEST(XsdErrors, Names) {
  EXPECT_STREQ(XsdErrorName(XEN_EAGAIN), "EAGAIN");
  EXPECT_STREQ(XsdErrorName(XEN_E2BIG), "E2BIG");
  EXPECT_STREQ(XsdErrorName(XEN_ESRCH), "EINVAL");  // untranslatable, as xenstored
}

}  // namespace
}  // namespace xenkvm::xenstore
