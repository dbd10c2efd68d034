// memory_op (xen/memory.h: add_to_physmap, memory_map, reservation queries; the reservation
// changes are in ops_reservation.cc) and hvm_op
// (xen/hvm/hvm_op.h, hvm/params.h: set/get_param, set_evtchn_upcall_vector, get_time).
#include <algorithm>
#include <cstdio>

#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
constexpr uint64_t kMemopCmdMask = (uint64_t{1} << kMemopExtentShift) - 1;

// Parameters an HVM guest may set or read on itself; the rest belong to the toolstack (-EPERM).
bool GuestMaySetParam(uint32_t index) {
  switch (index) {
    case HVM_PARAM_CALLBACK_IRQ:
    case HVM_PARAM_STORE_EVTCHN:
    case HVM_PARAM_CONSOLE_EVTCHN:
    case HVM_PARAM_VM86_TSS:
    case HVM_PARAM_VM86_TSS_SIZED:
    case HVM_PARAM_ACPI_IOPORTS_LOCATION:
    case HVM_PARAM_VM_GENERATION_ID_ADDR:
    case HVM_PARAM_X87_FIP_WIDTH:
      return true;
    default:
      return false;
  }
}

bool GuestMayGetParam(uint32_t index) {
  switch (index) {
    case HVM_PARAM_CALLBACK_IRQ:
    case HVM_PARAM_STORE_PFN:
    case HVM_PARAM_STORE_EVTCHN:
    case HVM_PARAM_CONSOLE_PFN:
    case HVM_PARAM_CONSOLE_EVTCHN:
    case HVM_PARAM_IOREQ_PFN:
    case HVM_PARAM_BUFIOREQ_PFN:
    case HVM_PARAM_ACPI_IOPORTS_LOCATION:
    case HVM_PARAM_VM_GENERATION_ID_ADDR:
    case HVM_PARAM_X87_FIP_WIDTH:
    case HVM_PARAM_VM86_TSS:
    case HVM_PARAM_VM86_TSS_SIZED:
      return true;
    default:
      return false;
  }
}
}  // namespace

Domain::Ret Domain::MemoryOp(const HypercallCall& c) {
  GuestAccess guest = Guest(c.vcpu);
  // A compat guest passes a 32-bit cmd (Xen's compat_memory_op takes an unsigned int).
  const uint64_t full_cmd = c.compat ? (c.args[0] & 0xffffffffu) : c.args[0];
  const uint64_t cmd = full_cmd & kMemopCmdMask;
  const uint64_t start_extent = full_cmd >> kMemopExtentShift;
  const uint64_t arg = c.args[1];
  switch (cmd) {
    case XENMEM_increase_reservation:
    case XENMEM_decrease_reservation:
    case XENMEM_populate_physmap:
      return ReservationOp(c, static_cast<uint32_t>(cmd), start_extent, arg);
    case XENMEM_add_to_physmap:
      if (c.compat) break;  // xen_ulong_t/xen_pfn_t differ in compat; not translated
      return AddToPhysmap(c, arg);
    case XENMEM_memory_map: {
      // struct xen_memory_map { unsigned int nr_entries; handle buffer; } — the handle is
      // 8 bytes at offset 8 (64-bit) or 4 bytes at offset 4 (compat).
      uint32_t nr = TRY(guest.ReadObj<uint32_t>(arg));
      uint64_t buffer = c.compat ? TRY(guest.ReadObj<uint32_t>(arg + 4)) : TRY(guest.ReadObj<uint64_t>(arg + 8));
      auto map = platform_.MemoryMap();
      uint32_t n = std::min<uint32_t>(nr, static_cast<uint32_t>(map.size()));
      TRY(guest.Write(buffer, std::as_bytes(map.subspan(0, n))));
      TRY(guest.WriteObj(arg, n));
      return 0;
    }
    case XENMEM_current_reservation:
    case XENMEM_maximum_reservation: {
      if (start_extent != 0) return Fail(XEN_EINVAL, "reservation query continuation");
      auto domid = TRY(guest.ReadObj<domid_t>(arg));
      if (!ValidDomid(domid)) return Fail(XEN_ESRCH, "reservation domid");
      std::lock_guard lock(mutex_);
      return static_cast<long>(cmd == XENMEM_current_reservation ? reservation_.tot_pages() : reservation_.max_pages());
    }
    case XENMEM_maximum_ram_page:
      if (start_extent != 0) return Fail(XEN_EINVAL, "maximum_ram_page continuation");
      return static_cast<long>(platform_.RamPages() - 1);
    default:
      break;
  }
  LogUnknown(c.nr, cmd);
  return Fail(XEN_ENOSYS, "memory_op cmd");
}

