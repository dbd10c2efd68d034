// xen_version (xen/version.h), console_io (xen/xen.h CONSOLEIO_*) and the grant-table queries
// a guest makes before using grants (xen/grant_table.h: query_size, set_version, get_version).
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "xen/cpuid.h"
#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
template <size_t N>
void CopyString(char (&dst)[N], const char* src) {
  std::memset(dst, 0, N);
  std::strncpy(dst, src, N - 1);
}
}  // namespace

Domain::Ret Domain::XenVersion(const HypercallCall& c) {
  GuestAccess guest = Guest(c.vcpu);
  const uint64_t arg = c.args[1];
  switch (c.args[0]) {
    case XENVER_version:
      return static_cast<long>((kXenVersionMajor << 16) | kXenVersionMinor);
    case XENVER_extraversion: {
      xen_extraversion_t v;
      CopyString(v, ".0-xenkvm");
      TRY(guest.WriteObj(arg, v));
      return 0;
    }
    case XENVER_compile_info: {
      xen_compile_info_t info;
      CopyString(info.compiler, "xenkvm");
      CopyString(info.compile_by, "xenkvm");
      CopyString(info.compile_domain, "xenkvm");
      CopyString(info.compile_date, __DATE__);
      TRY(guest.WriteObj(arg, info));
      return 0;
    }
    case XENVER_capabilities: {
      xen_capabilities_info_t caps;
      CopyString(caps, "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64");
      TRY(guest.WriteObj(arg, caps));
      return 0;
    }
    case XENVER_changeset: {
      xen_changeset_info_t cs;
      CopyString(cs, "xenkvm");
      TRY(guest.WriteObj(arg, cs));
      return 0;
    }
    case XENVER_platform_parameters: {
      // Current Xen reports 0 to HVM guests (the value only meant something to PV ones).
      xen_platform_parameters_t p{};
      TRY(HypercallArgs(guest, c.compat).Write(arg, p));
      return 0;
    }
    case XENVER_get_features: {
      auto fi = TRY(guest.ReadObj<xen_feature_info_t>(arg));
      if (fi.submap_idx != 0) return Fail(XEN_EINVAL, "get_features submap");  // Xen has one
      // What an HVM guest of ours really gets: translated physmap, the callback vector, pvclock.
      fi.submap = (1u << XENFEAT_writable_page_tables) | (1u << XENFEAT_auto_translated_physmap) |
                  (1u << XENFEAT_hvm_callback_vector) | (1u << XENFEAT_hvm_safe_pvclock);
      TRY(guest.WriteObj(arg, fi));
      return 0;
    }
    case XENVER_pagesize:
      return static_cast<long>(abi::kPageSize);
    case XENVER_guest_handle: {
      xen_domain_handle_t handle{};
      TRY(guest.WriteObj(arg, handle));
      return 0;
    }
    case XENVER_commandline: {
      xen_commandline_t line{};
      TRY(guest.WriteObj(arg, line));
      return 0;
    }
    default:
      LogUnknown(c.nr, c.args[0]);
      return Fail(XEN_ENOSYS, "xen_version cmd");
  }
}

Domain::Ret Domain::ConsoleIo(const HypercallCall& c) {
  GuestAccess guest = Guest(c.vcpu);
  const uint32_t count = static_cast<uint32_t>(c.args[1]);
  const uint64_t buffer = c.args[2];
  char chunk[512];
  switch (c.args[0]) {
    case CONSOLEIO_write: {
      // Xen copies in chunks and preempts with a continuation. Here one call shows at most
      // console_io_max_bytes_ (the rest is consumed unshown) and ends early at a pending
      // shutdown or signal, so a guest can't hold its vCPU thread (or the VMM's end) for GiBs.
      const uint32_t shown = std::min(count, console_io_max_bytes_);
      for (uint32_t done = 0; done < shown;) {
        if (platform_.Stopping()) return 0;
        uint32_t n = std::min<uint32_t>(shown - done, sizeof(chunk));
        TRY(guest.Read(buffer + done, std::as_writable_bytes(std::span(chunk, n))));
        platform_.ConsoleWrite(std::span(chunk, n));
        done += n;
      }
      return 0;
    }
    case CONSOLEIO_read: {
      // The result is a count or -errno: Xen refuses counts that would overlap the two.
      if (count > INT32_MAX) return Fail(XEN_E2BIG, "console_io read count");
      uint32_t n = static_cast<uint32_t>(
          platform_.ConsoleRead(std::span(chunk, std::min<uint32_t>(count, sizeof(chunk)))));
      TRY(guest.Write(buffer, std::as_bytes(std::span(chunk, n))));
      return static_cast<long>(n);
    }
    default:
      LogUnknown(c.nr, c.args[0]);
      return Fail(XEN_ENOSYS, "console_io cmd");
  }
}

