// Store semantics as xenstored defines them: permissions, transactions, watches, quotas.
#include "xenstore/store.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace xenkvm::xenstore {
namespace {

using Events = std::vector<std::pair<std::string, std::string>>;

class StoreTest : public ::testing::Test {
 protected:
  StoreTest() {
    dom0_ = store_.Connect(kPrivilegedDomid, Recorder(dom0_events_));
    guest_ = store_.Connect(1, Recorder(guest_events_));
    other_ = store_.Connect(2, Recorder(other_events_));
    // A home for dom1 as a toolstack makes one: dom0-owned, readable by dom1.
    EXPECT_TRUE(store_.Mkdir(dom0_, 0, "/local/domain/1"));
    EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1", {{0, kNone}, {1, kRead}}));
    EXPECT_TRUE(store_.Mkdir(dom0_, 0, "/local/domain/1/data"));
    EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1/data", {{1, kNone}}));
  }
  static Store::WatchCallback Recorder(Events& events) {
    return [&events](const std::string& path, const std::string& token) {
      events.emplace_back(path, token);
    };
  }
  static int Errno(const Result<>& r) { return r ? 0 : r.error().xen_errno; }
  template <class T>
  static int Errno(const Result<T>& r) {
    return r ? 0 : r.error().xen_errno;
  }

  Store store_;
  Events dom0_events_, guest_events_, other_events_;
  ConnId dom0_, guest_, other_;
};

TEST_F(StoreTest, WriteCreatesParentsAndReads) {
  ASSERT_TRUE(store_.Write(dom0_, 0, "/a/b/c", "value"));
  EXPECT_EQ(*store_.Read(dom0_, 0, "/a/b/c"), "value");
  EXPECT_EQ(*store_.Read(dom0_, 0, "/a/b"), "");
  EXPECT_EQ(*store_.Directory(dom0_, 0, "/a"), std::vector<std::string>{"b"});
  EXPECT_EQ(Errno(store_.Read(dom0_, 0, "/a/x")), XEN_ENOENT);
}

TEST_F(StoreTest, RelativePathsAreBelowTheDomainsHome) {
  ASSERT_TRUE(store_.Write(guest_, 0, "data/x", "1"));
  EXPECT_EQ(*store_.Read(dom0_, 0, "/local/domain/1/data/x"), "1");
  EXPECT_EQ(*store_.Read(guest_, 0, "/local/domain/1/data/x"), "1");
}

TEST_F(StoreTest, InvalidPathsAreEinval) {
  for (const char* bad : {"", "/a/", "/a//b", "/a b", "@introduceDomain", "/a\xff"})
    EXPECT_EQ(Errno(store_.Write(dom0_, 0, bad, "v")), XEN_EINVAL) << bad;
  EXPECT_EQ(Errno(store_.Rm(dom0_, 0, "/")), XEN_EINVAL);
}

TEST_F(StoreTest, PermissionsFollowXenstored) {
  ASSERT_TRUE(store_.Write(dom0_, 0, "/secret", "s"));  // inherits / : n0
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "/secret")), XEN_EACCES);
  EXPECT_EQ(Errno(store_.Write(guest_, 0, "/secret", "x")), XEN_EACCES);
  // A missing node below one it can't read: EACCES, not ENOENT (no information leaks).
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "/secret/none")), XEN_EACCES);
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/none")), XEN_ENOENT);
  // The home is readable, not writable; data is the guest's.
  EXPECT_TRUE(store_.Read(guest_, 0, "/local/domain/1"));
  EXPECT_EQ(Errno(store_.Write(guest_, 0, "/local/domain/1/name", "x")), XEN_EACCES);
  EXPECT_EQ(Errno(store_.Mkdir(guest_, 0, "/local/domain/1")), XEN_EACCES);
  // Another domain sees nothing of dom1's data.
  ASSERT_TRUE(store_.Write(guest_, 0, "data/mine", "1"));
  EXPECT_EQ(Errno(store_.Read(other_, 0, "/local/domain/1/data/mine")), XEN_EACCES);
  // An explicit grant opens one node.
  ASSERT_TRUE(store_.SetPerms(guest_, 0, "data/mine", {{1, kNone}, {2, kRead}}));
  EXPECT_EQ(*store_.Read(other_, 0, "/local/domain/1/data/mine"), "1");
  EXPECT_EQ(Errno(store_.Write(other_, 0, "/local/domain/1/data/mine", "x")), XEN_EACCES);
}

