// The xenbus backend handshake against a real Store: directories as the toolstack writes them,
// the state machine both ways, reconnection, hot-unplug, and a frontend writing nonsense.
#include "backends/xenbus_device.h"

#include <gtest/gtest.h>

#include "xenstore/domain_tree.h"

namespace xenkvm::backends {
namespace {

using xenstore::Store;

struct FakeDriver : XenbusDriver {
  int connects = 0;
  int disconnects = 0;
  bool fail = false;
  std::optional<std::string> ring_ref;
  Result<> Connect(const ReadKey& frontend) override {
    ring_ref = frontend("ring-ref");
    if (fail) return Fail(XEN_EINVAL, "ring-ref missing");
    ++connects;
    return {};
  }
  void Disconnect() override { ++disconnects; }
};

class XenbusDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dom0 = store.Connect(xenstore::kPrivilegedDomid);
    guest = store.Connect(1);
    xenstore::DomainConfig domain;
    domain.domid = 1;
    ASSERT_TRUE(xenstore::WriteDomainTree(store, dom0, domain));
  }
  std::unique_ptr<XenbusDevice> Make() {
    auto device =
        XenbusDevice::Create(store,
                             {.domid = 1,
                              .kind = "vbd",
                              .devid = 51712,
                              .frontend = {{"virtual-device", "51712"}, {"device-type", "disk"}},
                              .backend = {{"sectors", "2048"}, {"mode", "w"}}},
                             driver);
    EXPECT_TRUE(device) << (device ? "" : device.error().message);
    return device ? std::move(*device) : nullptr;
  }
  // The guest's own writes, as its xenbus driver makes them (relative to its home).
  void Front(const std::string& key, const std::string& value) {
    ASSERT_TRUE(store.Write(guest, 0, "device/vbd/51712/" + key, value));
  }
  std::string Back(const std::string& key) {
    auto v = store.Read(guest, 0, "/local/domain/0/backend/vbd/1/51712/" + key);
    return v ? *v : "<none>";
  }

  Store store;
  xenstore::ConnId dom0 = 0;
  xenstore::ConnId guest = 0;
  FakeDriver driver;
};

TEST_F(XenbusDeviceTest, DirectoriesAsTheToolstackWritesThem) {
  auto device = Make();
  ASSERT_TRUE(device);
  EXPECT_EQ(*store.Read(guest, 0, "device/vbd/51712/backend"),
            "/local/domain/0/backend/vbd/1/51712");
  EXPECT_EQ(*store.Read(guest, 0, "device/vbd/51712/backend-id"), "0");
  EXPECT_EQ(*store.Read(guest, 0, "device/vbd/51712/state"), "1");
  EXPECT_EQ(*store.Read(guest, 0, "device/vbd/51712/virtual-device"), "51712");
  EXPECT_EQ(Back("frontend"), "/local/domain/1/device/vbd/51712");
  EXPECT_EQ(Back("frontend-id"), "1");
  EXPECT_EQ(Back("sectors"), "2048");
  EXPECT_EQ(Back("state"), "2");  // InitWait: keys are there
  EXPECT_EQ(device->backend_state(), XenbusState::kInitWait);
  // The guest may read but not write the backend's directory.
  EXPECT_FALSE(store.Write(guest, 0, "/local/domain/0/backend/vbd/1/51712/state", "4"));
}

TEST_F(XenbusDeviceTest, HandshakeCloseAndReconnect) {
  auto device = Make();
  ASSERT_TRUE(device);
  Front("ring-ref", "8");
  Front("state", "3");  // Initialised
  EXPECT_EQ(driver.connects, 1);
  EXPECT_EQ(driver.ring_ref, "8");
  EXPECT_EQ(Back("state"), "4");
  Front("state", "4");  // the frontend's Connected does not connect twice
  EXPECT_EQ(driver.connects, 1);
  EXPECT_TRUE(device->connected());

  Front("state", "5");  // Closing (GRUB is done with the disk)
  EXPECT_EQ(driver.disconnects, 1);
  EXPECT_EQ(Back("state"), "5");
  Front("state", "6");
  EXPECT_EQ(Back("state"), "6");
  EXPECT_EQ(driver.disconnects, 1);

  Front("state", "1");  // the OS's blkfront starts over
  EXPECT_EQ(Back("state"), "2");
  Front("ring-ref", "9");
  Front("state", "4");  // Linux may go straight to Connected
  EXPECT_EQ(driver.connects, 2);
  EXPECT_EQ(driver.ring_ref, "9");
  EXPECT_EQ(Back("state"), "4");
  device.reset();  // the domain goes away: the driver is disconnected
  EXPECT_EQ(driver.disconnects, 2);
}

TEST_F(XenbusDeviceTest, FailedConnectClosesWithAnError) {
  auto device = Make();
  ASSERT_TRUE(device);
  driver.fail = true;
  Front("state", "3");
  EXPECT_EQ(driver.connects, 0);
  EXPECT_EQ(Back("state"), "5");
  EXPECT_EQ(Back("error"), "ring-ref missing");
  EXPECT_FALSE(device->connected());
  Front("state", "6");
  EXPECT_EQ(Back("state"), "6");
  EXPECT_EQ(driver.disconnects, 0);  // never connected
  driver.fail = false;
  Front("state", "1");
  Front("state", "3");
  EXPECT_EQ(driver.connects, 1);
  EXPECT_EQ(Back("state"), "4");
}

TEST_F(XenbusDeviceTest, HotUnplug) {
  auto device = Make();
  ASSERT_TRUE(device);
  Front("state", "4");
  ASSERT_TRUE(device->RequestUnplug());
  EXPECT_EQ(Back("online"), "0");
  EXPECT_EQ(Back("state"), "5");
  EXPECT_FALSE(device->removed());
  Front("state", "5");
  EXPECT_EQ(driver.disconnects, 1);
  Front("state", "6");
  EXPECT_TRUE(device->removed());
  EXPECT_FALSE(store.Read(dom0, 0, "/local/domain/1/device/vbd/51712"));
  EXPECT_FALSE(store.Read(dom0, 0, "/local/domain/0/backend/vbd/1/51712"));
  EXPECT_EQ(driver.disconnects, 1);
}

TEST_F(XenbusDeviceTest, UnplugBeforeTheFrontendStartedIsImmediate) {
  auto device = Make();
  ASSERT_TRUE(device);
  ASSERT_TRUE(device->RequestUnplug());
  EXPECT_TRUE(device->removed());
  EXPECT_FALSE(store.Read(dom0, 0, "/local/domain/1/device/vbd/51712"));
  EXPECT_EQ(driver.connects, 0);
}

TEST_F(XenbusDeviceTest, HostileFrontendStates) {
  auto device = Make();
  ASSERT_TRUE(device);
  for (const char* junk : {"", "abc", "99", "-1", "4x", "2", "7", "18446744073709551617"}) {
    Front("state", junk);
    EXPECT_EQ(driver.connects, 0) << junk;
  }
  // Garbage reads as Unknown, which closes; the frontend can start over.
  EXPECT_EQ(Back("state"), "6");
  Front("state", "1");
  Front("state", "3");
  EXPECT_EQ(driver.connects, 1);
  // The guest removes its whole directory: treated as closed, the driver disconnected.
  ASSERT_TRUE(store.Rm(guest, 0, "device/vbd/51712/state"));
  EXPECT_EQ(driver.disconnects, 1);
  EXPECT_EQ(Back("state"), "6");
}

}  // namespace
}  // namespace xenkvm::backends
