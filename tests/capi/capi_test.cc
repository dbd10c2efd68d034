// libxenkvm's C API (capi/include/xenkvm/xenkvm.h): attribute round trips, every error it
// returns, EVTCHNOP hypercalls through a host translator, and eventfd routes delivering while
// routes change and guest memory is removed and re-added. Uses only the exported C symbols.
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <xenkvm/xenkvm.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

extern "C" {
#include <xen/errno.h>
#include <xen/event_channel.h>
#include <xen/physdev.h>
#include <xen/xen.h>
}

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSharedInfoGfn = 2;
constexpr uint64_t kVcpuInfoGpa = 3 * kPage;  // vCPU 1's vcpu_info lives at 3*kPage + 64
constexpr uint64_t kArgGpa = 8 * kPage;       // hypercall argument scratch
constexpr uint64_t kGvaOffset = 0x40000000;   // the simulated guest's GVA = GPA + this
// Hypercall numbers of xen.h at the current interface version (the bare header defaults to an
// old one, where event_channel_op means the compat number).
constexpr uint64_t kEventChannelOp = 32;
constexpr uint64_t kSchedOp = 29;
constexpr uint64_t kPhysdevOp = 33;

// A simulated guest: its RAM, what the library asked of the host, and the guest's handler.
struct Guest {
  alignas(4096) uint8_t ram[16 * kPage] = {};
  std::atomic<int> upcalls[2] = {};
  std::atomic<int> last_vector{-1};
  std::atomic<int> syncs_requested{0};
  std::atomic<int> need_sync{0};
  bool unmapped_gva = false;
  xenkvm_t* xk = nullptr;

  static void Deliver(void* opaque, uint32_t vcpu, xenkvm_delivery why, uint8_t vector) {
    auto* g = static_cast<Guest*>(opaque);
    if (why == XENKVM_DELIVER_UPCALL) {
      g->upcalls[vcpu].fetch_add(1);
      g->last_vector.store(vector);
    } else if (why == XENKVM_DELIVER_SYNC) {
      g->syncs_requested.fetch_add(1);
      g->need_sync.store(1);
    }
  }
  static int Translate(void* opaque, uint32_t, uint64_t gva, uint64_t* gpa) {
    auto* g = static_cast<Guest*>(opaque);
    if (g->unmapped_gva || gva < kGvaOffset) return -XEN_EFAULT;
    *gpa = gva - kGvaOffset;
    return 0;
  }

  explicit Guest(uint32_t n_vcpus = 2) {
    xenkvm_config config{.domid = 3,
                         .n_vcpus = n_vcpus,
                         .opaque = this,
                         .deliver = Deliver,
                         .gva_to_gpa = Translate};
    EXPECT_EQ(xenkvm_create(&config, &xk), 0);
  }
  ~Guest() { xenkvm_destroy(xk); }

  // Memory, shared_info and both vCPUs' vcpu_info in place, upcall vector 0xf3.
  void Setup() {
    ASSERT_EQ(xenkvm_add_region(xk, 0, 0, sizeof(ram), ram), 0);
    xenkvm_hvm_attr shinfo{.type = XENKVM_HVM_ATTR_SHARED_INFO, .u = {.gfn = kSharedInfoGfn}};
    ASSERT_EQ(xenkvm_hvm_set_attr(xk, &shinfo), 0);
    xenkvm_hvm_attr vector{.type = XENKVM_HVM_ATTR_UPCALL_VECTOR, .u = {.vector = 0xf3}};
    ASSERT_EQ(xenkvm_hvm_set_attr(xk, &vector), 0);
    for (uint32_t v = 0; v < 2; ++v) {
      xenkvm_vcpu_attr info{.type = XENKVM_VCPU_ATTR_VCPU_INFO,
                            .u = {.gpa = kVcpuInfoGpa + 64 * v}};
      ASSERT_EQ(xenkvm_vcpu_set_attr(xk, v, &info), 0);
    }
  }

