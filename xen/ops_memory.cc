// memory_op (xen/memory.h: add_to_physmap, memory_map, reservation queries; the reservation
// changes are in ops_reservation.cc) and hvm_op
// (xen/hvm/hvm_op.h, hvm/params.h: set/get_param, set_evtchn_upcall_vector, get_time).
#include <algorithm>
#include <cstdio>
#include <vector>

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
  HypercallArgs args(Guest(c.vcpu), c.compat);
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
      return AddToPhysmap(c, arg);
    case XENMEM_memory_map: {
      auto map = TRY(args.Read<xen_memory_map_t>(arg));
      std::vector<MemoryMapEntry> entries;
      bool own_map = false;
      {
        MutexLock lock(mutex_);
        own_map = memory_map_set_;
        if (own_map) entries = memory_map_;
      }
      std::span<const MemoryMapEntry> source =
          own_map ? std::span<const MemoryMapEntry>(entries) : platform_.MemoryMap();
      // Xen: an empty map is -ENOSYS ("backwards compatibility"); a short buffer gets a prefix.
      if (source.empty()) return Fail(XEN_ENOSYS, "no memory map");
      map.nr_entries = std::min<uint32_t>(map.nr_entries, static_cast<uint32_t>(source.size()));
      TRY(args.guest().Write(HandleGva(map.buffer),
                             std::as_bytes(source.subspan(0, map.nr_entries))));
      TRY(args.Write(arg, map));
      return 0;
    }
    case XENMEM_set_memory_map:
      return SetMemoryMap(c, arg);
    case XENMEM_current_reservation:
    case XENMEM_maximum_reservation: {
      if (start_extent != 0) return Fail(XEN_EINVAL, "reservation query continuation");
      auto domid = TRY(args.Read<domid_t>(arg));
      if (!ValidDomid(domid)) return Fail(XEN_ESRCH, "reservation domid");
      MutexLock lock(mutex_);
      return static_cast<long>(cmd == XENMEM_current_reservation ? reservation_.tot_pages()
                                                                 : reservation_.max_pages());
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

// XENMEM_set_memory_map (xen/arch/x86/mm.c): a domain may set its own e820 (XSM_TARGET), which
// XENMEM_memory_map reports from then on. At most E820MAX (1024) entries.
Domain::Ret Domain::SetMemoryMap(const HypercallCall& c, uint64_t arg) {
  constexpr uint32_t kE820Max = 1024;
  HypercallArgs args(Guest(c.vcpu), c.compat);
  auto fmap = TRY(args.Read<xen_foreign_memory_map_t>(arg));
  if (fmap.map.nr_entries > kE820Max) return Fail(XEN_EINVAL, "set_memory_map too many entries");
  if (!ValidDomid(fmap.domid)) return Fail(XEN_ESRCH, "set_memory_map domid");
  std::vector<MemoryMapEntry> entries(fmap.map.nr_entries);
  TRY(args.guest().Read(HandleGva(fmap.map.buffer), std::as_writable_bytes(std::span(entries))));
  MutexLock lock(mutex_);
  memory_map_ = std::move(entries);
  memory_map_set_ = true;
  return 0;
}

Domain::Ret Domain::AddToPhysmap(const HypercallCall& c, uint64_t arg) {
  HypercallArgs args(Guest(c.vcpu), c.compat);
  auto xatp = TRY(args.Read<xen_add_to_physmap_t>(arg));
  if (!ValidDomid(xatp.domid)) return Fail(XEN_ESRCH, "add_to_physmap domid");
  switch (xatp.space) {
    case XENMAPSPACE_shared_info:
      if (xatp.idx != 0) return Fail(XEN_EINVAL, "shared_info idx");
      return MapSharedInfo(xatp.gpfn);
    case XENMAPSPACE_grant_table:
      return MapGrantFrame(xatp.idx, xatp.gpfn);
    default:
      LogUnknown(c.nr, 0x1000 + xatp.space);
      return Fail(XEN_ENOSYS, "add_to_physmap space");
  }
}

// XENMAPSPACE_grant_table (gnttab_map_frame_begin): with version 1 in force the status bit is
// not stripped, so a status frame is an index beyond the table: -EINVAL. Mapping frame idx
// grows the table to idx + 1 within max_frames. A moved frame keeps its contents.
Domain::Ret Domain::MapGrantFrame(uint64_t idx, uint64_t gfn) {
  if (idx >= grants_.max_frames()) return Fail(XEN_EINVAL, "grant frame idx");
  if (gfn >= kMaxGfn) return Fail(XEN_EINVAL, "grant frame gfn");
  const uint32_t frame = static_cast<uint32_t>(idx);
  MutexLock lock(mutex_);
  const uint64_t old_gfn = grants_.FrameGfn(frame);
  if (old_gfn == gfn) return 0;
  TRY(PlaceXenPageLocked(gfn));
  std::vector<std::byte> page(abi::kPageSize);  // a frame never mapped before is zeroed
  if (old_gfn != GrantTable::kNoGfn) (void)memory_.Read(old_gfn << 12, page);
  if (auto written = memory_.Write(gfn << 12, page); !written) {
    RemoveXenPageLocked(gfn);
    return tl::unexpected(written.error());
  }
  grants_.SetFrameGfn(frame, gfn);
  if (old_gfn != GrantTable::kNoGfn) {
    RemoveXenPageLocked(old_gfn);
    ReleaseIfHoleLocked(old_gfn);
  }
  return 0;
}

Domain::Ret Domain::HvmOp(const HypercallCall& c) {
  HypercallArgs guest(Guest(c.vcpu), c.compat);
  const uint64_t arg = c.args[1];
  switch (c.args[0]) {
    case HVMOP_set_param:
    case HVMOP_get_param: {
      auto p = TRY(guest.Read<xen_hvm_param_t>(arg));
      if (!ValidDomid(p.domid)) return Fail(XEN_ESRCH, "hvm_param domid");
      if (p.index >= HVM_NR_PARAMS) return Fail(XEN_EINVAL, "hvm_param index");
      if (c.args[0] == HVMOP_get_param) {
        if (!GuestMayGetParam(p.index)) return Fail(XEN_EPERM, "hvm_param not readable");
        p.value = Param(p.index);
        TRY(guest.Write(arg, p));
        return 0;
      }
      if (!GuestMaySetParam(p.index)) return Fail(XEN_EPERM, "hvm_param not writable");
      SetParamFromVmm(p.index, p.value);
      if (p.index == HVM_PARAM_CALLBACK_IRQ) {
        LatchShinfoLayout(c.compat);  // as Xen's hvm_set_param does
        const uint64_t type = p.value >> 56;
        if (p.value == 0) {
          platform_.SetCallbackVector(0);
        } else if (type == HVM_PARAM_CALLBACK_TYPE_VECTOR) {
          platform_.SetCallbackVector(static_cast<uint8_t>(p.value & 0xff));
        } else {
          // GSI / PCI INTx callbacks need an emulated IOAPIC or PCI device, which we don't have.
          // Linux writes GSI 1 after its per-vCPU vectors ("to look enlightened"); Xen accepts
          // it and keeps delivering through those vectors, so that case is quiet here too.
          bool per_vcpu;
          {
            MutexLock lock(mutex_);
            per_vcpu = vcpu0_upcall_vector_;
          }
          if (!per_vcpu)
            std::fprintf(stderr,
                         "xenkvm: HVM_PARAM_CALLBACK_IRQ type %llu not supported; no upcalls\n",
                         static_cast<unsigned long long>(type));
          platform_.SetCallbackVector(0);
        }
      }
      return 0;
    }
    case HVMOP_set_evtchn_upcall_vector: {
      auto op = TRY(guest.Read<xen_hvm_evtchn_upcall_vector_t>(arg));
      if (op.vector < 0x10) return Fail(XEN_EINVAL, "upcall vector < 0x10");
      if (op.vcpu >= platform_.VcpuCount()) return Fail(XEN_ENOENT, "upcall vector vcpu");
      {
        MutexLock lock(mutex_);  // kept for snapshots: Xen keeps it in the vCPU's HVM state
        upcall_vectors_[op.vcpu] = op.vector;
      }
      platform_.SetUpcallVector(op.vcpu, op.vector);
      if (op.vcpu == 0) {
        MutexLock lock(mutex_);
        vcpu0_upcall_vector_ = true;
      }
      return 0;
    }
    case HVMOP_pagetable_dying: {
      // Xen (hvm.c) acts on this hint only for shadow paging; with HAP, as here, -EINVAL.
      // gpa is uint64_aligned_t: one layout for 64-bit and compat callers.
      auto op = TRY(guest.guest().ReadObj<xen_hvm_pagetable_dying_t>(arg));
      if (!ValidDomid(op.domid)) return Fail(XEN_ESRCH, "pagetable_dying domid");
      return Fail(XEN_EINVAL, "pagetable_dying without shadow paging");
    }
    case HVMOP_get_time: {
      xen_hvm_get_time_t t{platform_.SystemTimeNs()};
      TRY(guest.Write(arg, t));
      return 0;
    }
    default:
      LogUnknown(c.nr, c.args[0]);
      return Fail(XEN_ENOSYS, "hvm_op cmd");
  }
}

}  // namespace xenkvm::xen
