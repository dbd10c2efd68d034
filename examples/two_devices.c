/* libxenkvm example: a simulated one-vCPU guest over the example's own memory, two "devices"
 * (threads) each signalling an eventfd routed to a guest port, and the guest's 2-level event
 * handler (the 64-bit shared_info/vcpu_info layout of xen/include/public/xen.h). Each device
 * fires N events, waiting for the guest to see each; meanwhile the VMM removes and re-adds the
 * guest's memory region (as on a remap) and every event still arrives. Exit status 0 = passed. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <xenkvm/xenkvm.h>

enum { kEvents = 2000, kPage = 4096, kRamPages = 16, kSharedInfoGfn = 2, kVcpuInfoGfn = 3 };
/* Xen ABI numbers (xen/include/public/xen.h, event_channel.h). */
enum { kHypercallEventChannelOp = 32, kEvtchnopBindIpi = 7 };
/* 64-bit layout: vcpu_info is {u8 upcall_pending, u8 upcall_mask, u8 pad[6], u64 pending_sel,
 * ...}; shared_info has vcpu_info[32] (64 bytes each), then evtchn_pending[64], evtchn_mask[64]. */
enum { kPendingSelOffset = 8, kEvtchnPendingOffset = 32 * 64 };

static _Alignas(4096) uint8_t guest_ram[kRamPages * kPage];
static atomic_int upcalls;   /* upcalls injected (the vector a VMM would inject) */
static atomic_int need_sync; /* the library asked for xenkvm_vcpu_sync */
static atomic_int seen[2];   /* events the guest handled, per device */
static uint32_t ports[2];
static int fds[2];

static void Deliver(void* opaque, uint32_t vcpu, enum xenkvm_delivery why, uint8_t vector) {
  (void)opaque, (void)vcpu, (void)vector;
  if (why == XENKVM_DELIVER_UPCALL) atomic_fetch_add(&upcalls, 1);
  if (why == XENKVM_DELIVER_SYNC) atomic_store(&need_sync, 1);
}

static int Identity(void* opaque, uint32_t vcpu, uint64_t gva, uint64_t* gpa) {
  (void)opaque, (void)vcpu;
  *gpa = gva;
  return 0;
}

static void Check(int rc, const char* what) {
  if (rc != 0) {
    fprintf(stderr, "%s: Xen errno %d\n", what, -rc);
    exit(1);
  }
}

/* The guest's upcall handler: take the selector, then each pending port in the selected words. */
static void GuestHandleUpcall(void) {
  uint8_t* vcpu_info = guest_ram + kVcpuInfoGfn * kPage;
  uint64_t* pending = (uint64_t*)(guest_ram + kSharedInfoGfn * kPage + kEvtchnPendingOffset);
  __atomic_store_n(vcpu_info, 0, __ATOMIC_SEQ_CST);
  uint64_t sel =
      __atomic_exchange_n((uint64_t*)(vcpu_info + kPendingSelOffset), 0, __ATOMIC_SEQ_CST);
  while (sel != 0) {
    int word = __builtin_ctzll(sel);
    sel &= sel - 1;
    uint64_t bits = __atomic_exchange_n(&pending[word], 0, __ATOMIC_SEQ_CST);
    for (int d = 0; d < 2; ++d)
      if (ports[d] / 64 == (uint32_t)word && (bits >> (ports[d] % 64)) & 1)
        atomic_fetch_add(&seen[d], 1);
  }
}

static void* Device(void* arg) {
  int d = (int)(intptr_t)arg;
  for (int k = 0; k < kEvents; ++k) {
    uint64_t one = 1;
    if (write(fds[d], &one, sizeof(one)) != sizeof(one)) abort();
    while (atomic_load(&seen[d]) <= k) sched_yield(); /* one event in flight at a time */
  }
  return NULL;
}

static uint32_t GuestBindIpi(xenkvm_t* xk) {
  /* The argument struct evtchn_bind_ipi {u32 vcpu; u32 port;} at guest address 0. */
  uint32_t* op = (uint32_t*)guest_ram;
  op[0] = 0;
  struct xenkvm_hypercall call = {.nr = kHypercallEventChannelOp, .args = {kEvtchnopBindIpi, 0}};
  int handled = 0;
  Check(xenkvm_handle_hypercall(xk, 0, &call, &handled), "hypercall");
  if (!handled || call.ret != 0) {
    fprintf(stderr, "bind_ipi: %lld\n", (long long)call.ret);
    exit(1);
  }
  return op[1];
}

int main(void) {
  struct xenkvm_config config = {.n_vcpus = 1, .deliver = Deliver, .gva_to_gpa = Identity};
  xenkvm_t* xk = NULL;
  Check(xenkvm_create(&config, &xk), "create");
  printf("libxenkvm %s\n", xenkvm_version());
  Check(xenkvm_add_region(xk, 0, 0, sizeof(guest_ram), guest_ram), "add_region");
  struct xenkvm_hvm_attr shinfo = {.type = XENKVM_HVM_ATTR_SHARED_INFO, .u.gfn = kSharedInfoGfn};
  Check(xenkvm_hvm_set_attr(xk, &shinfo), "shared_info");
  struct xenkvm_hvm_attr vector = {.type = XENKVM_HVM_ATTR_UPCALL_VECTOR, .u.vector = 0xf3};
  Check(xenkvm_hvm_set_attr(xk, &vector), "upcall vector");
  struct xenkvm_vcpu_attr info = {.type = XENKVM_VCPU_ATTR_VCPU_INFO,
                                  .u.gpa = kVcpuInfoGfn * kPage};
  Check(xenkvm_vcpu_set_attr(xk, 0, &info), "vcpu_info");

  pthread_t devices[2];
  for (int d = 0; d < 2; ++d) {
    ports[d] = GuestBindIpi(xk);
    struct xenkvm_route route = {.port = ports[d], .vcpu = 0, .priority = 7};
    Check(xenkvm_route_set(xk, 100 + d, &route), "route_set");
    fds[d] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    Check(xenkvm_eventfd_bind(xk, fds[d], 100 + d), "eventfd_bind");
  }
  for (int d = 0; d < 2; ++d) pthread_create(&devices[d], NULL, Device, (void*)(intptr_t)d);

  /* The vCPU loop: handle upcalls; every so often the VMM remaps guest memory. */
  int remaps = 0;
  while (atomic_load(&seen[0]) < kEvents || atomic_load(&seen[1]) < kEvents) {
    if (atomic_exchange(&need_sync, 0)) xenkvm_vcpu_sync(xk, 0);
    if (xenkvm_vcpu_upcall_pending(xk, 0) == 1) GuestHandleUpcall();
    if ((atomic_load(&seen[0]) + 1) % 500 == 0 && remaps < 8) {
      Check(xenkvm_remove_region(xk, 0), "remove_region");
      Check(xenkvm_add_region(xk, 0, 0, sizeof(guest_ram), guest_ram), "re-add region");
      ++remaps;
    }
  }
  for (int d = 0; d < 2; ++d) pthread_join(devices[d], NULL);
  for (int d = 0; d < 2; ++d) Check(xenkvm_eventfd_unbind(xk, fds[d]), "unbind"), close(fds[d]);
  xenkvm_destroy(xk);
  printf("two devices: %d + %d events on ports %u and %u, %d upcalls, %d remaps: ok\n",
         atomic_load(&seen[0]), atomic_load(&seen[1]), ports[0], ports[1], atomic_load(&upcalls),
         remaps);
  return 0;
}
