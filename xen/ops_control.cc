// sysctl and domctl (xen/sysctl.h, xen/domctl.h): the toolstack's hypercalls. A guest of ours is
// never privileged, so this answers as Xen 4.17's do_sysctl/do_domctl answer an unprivileged
// domain: the struct is copied in, the interface version checked, the target domain looked up,
// and then XSM (the dummy policy: XSM_PRIV) refuses.
#include <cstring>
#include <vector>

#include "xen/domain.h"
#include "xen/toolstack_abi.h"

namespace xenkvm::xen {

namespace {
// Domains that exist: ours and domain 0 (where the VMM's backends appear to be).
bool DomainExists(domid_t domid, domid_t self) { return domid == self || domid == 0; }
}  // namespace

Domain::Ret Domain::Sysctl(const HypercallCall& c) {
  std::vector<std::byte> buf(kSysctlSize);
  TRY(Guest(c.vcpu).Read(c.args[0], buf));
  SysctlHead head;
  std::memcpy(&head, buf.data(), sizeof(head));
  if (head.interface_version != kSysctlInterfaceVersion)
    return Fail(XEN_EACCES, "sysctl interface version");
  return Fail(XEN_EPERM, "sysctl: not privileged");
}

Domain::Ret Domain::Domctl(const HypercallCall& c) {
  std::vector<std::byte> buf(kDomctlSize);
  TRY(Guest(c.vcpu).Read(c.args[0], buf));
  DomctlHead head;
  std::memcpy(&head, buf.data(), sizeof(head));
  if (head.interface_version != kDomctlInterfaceVersion)
    return Fail(XEN_EACCES, "domctl interface version");
  // The domain lookup (by id: DOMID_SELF names no domain here) comes before the XSM check.
  switch (head.cmd) {
    case kDomctlAssignDevice:
    case kDomctlDeassignDevice:
      if (head.domain == DOMID_IO) return Fail(XEN_EPERM, "domctl: not privileged");
      if (head.domain == DOMID_INVALID) return Fail(XEN_ESRCH, "domctl domain");
      [[fallthrough]];
    case kDomctlTestAssignDevice:
    case kDomctlVmEventOp:
      if (head.domain == DOMID_INVALID) return Fail(XEN_EPERM, "domctl: not privileged");
      break;
    case kDomctlCreateDomain:
      return Fail(XEN_EPERM, "domctl: not privileged");
    case kDomctlGetDomainInfo:
      // Without an exact match Xen reports the next domain up, if any; only the toolstack and
      // xenstore may read it.
      if (DomainExists(head.domain, domid_)) return Fail(XEN_EPERM, "domctl: not privileged");
      if (head.domain >= DOMID_FIRST_RESERVED) return Fail(XEN_EINVAL, "getdomaininfo domain");
      if (head.domain > domid_) return Fail(XEN_ESRCH, "getdomaininfo domain");
      return Fail(XEN_EPERM, "domctl: not privileged");
    default:
      break;
  }
  if (!DomainExists(head.domain, domid_)) return Fail(XEN_ESRCH, "domctl domain");
  return Fail(XEN_EPERM, "domctl: not privileged");
}

}  // namespace xenkvm::xen
