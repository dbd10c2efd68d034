// libxenkvm's C API (include/xenkvm/xenkvm.h): a thin layer over evtchn::Engine, EventfdRouter
// and mem::GuestMemory, shaped like KVM's Xen interface (Linux api.rst, KVM_XEN_*).
//
// Locks: attrs_mutex_ guards the vCPU attribute table (ids, vectors, registration); it is taken
// before the engine's locks, never under them. Upcall vectors are read by the sinks from
// atomics, so delivery takes no lock here.
#include "xenkvm/xenkvm.h"

#include <atomic>
#include <memory>
#include <new>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "abi/xen.h"
#include "evtchn/engine.h"
#include "evtchn/eventfd_router.h"
#include "evtchn/msi.h"
#include "evtchn/pirq_table.h"
#include "mem/guest_memory.h"
#include "xen/hypercall_args.h"

namespace {

using xenkvm::Result;

constexpr uint32_t kMaxVcpus = 4096;
constexpr uint64_t kPage = 4096;

int Errno(const xenkvm::Error& e) { return -e.xen_errno; }
int Errno(const Result<>& r) { return r ? 0 : Errno(r.error()); }

}  // namespace

struct xenkvm_handle {
  // One per vCPU index: the engine's delivery interface, forwarding to the host's callback.
  struct Sink final : xenkvm::evtchn::VcpuSink {
    xenkvm_handle* owner = nullptr;
    uint32_t index = 0;
    std::atomic<uint8_t> own_vector{0};
    void InjectUpcall() override {
      uint8_t v = own_vector.load(std::memory_order_relaxed);
      if (v == 0) v = owner->upcall_vector.load(std::memory_order_relaxed);
      owner->config.deliver(owner->config.opaque, index, XENKVM_DELIVER_UPCALL, v);
    }
    void RequestSync() override {
      owner->config.deliver(owner->config.opaque, index, XENKVM_DELIVER_SYNC, 0);
    }
    void WakePoller() override {
      owner->config.deliver(owner->config.opaque, index, XENKVM_DELIVER_WAKE, 0);
    }
  };
  struct VcpuAttrs {
    uint32_t xen_id;
    bool registered = false;  // handed to the engine (its Xen id is fixed from then on)
    uint64_t vcpu_info_gpa = 0;
  };

  xenkvm_config config{};
  xenkvm::mem::GuestMemory memory;
  std::unique_ptr<xenkvm::evtchn::Engine> engine;
  std::unique_ptr<xenkvm::evtchn::PirqTable> pirqs;
  std::unique_ptr<xenkvm::evtchn::EventfdRouter> router;
  std::unique_ptr<Sink[]> sinks;
  std::atomic<uint8_t> upcall_vector{0};
  std::atomic<uint64_t> shared_info_gfn{~0ull};

  xenkvm::Mutex attrs_mutex;
  std::vector<VcpuAttrs> attrs XENKVM_GUARDED_BY(attrs_mutex);

  Result<uint32_t> XenId(uint32_t index) {
    xenkvm::MutexLock lock(attrs_mutex);
    if (index >= attrs.size()) return xenkvm::Fail(XEN_EINVAL, "vcpu index");
    return attrs[index].xen_id;
  }

  // Copy [gva, gva+size) of `vcpu`'s address space in or out, page by page.
  Result<> Guest(uint32_t vcpu, uint64_t gva, void* buf, uint64_t size, bool write) {
    auto* p = static_cast<std::byte*>(buf);
    while (size > 0) {
      uint64_t chunk = std::min(size, kPage - gva % kPage);
      uint64_t gpa = 0;
      if (config.gva_to_gpa == nullptr || config.gva_to_gpa(config.opaque, vcpu, gva, &gpa) != 0)
        return xenkvm::Fail(XEN_EFAULT, "hypercall argument not mapped");
      if (write)
        TRY(memory.Write(gpa, std::span<const std::byte>(p, chunk)));
      else
        TRY(memory.Read(gpa, std::span<std::byte>(p, chunk)));
      gva += chunk;
      p += chunk;
      size -= chunk;
    }
    return {};
  }

