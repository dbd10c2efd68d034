// XENMEM_increase_reservation, XENMEM_decrease_reservation and XENMEM_populate_physmap
// (xen/memory.h) for a translated guest, following xen/common/memory.c: the result is the number
// of extents done; anything wrong with the request or an extent ends the op there, never with
// an errno. Ballooned-out gfns are tracked in reservation_; their host memory is released.
#include <algorithm>
#include <cstring>

#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
// Largest extent_order an unprivileged domain may use (x86 CONFIG_DOMU_MAX_ORDER = 9: 2 MiB),
// and the page allocator's limit, which populate-on-demand requests are checked against.
constexpr uint32_t kDomuMaxOrder = 9;
constexpr uint32_t kAllocatorMaxOrder = 20;
constexpr uint32_t kPageShift = 12;
constexpr uint32_t kNumaNoNode = 0xff;

struct Request {
  uint64_t extent_start;  // guest-virtual address of the xen_pfn_t list
  uint64_t nr_extents;
  uint32_t extent_order;
  uint32_t mem_flags;
  domid_t domid;
};

// construct_memop_from_reservation and propagate_node, for a domain that is neither the
// hardware nor the control domain and has no virtual NUMA topology.
bool FlagsAcceptable(uint32_t mem_flags) {
  const uint32_t address_bits = XENMEMF_get_address_bits(mem_flags);
  // Below one page nothing can be allocated. (Wider limits would restrict which machine pages
  // Xen picks; no host address is visible here, so they change nothing.)
  if (address_bits != 0 && address_bits <= kPageShift) return false;
  if (mem_flags & XENMEMF_vnode) return true;  // no vNUMA: the node is ignored
  // Only privileged domains may pin allocations to an exact node.
  return XENMEMF_get_node(mem_flags) == kNumaNoNode || !(mem_flags & XENMEMF_exact_node_request);
}
}  // namespace

long Domain::ReservationOp(const HypercallCall& c, uint32_t op, uint64_t start_extent,
                           uint64_t arg) {
  HypercallArgs args(Guest(c.vcpu), c.compat);
  const long none =
      static_cast<long>(start_extent);  // every refusal reports the extents done so far
  auto r = args.Read<xen_memory_reservation_t>(arg);
  if (!r) return none;
  const Request req{HandleGva(r->extent_start), r->nr_extents, r->extent_order, r->mem_flags,
                    r->domid};
  // Too many extents to encode a continuation in cmd; a continuation past the end.
  if (req.nr_extents > (UINT32_MAX >> kMemopExtentShift)) return none;
  if (start_extent >= req.nr_extents) return none;
  // Another domain: absent, or present and XSM refuses an unprivileged caller. Either way.
  if (!ValidDomid(req.domid)) return none;
  if (!FlagsAcceptable(req.mem_flags)) return none;
  const bool pod = op == XENMEM_populate_physmap && (req.mem_flags & XENMEMF_populate_on_demand);
  if (req.extent_order > (pod ? kAllocatorMaxOrder : kDomuMaxOrder)) return none;
  // Populate-on-demand entries may not be made on oneself (the only domain we accept).
  if (pod) return none;

  const uint64_t pages = uint64_t{1} << req.extent_order;
  auto read_extent = [&](uint64_t i) { return args.ReadUlong(req.extent_start, i); };

  MutexLock lock(mutex_);
  const std::vector<uint64_t> pinned = PinnedGfnsLocked();
  auto is_pinned = [&](uint64_t gfn) {
    return std::find(pinned.begin(), pinned.end(), gfn) != pinned.end();
  };
  // Releases host memory in runs of consecutive gfns (one madvise each), never a pinned page:
  // Xen keeps such a page alive and writing to it after the gfn is gone, and so do we.
  uint64_t run_start = 0, run_len = 0;
  auto flush = [&] {
    if (run_len != 0) platform_.ReleaseRam(run_start << kPageShift, run_len << kPageShift);
    run_len = 0;
  };
  auto release = [&](uint64_t gfn) {
    if (is_pinned(gfn)) return;
    if (run_len != 0 && run_start + run_len == gfn) {
      ++run_len;
      return;
    }
    flush();
    run_start = gfn;
    run_len = 1;
  };

  uint64_t i = start_extent;
  for (; i < req.nr_extents && !platform_.Stopping(); ++i) {
    if (op == XENMEM_increase_reservation) {
      // A translated guest is told no address for the new extents (Xen writes the list for PV
      // guests only), so they are pages the domain holds but cannot reach.
      if (!reservation_.CanAllocate(pages)) break;
      reservation_.AddUnmapped(pages);
      continue;
    }
    auto first = read_extent(i);
    if (!first) break;
    const uint64_t gfn = *first;
    if (op == XENMEM_decrease_reservation) {
      // Page by page; the first one with nothing mapped ends the op, leaving the pages before
      // it in this extent removed but the extent not counted.
      uint64_t j = 0;
      for (; j < pages; ++j) {
        if (!reservation_.InRam(gfn, j + 1) || reservation_.IsHole(gfn + j)) break;
        reservation_.MakeHole(gfn + j);
        release(gfn + j);
      }
      if (j != pages) break;
    } else {
      // populate_physmap: a fresh (zeroed) page at every gfn of the extent. One that already
      // had a page loses it from view, but the domain still holds it. Only gfns inside guest
      // RAM can be backed here (Xen could populate any gfn below its physmap limit).
      if (!reservation_.InRam(gfn, pages) || !reservation_.CanAllocate(pages)) break;
      for (uint64_t j = 0; j < pages; ++j) {
        // Release first, then clear the hole bit: a hypercall copy that raced with the
        // balloon-out must not leave data behind in the "fresh" page.
        release(gfn + j);
        if (reservation_.IsHole(gfn + j)) {
          flush();
          reservation_.Fill(gfn + j);
        } else {
          reservation_.AddUnmapped(1);
        }
      }
    }
  }
  flush();
  return static_cast<long>(i);
}

std::vector<uint64_t> Domain::PinnedGfnsLocked() const {
  std::vector<uint64_t> gfns;
  if (shared_info_gpa_ != kNoGpa) gfns.push_back(shared_info_gpa_ >> kPageShift);
  for (uint64_t gpa : registered_vcpu_info_) {
    if (gpa != kNoGpa) gfns.push_back(gpa >> kPageShift);
  }
  for (uint32_t i = 0; i < grants_.max_frames(); ++i) {
    if (uint64_t gfn = grants_.FrameGfn(i); gfn != GrantTable::kNoGfn) gfns.push_back(gfn);
  }
  for (uint64_t gfn : grants_.MappedGfns()) gfns.push_back(gfn);
  // The rings a backend writes into (the console's is served; xenstore's is reserved for it).
  for (uint32_t param : {HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_PFN}) {
    if (params_[param] != 0) gfns.push_back(params_[param]);
  }
  return gfns;
}

void Domain::FillHoleLocked(uint64_t gfn) {
  if (reservation_.IsHole(gfn)) reservation_.Fill(gfn);
}

void Domain::ReleaseIfHoleLocked(uint64_t gfn) {
  if (!reservation_.IsHole(gfn)) return;
  for (uint64_t pinned : PinnedGfnsLocked()) {
    if (pinned == gfn) return;
  }
  platform_.ReleaseRam(gfn << kPageShift, uint64_t{1} << kPageShift);
}

}  // namespace xenkvm::xen
