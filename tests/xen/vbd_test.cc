// A PV disk assembled (backends/vbd.h) against a Domain on in-process memory: the frontend's
// side done by hand as blkfront does it (grant the ring and a data page, alloc_unbound for
// dom0, keys and state in xenstore, requests in the ring, EVTCHNOP_send), checked through the
// backend's state, EVTCHNOP_status, the responses and the image file. No KVM.
#include "backends/vbd.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "tests/xen/hypercall_fixture.h"
#include "xenstore/domain_tree.h"

extern "C" {
#include <xen/io/blkif.h>
}

namespace xenkvm::xen::testing {
namespace {

constexpr uint64_t kFrameGfn = 0x70;  // grant table frame 0
constexpr uint64_t kRingGfn = 0x90;
constexpr uint64_t kDataGfn = 0x91;
constexpr uint32_t kRingRef = 8, kDataRef = 9, kReadOnlyRef = 10;
constexpr size_t kSlot = sizeof(blkif_request);  // the ring's union is the request's size

class VbdTest : public HypercallTest {
 protected:
  void SetUp() override {
    char name[] = "/tmp/xenkvm_vbd_XXXXXX";
    fd_ = mkstemp(name);
    ASSERT_GE(fd_, 0);
    path_ = name;
    std::vector<uint8_t> image(1 << 20);
    for (size_t i = 0; i < image.size(); ++i) image[i] = uint8_t(i * 7 + i / 512);
    ASSERT_EQ(pwrite(fd_, image.data(), image.size(), 0), ssize_t(image.size()));
    dom0_ = store_.Connect(xenstore::kPrivilegedDomid);
    guest_ = store_.Connect(1);
    xenstore::DomainConfig domain;
    domain.domid = 1;
    ASSERT_TRUE(xenstore::WriteDomainTree(store_, dom0_, domain));
    xen_add_to_physmap_t x{};
    x.domid = DOMID_SELF;
    x.space = XENMAPSPACE_grant_table;
    x.idx = 0;
    x.gpfn = kFrameGfn;
    Put(kArg, x);
    ASSERT_EQ(Call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, kArg), 0);
    Grant(kRingRef, GTF_permit_access, kRingGfn);
    Grant(kDataRef, GTF_permit_access, kDataGfn);
    Grant(kReadOnlyRef, GTF_permit_access | GTF_readonly, kDataGfn);
  }
  void TearDown() override {
    vbd_.reset();
    close(fd_);
    unlink(path_.c_str());
  }
  void Grant(uint32_t ref, uint16_t flags, uint64_t gfn) {
    grant_entry_v1_t e{flags, 0, uint32_t(gfn)};
    Put((kFrameGfn << 12) + ref * sizeof(e), e);
  }
  void MakeVbd(bool read_only = false) {
    backends::VbdConfig config;
    config.disk.path = path_;
    config.disk.read_only = read_only;
    auto vbd = backends::Vbd::Create(store_, *engine_, domain_->grants(), config);
    ASSERT_TRUE(vbd) << Describe(vbd.error());
    vbd_ = std::move(*vbd);
  }
  void Front(const std::string& key, const std::string& value) {
    ASSERT_TRUE(store_.Write(guest_, 0, "device/vbd/51712/" + key, value));
  }
  std::string Back(const std::string& key) {
    auto v = store_.Read(guest_, 0, "/local/domain/0/backend/vbd/1/51712/" + key);
    return v ? *v : "<none>";
  }
  // blkfront's connect: a fresh ring, a port for dom0, the keys, Initialised.
  evtchn::Port ConnectFrontend() {
    std::memset(ram_.get() + (kRingGfn << 12), 0, 4096);
    req_prod_ = rsp_cons_ = 0;
    evtchn_alloc_unbound op{.dom = DOMID_SELF, .remote_dom = 0, .port = 0};
    EXPECT_TRUE(engine_->AllocUnbound(op));
    Front("ring-ref", std::to_string(kRingRef));
    Front("event-channel", std::to_string(op.port));
    Front("protocol", "x86_64-abi");
    Front("state", "3");
    return op.port;
  }
  evtchn_status Status(evtchn::Port port) {
    evtchn_status st{};
    st.dom = DOMID_SELF;
    st.port = port;
    EXPECT_TRUE(engine_->Status(st));
    return st;
  }
  // One request, sent and answered; returns its status.
  int16_t Do(evtchn::Port port, uint8_t op, uint64_t sector, uint32_t gref, uint8_t last = 0) {
    blkif_request req{};
    req.operation = op;
    req.nr_segments = 1;
    req.id = 1000 + req_prod_;
    req.sector_number = sector;
    req.seg[0] = {.gref = gref, .first_sect = 0, .last_sect = last};
    Put((kRingGfn << 12) + 64 + (req_prod_ % 32) * kSlot, req);
    ++req_prod_;
    __atomic_store_n(reinterpret_cast<uint32_t*>(ram_.get() + (kRingGfn << 12)), req_prod_,
                     __ATOMIC_RELEASE);
    EXPECT_TRUE(engine_->Send(evtchn_send{.port = port}));
    auto* rsp_prod = reinterpret_cast<uint32_t*>(ram_.get() + (kRingGfn << 12) + 8);
    // Bounded wait for the I/O thread (a hang fails the test instead of blocking it).
    for (int i = 0; i < 20000 && __atomic_load_n(rsp_prod, __ATOMIC_ACQUIRE) == rsp_cons_; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(__atomic_load_n(rsp_prod, __ATOMIC_ACQUIRE), rsp_cons_ + 1);
    const auto rsp = Get<blkif_response>((kRingGfn << 12) + 64 + (rsp_cons_ % 32) * kSlot);
    ++rsp_cons_;
    EXPECT_EQ(rsp.id, req.id);
    EXPECT_EQ(rsp.operation, op);
    return rsp.status;
  }
  std::vector<uint8_t> FileSector(uint64_t sector) {
    std::vector<uint8_t> out(512);
    EXPECT_EQ(pread(fd_, out.data(), 512, off_t(sector * 512)), 512);
    return out;
  }
  std::vector<uint8_t> DataPage(size_t bytes = 512) {
    return {ram_.get() + (kDataGfn << 12), ram_.get() + (kDataGfn << 12) + bytes};
  }

  int fd_ = -1;
  std::string path_;
  xenstore::Store store_;
  xenstore::ConnId dom0_ = 0, guest_ = 0;
  std::unique_ptr<backends::Vbd> vbd_;
  uint32_t req_prod_ = 0, rsp_cons_ = 0;
};

TEST_F(VbdTest, ConnectReadWriteCloseReconnect) {
  MakeVbd();
  EXPECT_EQ(Back("state"), "2");
  EXPECT_EQ(Back("sectors"), "2048");
  EXPECT_EQ(Back("dev"), "xvda");
  EXPECT_EQ(*store_.Read(guest_, 0, "device/vbd/51712/virtual-device"), "51712");
  evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  auto st = Status(port);
  EXPECT_EQ(st.status, uint32_t(EVTCHNSTAT_interdomain));
  EXPECT_EQ(st.u.interdomain.dom, 0u);

  EXPECT_EQ(Do(port, BLKIF_OP_READ, 5, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(DataPage(), FileSector(5));
  std::memset(ram_.get() + (kDataGfn << 12), 0xa5, 512);
  EXPECT_EQ(Do(port, BLKIF_OP_WRITE, 9, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(FileSector(9), std::vector<uint8_t>(512, 0xa5));
  // A read may not land in a read-only grant; an ungranted ref and a sector past the end fail.
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 5, kReadOnlyRef), BLKIF_RSP_ERROR);
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 5, 300), BLKIF_RSP_ERROR);
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 2048, kDataRef), BLKIF_RSP_ERROR);
  EXPECT_EQ(Do(port, BLKIF_OP_WRITE, 12, kReadOnlyRef), BLKIF_RSP_OKAY);  // disk <- guest: fine
  auto stats = vbd_->Stats();
  EXPECT_EQ(stats.requests, 6u);
  EXPECT_EQ(stats.errors, 3u);
  EXPECT_EQ(stats.read_bytes, 512u);
  EXPECT_EQ(stats.write_bytes, 1024u);

