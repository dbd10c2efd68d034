// The toolstack tree: contents and libxl's permissions, seen from the guest and from dom0.
#include "xenstore/domain_tree.h"

#include <gtest/gtest.h>

namespace xenkvm::xenstore {
namespace {

class DomainTreeTest : public ::testing::Test {
 protected:
  DomainTreeTest() {
    dom0_ = store_.Connect(kPrivilegedDomid);
    guest_ = store_.Connect(3);
    DomainConfig config{.domid = 3,
                        .name = "minios",
                        .max_memory_kib = 131072,
                        .target_kib = 131072,
                        .vcpus = 2,
                        .console = RingInfo{0xfeffe, 2},
                        .store = RingInfo{0xfefff, 1}};
    EXPECT_TRUE(WriteDomainTree(store_, dom0_, config));
  }
  int ReadErrno(const std::string& path) {
    auto r = store_.Read(guest_, 0, path);
    return r ? 0 : r.error().xen_errno;
  }
  int WriteErrno(const std::string& path) {
    auto r = store_.Write(guest_, 0, path, "x");
    return r ? 0 : r.error().xen_errno;
  }
  int RmErrno(const std::string& path) {
    auto r = store_.Rm(guest_, 0, path);
    return r ? 0 : r.error().xen_errno;
  }
  Store store_;
  ConnId dom0_, guest_;
};

TEST_F(DomainTreeTest, ContentsAsLibxlWritesThem) {
  EXPECT_EQ(*store_.Read(guest_, 0, "name"), "minios");
  EXPECT_EQ(*store_.Read(guest_, 0, "domid"), "3");
  EXPECT_EQ(*store_.Read(guest_, 0, "memory/static-max"), "131072");
  EXPECT_EQ(*store_.Read(guest_, 0, "memory/target"), "131072");
  EXPECT_EQ(*store_.Read(guest_, 0, "memory/videoram"), "0");
  EXPECT_EQ(*store_.Read(guest_, 0, "cpu/1/availability"), "online");
  EXPECT_EQ(*store_.Read(guest_, 0, "console/ring-ref"), std::to_string(0xfeffe));
  EXPECT_EQ(*store_.Read(guest_, 0, "console/port"), "2");
  EXPECT_EQ(*store_.Read(guest_, 0, "console/type"), "xenconsoled");
  EXPECT_EQ(*store_.Read(guest_, 0, "store/port"), "1");
  EXPECT_EQ(*store_.Read(guest_, 0, "control/platform-feature-xs_reset_watches"), "1");
  EXPECT_EQ(*store_.Read(guest_, 0, "control/platform-feature-multiprocessor-suspend"), "1");
  EXPECT_EQ(*store_.Read(guest_, 0, "control/shutdown"), "");
  const std::string vm = *store_.Read(guest_, 0, "vm");
  EXPECT_EQ(*store_.Read(guest_, 0, vm + "/name"), "minios");
  EXPECT_TRUE(store_.IsIntroduced(3));
}

TEST_F(DomainTreeTest, PermissionsAsLibxlSetsThem) {
  const Permissions read_only{{0, kNone}, {3, kRead}};
  const Permissions guest_owned{{3, kNone}};
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/3"), read_only);
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/3/console/port"), read_only);
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/3/device"), read_only);
  EXPECT_EQ(*store_.GetPerms(dom0_, 0, "/local/domain/3/control/shutdown"), guest_owned);
  for (const char* dir : {"data", "drivers", "feature", "attr", "error"})
    EXPECT_EQ(*store_.GetPerms(dom0_, 0, std::string("/local/domain/3/") + dir), guest_owned);
  // The guest answers in control/, writes its scratch space, can't touch the rest.
  EXPECT_EQ(WriteErrno("control/shutdown"), 0);
  EXPECT_EQ(WriteErrno("control/feature-poweroff"), 0);
  EXPECT_EQ(WriteErrno("data/anything/below"), 0);
  EXPECT_EQ(WriteErrno("name"), XEN_EACCES);
  EXPECT_EQ(WriteErrno("memory/target"), XEN_EACCES);
  EXPECT_EQ(WriteErrno("control/platform-feature-xs_reset_watches"), XEN_EACCES);
  EXPECT_EQ(WriteErrno("device/vbd/51712/state"), XEN_EACCES);
  // Host nodes are dom0's only.
  EXPECT_EQ(ReadErrno("/"), XEN_EACCES);
  EXPECT_EQ(ReadErrno("/tool"), XEN_EACCES);
  EXPECT_EQ(ReadErrno("/local/domain/0"), XEN_EACCES);
  EXPECT_EQ(WriteErrno("/local/domain/0/x"), XEN_EACCES);
}

TEST_F(DomainTreeTest, DevicesHaveGuestOwnedFrontendAndReadableBackend) {
  ASSERT_TRUE(AddDevice(store_, dom0_, 3,
                        DeviceEntries{.kind = "vbd",
                                      .devid = 51712,
                                      .frontend = {{"virtual-device", "51712"}},
                                      .backend = {{"sectors", "2048"}}}));
  EXPECT_EQ(*store_.Read(guest_, 0, "device/vbd/51712/backend"),
            "/local/domain/0/backend/vbd/3/51712");
  EXPECT_EQ(*store_.Read(guest_, 0, "/local/domain/0/backend/vbd/3/51712/sectors"), "2048");
  EXPECT_EQ(WriteErrno("device/vbd/51712/state"), 0);
  EXPECT_EQ(WriteErrno("device/vbd/51712/ring-ref"), 0);
  EXPECT_EQ(WriteErrno("/local/domain/0/backend/vbd/3/51712/state"), XEN_EACCES);
  EXPECT_EQ(*store_.Directory(guest_, 0, "device/vbd"), std::vector<std::string>{"51712"});
}

// Mini-OS's xenbus test writes, reads and removes device/vif/0/flibble. libxl makes `device`
// dom0's (guest read-only) unless xend_suspend_evtchn_compat, so without a vif xenstored
// answers as the nearest existing ancestor allows (errno_from_parents): a read ENOENT, a write
// or rm EACCES. With the vif's frontend directory (guest-owned) all three work, and removing an
// absent node whose parent exists succeeds (do_rm).
TEST_F(DomainTreeTest, MiniOsFlibbleTestAsXenstoredAnswersIt) {
  EXPECT_EQ(ReadErrno("device/vif/0/flibble"), XEN_ENOENT);
  EXPECT_EQ(WriteErrno("device/vif/0/flibble"), XEN_EACCES);
  EXPECT_EQ(RmErrno("device/vif/0/flibble"), XEN_EACCES);
  EXPECT_FALSE(store_.Read(dom0_, 0, "/local/domain/3/device/vif"));  // nothing was created
  ASSERT_TRUE(AddDevice(store_, dom0_, 3,
                        DeviceEntries{.kind = "vif", .devid = 0, .frontend = {}, .backend = {}}));
  EXPECT_EQ(WriteErrno("device/vif/0/flibble"), 0);
  EXPECT_EQ(*store_.Read(guest_, 0, "device/vif/0/flibble"), "x");
  EXPECT_EQ(RmErrno("device/vif/0/flibble"), 0);
  EXPECT_EQ(ReadErrno("device/vif/0/flibble"), XEN_ENOENT);
  EXPECT_EQ(RmErrno("device/vif/0/flibble"), 0);  // already gone, parent exists: fine
}

}  // namespace
}  // namespace xenkvm::xenstore