  // EVTCHNOP `cmd` with `op` placed at kArgGpa; returns the guest's rax, copies `op` back.
  template <class T>
  int64_t EvtchnOp(uint32_t vcpu, uint64_t cmd, T& op, uint64_t nr = kEventChannelOp) {
    std::memcpy(ram + kArgGpa, &op, sizeof(op));
    xenkvm_hypercall call{
        .nr = nr, .args = {cmd, kArgGpa + kGvaOffset}, .ret = 1, .compat = 0, .cpl = 0};
    int handled = 0;
    EXPECT_EQ(xenkvm_handle_hypercall(xk, vcpu, &call, &handled), 0);
    EXPECT_EQ(handled, 1);
    std::memcpy(&op, ram + kArgGpa, sizeof(op));
    return call.ret;
  }
  template <class T>
  int64_t PhysdevOp(uint64_t cmd, T& op) {
    return EvtchnOp(0, cmd, op, kPhysdevOp);
  }
  physdev_map_pirq MapArgs(int type, int index, int pirq) {
    physdev_map_pirq op{};
    op.domid = DOMID_SELF;
    op.type = type;
    op.index = index;
    op.pirq = pirq;
    return op;
  }
  uint32_t BindIpi(uint32_t vcpu) {
    evtchn_bind_ipi op{.vcpu = vcpu, .port = 0};
    EXPECT_EQ(EvtchnOp(vcpu, EVTCHNOP_bind_ipi, op), 0);
    return op.port;
  }

  uint64_t* PendingWords() {
    return reinterpret_cast<uint64_t*>(ram + kSharedInfoGfn * kPage + 2048);
  }
  bool Pending(uint32_t port) {
    return (__atomic_load_n(&PendingWords()[port / 64], __ATOMIC_SEQ_CST) >> (port % 64)) & 1;
  }
  // The guest's 2-level handler on `vcpu`: returns the ports it found pending (and clears them).
  std::vector<uint32_t> Handle(uint32_t vcpu) {
    uint8_t* info = ram + kVcpuInfoGpa + 64 * vcpu;
    __atomic_store_n(info, uint8_t(0), __ATOMIC_SEQ_CST);
    uint64_t sel = __atomic_exchange_n(reinterpret_cast<uint64_t*>(info + 8), 0, __ATOMIC_SEQ_CST);
    std::vector<uint32_t> ports;
    for (; sel != 0; sel &= sel - 1) {
      int word = __builtin_ctzll(sel);
      uint64_t bits = __atomic_exchange_n(&PendingWords()[word], 0, __ATOMIC_SEQ_CST);
      for (; bits != 0; bits &= bits - 1)
        ports.push_back(uint32_t(word * 64 + __builtin_ctzll(bits)));
    }
    return ports;
  }
};

TEST(CApi, CreateRejectsBadConfigs) {
  xenkvm_t* xk = nullptr;
  auto deliver = [](void*, uint32_t, xenkvm_delivery, uint8_t) {};
  xenkvm_config ok{
      .domid = 0, .n_vcpus = 1, .opaque = nullptr, .deliver = deliver, .gva_to_gpa = nullptr};
  EXPECT_EQ(xenkvm_create(nullptr, &xk), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_create(&ok, nullptr), -XEN_EINVAL);
  xenkvm_config no_deliver = ok;
  no_deliver.deliver = nullptr;
  EXPECT_EQ(xenkvm_create(&no_deliver, &xk), -XEN_EINVAL);
  xenkvm_config no_vcpus = ok;
  no_vcpus.n_vcpus = 0;
  EXPECT_EQ(xenkvm_create(&no_vcpus, &xk), -XEN_EINVAL);
  xenkvm_config too_many = ok;
  too_many.n_vcpus = 4097;
  EXPECT_EQ(xenkvm_create(&too_many, &xk), -XEN_EINVAL);
  EXPECT_EQ(xk, nullptr);
  ASSERT_EQ(xenkvm_create(&ok, &xk), 0);
  EXPECT_STREQ(xenkvm_version(), "0.1.0");
  xenkvm_destroy(xk);
  xenkvm_destroy(nullptr);  // allowed, like free(NULL)
}

TEST(CApi, RegionErrors) {
  Guest g;
  EXPECT_EQ(xenkvm_add_region(g.xk, 0, 1, kPage, g.ram), -XEN_EINVAL);      // gpa unaligned
  EXPECT_EQ(xenkvm_add_region(g.xk, 0, 0, kPage + 1, g.ram), -XEN_EINVAL);  // size unaligned
  EXPECT_EQ(xenkvm_add_region(g.xk, 0, 0, 0, g.ram), -XEN_EINVAL);          // empty
  EXPECT_EQ(xenkvm_add_region(g.xk, 0, 0, kPage, nullptr), -XEN_EINVAL);    // no memory
  EXPECT_EQ(xenkvm_add_region(g.xk, 96, 0, kPage, g.ram), -XEN_EINVAL);     // slot range
  ASSERT_EQ(xenkvm_add_region(g.xk, 0, 0, 2 * kPage, g.ram), 0);
  EXPECT_EQ(xenkvm_add_region(g.xk, 0, 8 * kPage, kPage, g.ram), -XEN_EEXIST);  // slot used
  EXPECT_EQ(xenkvm_add_region(g.xk, 1, kPage, kPage, g.ram), -XEN_EEXIST);      // overlap
  EXPECT_EQ(xenkvm_remove_region(g.xk, 1), -XEN_ENOENT);
  EXPECT_EQ(xenkvm_remove_region(g.xk, 96), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_remove_region(g.xk, 0), 0);
  EXPECT_EQ(xenkvm_remove_region(nullptr, 0), -XEN_EINVAL);
}

