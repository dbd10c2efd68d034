// Compile-time check of xen/toolstack_abi.h against libxen-dev's tools headers, which need
// __XEN_TOOLS__ and GNU extensions (this file alone is built with them). Nothing runs.
// Defined before any Xen header: xen/xen.h has tools-only parts the tools headers rely on.
#define __XEN_TOOLS__ 1

#include <cstddef>
#include <cstdint>

#include "xen/toolstack_abi.h"

extern "C" {
#include <xen/domctl.h>
#include <xen/sysctl.h>
}

namespace xenkvm::xen {
static_assert(kSysctlInterfaceVersion == XEN_SYSCTL_INTERFACE_VERSION);
static_assert(kDomctlInterfaceVersion == XEN_DOMCTL_INTERFACE_VERSION);
static_assert(kSysctlSize == sizeof(xen_sysctl));
static_assert(kDomctlSize == sizeof(xen_domctl));
static_assert(offsetof(xen_sysctl, cmd) == offsetof(SysctlHead, cmd));
static_assert(offsetof(xen_sysctl, interface_version) == offsetof(SysctlHead, interface_version));
static_assert(offsetof(xen_domctl, cmd) == offsetof(DomctlHead, cmd));
static_assert(offsetof(xen_domctl, interface_version) == offsetof(DomctlHead, interface_version));
static_assert(offsetof(xen_domctl, domain) == offsetof(DomctlHead, domain));
static_assert(sizeof(DomctlHead) == offsetof(xen_domctl, u));
static_assert(kDomctlCreateDomain == XEN_DOMCTL_createdomain);
static_assert(kDomctlGetDomainInfo == XEN_DOMCTL_getdomaininfo);
static_assert(kDomctlAssignDevice == XEN_DOMCTL_assign_device);
static_assert(kDomctlTestAssignDevice == XEN_DOMCTL_test_assign_device);
static_assert(kDomctlDeassignDevice == XEN_DOMCTL_deassign_device);
static_assert(kDomctlVmEventOp == XEN_DOMCTL_vm_event_op);
}  // namespace xenkvm::xen