  // GRUB closes the disk: the port goes back to waiting for dom0, pins are dropped.
  Front("state", "5");
  EXPECT_EQ(Back("state"), "5");
  EXPECT_EQ(Status(port).status, uint32_t(EVTCHNSTAT_unbound));
  EXPECT_TRUE(domain_->grants().MappedGfns().empty());
  Front("state", "6");
  EXPECT_EQ(Back("state"), "6");
  ASSERT_TRUE(engine_->Close(evtchn_close{.port = port}));
  // The OS opens it again.
  Front("state", "1");
  EXPECT_EQ(Back("state"), "2");
  port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 9, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(DataPage(), std::vector<uint8_t>(512, 0xa5));
}

// GRUB's own hand-off (grub-core/disk/xen/xendisk.c, grub_xendisk_fini, before it boots the
// OS): Connected straight to Closed (no Closing), wait for the backend's Closed, empty
// ring-ref and event-channel, end the grants, close the port, then Initialising for the OS.
TEST_F(VbdTest, GrubHandOffThenTheOsConnects) {
  MakeVbd();
  evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 7, kDataRef), BLKIF_RSP_OKAY);
  Front("state", "6");
  EXPECT_EQ(Back("state"), "6");
  EXPECT_FALSE(vbd_->xenbus().connected());
  EXPECT_EQ(Status(port).status, uint32_t(EVTCHNSTAT_unbound));  // dom0's end is gone
  EXPECT_TRUE(domain_->grants().MappedGfns().empty());           // nothing pinned for the free
  Front("ring-ref", "");
  Front("event-channel", "");
  Grant(kRingRef, 0, 0);
  Grant(kDataRef, 0, 0);
  ASSERT_TRUE(engine_->Close(evtchn_close{.port = port}));
  Front("state", "1");
  EXPECT_EQ(Back("state"), "2");
  // The OS's blkfront, with its own grants and port.
  Grant(kRingRef, GTF_permit_access, kRingGfn);
  Grant(kDataRef, GTF_permit_access, kDataGfn);
  port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 7, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(DataPage(), FileSector(7));
  // Mini-OS's shutdown_blkfront: Closing, Closed, then Initialising, waiting each time.
  Front("state", "5");
  EXPECT_EQ(Back("state"), "5");
  Front("state", "6");
  EXPECT_EQ(Back("state"), "6");
  Front("state", "1");
  EXPECT_EQ(Back("state"), "2");
}