TEST(CApi, HvmAttrsRoundTripAndErrors) {
  Guest g;
  xenkvm_hvm_attr a{.type = XENKVM_HVM_ATTR_SHARED_INFO, .u = {.gfn = 7}};
  EXPECT_EQ(xenkvm_hvm_get_attr(g.xk, &a), -XEN_ENOENT);  // not set yet
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, &a), -XEN_EFAULT);  // no guest memory there
  ASSERT_EQ(xenkvm_add_region(g.xk, 0, 0, sizeof(g.ram), g.ram), 0);
  ASSERT_EQ(xenkvm_hvm_set_attr(g.xk, &a), 0);
  a.u.gfn = 0;
  ASSERT_EQ(xenkvm_hvm_get_attr(g.xk, &a), 0);
  EXPECT_EQ(a.u.gfn, 7u);
  a.u.gfn = uint64_t(1) << 52;
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, &a), -XEN_EINVAL);

  xenkvm_hvm_attr mode{.type = XENKVM_HVM_ATTR_LONG_MODE, .u = {.long_mode = 0}};
  ASSERT_EQ(xenkvm_hvm_set_attr(g.xk, &mode), 0);
  mode.u.long_mode = 9;
  ASSERT_EQ(xenkvm_hvm_get_attr(g.xk, &mode), 0);
  EXPECT_EQ(mode.u.long_mode, 0);
  mode.u.long_mode = 2;
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, &mode), -XEN_EINVAL);

  xenkvm_hvm_attr vec{.type = XENKVM_HVM_ATTR_UPCALL_VECTOR, .u = {.vector = 0x0f}};
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, &vec), -XEN_EINVAL);  // an exception vector
  vec.u.vector = 0xe0;
  ASSERT_EQ(xenkvm_hvm_set_attr(g.xk, &vec), 0);
  vec.u.vector = 0;
  ASSERT_EQ(xenkvm_hvm_get_attr(g.xk, &vec), 0);
  EXPECT_EQ(vec.u.vector, 0xe0);

  xenkvm_hvm_attr bad{.type = 99, .u = {.gfn = 0}};
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, &bad), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_hvm_get_attr(g.xk, &bad), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_hvm_set_attr(g.xk, nullptr), -XEN_EINVAL);
}

TEST(CApi, VcpuAttrsRoundTripAndErrors) {
  Guest g;
  ASSERT_EQ(xenkvm_add_region(g.xk, 0, 0, sizeof(g.ram), g.ram), 0);
  xenkvm_vcpu_attr id{.type = XENKVM_VCPU_ATTR_VCPU_ID, .u = {.vcpu_id = 5}};
  ASSERT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &id), 0);
  id.u.vcpu_id = 0;
  ASSERT_EQ(xenkvm_vcpu_get_attr(g.xk, 0, &id), 0);
  EXPECT_EQ(id.u.vcpu_id, 5u);
  id.u.vcpu_id = 5;
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 1, &id), -XEN_EEXIST);  // vCPU 0 has Xen id 5
  id.u.vcpu_id = 4096;
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 1, &id), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 2, &id), -XEN_EINVAL);  // index out of range

  xenkvm_vcpu_attr info{.type = XENKVM_VCPU_ATTR_VCPU_INFO, .u = {.gpa = 0}};
  EXPECT_EQ(xenkvm_vcpu_get_attr(g.xk, 0, &info), -XEN_ENOENT);
  info.u.gpa = kVcpuInfoGpa + 4;  // not 8-byte aligned
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &info), -XEN_EINVAL);
  info.u.gpa = kVcpuInfoGpa;
  ASSERT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &info), 0);
  info.u.gpa = 0;
  ASSERT_EQ(xenkvm_vcpu_get_attr(g.xk, 0, &info), 0);
  EXPECT_EQ(info.u.gpa, kVcpuInfoGpa);
  id.u.vcpu_id = 6;  // the engine has it under id 5 now
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &id), -XEN_EBUSY);
  id.u.vcpu_id = 5;
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &id), 0);

  xenkvm_vcpu_attr vec{.type = XENKVM_VCPU_ATTR_UPCALL_VECTOR, .u = {.vector = 3}};
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &vec), -XEN_EINVAL);
  vec.u.vector = 0xd0;
  ASSERT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &vec), 0);
  vec.u.vector = 0;
  ASSERT_EQ(xenkvm_vcpu_get_attr(g.xk, 0, &vec), 0);
  EXPECT_EQ(vec.u.vector, 0xd0);
  xenkvm_vcpu_attr bad{.type = 42, .u = {.gpa = 0}};
  EXPECT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &bad), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_vcpu_get_attr(g.xk, 0, &bad), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_vcpu_upcall_pending(g.xk, 2), -XEN_EINVAL);
}

