// Domain::Save / Domain::Restore: the Xen-side state of the domain in a snapshot
// (docs/snapshots.md). Guest memory (shared_info, vcpu_info contents, grant entries) travels
// with RAM; the event-channel engine saves itself. Restore decodes and checks everything first.
#include <algorithm>
#include <set>

#include "xen/domain.h"

namespace xenkvm::xen {

namespace {
constexpr uint32_t kMaxMemoryMapEntries = 1024;  // Xen's E820MAX, as XENMEM_set_memory_map
constexpr uint32_t kMaxSpecialPages = 256;       // more than any guest can place (memslots)
uint64_t CallbackParam(const std::vector<std::pair<uint32_t, uint64_t>>& params) {
  for (const auto& [index, value] : params)
    if (index == HVM_PARAM_CALLBACK_IRQ) return value;
  return 0;
}
}  // namespace

std::vector<uint64_t> Domain::SpecialGfns() const {
  MutexLock lock(mutex_);
  return special_gfns_;
}

void Domain::Save(snapshot::Encoder& out) const {
  MutexLock lock(mutex_);
  out.U64(shared_info_gpa_);
  out.U32(uint32_t(registered_vcpu_info_.size()));
  for (uint64_t gpa : registered_vcpu_info_) out.U64(gpa);
  for (uint8_t vector : upcall_vectors_) out.U8(vector);
  uint32_t params = 0;
  for (uint64_t v : params_) params += v != 0;
  out.U32(params);
  for (uint32_t i = 0; i < params_.size(); ++i) {
    if (params_[i] == 0) continue;
    out.U32(i);
    out.U64(params_[i]);
  }
  out.Bool(shinfo_compat_);
  out.Bool(runstate_update_flag_);
  out.Bool(memory_map_set_);
  out.U32(uint32_t(memory_map_.size()));
  for (const MemoryMapEntry& e : memory_map_) {
    out.U64(e.addr);
    out.U64(e.size);
    out.U32(e.type);
  }
  out.U32(uint32_t(special_gfns_.size()));
  for (uint64_t gfn : special_gfns_) out.U64(gfn);
  out.U32(uint32_t(runstates_.size()));
  for (const Runstate& r : runstates_) {
    const vcpu_runstate_info& info = r.info();
    out.U32(uint32_t(info.state));
    out.U64(info.state_entry_time);
    for (uint64_t t : info.time) out.U64(t);
    out.U64(r.area_gva);
  }
  const uint32_t frames = grants_.nr_frames();
  out.U32(frames);
  for (uint32_t i = 0; i < grants_.max_frames(); ++i) out.U64(grants_.FrameGfn(i));
  std::vector<uint64_t> holes;
  for (uint64_t gfn = 0; gfn < reservation_.ram_pages(); ++gfn)
    if (reservation_.IsHole(gfn)) holes.push_back(gfn);
  out.U32(uint32_t(holes.size()));
  for (uint64_t gfn : holes) out.U64(gfn);
  out.U64(reservation_.tot_pages() + holes.size() - reservation_.ram_pages());  // unmapped
  for (const auto& count : counts_) out.U64(count.load(std::memory_order_relaxed));
}

Result<> Domain::Restore(snapshot::Decoder& in) {
  // ---- decode ----
  const uint64_t shared_info_gpa = in.U64();
  std::vector<uint64_t> vcpu_info(in.Count(platform_.VcpuCount(), 8));
  for (uint64_t& gpa : vcpu_info) gpa = in.U64();
  std::vector<uint8_t> upcall_vectors(vcpu_info.size());
  for (uint8_t& vector : upcall_vectors) vector = in.U8();
  std::vector<std::pair<uint32_t, uint64_t>> params(in.Count(HVM_NR_PARAMS, 12));
  for (auto& [index, value] : params) {
    index = in.U32();
    value = in.U64();
  }
  const bool shinfo_compat = in.Bool();
  const bool runstate_update_flag = in.Bool();
  const bool memory_map_set = in.Bool();
  std::vector<MemoryMapEntry> memory_map(in.Count(kMaxMemoryMapEntries, 20));
  for (MemoryMapEntry& e : memory_map) {
    e.addr = in.U64();
    e.size = in.U64();
    e.type = in.U32();
  }
  std::vector<uint64_t> special(in.Count(kMaxSpecialPages, 8));
  for (uint64_t& gfn : special) gfn = in.U64();
  struct SavedRunstate {
    vcpu_runstate_info info{};
    uint64_t area_gva = 0;
  };
  std::vector<SavedRunstate> runstates(in.Count(platform_.VcpuCount(), 52));
  for (SavedRunstate& r : runstates) {
    r.info.state = int(in.U32());
    r.info.state_entry_time = in.U64();
    for (uint64_t& t : r.info.time) t = in.U64();
    r.area_gva = in.U64();
  }
  const uint32_t frames = in.U32();
  std::vector<uint64_t> frame_gfns(grants_.max_frames());
  for (uint64_t& gfn : frame_gfns) gfn = in.U64();
  std::vector<uint64_t> holes(
      in.Count(uint32_t(std::min<uint64_t>(reservation_.ram_pages(), UINT32_MAX)), 8));
  for (uint64_t& gfn : holes) gfn = in.U64();
  const uint64_t unmapped = in.U64();
  std::array<uint64_t, 64> counts{};
  for (uint64_t& c : counts) c = in.U64();
  TRY(in.Finish());

  // ---- check ----
  auto bad = [](const char* what) { return snapshot::Corrupt(what); };
  if (vcpu_info.size() != platform_.VcpuCount() || runstates.size() != platform_.VcpuCount())
    return bad("snapshot has another number of vCPUs than this machine");
  if (shared_info_gpa != kNoGpa &&
      (shared_info_gpa % abi::kPageSize != 0 || (shared_info_gpa >> 12) >= kMaxGfn))
    return bad("snapshot: bad shared_info address");
  for (uint64_t gpa : vcpu_info)
    if (gpa != kNoGpa && gpa % abi::kPageSize > abi::kPageSize - sizeof(::vcpu_info))
      return bad("snapshot: bad vcpu_info address");
  for (uint8_t vector : upcall_vectors)
    if (vector != 0 && vector < 0x10) return bad("snapshot: bad upcall vector");
  std::set<uint32_t> seen_params;
  for (const auto& [index, value] : params)
    if (index >= HVM_NR_PARAMS || !seen_params.insert(index).second)
      return bad("snapshot: bad HVM param");
  std::set<uint64_t> seen_special;
  for (uint64_t gfn : special)
    if (gfn >= kMaxGfn || reservation_.InRam(gfn, 1) || !seen_special.insert(gfn).second)
      return bad("snapshot: bad special page");
  for (const SavedRunstate& r : runstates)
    if (r.info.state < RUNSTATE_running || r.info.state > RUNSTATE_offline)
      return bad("snapshot: bad runstate");
  if (frames == 0 || frames > grants_.max_frames()) return bad("snapshot: bad grant table size");
  for (uint64_t gfn : frame_gfns)
    if (gfn != GrantTable::kNoGfn && gfn >= kMaxGfn) return bad("snapshot: bad grant frame");
  std::set<uint64_t> seen_holes;
  for (uint64_t gfn : holes)
    if (!reservation_.InRam(gfn, 1) || !seen_holes.insert(gfn).second)
      return bad("snapshot: bad ballooned-out page");
  if (unmapped > reservation_.ram_pages()) return bad("snapshot: bad reservation");

  // ---- apply ----
  {
    MutexLock lock(mutex_);
    TRY(RestoreSpecialPagesLocked(special));
    shared_info_gpa_ = shared_info_gpa;
    registered_vcpu_info_ = vcpu_info;
    upcall_vectors_ = upcall_vectors;
    params_.fill(0);
    for (const auto& [index, value] : params) params_[index] = value;
    shinfo_compat_ = shinfo_compat;
    runstate_update_flag_ = runstate_update_flag;
    memory_map_set_ = memory_map_set;
    memory_map_ = std::move(memory_map);
    for (size_t v = 0; v < runstates.size(); ++v) {
      runstates_[v].Restore(runstates[v].info);
      runstates_[v].area_gva = runstates[v].area_gva;
    }
    grants_.Grow(frames);
    for (uint32_t i = 0; i < frame_gfns.size(); ++i)
      if (frame_gfns[i] != GrantTable::kNoGfn) grants_.SetFrameGfn(i, frame_gfns[i]);
    for (uint64_t gfn : holes) reservation_.MakeHole(gfn);
    reservation_.AddUnmapped(unmapped);
    for (size_t i = 0; i < counts.size(); ++i)
      counts_[i].store(counts[i], std::memory_order_relaxed);
  }
  // Upcall routing lives in the VMM: tell it again, as the guest's hypercalls did.
  const uint64_t callback = CallbackParam(params);
  platform_.SetCallbackVector(
      callback >> 56 == HVM_PARAM_CALLBACK_TYPE_VECTOR ? uint8_t(callback & 0xff) : 0);
  for (uint32_t v = 0; v < upcall_vectors.size(); ++v)
    if (upcall_vectors[v] != 0) platform_.SetUpcallVector(v, upcall_vectors[v]);
  return {};
}

// The snapshot's special pages, mapped fresh (the VMM writes their contents afterwards); those
// the VMM placed that the snapshot lacks go. A failure here leaves the domain half restored:
// the VMM discards it.
Result<> Domain::RestoreSpecialPagesLocked(const std::vector<uint64_t>& special) {
  for (uint64_t gfn : std::vector<uint64_t>(special_gfns_))
    if (std::find(special.begin(), special.end(), gfn) == special.end()) RemoveXenPageLocked(gfn);
  for (uint64_t gfn : special) {
    if (std::find(special_gfns_.begin(), special_gfns_.end(), gfn) != special_gfns_.end()) continue;
    if (IsRam(gfn << 12, abi::kPageSize))
      return snapshot::Corrupt("snapshot: special page over host memory");
    TRY(platform_.MapSpecialPage(gfn));
    special_gfns_.push_back(gfn);
  }
  return {};
}

}  // namespace xenkvm::xen