  // One hypercall's argument access: the caller's vCPU and layout (xen/hypercall_args.h's
  // CompatLayout gives the i386 twin of each struct).
  struct Args {
    uint32_t vcpu;
    bool compat;
  };
  template <class T>
  Result<T> Read(Args a, uint64_t gva) {
    using L = xenkvm::xen::CompatLayout<T>;
    if (!a.compat) {
      T value;
      TRY(Guest(a.vcpu, gva, &value, sizeof(value), false));
      return value;
    }
    typename L::Type value;
    TRY(Guest(a.vcpu, gva, &value, sizeof(value), false));
    return L::ToNative(value);
  }
  template <class T>
  Result<> Write(Args a, uint64_t gva, const T& value) {
    using L = xenkvm::xen::CompatLayout<T>;
    if (!a.compat) {
      T out = value;
      return Guest(a.vcpu, gva, &out, sizeof(out), true);
    }
    typename L::Type out = L::FromNative(value);
    return Guest(a.vcpu, gva, &out, sizeof(out), true);
  }
  template <class T, class Op>
  Result<> InOut(Args a, uint64_t arg, bool write_back, Op&& op) {
    T value = TRY(Read<T>(a, arg));
    TRY(op(value));
    if (write_back) TRY(Write(a, arg, value));
    return {};
  }

  // Xen's is_hvm_pv_evtchn_domain: events come through a vector (the domain's, or the one of
  // the vCPU whose Xen id is 0).
  bool VectorCallback() {
    if (upcall_vector.load() != 0) return true;
    xenkvm::MutexLock lock(attrs_mutex);
    for (uint32_t i = 0; i < attrs.size(); ++i)
      if (attrs[i].xen_id == 0) return sinks[i].own_vector.load() != 0;
    return false;
  }

  // PHYSDEVOPs of an HVM domU, as Xen's hvm_physdev_op: the PIRQ ones, -ENOSYS for the rest.
  Result<> PhysdevOp(Args a, uint64_t cmd, uint64_t arg) {
    auto& p = *pirqs;
    switch (cmd) {
      case PHYSDEVOP_map_pirq: {
        auto op = TRY(Read<physdev_map_pirq_t>(a, arg));
        if (op.type == MAP_PIRQ_TYPE_MULTI_MSI && op.table_base != 0)
          return xenkvm::Fail(XEN_EINVAL, "map_pirq: multi-MSI table_base");
        Result<> mapped = p.Map(op, VectorCallback());
        TRY(Write(a, arg, op));  // Xen copies the struct back whatever the result
        return mapped;
      }
      case PHYSDEVOP_unmap_pirq:
        return InOut<physdev_unmap_pirq_t>(a, arg, false, [&](auto& op) { return p.Unmap(op); });
      case PHYSDEVOP_eoi:
        return InOut<physdev_eoi_t>(a, arg, false, [&](auto& op) { return p.Eoi(op); });
      case PHYSDEVOP_irq_status_query:
        return InOut<physdev_irq_status_query_t>(a, arg, true,
                                                 [&](auto& op) { return p.IrqStatusQuery(op); });
      case PHYSDEVOP_get_free_pirq:
        return InOut<physdev_get_free_pirq_t>(a, arg, true,
                                              [&](auto& op) { return p.GetFreePirq(op); });
      default:
        return xenkvm::Fail(XEN_ENOSYS, "physdev_op cmd");
    }
  }

  Result<> EventChannelOp(Args vcpu, uint64_t cmd, uint64_t arg) {
    auto& e = *engine;
    switch (cmd) {
      case EVTCHNOP_alloc_unbound:
        return InOut<evtchn_alloc_unbound_t>(vcpu, arg, true,
                                             [&](auto& op) { return e.AllocUnbound(op); });
      case EVTCHNOP_bind_interdomain:
        return InOut<evtchn_bind_interdomain_t>(vcpu, arg, true,
                                                [&](auto& op) { return e.BindInterdomain(op); });
      case EVTCHNOP_bind_virq:
        return InOut<evtchn_bind_virq_t>(vcpu, arg, true, [&](auto& op) { return e.BindVirq(op); });
      case EVTCHNOP_bind_ipi:
        return InOut<evtchn_bind_ipi_t>(vcpu, arg, true, [&](auto& op) { return e.BindIpi(op); });
      case EVTCHNOP_bind_pirq:
        return InOut<evtchn_bind_pirq_t>(vcpu, arg, true,
                                         [&](auto& op) { return pirqs->Bind(op); });
      case EVTCHNOP_status:
        return InOut<evtchn_status_t>(vcpu, arg, true, [&](auto& op) { return e.Status(op); });
      case EVTCHNOP_close:
        return InOut<evtchn_close_t>(vcpu, arg, false, [&](auto& op) { return e.Close(op); });
      case EVTCHNOP_send:
        return InOut<evtchn_send_t>(vcpu, arg, false, [&](auto& op) { return e.Send(op); });
      case EVTCHNOP_bind_vcpu:
        return InOut<evtchn_bind_vcpu_t>(vcpu, arg, false,
                                         [&](auto& op) { return e.BindVcpu(op); });
      case EVTCHNOP_unmask:
        return InOut<evtchn_unmask_t>(vcpu, arg, false, [&](auto& op) { return e.Unmask(op); });
      case EVTCHNOP_reset:
        return InOut<evtchn_reset_t>(vcpu, arg, false, [&](auto& op) { return e.Reset(op); });
      case EVTCHNOP_init_control:
        return InOut<evtchn_init_control_t>(vcpu, arg, true,
                                            [&](auto& op) { return e.InitControl(op); });
      case EVTCHNOP_expand_array:
        return InOut<evtchn_expand_array_t>(vcpu, arg, false,
                                            [&](auto& op) { return e.ExpandArray(op); });
      case EVTCHNOP_set_priority:
        return InOut<evtchn_set_priority_t>(vcpu, arg, false,
                                            [&](auto& op) { return e.SetPriority(op); });
      default:
        return xenkvm::Fail(XEN_ENOSYS, "event_channel_op cmd");
    }
  }
};