TEST(CApi, HypercallsBindSendAndDeliverWithTheVcpusVector) {
  Guest g;
  g.Setup();
  const uint32_t port = g.BindIpi(1);
  ASSERT_NE(port, 0u);
  evtchn_send send{.port = port};
  ASSERT_EQ(g.EvtchnOp(0, EVTCHNOP_send, send), 0);
  EXPECT_EQ(g.upcalls[1].load(), 1);
  EXPECT_EQ(g.last_vector.load(), 0xf3);
  EXPECT_EQ(xenkvm_vcpu_upcall_pending(g.xk, 1), 1);
  EXPECT_EQ(g.Handle(1), std::vector<uint32_t>{port});

  // A per-vCPU vector wins over the domain's; the host's send is KVM_XEN_HVM_EVTCHN_SEND.
  xenkvm_vcpu_attr vec{.type = XENKVM_VCPU_ATTR_UPCALL_VECTOR, .u = {.vector = 0xd0}};
  ASSERT_EQ(xenkvm_vcpu_set_attr(g.xk, 1, &vec), 0);
  ASSERT_EQ(xenkvm_evtchn_send(g.xk, port), 0);
  EXPECT_EQ(g.upcalls[1].load(), 2);
  EXPECT_EQ(g.last_vector.load(), 0xd0);
  EXPECT_EQ(xenkvm_evtchn_send(g.xk, 0), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_evtchn_send(g.xk, 4096), -XEN_EINVAL);

  evtchn_status status{};
  status.dom = DOMID_SELF;
  status.port = port;
  ASSERT_EQ(g.EvtchnOp(0, EVTCHNOP_status, status), 0);
  EXPECT_EQ(status.status, EVTCHNSTAT_ipi);
  EXPECT_EQ(status.vcpu, 1u);
  evtchn_close close_op{.port = port};
  ASSERT_EQ(g.EvtchnOp(0, EVTCHNOP_close, close_op), 0);
  EXPECT_EQ(g.EvtchnOp(0, EVTCHNOP_close, close_op), -XEN_EINVAL);  // Xen: closed port
}

TEST(CApi, HypercallErrors) {
  Guest g;
  g.Setup();
  evtchn_send send{.port = 0};
  EXPECT_EQ(g.EvtchnOp(0, 99, send), -XEN_ENOSYS);  // unknown EVTCHNOP
  g.unmapped_gva = true;
  EXPECT_EQ(g.EvtchnOp(0, EVTCHNOP_send, send), -XEN_EFAULT);  // translator refused
  g.unmapped_gva = false;

  xenkvm_hypercall outside{.nr = kEventChannelOp,
                           .args = {EVTCHNOP_send, kGvaOffset + 64 * kPage},
                           .ret = 0,
                           .compat = 0,
                           .cpl = 0};
  int handled = 0;
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 0, &outside, &handled), 0);
  EXPECT_EQ(outside.ret, -XEN_EFAULT);  // GPA outside every region

  xenkvm_hypercall sched{.nr = kSchedOp, .args = {}, .ret = 7, .compat = 0, .cpl = 0};
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 0, &sched, &handled), 0);
  EXPECT_EQ(handled, 0);  // left to the host
  EXPECT_EQ(sched.ret, 7);
  EXPECT_EQ(xenkvm_handle_hypercall(g.xk, 2, &sched, &handled), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_handle_hypercall(g.xk, 0, nullptr, &handled), -XEN_EINVAL);
}