TEST_F(StoreTest, NewNodesInheritParentPermissionsWithTheCreatorAsOwner) {
  ASSERT_TRUE(store_.SetPerms(guest_, 0, "data", {{1, kNone}, {2, kRead}}));
  ASSERT_TRUE(store_.Write(guest_, 0, "data/x/y", "v"));
  const Permissions expected{{1, kNone}, {2, kRead}};
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/1/data/x/y"), expected);
  // dom0 creating below keeps the inherited owner.
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/z", "v"));
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/1/data/z"), expected);
}

TEST_F(StoreTest, OnlyPrivilegedCallersChangeOwners) {
  ASSERT_TRUE(store_.Write(guest_, 0, "data/x", "v"));
  EXPECT_EQ(Errno(store_.SetPerms(guest_, 0, "data/x", {{2, kBoth}})), XEN_EPERM);
  EXPECT_TRUE(store_.SetPerms(dom0_, 0, "/local/domain/1/data/x", {{2, kNone}}));
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/x")), XEN_EACCES);
  EXPECT_EQ(store_.NodesOwnedBy(2), 1u);
}

TEST_F(StoreTest, RmRemovesSubtreeAndMissingIsFine) {
  ASSERT_TRUE(store_.Write(guest_, 0, "data/a/b/c", "v"));
  const uint32_t owned = store_.NodesOwnedBy(1);
  ASSERT_TRUE(store_.Rm(guest_, 0, "data/a"));
  EXPECT_EQ(store_.NodesOwnedBy(1), owned - 3);
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/a/b")), XEN_ENOENT);
  EXPECT_TRUE(store_.Rm(guest_, 0, "data/a"));  // gone, parent exists: OK
  EXPECT_EQ(Errno(store_.Rm(guest_, 0, "data/a/b")), XEN_ENOENT);
  EXPECT_TRUE(store_.Directory(guest_, 0, "data")->empty());
}

TEST_F(StoreTest, CommittingTransactionAppliesAllAtOnce) {
  const TxId tx = *store_.TransactionStart(guest_);
  ASSERT_TRUE(store_.Write(guest_, tx, "data/a", "1"));
  ASSERT_TRUE(store_.Write(guest_, tx, "data/b", "2"));
  EXPECT_EQ(*store_.Read(guest_, tx, "data/a"), "1");              // read-your-writes
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/a")), XEN_ENOENT);  // invisible outside
  ASSERT_TRUE(store_.Rm(guest_, tx, "data/b"));
  EXPECT_EQ(Errno(store_.Read(guest_, tx, "data/b")), XEN_ENOENT);
  ASSERT_TRUE(store_.TransactionEnd(guest_, tx, true));
  EXPECT_EQ(*store_.Read(guest_, 0, "data/a"), "1");
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/b")), XEN_ENOENT);
  EXPECT_FALSE(store_.TransactionExists(guest_, tx));
  EXPECT_EQ(Errno(store_.TransactionEnd(guest_, tx, true)), XEN_ENOENT);
}

