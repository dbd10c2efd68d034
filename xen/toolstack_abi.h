// The parts of Xen's toolstack interfaces (xen/sysctl.h, xen/domctl.h) an unprivileged guest can
// reach: the interface versions and the struct heads Xen checks before refusing it. libxen-dev's
// headers hide these unless __XEN_TOOLS__ is defined, and then need GNU C extensions
// (xen/hvm/save.h); tests/xen/toolstack_abi_check.cc pins these mirrors against them.
#pragma once

#include <cstdint>

#include "abi/xen.h"

namespace xenkvm::xen {

// The versions of the interface Xen 4.17 speaks (what XENVER_version reports).
inline constexpr uint32_t kSysctlInterfaceVersion = 0x15;  // XEN_SYSCTL_INTERFACE_VERSION
inline constexpr uint32_t kDomctlInterfaceVersion = 0x15;  // XEN_DOMCTL_INTERFACE_VERSION

// domctl commands whose domain lookup differs from the rest (XEN_DOMCTL_*).
inline constexpr uint32_t kDomctlCreateDomain = 1;
inline constexpr uint32_t kDomctlGetDomainInfo = 5;
inline constexpr uint32_t kDomctlAssignDevice = 37;
inline constexpr uint32_t kDomctlTestAssignDevice = 45;
inline constexpr uint32_t kDomctlDeassignDevice = 47;
inline constexpr uint32_t kDomctlVmEventOp = 56;

// Head of struct xen_sysctl; Xen copies in the whole struct (kSysctlSize bytes) first.
struct SysctlHead {
  uint32_t cmd;
  uint32_t interface_version;
};
inline constexpr uint64_t kSysctlSize = 136;  // sizeof(struct xen_sysctl)

// Head of struct xen_domctl; likewise kDomctlSize bytes are copied in.
struct DomctlHead {
  uint32_t cmd;
  uint32_t interface_version;
  domid_t domain;
  uint16_t pad[3];
};
inline constexpr uint64_t kDomctlSize = 144;  // sizeof(struct xen_domctl)

}  // namespace xenkvm::xen