TEST(CApi, RouteRoundTripAndErrors) {
  Guest g;
  g.Setup();
  xenkvm_route r{.type = XENKVM_ROUTE_PORT, .port = 5, .vcpu = 1, .priority = 3, .pirq = 0};
  ASSERT_EQ(xenkvm_route_set(g.xk, 42, &r), 0);
  xenkvm_route back{};
  ASSERT_EQ(xenkvm_route_get(g.xk, 42, &back), 0);
  EXPECT_EQ(back.port, 5u);
  EXPECT_EQ(back.vcpu, 1u);
  EXPECT_EQ(back.priority, 3u);
  EXPECT_EQ(xenkvm_route_get(g.xk, 43, &back), -XEN_ENOENT);
  xenkvm_route bad = r;
  bad.priority = 16;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);
  bad = r;
  bad.vcpu = 4096;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);
  bad = r;
  bad.port = 0;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);
  bad.port = 4096;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_route_set(g.xk, 4096, &r), -XEN_EINVAL);  // route ids 0..4095
  bad = r;
  bad.type = 2;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);
  bad.type = XENKVM_ROUTE_PIRQ;
  bad.pirq = 1024;
  EXPECT_EQ(xenkvm_route_set(g.xk, 42, &bad), -XEN_EINVAL);

  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_EQ(xenkvm_eventfd_bind(g.xk, fd, 42), 0);
  EXPECT_EQ(xenkvm_eventfd_bind(g.xk, fd, 42), -XEN_EEXIST);
  EXPECT_EQ(xenkvm_eventfd_bind(g.xk, -1, 42), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_eventfd_unbind(g.xk, fd), 0);
  EXPECT_EQ(xenkvm_eventfd_unbind(g.xk, fd), -XEN_ENOENT);
  EXPECT_EQ(xenkvm_route_remove(g.xk, 42), 0);
  EXPECT_EQ(xenkvm_route_remove(g.xk, 42), -XEN_ENOENT);
  close(fd);
}

// Two device threads signal eventfds one event at a time, each waiting for the guest to see it;
// meanwhile one thread flips each route between two ports and another removes and re-adds
// guest memory. Every signal reaches the guest (nothing lost).
TEST(CApi, RoutesUnderChurnWhileMemoryIsRemapped) {
  Guest g(1);
  ASSERT_EQ(xenkvm_add_region(g.xk, 0, 0, sizeof(g.ram), g.ram), 0);
  xenkvm_hvm_attr shinfo{.type = XENKVM_HVM_ATTR_SHARED_INFO, .u = {.gfn = kSharedInfoGfn}};
  ASSERT_EQ(xenkvm_hvm_set_attr(g.xk, &shinfo), 0);
  xenkvm_vcpu_attr info{.type = XENKVM_VCPU_ATTR_VCPU_INFO, .u = {.gpa = kVcpuInfoGpa}};
  ASSERT_EQ(xenkvm_vcpu_set_attr(g.xk, 0, &info), 0);

  constexpr int kEvents = 1500;
  uint32_t ports[2][2];  // [device][alternative]
  int fds[2];
  for (int d = 0; d < 2; ++d) {
    ports[d][0] = g.BindIpi(0);
    ports[d][1] = g.BindIpi(0);
    xenkvm_route r{
        .type = XENKVM_ROUTE_PORT, .port = ports[d][0], .vcpu = 0, .priority = 7, .pirq = 0};
    ASSERT_EQ(xenkvm_route_set(g.xk, uint32_t(d), &r), 0);
    fds[d] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_EQ(xenkvm_eventfd_bind(g.xk, fds[d], uint32_t(d)), 0);
  }
  std::atomic<int> seen[2] = {};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int d = 0; d < 2; ++d)
    threads.emplace_back([&, d] {
      for (int k = 0; k < kEvents; ++k) {
        uint64_t one = 1;
        if (write(fds[d], &one, sizeof(one)) != sizeof(one)) std::abort();
        while (seen[d].load() <= k) std::this_thread::yield();
      }
    });
  std::thread route_churn([&] {
    for (uint32_t i = 0; !done.load(); ++i)
      for (uint32_t d = 0; d < 2; ++d) {
        xenkvm_route r{.type = XENKVM_ROUTE_PORT,
                       .port = ports[d][i % 2],
                       .vcpu = 0,
                       .priority = i % 16,
                       .pirq = 0};
        if (xenkvm_route_set(g.xk, d, &r) != 0) std::abort();
      }
  });
  std::thread memory_churn([&] {
    while (!done.load()) {
      if (xenkvm_remove_region(g.xk, 0) != 0) std::abort();
      std::this_thread::yield();
      if (xenkvm_add_region(g.xk, 0, 0, sizeof(g.ram), g.ram) != 0) std::abort();
      std::this_thread::yield();
    }
  });
  // The vCPU: sync when asked, handle upcalls.
  while (seen[0].load() < kEvents || seen[1].load() < kEvents) {
    if (g.need_sync.exchange(0)) xenkvm_vcpu_sync(g.xk, 0);
    for (uint32_t port : g.Handle(0))
      for (int d = 0; d < 2; ++d)
        if (port == ports[d][0] || port == ports[d][1]) seen[d].fetch_add(1);
    std::this_thread::yield();
  }
  done.store(true);
  for (auto& t : threads) t.join();
  route_churn.join();
  memory_churn.join();
  EXPECT_EQ(seen[0].load(), kEvents);
  EXPECT_EQ(seen[1].load(), kEvents);
  for (int d = 0; d < 2; ++d) {
    EXPECT_EQ(xenkvm_eventfd_unbind(g.xk, fds[d]), 0);
    close(fds[d]);
  }
}

