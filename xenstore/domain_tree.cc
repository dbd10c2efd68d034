// The toolstack's tree for a domain; see domain_tree.h.
#include "xenstore/domain_tree.h"

namespace xenkvm::xenstore {

namespace {

// libxl's three permission sets for a domain's nodes.
Permissions ReadOnly(DomId domid) { return {{kPrivilegedDomid, kNone}, {domid, kRead}}; }
Permissions GuestOwned(DomId domid) { return {{domid, kNone}}; }
Permissions Dom0Only() { return {{kPrivilegedDomid, kNone}}; }

Result<> MakeNode(Store& store, ConnId dom0, TxId tx, const std::string& path,
                  const Permissions& perms, const std::string& value = "") {
  TRY(store.Write(dom0, tx, path, value));
  return store.SetPerms(dom0, tx, path, perms);
}

Result<> WriteTreeIn(Store& store, ConnId dom0, TxId tx, const DomainConfig& c) {
  const std::string dom = Store::DomainPath(c.domid);
  const std::string vm = "/vm/" + c.uuid;
  const DomId id = c.domid;
  // The host's own nodes: dom0 only, as xenstored and xencommons leave them.
  TRY(store.SetPerms(dom0, tx, "/", Dom0Only()));
  TRY(store.Mkdir(dom0, tx, "/local/domain/0"));
  TRY(store.SetPerms(dom0, tx, "/local/domain/0", Dom0Only()));
  TRY(store.Rm(dom0, tx, dom));
  TRY(MakeNode(store, dom0, tx, dom, ReadOnly(id)));
  TRY(store.Mkdir(dom0, tx, "/vm"));
  TRY(store.Rm(dom0, tx, vm));
  TRY(MakeNode(store, dom0, tx, vm, ReadOnly(id)));
  TRY(store.Write(dom0, tx, vm + "/uuid", c.uuid));
  TRY(store.Write(dom0, tx, vm + "/name", c.name));
  // Children written without explicit permissions inherit the home's (dom0-owned, readable).
  TRY(store.Write(dom0, tx, dom + "/vm", vm));
  TRY(store.Write(dom0, tx, dom + "/name", c.name));
  TRY(store.Write(dom0, tx, dom + "/domid", std::to_string(id)));
  TRY(MakeNode(store, dom0, tx, dom + "/cpu", ReadOnly(id)));
  for (uint32_t n = 0; n < c.vcpus; ++n)
    TRY(store.Write(dom0, tx, dom + "/cpu/" + std::to_string(n) + "/availability", "online"));
  TRY(MakeNode(store, dom0, tx, dom + "/memory", ReadOnly(id)));
  TRY(store.Write(dom0, tx, dom + "/memory/static-max", std::to_string(c.max_memory_kib)));
  TRY(store.Write(dom0, tx, dom + "/memory/target", std::to_string(c.target_kib)));
  TRY(store.Write(dom0, tx, dom + "/memory/videoram", std::to_string(c.videoram_kib)));
  TRY(MakeNode(store, dom0, tx, dom + "/device", ReadOnly(id)));
  TRY(MakeNode(store, dom0, tx, dom + "/device/suspend/event-channel", GuestOwned(id)));
  TRY(MakeNode(store, dom0, tx, dom + "/control", ReadOnly(id)));
  // The nodes the guest answers in: it owns them.
  for (const char* leaf :
       {"shutdown", "feature-poweroff", "feature-reboot", "feature-suspend", "sysrq"})
    TRY(MakeNode(store, dom0, tx, dom + "/control/" + leaf, GuestOwned(id)));
  TRY(store.Write(dom0, tx, dom + "/control/platform-feature-multiprocessor-suspend", "1"));
  TRY(store.Write(dom0, tx, dom + "/control/platform-feature-xs_reset_watches", "1"));
  for (const char* dir : {"data", "drivers", "feature", "attr", "error"})
    TRY(MakeNode(store, dom0, tx, dom + "/" + dir, GuestOwned(id)));
  if (c.store) {
    TRY(store.Write(dom0, tx, dom + "/store/ring-ref", std::to_string(c.store->ring_ref)));
    TRY(store.Write(dom0, tx, dom + "/store/port", std::to_string(c.store->port)));
  }
  if (c.console) {
    TRY(store.Write(dom0, tx, dom + "/console/ring-ref", std::to_string(c.console->ring_ref)));
    TRY(store.Write(dom0, tx, dom + "/console/port", std::to_string(c.console->port)));
    TRY(store.Write(dom0, tx, dom + "/console/type", "xenconsoled"));
    TRY(store.Write(dom0, tx, dom + "/console/limit", "1048576"));  // libxl's default
  }
  return {};
}

}  // namespace

Result<> WriteDomainTree(Store& store, ConnId dom0, const DomainConfig& config) {
  // Nobody else writes yet, but retry on EAGAIN as every toolstack does.
  for (int attempt = 0;; ++attempt) {
    const TxId tx = TRY(store.TransactionStart(dom0));
    if (auto r = WriteTreeIn(store, dom0, tx, config); !r) {
      (void)store.TransactionEnd(dom0, tx, false);
      return r;
    }
    auto r = store.TransactionEnd(dom0, tx, true);
    if (r) break;
    if (r.error().xen_errno != XEN_EAGAIN || attempt == 16) return r;
  }
  store.IntroduceDomain(config.domid);
  return {};
}

Result<> AddDevice(Store& store, ConnId dom0, DomId domid, const DeviceEntries& d) {
  const std::string front =
      Store::DomainPath(domid) + "/device/" + d.kind + "/" + std::to_string(d.devid);
  const std::string back = Store::DomainPath(kPrivilegedDomid) + "/backend/" + d.kind + "/" +
                           std::to_string(domid) + "/" + std::to_string(d.devid);
  const TxId tx = TRY(store.TransactionStart(dom0));
  auto body = [&]() -> Result<> {
    for (const std::string& stale : {front, back})  // a parent that doesn't exist yet is fine
      if (auto r = store.Rm(dom0, tx, stale); !r && r.error().xen_errno != XEN_ENOENT) return r;
    TRY(MakeNode(store, dom0, tx, front, {{domid, kNone}, {kPrivilegedDomid, kRead}}));
    TRY(MakeNode(store, dom0, tx, back, ReadOnly(domid)));
    TRY(store.Write(dom0, tx, front + "/backend", back));
    TRY(store.Write(dom0, tx, front + "/backend-id", "0"));
    TRY(store.Write(dom0, tx, front + "/state", "1"));  // XenbusStateInitialising
    TRY(store.Write(dom0, tx, back + "/frontend", front));
    TRY(store.Write(dom0, tx, back + "/frontend-id", std::to_string(domid)));
    TRY(store.Write(dom0, tx, back + "/online", "1"));
    TRY(store.Write(dom0, tx, back + "/state", "1"));
    for (const auto& [key, value] : d.frontend)
      TRY(store.Write(dom0, tx, front + "/" + key, value));
    for (const auto& [key, value] : d.backend) TRY(store.Write(dom0, tx, back + "/" + key, value));
    return {};
  };
  if (auto r = body(); !r) {
    (void)store.TransactionEnd(dom0, tx, false);
    return r;
  }
  return store.TransactionEnd(dom0, tx, true);
}

}  // namespace xenkvm::xenstore
