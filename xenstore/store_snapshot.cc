// Store::Save / Store::Restore: the xenstore database in a snapshot (docs/snapshots.md). What a
// guest can observe of xenstored after a restore: every node with its value, permissions and
// generation (DIRECTORY_PART and transactions compare them), the store's generation counter,
// the introduced domains, and per connection its watches and open transactions (overlay,
// accessed generations, ownership deltas, events queued for the commit).
#include <algorithm>
#include <set>

#include "xenstore/store.h"

namespace xenkvm::xenstore {

namespace {

// Bounds on what one snapshot may hold; the decoder bounds every count by the bytes left too.
constexpr size_t kMaxName = 64 * 1024;
constexpr size_t kMaxValue = 1024 * 1024;
constexpr size_t kMaxToken = 64 * 1024;
constexpr uint32_t kMaxPerms = 4096;
constexpr uint32_t kMaxItems = 1u << 24;
constexpr int64_t kMaxOwnedDelta = int64_t(1) << 32;
constexpr DomId kMaxDomid = 0xFFFF;

constexpr std::string_view kSpecialNames[] = {"@introduceDomain", "@releaseDomain"};

bool IsSpecial(std::string_view name) {
  return std::find(std::begin(kSpecialNames), std::end(kSpecialNames), name) !=
         std::end(kSpecialNames);
}

// A canonical node name: "/", or "/a/b" with xenstored's characters, no empty component.
bool ValidPath(std::string_view name) {
  if (name.empty() || name[0] != '/') return false;
  if (name == "/") return true;
  if (name.back() == '/' || name.find("//") != std::string_view::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '/' || c == '_' || c == '@';
  });
}

bool ValidName(std::string_view name) { return ValidPath(name) || IsSpecial(name); }

std::string ParentOf(const std::string& name) {
  const size_t slash = name.rfind('/');
  return slash == 0 ? "/" : name.substr(0, slash);
}

void EncodePerms(snapshot::Encoder& out, const Permissions& perms) {
  out.U32(uint32_t(perms.size()));
  for (const Permission& p : perms) {
    out.U32(p.domid);
    out.U8(p.access);
  }
}

Permissions DecodePerms(snapshot::Decoder& in) {
  Permissions perms(in.Count(kMaxPerms, 5));
  for (Permission& p : perms) {
    p.domid = in.U32();
    p.access = in.U8();
  }
  if (perms.empty()) in.Invalid("snapshot: xenstore node without permissions");
  for (const Permission& p : perms)
    if (p.domid > kMaxDomid || (p.access & ~kBoth) != 0)
      in.Invalid("snapshot: bad xenstore permission");
  return perms;
}

}  // namespace

void Store::Save(snapshot::Encoder& out) {
  MutexLock lock(mutex_);
  auto encode_node = [&](const Node& node) {
    out.String(node.value);
    EncodePerms(out, node.perms);
    out.U32(uint32_t(node.children.size()));
    for (const std::string& child : node.children) out.String(child);
    out.U64(node.generation);
  };
  out.U64(generation_);
  // Sorted, so one state always saves to the same bytes.
  std::vector<const std::pair<const std::string, Node>*> nodes;
  for (const auto& entry : nodes_) nodes.push_back(&entry);
  std::sort(nodes.begin(), nodes.end(), [](auto* a, auto* b) { return a->first < b->first; });
  out.U32(uint32_t(nodes.size()));
  for (const auto* entry : nodes) {
    out.String(entry->first);
    encode_node(entry->second);
  }
  out.U32(uint32_t(introduced_.size()));
  for (const auto& [domid, introduced] : introduced_) {
    out.U32(domid);
    out.Bool(introduced);
  }
  out.U32(uint32_t(conns_.size()));
  for (const auto& [id, conn] : conns_) {
    out.U32(id);
    out.U32(conn.domid);
    out.U32(conn.next_tx);
    out.U32(uint32_t(conn.watches.size()));
    for (const WatchEntry& w : conn.watches) {
      out.String(w.node);
      out.String(w.token);
      out.U32(uint32_t(w.prefix_len));
    }
    out.U32(uint32_t(conn.transactions.size()));
    for (const auto& [tx_id, txn] : conn.transactions) {
      out.U32(tx_id);
      out.U32(uint32_t(txn.overlay.size()));
      for (const auto& [name, node] : txn.overlay) {
        out.String(name);
        out.Bool(node.has_value());
        if (node) encode_node(*node);
      }
      out.U32(uint32_t(txn.accessed.size()));
      for (const auto& [name, generation] : txn.accessed) {
        out.String(name);
        out.U64(generation);
      }
      out.U32(uint32_t(txn.owned_delta.size()));
      for (const auto& [domid, delta] : txn.owned_delta) {
        out.U32(domid);
        out.U64(uint64_t(delta));
      }
      out.U32(uint32_t(txn.queued_events.size()));
      for (const auto& [name, queued] : txn.queued_events) {
        out.String(name);
        out.Bool(queued.exact);
        out.Bool(queued.old_perms.has_value());
        if (queued.old_perms) EncodePerms(out, *queued.old_perms);
      }
    }
  }
}

