// Store::Save/Restore and WireConnection::Save/Restore: a store restored into a fresh one (with
// the same connections, as a restoring VMM makes them) saves to the same bytes and behaves as
// the original: values, permissions, generations, quotas' counts, watches firing to the new
// callbacks, open transactions committing (or conflicting) as they would have; a half-read
// request completes and queued replies come out where they stopped. Every truncation and
// hostile changes are refused with nothing changed.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "xenstore/store.h"
#include "xenstore/wire.h"

namespace xenkvm::xenstore {
namespace {

using Events = std::vector<std::pair<std::string, std::string>>;

Store::WatchCallback Recorder(Events& events) {
  return [&events](const std::string& path, const std::string& token) {
    events.emplace_back(path, token);
  };
}

std::vector<std::byte> SaveStore(Store& store) {
  snapshot::Encoder out;
  store.Save(out);
  return out.Take();
}

Result<> RestoreStore(Store& store, std::span<const std::byte> bytes) {
  snapshot::Decoder in(bytes);
  return store.Restore(in);
}

// A store with three connections made in a fixed order (dom0, guest 1, guest 2).
struct Side {
  Side() {
    dom0 = store.Connect(kPrivilegedDomid, Recorder(dom0_events));
    guest = store.Connect(1, Recorder(guest_events));
    other = store.Connect(2, Recorder(other_events));
  }
  Store store;
  Events dom0_events, guest_events, other_events;
  ConnId dom0, guest, other;
};

class StoreSnapshotTest : public ::testing::Test {
 protected:
  // The source: a domain home, nodes owned by the guest, special permissions, watches
  // (absolute, relative, special), an introduced domain, and an open transaction of the guest
  // with a write, a removal and a queued event.
  void Populate() {
    Store& s = source_.store;
    ASSERT_TRUE(s.Mkdir(source_.dom0, 0, "/local/domain/1"));
    ASSERT_TRUE(s.SetPerms(source_.dom0, 0, "/local/domain/1", {{0, kNone}, {1, kRead}}));
    ASSERT_TRUE(s.Mkdir(source_.dom0, 0, "/local/domain/1/data"));
    ASSERT_TRUE(s.SetPerms(source_.dom0, 0, "/local/domain/1/data", {{1, kNone}}));
    ASSERT_TRUE(s.Write(source_.guest, 0, "data/a", "alpha"));
    ASSERT_TRUE(s.Write(source_.guest, 0, "data/b/c", "gamma"));
    ASSERT_TRUE(s.SetPerms(source_.guest, 0, "data/b", {{1, kNone}, {2, kRead}}));
    ASSERT_TRUE(s.Watch(source_.guest, "data", "rel", false));
    ASSERT_TRUE(s.Watch(source_.other, "/local/domain/1/data/b", "abs", false));
    ASSERT_TRUE(s.Watch(source_.dom0, "@releaseDomain", "rel-dom", false));
    s.IntroduceDomain(1);
    tx_ = *s.TransactionStart(source_.guest);
    ASSERT_TRUE(s.Write(source_.guest, tx_, "data/a", "in-tx"));
    ASSERT_TRUE(s.Rm(source_.guest, tx_, "data/b/c"));
    ASSERT_TRUE(s.Write(source_.guest, tx_, "data/new", "n"));
  }