// The MSI address of a PIRQ: destination-id bits 19:12 carry PIRQ bits 7:0, address bits
// 63:40 PIRQ bits 31:8; data (the vector) is 0.
uint64_t PirqMsiAddress(uint32_t pirq) {
  return 0xfee00000 | (uint64_t(pirq & 0xff) << 12) | (uint64_t(pirq >> 8) << 40);
}

TEST(CApi, MsiToPirqDecoding) {
  uint32_t pirq = 0;
  EXPECT_EQ(xenkvm_msi_to_pirq(PirqMsiAddress(0x3ff), 0, &pirq), 1);
  EXPECT_EQ(pirq, 0x3ffu);
  EXPECT_EQ(xenkvm_msi_to_pirq(PirqMsiAddress(0x12345), 0x4000, &pirq), 1);  // flags, vector 0
  EXPECT_EQ(pirq, 0x12345u);
  EXPECT_EQ(xenkvm_msi_to_pirq(PirqMsiAddress(7), 0x41, &pirq), 0);  // a real vector
  Guest g;
  EXPECT_EQ(xenkvm_msi_send(g.xk, PirqMsiAddress(7), 0x41), -XEN_EINVAL);
  EXPECT_EQ(xenkvm_msi_send(g.xk, PirqMsiAddress(1024), 0), -XEN_EINVAL);
}

TEST(CApi, PhysdevMapPirqErrorsAsXen) {
  Guest g;
  ASSERT_EQ(xenkvm_add_region(g.xk, 0, 0, sizeof(g.ram), g.ram), 0);
  auto op = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, -1);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EINVAL);  // no vector callback yet
  ASSERT_EQ(xenkvm_remove_region(g.xk, 0), 0);
  g.Setup();
  op.domid = 0;  // dom0: not ours to map
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EPERM);
  op.domid = 9;  // no such domain
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_ESRCH);
  op = g.MapArgs(7, -1, -1);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EINVAL);  // unknown type
  op = g.MapArgs(MAP_PIRQ_TYPE_MSI, -1, -1);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EINVAL);  // HVM: GSIs only
  op = g.MapArgs(MAP_PIRQ_TYPE_GSI, 48, -1);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EINVAL);  // beyond the GSIs
  op = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, 1024);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), -XEN_EINVAL);  // beyond nr_pirqs

  // Xen's choice for a GSI: the lowest non-ISA PIRQ; the guest's own id names it too.
  op = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, -1);
  op.domid = 3;
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), 0);
  EXPECT_EQ(op.pirq, 16);
  // A second PIRQ for GSI 20 leaves the first mapping (Xen answers 0 and changes nothing).
  op = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, 30);
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, op), 0);
  physdev_irq_status_query q{.irq = 30, .flags = 0};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_irq_status_query, q), -XEN_EINVAL);  // 30 stayed unmapped
  q.irq = 16;
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_irq_status_query, q), 0);
  EXPECT_EQ(q.flags, XENIRQSTAT_needs_eoi);
  q.irq = 1024;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_irq_status_query, q), -XEN_EINVAL);

  physdev_get_free_pirq msi{.type = MAP_PIRQ_TYPE_MSI, .pirq = 0};
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_get_free_pirq, msi), 0);
  EXPECT_EQ(msi.pirq, 1023u);
  physdev_eoi eoi{.irq = 1023};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_eoi, eoi), 0);
  eoi.irq = 500;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_eoi, eoi), -XEN_EINVAL);  // never mapped or allocated
  eoi.irq = 1024;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_eoi, eoi), -XEN_EINVAL);

  physdev_unmap_pirq unmap{.domid = DOMID_SELF, .pirq = 16};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_unmap_pirq, unmap), 0);
  q.irq = 16;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_irq_status_query, q), -XEN_EINVAL);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_unmap_pirq, unmap), 0);  // Xen: unmapped is fine for SELF
  unmap.domid = 0;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_unmap_pirq, unmap), -XEN_EPERM);
  unmap.domid = 9;
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_unmap_pirq, unmap), -XEN_ESRCH);
  physdev_apic apic{};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_apic_read, apic), -XEN_ENOSYS);  // the hardware domain's
}