extern "C" {

XENKVM_API const char* xenkvm_version(void) { return "0.1.0"; }

XENKVM_API int xenkvm_create(const xenkvm_config* config, xenkvm_t** out) {
  if (config == nullptr || out == nullptr || config->deliver == nullptr || config->n_vcpus == 0 ||
      config->n_vcpus > kMaxVcpus)
    return -XEN_EINVAL;
  auto xk = std::unique_ptr<xenkvm_handle>(new (std::nothrow) xenkvm_handle);
  if (!xk) return -XEN_ENOMEM;
  xk->config = *config;
  xenkvm::evtchn::Engine::Options options;
  options.domid = config->domid != 0 ? config->domid : 1;
  xk->engine = std::make_unique<xenkvm::evtchn::Engine>(xk->memory, options);
  xk->sinks = std::make_unique<xenkvm_handle::Sink[]>(config->n_vcpus);
  {
    xenkvm::MutexLock lock(xk->attrs_mutex);
    for (uint32_t i = 0; i < config->n_vcpus; ++i) {
      xk->sinks[i].owner = xk.get();
      xk->sinks[i].index = i;
      xk->attrs.push_back({.xen_id = i});
    }
  }
  xk->pirqs = std::make_unique<xenkvm::evtchn::PirqTable>(*xk->engine, options.domid);
  xk->router = std::make_unique<xenkvm::evtchn::EventfdRouter>(*xk->engine, xk->pirqs.get());
  *out = xk.release();
  return 0;
}

XENKVM_API void xenkvm_destroy(xenkvm_t* xk) {
  if (xk == nullptr) return;
  xk->router.reset();  // no more signals
  xk->engine.reset();  // stops the worker
  delete xk;
}

XENKVM_API int xenkvm_add_region(xenkvm_t* xk, uint32_t slot, uint64_t gpa, uint64_t size,
                                 void* host) {
  if (xk == nullptr || host == nullptr || gpa % kPage != 0 || size % kPage != 0 || size == 0)
    return -XEN_EINVAL;
  return Errno(xk->memory.AddSlot(slot, gpa, size, host));
}

XENKVM_API int xenkvm_remove_region(xenkvm_t* xk, uint32_t slot) {
  if (xk == nullptr) return -XEN_EINVAL;
  return Errno(xk->memory.RemoveSlot(slot));
}

XENKVM_API int xenkvm_hvm_set_attr(xenkvm_t* xk, const xenkvm_hvm_attr* attr) {
  if (xk == nullptr || attr == nullptr) return -XEN_EINVAL;
  switch (attr->type) {
    case XENKVM_HVM_ATTR_LONG_MODE:
      if (attr->u.long_mode > 1) return -XEN_EINVAL;
      xk->engine->SetAbi(attr->u.long_mode ? xenkvm::evtchn::Abi::k64
                                           : xenkvm::evtchn::Abi::kCompat);
      return 0;
    case XENKVM_HVM_ATTR_SHARED_INFO: {
      if (attr->u.gfn >= (uint64_t(1) << 52)) return -XEN_EINVAL;
      // vCPUs without a registered vcpu_info use their default slot in shared_info, which
      // moves with it (Xen's layout).
      std::vector<uint32_t> defaults;
      {
        xenkvm::MutexLock lock(xk->attrs_mutex);
        for (const auto& a : xk->attrs)
          if (a.registered && a.vcpu_info_gpa == 0) defaults.push_back(a.xen_id);
      }
      int rc = Errno(xk->engine->SetSharedInfoGpa(attr->u.gfn * kPage, defaults));
      if (rc == 0) xk->shared_info_gfn.store(attr->u.gfn);
      return rc;
    }
    case XENKVM_HVM_ATTR_UPCALL_VECTOR:
      // As KVM: vectors below 0x10 are reserved exceptions (0 turns the vector off).
      if (attr->u.vector != 0 && attr->u.vector < 0x10) return -XEN_EINVAL;
      xk->upcall_vector.store(attr->u.vector);
      return 0;
    default:
      return -XEN_EINVAL;
  }
}

XENKVM_API int xenkvm_hvm_get_attr(xenkvm_t* xk, xenkvm_hvm_attr* attr) {
  if (xk == nullptr || attr == nullptr) return -XEN_EINVAL;
  switch (attr->type) {
    case XENKVM_HVM_ATTR_LONG_MODE:
      attr->u.long_mode = xk->engine->abi() == xenkvm::evtchn::Abi::k64;
      return 0;
    case XENKVM_HVM_ATTR_SHARED_INFO: {
      uint64_t gfn = xk->shared_info_gfn.load();
      if (gfn == ~0ull) return -XEN_ENOENT;
      attr->u.gfn = gfn;
      return 0;
    }
    case XENKVM_HVM_ATTR_UPCALL_VECTOR:
      attr->u.vector = xk->upcall_vector.load();
      return 0;
    default:
      return -XEN_EINVAL;
  }
}

XENKVM_API int xenkvm_vcpu_set_attr(xenkvm_t* xk, uint32_t vcpu, const xenkvm_vcpu_attr* a) {
  if (xk == nullptr || a == nullptr || vcpu >= xk->config.n_vcpus) return -XEN_EINVAL;
  xenkvm::MutexLock lock(xk->attrs_mutex);
  auto& attrs = xk->attrs[vcpu];
  switch (a->type) {
    case XENKVM_VCPU_ATTR_VCPU_ID:
      if (a->u.vcpu_id >= kMaxVcpus) return -XEN_EINVAL;
      if (attrs.registered) return a->u.vcpu_id == attrs.xen_id ? 0 : -XEN_EBUSY;
      for (uint32_t i = 0; i < xk->attrs.size(); ++i)
        if (i != vcpu && xk->attrs[i].xen_id == a->u.vcpu_id) return -XEN_EEXIST;
      attrs.xen_id = a->u.vcpu_id;
      return 0;
    case XENKVM_VCPU_ATTR_VCPU_INFO: {
      // The first vcpu_info hands the vCPU to the engine under its Xen id.
      if (!attrs.registered) {
        if (int rc = Errno(xk->engine->AddVcpu(attrs.xen_id, &xk->sinks[vcpu])); rc != 0) return rc;
        attrs.registered = true;
      }
      int rc = Errno(xk->engine->SetVcpuInfoGpa(attrs.xen_id, a->u.gpa));
      if (rc == 0) attrs.vcpu_info_gpa = a->u.gpa;
      return rc;
    }
    case XENKVM_VCPU_ATTR_UPCALL_VECTOR:
      if (a->u.vector != 0 && a->u.vector < 0x10) return -XEN_EINVAL;
      xk->sinks[vcpu].own_vector.store(a->u.vector);
      return 0;
    default:
      return -XEN_EINVAL;
  }
}

XENKVM_API int xenkvm_vcpu_get_attr(xenkvm_t* xk, uint32_t vcpu, xenkvm_vcpu_attr* a) {
  if (xk == nullptr || a == nullptr || vcpu >= xk->config.n_vcpus) return -XEN_EINVAL;
  xenkvm::MutexLock lock(xk->attrs_mutex);
  const auto& attrs = xk->attrs[vcpu];
  switch (a->type) {
    case XENKVM_VCPU_ATTR_VCPU_ID:
      a->u.vcpu_id = attrs.xen_id;
      return 0;
    case XENKVM_VCPU_ATTR_VCPU_INFO:
      if (!attrs.registered) return -XEN_ENOENT;
      a->u.gpa = attrs.vcpu_info_gpa;
      return 0;
    case XENKVM_VCPU_ATTR_UPCALL_VECTOR:
      a->u.vector = xk->sinks[vcpu].own_vector.load();
      return 0;
    default:
      return -XEN_EINVAL;
  }
}

XENKVM_API void xenkvm_vcpu_sync(xenkvm_t* xk, uint32_t vcpu) {
  if (xk == nullptr) return;
  if (auto id = xk->XenId(vcpu)) xk->engine->SyncVcpu(*id);
}

XENKVM_API int xenkvm_vcpu_upcall_pending(xenkvm_t* xk, uint32_t vcpu) {
  if (xk == nullptr) return -XEN_EINVAL;
  auto id = xk->XenId(vcpu);
  if (!id) return Errno(id.error());
  return xk->engine->UpcallPending(*id) ? 1 : 0;
}

XENKVM_API int xenkvm_evtchn_send(xenkvm_t* xk, uint32_t port) {
  if (xk == nullptr) return -XEN_EINVAL;
  if (port == 0 || port >= xk->engine->MaxPorts()) return -XEN_EINVAL;
  xk->engine->RaisePort(port);
  return 0;
}

XENKVM_API int xenkvm_handle_hypercall(xenkvm_t* xk, uint32_t vcpu, xenkvm_hypercall* call,
                                       int* handled) {
  if (xk == nullptr || call == nullptr || handled == nullptr || vcpu >= xk->config.n_vcpus)
    return -XEN_EINVAL;
  *handled = 0;
  if (call->nr != __HYPERVISOR_event_channel_op && call->nr != __HYPERVISOR_physdev_op) return 0;
  *handled = 1;
  // Xen: no hypercalls from guest user mode.
  if (call->cpl != 0) {
    call->ret = -XEN_EPERM;
    return 0;
  }
  // A 32-bit caller's registers are 32 bits wide: whatever the host left above is not its.
  const bool compat = call->compat != 0;
  const uint64_t cmd = compat ? uint32_t(call->args[0]) : call->args[0];
  const uint64_t arg = compat ? uint32_t(call->args[1]) : call->args[1];
  const xenkvm_handle::Args args{vcpu, compat};
  Result<> r = call->nr == __HYPERVISOR_event_channel_op ? xk->EventChannelOp(args, cmd, arg)
                                                         : xk->PhysdevOp(args, cmd, arg);
  call->ret = r ? 0 : Errno(r.error());
  return 0;
}

XENKVM_API int xenkvm_route_set(xenkvm_t* xk, uint32_t route_id, const xenkvm_route* r) {
  if (xk == nullptr || r == nullptr) return -XEN_EINVAL;
  if (r->type > XENKVM_ROUTE_PIRQ) return -XEN_EINVAL;
  const bool is_pirq = r->type == XENKVM_ROUTE_PIRQ;
  if (!is_pirq && (r->port == 0 || r->port >= xk->engine->MaxPorts())) return -XEN_EINVAL;
  return Errno(xk->router->SetRoute(route_id, {is_pirq, r->pirq, r->port, r->vcpu, r->priority}));
}

XENKVM_API int xenkvm_route_get(xenkvm_t* xk, uint32_t route_id, xenkvm_route* r) {
  if (xk == nullptr || r == nullptr) return -XEN_EINVAL;
  auto t = xk->router->GetRoute(route_id);
  if (!t) return Errno(t.error());
  *r = {t->is_pirq ? uint32_t(XENKVM_ROUTE_PIRQ) : uint32_t(XENKVM_ROUTE_PORT), t->port, t->vcpu,
        t->priority, t->pirq};
  return 0;
}

XENKVM_API int xenkvm_route_remove(xenkvm_t* xk, uint32_t route_id) {
  if (xk == nullptr) return -XEN_EINVAL;
  return Errno(xk->router->RemoveRoute(route_id));
}

XENKVM_API int xenkvm_eventfd_bind(xenkvm_t* xk, int eventfd, uint32_t route_id) {
  if (xk == nullptr || eventfd < 0) return -XEN_EINVAL;
  return Errno(xk->router->AddRouteBinding(eventfd, route_id));
}

XENKVM_API int xenkvm_eventfd_unbind(xenkvm_t* xk, int eventfd) {
  if (xk == nullptr) return -XEN_EINVAL;
  return Errno(xk->router->Remove(eventfd));
}

XENKVM_API int xenkvm_msi_to_pirq(uint64_t address, uint32_t data, uint32_t* pirq) {
  auto decoded = xenkvm::evtchn::PirqFromMsi(address, data);
  if (!decoded) return 0;
  if (pirq != nullptr) *pirq = *decoded;
  return 1;
}

XENKVM_API int xenkvm_msi_send(xenkvm_t* xk, uint64_t address, uint32_t data) {
  if (xk == nullptr) return -XEN_EINVAL;
  auto pirq = xenkvm::evtchn::PirqFromMsi(address, data);
  if (!pirq || *pirq >= uint32_t(xenkvm::evtchn::PirqTable::kNrPirqs)) return -XEN_EINVAL;
  return xk->pirqs->RaiseMsi(*pirq) ? 1 : 0;
}

}  // extern "C"