TEST_F(VbdTest, ReadOnlyDiskRefusesWrites) {
  MakeVbd(/*read_only=*/true);
  EXPECT_EQ(Back("mode"), "r");
  evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  const auto before = FileSector(3);
  EXPECT_EQ(Do(port, BLKIF_OP_WRITE, 3, kDataRef), BLKIF_RSP_ERROR);
  EXPECT_EQ(FileSector(3), before);
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 3, kDataRef), BLKIF_RSP_OKAY);
}

TEST_F(VbdTest, BadFrontendKeysCloseTheDevice) {
  MakeVbd();
  // An event channel that is not a port unbound for dom0 (here: bound to nothing at all).
  Front("ring-ref", std::to_string(kRingRef));
  Front("event-channel", "77");
  Front("state", "3");
  EXPECT_EQ(Back("state"), "5");
  EXPECT_NE(Back("error"), "<none>");
  EXPECT_TRUE(domain_->grants().MappedGfns().empty());  // the ring was unmapped again
  // An ungranted ring.
  Front("state", "6");
  Front("state", "1");
  ASSERT_EQ(Back("state"), "2");
  Front("ring-ref", "400");
  Front("state", "3");
  EXPECT_EQ(Back("state"), "5");
  // After all that a good connection still works.
  Front("state", "6");
  Front("state", "1");
  evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 1, kDataRef), BLKIF_RSP_OKAY);
}

TEST_F(VbdTest, HotUnplugRemovesTheDevice) {
  MakeVbd();
  evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  ASSERT_TRUE(vbd_->xenbus().RequestUnplug());
  EXPECT_EQ(Back("state"), "5");
  Front("state", "5");
  EXPECT_EQ(Status(port).status, uint32_t(EVTCHNSTAT_unbound));
  Front("state", "6");
  EXPECT_TRUE(vbd_->xenbus().removed());
  EXPECT_FALSE(store_.Read(guest_, 0, "device/vbd/51712"));
}

}  // namespace
}  // namespace xenkvm::xen::testing

namespace xenkvm::xen::testing {
namespace {

// Snapshots: a connected disk saved quiesced, then a new Vbd of the same image restored from
// the section before the engine's port table (as a restoring VMM does): the ring goes on where
// it stood, the port reaches the same endpoint, and requests queued while quiesced are served
// once it resumes.
TEST_F(VbdTest, SavedQuiescedRestoredOnANewVbdGoesOn) {
  MakeVbd();
  const evtchn::Port port = ConnectFrontend();
  ASSERT_EQ(Back("state"), "4");
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 5, kDataRef), BLKIF_RSP_OKAY);
  vbd_->Quiesce();
  snapshot::Encoder vbd_state, engine_state;
  vbd_->Save(vbd_state);
  engine_->Save(engine_state);

  // The new process: its Vbd made on a fresh tree (the frontend not yet there), unconnected.
  vbd_.reset();
  Front("state", "1");
  MakeVbd();
  ASSERT_FALSE(vbd_->xenbus().connected());
  // Every truncation is refused and leaves the disk unconnected.
  for (size_t len = 0; len < vbd_state.bytes().size(); ++len) {
    snapshot::Decoder in(std::span(vbd_state.bytes()).first(len));
    ASSERT_FALSE(vbd_->Restore(in)) << len;
    ASSERT_FALSE(vbd_->xenbus().connected());
  }
  snapshot::Decoder in(vbd_state.bytes());
  ASSERT_TRUE(vbd_->Restore(in));
  snapshot::Decoder engine_in(engine_state.bytes());
  ASSERT_TRUE(engine_->Restore(engine_in));
  EXPECT_TRUE(vbd_->xenbus().connected());
  EXPECT_EQ(vbd_->xenbus().backend_state(), backends::XenbusState::kConnected);
  EXPECT_EQ(Status(port).status, uint32_t(EVTCHNSTAT_interdomain));
  vbd_->Resume();
  std::memset(ram_.get() + (kDataGfn << 12), 0x5a, 512);
  EXPECT_EQ(Do(port, BLKIF_OP_WRITE, 11, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(FileSector(11), std::vector<uint8_t>(512, 0x5a));
  EXPECT_EQ(Do(port, BLKIF_OP_READ, 6, kDataRef), BLKIF_RSP_OKAY);
  EXPECT_EQ(DataPage(), FileSector(6));

  // A second restore over a connected disk fails (it is connected already).
  snapshot::Decoder again(vbd_state.bytes());
  EXPECT_FALSE(vbd_->Restore(again));
}

}  // namespace
}  // namespace xenkvm::xen::testing