TEST(CApi, GetFreePirqAllocatesUntilNoSpace) {
  Guest g;
  g.Setup();
  physdev_get_free_pirq op{.type = MAP_PIRQ_TYPE_MSI, .pirq = 0};
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_get_free_pirq, op), 0);
  EXPECT_EQ(op.pirq, 1023u);
  physdev_irq_status_query q{.irq = 1023, .flags = 0};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_irq_status_query, q), -XEN_EINVAL);  // allocated, not mapped
  physdev_eoi eoi{.irq = 1023};
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_eoi, eoi), 0);  // but known
  op.type = MAP_PIRQ_TYPE_GSI;
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_get_free_pirq, op), 0);
  EXPECT_EQ(op.pirq, 16u);
  // The GSIs 17..47 then PIRQs 1022..48: 31 + 975 more, then -ENOSPC.
  int handed_out = 0;
  int64_t rc = 0;
  while ((rc = g.PhysdevOp(PHYSDEVOP_get_free_pirq, op)) == 0) ++handed_out;
  EXPECT_EQ(handed_out, 31 + 975);
  EXPECT_EQ(rc, -XEN_ENOSPC);
  // With none free, map_pirq's own choice fails the range check: -EINVAL, as in Xen, and
  // the struct goes back with the error as the PIRQ.
  auto map = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, -1);
  EXPECT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, map), -XEN_EINVAL);
  EXPECT_EQ(map.pirq, -XEN_ENOSPC);
}

// A device's PIRQ MSI before the guest binds the PIRQ is kept; the bind delivers it.
TEST(CApi, PirqRaisedBeforeBindIsDeliveredAtBind) {
  Guest g;
  g.Setup();
  // Linux's way to an MSI PIRQ: get_free_pirq, then the device's MSI (vector 0) maps it.
  physdev_get_free_pirq map{.type = MAP_PIRQ_TYPE_MSI, .pirq = 0};
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_get_free_pirq, map), 0);
  const uint32_t pirq = map.pirq;
  EXPECT_EQ(xenkvm_msi_send(g.xk, PirqMsiAddress(pirq), 0), 0);  // kept
  EXPECT_EQ(g.upcalls[0].load(), 0);
  evtchn_bind_pirq bind{.pirq = pirq, .flags = 0, .port = 0};
  ASSERT_EQ(g.EvtchnOp(0, EVTCHNOP_bind_pirq, bind), 0);
  EXPECT_EQ(g.upcalls[0].load(), 1);
  EXPECT_EQ(g.Handle(0), std::vector<uint32_t>{bind.port});
  EXPECT_EQ(xenkvm_msi_send(g.xk, PirqMsiAddress(pirq), 0), 1);  // bound: straight through
  EXPECT_EQ(g.Handle(0), std::vector<uint32_t>{bind.port});
  // An MSI for a PIRQ the guest mapped to a GSI is not that GSI's interrupt.
  auto gsi = g.MapArgs(MAP_PIRQ_TYPE_GSI, 20, -1);
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_map_pirq, gsi), 0);
  EXPECT_EQ(xenkvm_msi_send(g.xk, PirqMsiAddress(uint32_t(gsi.pirq)), 0), 0);
}