Domain::Ret Domain::AddToPhysmap(const HypercallCall& c, uint64_t arg) {
  GuestAccess guest = Guest(c.vcpu);
  auto xatp = TRY(guest.ReadObj<xen_add_to_physmap_t>(arg));
  if (!ValidDomid(xatp.domid)) return Fail(XEN_ESRCH, "add_to_physmap domid");
  switch (xatp.space) {
    case XENMAPSPACE_shared_info:
      if (xatp.idx != 0) return Fail(XEN_EINVAL, "shared_info idx");
      return MapSharedInfo(xatp.gpfn);
    case XENMAPSPACE_grant_table: {
      // Grant-table v1 frames only; status frames exist in v2, which we don't offer.
      if ((xatp.idx & XENMAPIDX_grant_table_status) != 0) return Fail(XEN_EINVAL, "grant status frame");
      if (xatp.idx >= kMaxGrantFrames) return Fail(XEN_EINVAL, "grant frame idx");
      if (xatp.gpfn > (UINT64_MAX >> 12) || !IsRam(xatp.gpfn << 12, abi::kPageSize)) {
        return Fail(XEN_EINVAL, "grant frame gfn");
      }
      std::lock_guard lock(mutex_);
      FillHoleLocked(xatp.gpfn);
      if (grant_gfns_[xatp.idx] == 0) {
        // A new grant frame starts empty, as Xen's would.
        std::vector<std::byte> zero(abi::kPageSize);
        TRY(memory_.Write(xatp.gpfn << 12, zero));
      }
      const uint64_t old_gfn = grant_gfns_[xatp.idx];
      grant_gfns_[xatp.idx] = xatp.gpfn;
      if (old_gfn != 0 && old_gfn != xatp.gpfn) ReleaseIfHoleLocked(old_gfn);
      grant_frames_ = std::max<uint32_t>(grant_frames_, static_cast<uint32_t>(xatp.idx) + 1);
      return 0;
    }
    default:
      LogUnknown(c.nr, 0x1000 + xatp.space);
      return Fail(XEN_ENOSYS, "add_to_physmap space");
  }
}

Domain::Ret Domain::HvmOp(const HypercallCall& c) {
  GuestAccess guest = Guest(c.vcpu);
  const uint64_t arg = c.args[1];
  switch (c.args[0]) {
    case HVMOP_set_param:
    case HVMOP_get_param: {
      auto p = TRY(guest.ReadObj<xen_hvm_param_t>(arg));
      if (!ValidDomid(p.domid)) return Fail(XEN_ESRCH, "hvm_param domid");
      if (p.index >= HVM_NR_PARAMS) return Fail(XEN_EINVAL, "hvm_param index");
      if (c.args[0] == HVMOP_get_param) {
        if (!GuestMayGetParam(p.index)) return Fail(XEN_EPERM, "hvm_param not readable");
        p.value = Param(p.index);
        TRY(guest.WriteObj(arg, p));
        return 0;
      }
      if (!GuestMaySetParam(p.index)) return Fail(XEN_EPERM, "hvm_param not writable");
      SetParamFromVmm(p.index, p.value);
      if (p.index == HVM_PARAM_CALLBACK_IRQ) {
        const uint64_t type = p.value >> 56;
        if (p.value == 0) {
          platform_.SetCallbackVector(0);
        } else if (type == HVM_PARAM_CALLBACK_TYPE_VECTOR) {
          platform_.SetCallbackVector(static_cast<uint8_t>(p.value & 0xff));
        } else {
          // GSI / PCI INTx callbacks need an emulated IOAPIC or PCI device, which we don't have.
          std::fprintf(stderr, "xenkvm: HVM_PARAM_CALLBACK_IRQ type %llu not supported; no upcalls\n",
                       static_cast<unsigned long long>(type));
          platform_.SetCallbackVector(0);
        }
      }
      return 0;
    }
    case HVMOP_set_evtchn_upcall_vector: {
      auto op = TRY(guest.ReadObj<xen_hvm_evtchn_upcall_vector_t>(arg));
      if (op.vector < 0x10) return Fail(XEN_EINVAL, "upcall vector < 0x10");
      if (op.vcpu >= platform_.VcpuCount()) return Fail(XEN_ENOENT, "upcall vector vcpu");
      platform_.SetUpcallVector(op.vcpu, op.vector);
      return 0;
    }
    case HVMOP_get_time: {
      xen_hvm_get_time_t t{platform_.SystemTimeNs()};
      TRY(guest.WriteObj(arg, t));
      return 0;
    }
    default:
      LogUnknown(c.nr, c.args[0]);
      return Fail(XEN_ENOSYS, "hvm_op cmd");
  }
}

}  // namespace xenkvm::xen