  Side source_;
  Side target_;
  TxId tx_ = 0;
};

TEST_F(StoreSnapshotTest, RoundTripSavesTheSameBytesAndBehavesTheSame) {
  Populate();
  const std::vector<std::byte> saved = SaveStore(source_.store);
  ASSERT_TRUE(RestoreStore(target_.store, saved));
  EXPECT_EQ(SaveStore(target_.store), saved);

  Store& t = target_.store;
  EXPECT_EQ(*t.Read(target_.guest, 0, "data/a"), "alpha");
  EXPECT_EQ(*t.Read(target_.guest, tx_, "data/a"), "in-tx");
  EXPECT_EQ(*t.GetPerms(target_.dom0, 0, "/local/domain/1/data/b"),
            (Permissions{{1, kNone}, {2, kRead}}));
  EXPECT_EQ(t.NodesOwnedBy(1), source_.store.NodesOwnedBy(1));
  EXPECT_EQ(t.NodesOwnedBy(0), source_.store.NodesOwnedBy(0));
  EXPECT_TRUE(t.IsIntroduced(1));
  EXPECT_EQ(t.DirectoryWithGeneration(target_.dom0, 0, "/local/domain/1/data")->first,
            source_.store.DirectoryWithGeneration(source_.dom0, 0, "/local/domain/1/data")->first);

  // The transaction commits on both; its queued events reach the new callbacks as they reach
  // the original's.
  for (Side* side : {&source_, &target_}) {
    side->dom0_events.clear();
    side->guest_events.clear();
    side->other_events.clear();
    ASSERT_TRUE(side->store.TransactionEnd(side->guest, tx_, true));
    side->store.ReleaseDomain(1);
  }
  EXPECT_EQ(*t.Read(target_.guest, 0, "data/a"), "in-tx");
  EXPECT_EQ(*t.Read(target_.guest, 0, "data/new"), "n");
  EXPECT_FALSE(t.Read(target_.guest, 0, "data/b/c"));
  EXPECT_FALSE(target_.guest_events.empty());
  EXPECT_EQ(target_.guest_events, source_.guest_events);
  EXPECT_EQ(target_.other_events, source_.other_events);
  EXPECT_EQ(target_.dom0_events, (Events{{"@releaseDomain", "rel-dom"}}));
  EXPECT_EQ(SaveStore(target_.store), SaveStore(source_.store));
  // A new transaction id continues after the saved one.
  EXPECT_GT(*t.TransactionStart(target_.guest), tx_);
}

TEST_F(StoreSnapshotTest, RestoredTransactionStillConflictsWithAChangeMadeBeforeTheSave) {
  Populate();
  ASSERT_TRUE(source_.store.Write(source_.dom0, 0, "/local/domain/1/data/a", "changed"));
  ASSERT_TRUE(RestoreStore(target_.store, SaveStore(source_.store)));
  auto end = target_.store.TransactionEnd(target_.guest, tx_, true);
  ASSERT_FALSE(end);
  EXPECT_EQ(end.error().xen_errno, XEN_EAGAIN);
  EXPECT_EQ(*target_.store.Read(target_.guest, 0, "data/a"), "changed");
}

TEST_F(StoreSnapshotTest, QuotaCountsCarryOver) {
  Quotas small;
  small.nodes = 6;
  Store source(small), target(small);
  for (Store* s : {&source, &target}) {
    s->Connect(kPrivilegedDomid);
    s->Connect(1);
  }
  ASSERT_TRUE(source.Mkdir(1, 0, "/local/domain/1"));
  ASSERT_TRUE(source.SetPerms(1, 0, "/local/domain/1", {{1, kNone}}));
  for (const char* p : {"/local/domain/1/a", "/local/domain/1/b", "/local/domain/1/c"})
    ASSERT_TRUE(source.Write(2, 0, p, "x"));
  ASSERT_TRUE(RestoreStore(target, SaveStore(source)));
  EXPECT_EQ(target.NodesOwnedBy(1), 4u);
  ASSERT_TRUE(target.Write(2, 0, "/local/domain/1/d", "x"));  // 5 of 6
  auto over = target.Write(2, 0, "/local/domain/1/e", "x");
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().xen_errno, XEN_ENOSPC);
}

TEST_F(StoreSnapshotTest, EveryTruncationIsRefusedAndChangesNothing) {
  Populate();
  const std::vector<std::byte> saved = SaveStore(source_.store);
  const std::vector<std::byte> before = SaveStore(target_.store);
  for (size_t len = 0; len < saved.size(); ++len) {
    auto r = RestoreStore(target_.store, std::span(saved).first(len));
    ASSERT_FALSE(r) << "accepted a section cut at " << len;
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL);
  }
  EXPECT_EQ(SaveStore(target_.store), before);
}

TEST_F(StoreSnapshotTest, SingleByteChangesNeverCrashAndAreAllOrNothing) {
  Populate();
  const std::vector<std::byte> saved = SaveStore(source_.store);
  for (size_t i = 0; i < saved.size(); ++i) {
    for (int flip : {0x01, 0x80, 0xff}) {
      std::vector<std::byte> bad = saved;
      bad[i] ^= std::byte(flip);
      Side fresh;
      const std::vector<std::byte> before = SaveStore(fresh.store);
      if (!RestoreStore(fresh.store, bad)) {
        EXPECT_EQ(SaveStore(fresh.store), before) << i;
      }
    }
  }
}