// device eventfd -> PIRQ route -> port -> upcall; the guest binds after the first signals.
TEST(CApi, PirqRouteFromAnEventfd) {
  Guest g;
  g.Setup();
  physdev_get_free_pirq map{.type = MAP_PIRQ_TYPE_MSI, .pirq = 0};
  ASSERT_EQ(g.PhysdevOp(PHYSDEVOP_get_free_pirq, map), 0);
  xenkvm_route r{
      .type = XENKVM_ROUTE_PIRQ, .port = 0, .vcpu = 0, .priority = 7, .pirq = uint32_t(map.pirq)};
  ASSERT_EQ(xenkvm_route_set(g.xk, 9, &r), 0);
  xenkvm_route back{};
  ASSERT_EQ(xenkvm_route_get(g.xk, 9, &back), 0);
  EXPECT_EQ(back.type, uint32_t(XENKVM_ROUTE_PIRQ));
  EXPECT_EQ(back.pirq, uint32_t(map.pirq));
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_EQ(xenkvm_eventfd_bind(g.xk, fd, 9), 0);
  evtchn_bind_pirq bind{.pirq = uint32_t(map.pirq), .flags = 0, .port = 0};
  ASSERT_EQ(g.EvtchnOp(0, EVTCHNOP_bind_pirq, bind), 0);
  for (int i = 0; i < 100; ++i) {
    uint64_t one = 1;
    ASSERT_EQ(write(fd, &one, sizeof(one)), ssize_t(sizeof(one)));
    std::vector<uint32_t> seen;
    while ((seen = g.Handle(0)).empty()) std::this_thread::yield();
    EXPECT_EQ(seen, std::vector<uint32_t>{bind.port});
  }
  EXPECT_EQ(xenkvm_eventfd_unbind(g.xk, fd), 0);
  close(fd);
}

}  // namespace

// A 32-bit guest's hypercall: registers are 32 bits (the host's upper halves are ignored) and
// structs are in the i386 layout (physdev_map_pirq is 36 bytes there: table_base at 28).
TEST(CApi, CompatCallersUseTheI386Layout) {
#pragma pack(push, 4)
  struct I386MapPirq {
    uint16_t domid;
    int32_t type, index, pirq, bus, devfn, entry_nr;
    uint64_t table_base;
  };
#pragma pack(pop)
  static_assert(sizeof(I386MapPirq) == 36);
  Guest g;
  g.Setup();
  const I386MapPirq in{DOMID_SELF, MAP_PIRQ_TYPE_GSI, 20, -1, 0, 0, 0, 0};
  std::memcpy(g.ram + kArgGpa, &in, sizeof(in));
  const uint32_t sentinel = 0xa5a5a5a5;
  std::memcpy(g.ram + kArgGpa + sizeof(in), &sentinel, sizeof(sentinel));
  const uint64_t garbage = 0xdead'beef'0000'0000;
  xenkvm_hypercall call{.nr = kPhysdevOp,
                        .args = {garbage | PHYSDEVOP_map_pirq, garbage | (kArgGpa + kGvaOffset)},
                        .ret = 1,
                        .compat = 1,
                        .cpl = 0};
  int handled = 0;
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 0, &call, &handled), 0);
  EXPECT_EQ(handled, 1);
  ASSERT_EQ(call.ret, 0);
  I386MapPirq out{};
  std::memcpy(&out, g.ram + kArgGpa, sizeof(out));
  EXPECT_EQ(out.pirq, 16);
  uint32_t after = 0;
  std::memcpy(&after, g.ram + kArgGpa + sizeof(in), sizeof(after));
  EXPECT_EQ(after, sentinel);  // 36 bytes written back, not the native 40

  // The same registers from a 64-bit caller: the upper halves count (no such command/address).
  call.compat = 0;
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 0, &call, &handled), 0);
  EXPECT_EQ(call.ret, -XEN_ENOSYS);
  // Event channel structs have one layout: a compat bind_ipi works as a native one.
  evtchn_bind_ipi ipi{.vcpu = 1, .port = 0};
  std::memcpy(g.ram + kArgGpa, &ipi, sizeof(ipi));
  xenkvm_hypercall bind{.nr = kEventChannelOp,
                        .args = {EVTCHNOP_bind_ipi, garbage | (kArgGpa + kGvaOffset)},
                        .ret = 1,
                        .compat = 1,
                        .cpl = 0};
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 1, &bind, &handled), 0);
  ASSERT_EQ(bind.ret, 0);
  std::memcpy(&ipi, g.ram + kArgGpa, sizeof(ipi));
  EXPECT_NE(ipi.port, 0u);
  // From guest user mode: -EPERM, whatever the call (Xen's rule for HVM guests).
  bind.cpl = 3;
  ASSERT_EQ(xenkvm_handle_hypercall(g.xk, 1, &bind, &handled), 0);
  EXPECT_EQ(handled, 1);
  EXPECT_EQ(bind.ret, -XEN_EPERM);
}