Result<> Store::Restore(snapshot::Decoder& in) {
  // ---- decode (the decoder's errors are sticky: check once at the end) ----
  auto decode_node = [&](uint64_t max_generation) {
    Node node;
    node.value = in.String(kMaxValue);
    node.perms = DecodePerms(in);
    node.children.resize(in.Count(kMaxItems, 4));
    for (std::string& child : node.children) child = in.String(kMaxName);
    node.generation = in.U64();
    if (node.generation > max_generation) in.Invalid("snapshot: xenstore node from the future");
    return node;
  };
  const uint64_t generation = in.U64();
  std::unordered_map<std::string, Node> nodes;
  const uint32_t node_count = in.Count(kMaxItems, 4 + 4 + 4 + 4 + 8);
  for (uint32_t i = 0; i < node_count && in.ok(); ++i) {
    std::string name = in.String(kMaxName);
    Node node = decode_node(generation);
    if (!ValidName(name)) in.Invalid("snapshot: bad xenstore node name");
    if (!nodes.emplace(std::move(name), std::move(node)).second)
      in.Invalid("snapshot: xenstore node saved twice");
  }
  std::map<DomId, bool> introduced;
  const uint32_t introduced_count = in.Count(kMaxItems, 5);
  for (uint32_t i = 0; i < introduced_count && in.ok(); ++i) {
    const DomId domid = in.U32();
    const bool value = in.Bool();
    if (domid > kMaxDomid || !introduced.emplace(domid, value).second)
      in.Invalid("snapshot: bad introduced xenstore domain");
  }
  struct SavedConn {
    DomId domid = 0;
    TxId next_tx = 0;
    std::vector<WatchEntry> watches;
    std::map<TxId, Txn> transactions;
  };
  std::map<ConnId, SavedConn> conns;
  const uint32_t conn_count = in.Count(kMaxItems, 16);
  for (uint32_t i = 0; i < conn_count && in.ok(); ++i) {
    const ConnId id = in.U32();
    SavedConn& c = conns[id];
    if (conns.size() != i + 1) in.Invalid("snapshot: xenstore connection saved twice");
    c.domid = in.U32();
    c.next_tx = in.U32();
    c.watches.resize(in.Count(kMaxItems, 12));
    for (WatchEntry& w : c.watches) {
      w.node = in.String(kMaxName);
      w.token = in.String(kMaxToken);
      w.prefix_len = in.U32();
      if (!ValidName(w.node) || w.prefix_len > w.node.size())
        in.Invalid("snapshot: bad xenstore watch");
    }
    const uint32_t tx_count = in.Count(kMaxItems, 20);
    for (uint32_t t = 0; t < tx_count && in.ok(); ++t) {
      const TxId tx_id = in.U32();
      if (tx_id == 0 || c.transactions.contains(tx_id))
        in.Invalid("snapshot: bad xenstore transaction id");
      Txn& txn = c.transactions[tx_id];
      const uint32_t overlay = in.Count(kMaxItems, 5);
      for (uint32_t k = 0; k < overlay && in.ok(); ++k) {
        std::string name = in.String(kMaxName);
        std::optional<Node> node;
        if (in.Bool()) node = decode_node(generation);
        if (!ValidName(name) || !txn.overlay.emplace(std::move(name), std::move(node)).second)
          in.Invalid("snapshot: bad xenstore transaction node");
      }
      const uint32_t accessed = in.Count(kMaxItems, 12);
      for (uint32_t k = 0; k < accessed && in.ok(); ++k) {
        std::string name = in.String(kMaxName);
        const uint64_t seen = in.U64();
        if (!ValidName(name) || seen > generation ||
            !txn.accessed.emplace(std::move(name), seen).second)
          in.Invalid("snapshot: bad xenstore transaction access");
      }
      const uint32_t deltas = in.Count(kMaxItems, 12);
      for (uint32_t k = 0; k < deltas && in.ok(); ++k) {
        const DomId domid = in.U32();
        const int64_t delta = int64_t(in.U64());
        if (domid > kMaxDomid || delta > kMaxOwnedDelta || delta < -kMaxOwnedDelta ||
            !txn.owned_delta.emplace(domid, delta).second)
          in.Invalid("snapshot: bad xenstore transaction node count");
      }
      const uint32_t queued = in.Count(kMaxItems, 6);
      for (uint32_t k = 0; k < queued && in.ok(); ++k) {
        std::string name = in.String(kMaxName);
        Txn::Queued q{in.Bool(), std::nullopt};
        if (in.Bool()) q.old_perms = DecodePerms(in);
        if (!ValidName(name) || !txn.queued_events.emplace(std::move(name), std::move(q)).second)
          in.Invalid("snapshot: bad xenstore transaction event");
      }
    }
  }
  TRY(in.Finish());

  // ---- check: one tree rooted at "/", every node listed once by its parent ----
  auto bad = [](const char* what) { return snapshot::Corrupt(what); };
  if (!nodes.contains("/")) return bad("snapshot: xenstore tree has no root");
  for (const auto& [name, node] : nodes) {
    std::set<std::string_view> seen;
    for (const std::string& child : node.children) {
      if (child.empty() || child.find('/') != std::string::npos || !seen.insert(child).second)
        return bad("snapshot: bad xenstore child name");
      if (name[0] == '@' || !nodes.contains(name == "/" ? "/" + child : name + "/" + child))
        return bad("snapshot: xenstore child missing");
    }
    if (name[0] != '/' || name == "/") continue;
    auto parent = nodes.find(ParentOf(name));
    const std::string base = name.substr(name.rfind('/') + 1);
    if (parent == nodes.end() ||
        std::find(parent->second.children.begin(), parent->second.children.end(), base) ==
            parent->second.children.end())
      return bad("snapshot: xenstore node not listed by its parent");
  }

  MutexLock lock(mutex_);
  for (const auto& [id, saved] : conns) {
    auto here = conns_.find(id);
    if (here == conns_.end() || here->second.domid != saved.domid)
      return bad("snapshot: xenstore connection this VMM does not have");
  }

  // ---- apply ----
  nodes_ = std::move(nodes);
  generation_ = generation;
  owned_.clear();
  for (const auto& [name, node] : nodes_) ++owned_[node.perms[0].domid];
  introduced_ = std::move(introduced);
  for (auto& [id, saved] : conns) {
    Connection& c = conns_.at(id);
    c.next_tx = saved.next_tx;
    c.watches = std::move(saved.watches);
    c.transactions = std::move(saved.transactions);
  }
  return {};
}

}  // namespace xenkvm::xenstore