TEST_F(StoreSnapshotTest, HostileStatesAreRefusedWithAReason) {
  auto expect_refused = [&](Store& s, const char* what) {
    auto r = RestoreStore(target_.store, SaveStore(s));
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL) << what;
    EXPECT_NE(std::string(r.error().message).find("xenstore"), std::string::npos)
        << r.error().message;
  };
  // A connection this store does not have.
  Side more;
  more.store.Connect(3);
  expect_refused(more.store, "an extra connection");
  // A connection acting for another domain.
  Store swapped;
  swapped.Connect(kPrivilegedDomid);
  swapped.Connect(2);
  expect_refused(swapped, "a connection of another domain");

  // Hand-made sections: a node its parent does not list, and a tree without a root.
  auto section = [](const std::vector<std::pair<std::string, std::vector<std::string>>>& nodes) {
    snapshot::Encoder e;
    e.U64(10);
    e.U32(uint32_t(nodes.size()));
    for (const auto& [name, children] : nodes) {
      e.String(name);
      e.String("");
      e.U32(1);
      e.U32(0);
      e.U8(kNone);
      e.U32(uint32_t(children.size()));
      for (const auto& c : children) e.String(c);
      e.U64(1);
    }
    e.U32(0);  // introduced
    e.U32(0);  // connections
    return e.Take();
  };
  EXPECT_TRUE(RestoreStore(target_.store, section({{"/", {"a"}}, {"/a", {}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/", {}}, {"/a", {}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/", {"a"}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/a", {}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/", {"a", "a"}}, {"/a", {}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/", {"a/b"}}, {"/a/b", {}}})));
  EXPECT_FALSE(RestoreStore(target_.store, section({{"/", {}}, {"bad name", {}}})));
}

// ---- the wire ----

std::string Encode(uint32_t type, std::string_view payload, uint32_t req_id) {
  xsd_sockmsg header{.type = type, .req_id = req_id, .tx_id = 0, .len = uint32_t(payload.size())};
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof(header));
  return bytes.append(payload);
}

std::string Drain(WireConnection& wire) {
  std::string out(wire.OutputBytes(), '\0');
  out.resize(wire.CopyOutput(std::span(out.data(), out.size())));
  return out;
}

std::vector<std::byte> SaveWire(WireConnection& wire) {
  snapshot::Encoder out;
  wire.Save(out);
  return out.Take();
}

TEST(WireSnapshot, HalfReadRequestAndQueuedRepliesCarryOver) {
  Store source_store, target_store;
  WireConnection source(source_store, kPrivilegedDomid);
  WireConnection target(target_store, kPrivilegedDomid);
  ASSERT_TRUE(source_store.Write(1, 0, "/k", "value"));
  ASSERT_TRUE(target_store.Write(1, 0, "/k", "value"));
  // Two replies queued, the first partly sent; a third request half read.
  const std::string first = Encode(XS_READ, std::string("/k\0", 3), 1);
  const std::string second = Encode(XS_DIRECTORY, std::string("/\0", 2), 2);
  const std::string third = Encode(XS_READ, std::string("/k\0", 3), 3);
  ASSERT_EQ(*source.ConsumeInput(first + second), first.size() + second.size());
  char head[5];
  ASSERT_EQ(source.CopyOutput(std::span(head)), 5u);
  ASSERT_EQ(*source.ConsumeInput(std::string_view(third).substr(0, 10)), 10u);

  const std::vector<std::byte> saved = SaveWire(source);
  snapshot::Decoder in(saved);
  ASSERT_TRUE(target.Restore(in));
  EXPECT_EQ(SaveWire(target), saved);
  EXPECT_EQ(target.OutstandingReplies(), 2u);
  EXPECT_EQ(target.OutputBytes(), source.OutputBytes());
  ASSERT_EQ(*target.ConsumeInput(std::string_view(third).substr(10)), third.size() - 10);
  ASSERT_EQ(*source.ConsumeInput(std::string_view(third).substr(10)), third.size() - 10);
  EXPECT_EQ(Drain(target), Drain(source));
  EXPECT_EQ(target.OutstandingReplies(), 0u);
}

TEST(WireSnapshot, TruncatedOrHostileInputIsRefusedAndChangesNothing) {
  Store source_store, target_store;
  WireConnection source(source_store, kPrivilegedDomid);
  WireConnection target(target_store, kPrivilegedDomid);
  const std::string request = Encode(XS_READ, std::string("/\0", 2), 1);
  ASSERT_TRUE(source.ConsumeInput(request + request.substr(0, 18)));
  const std::vector<std::byte> saved = SaveWire(source);
  const std::vector<std::byte> empty = SaveWire(target);
  for (size_t len = 0; len < saved.size(); ++len) {
    snapshot::Decoder in(std::span<const std::byte>(saved).first(len));
    ASSERT_FALSE(target.Restore(in)) << len;
  }
  for (size_t i = 0; i < saved.size(); ++i) {
    std::vector<std::byte> bad = saved;
    bad[i] ^= std::byte{0x40};
    snapshot::Decoder in(bad);
    WireConnection fresh(target_store, kPrivilegedDomid);
    const std::vector<std::byte> before = SaveWire(fresh);
    if (!fresh.Restore(in)) {
      EXPECT_EQ(SaveWire(fresh), before) << i;
    }
  }
  EXPECT_EQ(SaveWire(target), empty);
  // A reply offset beyond the first message.
  snapshot::Encoder e;
  e.Raw(std::vector<std::byte>(sizeof(xsd_sockmsg)));
  e.U32(0);
  e.String("");
  e.Bool(false);
  e.U32(1);
  e.String(Encode(XS_READ, "", 1));
  e.Bool(true);
  e.U32(sizeof(xsd_sockmsg));
  snapshot::Decoder in(e.bytes());
  auto r = target.Restore(in);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().xen_errno, XEN_EINVAL);
}

}  // namespace
}  // namespace xenkvm::xenstore