// grant_table_op (xen/common/grant_table.c do_grant_table_op), version 1 only (grant_table.h).
Domain::Ret Domain::GrantTableOp(const HypercallCall& c) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  const uint64_t cmd = c.args[0] & 0xffffffffu;
  const uint64_t uop = c.args[1];
  const uint64_t count = c.args[2] & 0xffffffffu;
  switch (cmd) {
    case GNTTABOP_setup_table:
      return SetupTable(c, uop, count);
    case GNTTABOP_query_size: {
      if (count != 1) return Fail(XEN_EINVAL, "query_size count");
      auto q = TRY(guest.Read<gnttab_query_size_t>(uop));
      if (!ValidDomid(q.dom)) {
        q.status = GNTST_bad_domain;
      } else {
        q.nr_frames = grants_.nr_frames();
        q.max_nr_frames = grants_.max_frames();
        q.status = GNTST_okay;
      }
      TRY(guest.Write(uop, q));
      return 0;
    }
    case GNTTABOP_set_version: {
      if (count != 1) return Fail(XEN_EINVAL, "set_version count");
      auto v = TRY(guest.Read<gnttab_set_version_t>(uop));
      long rc = 0;
      if (v.version != 1 && v.version != 2) {
        rc = -XEN_EINVAL;
      } else if (v.version == 2) {
        rc = -XEN_ENOSYS;  // max grant version 1: "behave as before set_version was introduced"
      }
      v.version = 1;  // Xen reports the version in force either way
      TRY(guest.Write(uop, v));
      return rc;
    }
    case GNTTABOP_get_version: {
      if (count != 1) return Fail(XEN_EINVAL, "get_version count");
      auto v = TRY(guest.Read<gnttab_get_version_t>(uop));
      if (!ValidDomid(v.dom)) return Fail(XEN_ESRCH, "get_version domid");
      v.version = 1;
      TRY(guest.Write(uop, v));
      return 0;
    }
    default:
      LogUnknown(c.nr, cmd);
      return Fail(XEN_ENOSYS, "grant_table_op cmd");
  }
}

// GNTTABOP_setup_table (gnttab_setup_table): grows the table and reports each frame's gfn
// (INVALID_GFN, all ones, for a frame the guest has not mapped; a compat guest can't hold that
// and gets GNTST_address_too_big, as Xen's compat layer answers). Only the status is copied
// back into the struct.
Domain::Ret Domain::SetupTable(const HypercallCall& c, uint64_t uop, uint64_t count) {
  if (count != 1) return Fail(XEN_EINVAL, "setup_table count");
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  auto op = TRY(guest.Read<gnttab_setup_table_t>(uop));
  int16_t status = GNTST_okay;
  if (!ValidDomid(op.dom)) {
    status = GNTST_bad_domain;
  } else if (!grants_.Grow(op.nr_frames)) {
    status = GNTST_general_error;
  } else {
    for (uint32_t i = 0; i < op.nr_frames; ++i) {
      const uint64_t gfn = grants_.FrameGfn(i);
      auto written = guest.WriteUlong(HandleGva(op.frame_list), i,
                                      gfn == GrantTable::kNoGfn ? ~uint64_t{0} : gfn);
      if (!written) {
        status =
            written.error().xen_errno == XEN_ERANGE ? GNTST_address_too_big : GNTST_bad_virt_addr;
        break;
      }
    }
  }
  static_assert(offsetof(gnttab_setup_table_t, status) ==
                offsetof(abi::CompatGnttabSetupTable, status));
  TRY(guest.guest().WriteObj(uop + offsetof(gnttab_setup_table_t, status), status));
  return 0;
}

}  // namespace xenkvm::xen