TEST_F(StoreTest, ConflictingTransactionFailsWithEagainAndChangesNothing) {
  ASSERT_TRUE(store_.Write(guest_, 0, "data/counter", "1"));
  const TxId tx = *store_.TransactionStart(guest_);
  ASSERT_EQ(*store_.Read(guest_, tx, "data/counter"), "1");
  ASSERT_TRUE(store_.Write(guest_, tx, "data/counter", "2"));
  ASSERT_TRUE(store_.Write(guest_, tx, "data/other", "x"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/counter", "5"));  // concurrent
  EXPECT_EQ(Errno(store_.TransactionEnd(guest_, tx, true)), XEN_EAGAIN);
  EXPECT_EQ(*store_.Read(guest_, 0, "data/counter"), "5");
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/other")), XEN_ENOENT);
  // A node that was absent when read and created meanwhile conflicts too.
  const TxId tx2 = *store_.TransactionStart(guest_);
  EXPECT_EQ(Errno(store_.Read(guest_, tx2, "data/late")), XEN_ENOENT);
  ASSERT_TRUE(store_.Write(guest_, tx2, "data/unrelated2", "x"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/late", "x"));
  EXPECT_EQ(Errno(store_.TransactionEnd(guest_, tx2, true)), XEN_EAGAIN);
}

TEST_F(StoreTest, AbortedAndUnrelatedTransactions) {
  const TxId tx = *store_.TransactionStart(guest_);
  ASSERT_TRUE(store_.Write(guest_, tx, "data/a", "1"));
  ASSERT_TRUE(store_.TransactionEnd(guest_, tx, false));
  EXPECT_EQ(Errno(store_.Read(guest_, 0, "data/a")), XEN_ENOENT);
  // Changes elsewhere don't conflict.
  ASSERT_TRUE(store_.Write(guest_, 0, "data/a", "0"));
  const TxId tx2 = *store_.TransactionStart(guest_);
  ASSERT_TRUE(store_.Write(guest_, tx2, "data/a", "1"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/elsewhere", "x"));
  EXPECT_TRUE(store_.TransactionEnd(guest_, tx2, true));
  EXPECT_EQ(*store_.Read(guest_, 0, "data/a"), "1");
  EXPECT_EQ(Errno(store_.TransactionStart(guest_, 999)), XEN_ENOENT);
  const TxId tx3 = *store_.TransactionStart(guest_);
  EXPECT_EQ(Errno(store_.TransactionStart(guest_, tx3)), XEN_EBUSY);
  EXPECT_EQ(Errno(store_.Read(guest_, 12345, "data/a")), XEN_ENOENT);
}

TEST_F(StoreTest, WatchFiresInitiallyOnNodeAndDescendants) {
  ASSERT_TRUE(store_.Watch(dom0_, "/local/domain/1/data", "tok"));
  EXPECT_EQ(dom0_events_, (Events{{"/local/domain/1/data", "tok"}}));
  dom0_events_.clear();
  ASSERT_TRUE(store_.Write(guest_, 0, "data/x", "1"));
  ASSERT_TRUE(store_.Write(guest_, 0, "/local/domain/1/datax", "1").error().xen_errno ==
              XEN_EACCES);  // a sibling with a common prefix is not below the watch
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/datax", "1"));
  EXPECT_EQ(dom0_events_, (Events{{"/local/domain/1/data/x", "tok"}}));
  ASSERT_TRUE(store_.Unwatch(dom0_, "/local/domain/1/data", "tok"));
  ASSERT_TRUE(store_.Write(guest_, 0, "data/y", "1"));
  EXPECT_EQ(dom0_events_.size(), 1u);
  EXPECT_EQ(Errno(store_.Unwatch(dom0_, "/local/domain/1/data", "tok")), XEN_ENOENT);
}

TEST_F(StoreTest, RelativeWatchesGetRelativePaths) {
  ASSERT_TRUE(store_.Watch(guest_, "data", "t"));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/local/domain/1/data/k", "v"));
  EXPECT_EQ(guest_events_, (Events{{"data", "t"}, {"data/k", "t"}}));
  EXPECT_EQ(Errno(store_.Watch(guest_, "data", "t")), XEN_EEXIST);
}

TEST_F(StoreTest, WatchesNeedReadPermissionOnNodeOrParent) {
  ASSERT_TRUE(store_.Watch(other_, "/local/domain/1/data", "t"));
  other_events_.clear();  // the initial event is unconditional
  ASSERT_TRUE(store_.Write(guest_, 0, "data/a/b", "v"));
  EXPECT_TRUE(other_events_.empty());
}

TEST_F(StoreTest, RmFiresOnRemovedNodesAndTheirWatchers) {
  ASSERT_TRUE(store_.Write(guest_, 0, "data/a/b", "v"));
  ASSERT_TRUE(store_.Watch(dom0_, "/local/domain/1/data/a/b", "child"));
  ASSERT_TRUE(store_.Watch(dom0_, "/local/domain/1/data", "parent"));
  dom0_events_.clear();
  ASSERT_TRUE(store_.Rm(guest_, 0, "data/a"));
  EXPECT_EQ(dom0_events_,
            (Events{{"/local/domain/1/data/a/b", "child"}, {"/local/domain/1/data/a", "parent"}}));
}

TEST_F(StoreTest, TransactionWatchesFireAtCommitOnly) {
  ASSERT_TRUE(store_.Watch(dom0_, "/local/domain/1/data", "t"));
  dom0_events_.clear();
  const TxId tx = *store_.TransactionStart(guest_);
  ASSERT_TRUE(store_.Write(guest_, tx, "data/a", "1"));
  ASSERT_TRUE(store_.Write(guest_, tx, "data/a", "2"));
  EXPECT_TRUE(dom0_events_.empty());
  ASSERT_TRUE(store_.TransactionEnd(guest_, tx, true));
  EXPECT_EQ(dom0_events_, (Events{{"/local/domain/1/data/a", "t"}}));
  const TxId aborted = *store_.TransactionStart(guest_);
  ASSERT_TRUE(store_.Write(guest_, aborted, "data/b", "1"));
  ASSERT_TRUE(store_.TransactionEnd(guest_, aborted, false));
  EXPECT_EQ(dom0_events_.size(), 1u);
}

TEST_F(StoreTest, SpecialWatches) {
  ASSERT_TRUE(store_.Watch(guest_, "@releaseDomain", "r"));
  ASSERT_TRUE(store_.Watch(guest_, "@introduceDomain", "i"));
  ASSERT_TRUE(store_.Watch(dom0_, "@introduceDomain", "i"));
  guest_events_.clear();
  dom0_events_.clear();
  store_.IntroduceDomain(7);
  store_.ReleaseDomain(7);
  EXPECT_EQ(dom0_events_, (Events{{"@introduceDomain", "i"}}));
  // @introduceDomain is dom0's only; @releaseDomain everyone's.
  EXPECT_EQ(guest_events_, (Events{{"@releaseDomain", "r"}}));
}

TEST_F(StoreTest, CallbacksMayCallTheStoreAndStopAtDisconnect) {
  int calls = 0;
  ConnId c = 0;
  c = store_.Connect(0, [&](const std::string& path, const std::string&) {
    ++calls;
    if (path == "/x/trigger") {
      ASSERT_TRUE(store_.Write(c, 0, "/x/echo", "1"));
    }
  });
  ASSERT_TRUE(store_.Watch(c, "/x", "t", false));
  ASSERT_TRUE(store_.Write(dom0_, 0, "/x/trigger", "1"));
  EXPECT_EQ(calls, 2);  // trigger, then the echo it wrote
  store_.Disconnect(c);
  ASSERT_TRUE(store_.Write(dom0_, 0, "/x/trigger", "2"));
  EXPECT_EQ(calls, 2);
}

TEST_F(StoreTest, ACallbackMayDisconnectItself) {
  int calls = 0;
  ConnId c = 0;
  c = store_.Connect(0, [&](const std::string&, const std::string&) {
    ++calls;
    store_.Disconnect(c);
  });
  ASSERT_TRUE(store_.Watch(c, "/y", "t"));  // the initial event disconnects it
  EXPECT_EQ(calls, 1);
  ASSERT_TRUE(store_.Write(dom0_, 0, "/y", "1"));
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(store_.Watch(c, "/y", "t"));  // gone
}

TEST(StoreQuota, NodesPerDomain) {
  Store store(Quotas{.nodes = 10});
  const ConnId dom0 = store.Connect(0);
  const ConnId guest = store.Connect(1);
  ASSERT_TRUE(store.Mkdir(dom0, 0, "/local/domain/1/data"));
  ASSERT_TRUE(store.SetPerms(dom0, 0, "/local/domain/1/data", {{1, kNone}}));
  // It owns data: 1 node; xenstored refuses when owned + new >= quota.
  int created = 0;
  while (store.Write(guest, 0, "data/n" + std::to_string(created), "v")) ++created;
  EXPECT_EQ(created, 8);
  EXPECT_EQ(store.Write(guest, 0, "data/more", "v").error().xen_errno, XEN_ENOSPC);
  EXPECT_EQ(store.Write(guest, 0, "data/a/b/c", "v").error().xen_errno, XEN_ENOSPC);
  EXPECT_TRUE(store.Write(dom0, 0, "/local/domain/1/data/more", "v"));  // dom0 exempt
  // Removing frees quota.
  ASSERT_TRUE(store.Rm(guest, 0, "data/n0"));
  ASSERT_TRUE(store.Rm(guest, 0, "data/n1"));
  EXPECT_TRUE(store.Write(guest, 0, "data/again", "v"));
}

TEST(StoreQuota, NodeSizePathLengthWatchesTransactionsPerms) {
  Store store;
  const ConnId dom0 = store.Connect(0);
  const ConnId guest = store.Connect(1);
  ASSERT_TRUE(store.Mkdir(dom0, 0, "/local/domain/1/data"));
  ASSERT_TRUE(store.SetPerms(dom0, 0, "/local/domain/1/data", {{1, kNone}}));
  // Node size: 16-byte header + 8 per permission + value, must stay below 2048.
  EXPECT_TRUE(store.Write(guest, 0, "data/big", std::string(2048 - 16 - 8 - 1, 'x')));
  EXPECT_EQ(store.Write(guest, 0, "data/big", std::string(2048 - 16 - 8, 'x')).error().xen_errno,
            XEN_ENOSPC);
  EXPECT_TRUE(store.Write(dom0, 0, "/local/domain/1/data/big", std::string(4000, 'x')));
  // Path length below the home: < 2048.
  EXPECT_EQ(store.Read(guest, 0, "data/" + std::string(2042, 'p')).error().xen_errno, XEN_ENOENT);
  EXPECT_EQ(store.Read(guest, 0, "data/" + std::string(2043, 'p')).error().xen_errno, XEN_EINVAL);
  EXPECT_TRUE(
      store.Read(dom0, 0, "/local/domain/1/data/" + std::string(3000, 'p')).error().xen_errno ==
      XEN_ENOENT);  // dom0 exempt
  // Watches: fewer than 128.
  int watches = 0;
  while (store.Watch(guest, "data", "t" + std::to_string(watches), false)) ++watches;
  EXPECT_EQ(watches, 127);
  EXPECT_EQ(store.Watch(guest, "data", "last").error().xen_errno, XEN_ENOSPC);
  // Transactions: fewer than 10 open.
  int transactions = 0;
  while (store.TransactionStart(guest)) ++transactions;
  EXPECT_EQ(transactions, 9);
  EXPECT_EQ(store.TransactionStart(guest).error().xen_errno, XEN_ENOSPC);
  EXPECT_TRUE(store.TransactionStart(dom0));
  // Permissions per node: fewer than 5.
  ASSERT_TRUE(store.Write(guest, 0, "data/p", "v"));
  EXPECT_TRUE(store.SetPerms(guest, 0, "data/p", {{1, kNone}, {2, kRead}, {3, kRead}, {4, kRead}}));
  EXPECT_EQ(store
                .SetPerms(guest, 0, "data/p",
                          {{1, kNone}, {2, kRead}, {3, kRead}, {4, kRead}, {5, kRead}})
                .error()
                .xen_errno,
            XEN_ENOSPC);
}

TEST(StoreQuota, TransactionAccessedNodes) {
  Store store(Quotas{.transaction_nodes = 8});
  const ConnId dom0 = store.Connect(0);
  const ConnId guest = store.Connect(1);
  ASSERT_TRUE(store.Mkdir(dom0, 0, "/local/domain/1/data"));
  ASSERT_TRUE(store.SetPerms(dom0, 0, "/local/domain/1/data", {{1, kNone}}));
  const TxId tx = *store.TransactionStart(guest);
  int reads = 0;
  Result<std::string> r;
  while ((r = store.Read(guest, tx, "data/n" + std::to_string(reads))) ||
         r.error().xen_errno == XEN_ENOENT)
    ++reads;
  EXPECT_EQ(r.error().xen_errno, XEN_ENOSPC);
  EXPECT_LT(reads, 8);
}

TEST(Permissions, WireForm) {
  EXPECT_EQ(FormatPermission({5, kRead}), "r5");
  EXPECT_EQ(FormatPermission({0, kNone}), "n0");
  EXPECT_EQ(*ParsePermission("b12"), (Permission{12, kBoth}));
  EXPECT_EQ(*ParsePermission("w0"), (Permission{0, kWrite}));
  for (const char* bad : {"", "r", "x1", "r-1", "r1a", "r65536", "r1234567"})
    EXPECT_FALSE(ParsePermission(bad)) << bad;
}

}  // namespace
}  // namespace xenkvm::xenstore
