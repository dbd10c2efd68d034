// The xenstore database; see store.h. Follows tools/xenstored core.c (nodes, permissions,
// errno_from_parents), transaction.c (accessed nodes and generations) and watch.c (matching,
// watch_permitted).
#include "xenstore/store.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>

namespace xenkvm::xenstore {

// A connection's watch callback and the count of its calls in flight. No lock is held while a
// callback runs (a callback may make changes that fire other connections' callbacks, on any
// thread, in any order); Disconnect waits for the calls in flight on other threads instead.
struct Store::CallbackHolder {
  std::mutex mutex;
  std::condition_variable idle;
  WatchCallback callback;  // immutable while live; cleared once no call is in flight
  bool live = true;        // guarded by mutex
  int in_flight = 0;       // guarded by mutex
};

namespace {
// The callbacks running on this thread, innermost last (for Disconnect from inside one).
thread_local std::vector<const void*> callbacks_on_this_thread;
}  // namespace

namespace {

constexpr std::string_view kIntroduceDomain = "@introduceDomain";
constexpr std::string_view kReleaseDomain = "@releaseDomain";

std::string Parent(const std::string& name) {
  const size_t slash = name.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return name.substr(0, slash);
}

std::string Basename(const std::string& name) { return name.substr(name.rfind('/') + 1); }

std::string Child(const std::string& parent, const std::string& base) {
  return parent == "/" ? "/" + base : parent + "/" + base;
}

// xenstored's is_child without depth: `child` is `parent` or below it.
bool IsChild(const std::string& child, const std::string& parent) {
  if (parent == "/") return child[0] == '/';
  if (child.compare(0, parent.size(), parent) != 0) return false;
  return child.size() == parent.size() || child[parent.size()] == '/';
}

bool ValidChars(std::string_view path) {
  return std::all_of(path.begin(), path.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '/' || c == '_' || c == '@';
  });
}

// Length of a leading "/local/domain/<id>/" (id up to 5 digits), else 0: the path quota counts
// only what follows it, as xenstored's canonicalize does.
size_t LocalPrefixLength(const std::string& name) {
  constexpr std::string_view kLocal = "/local/domain/";
  if (name.compare(0, kLocal.size(), kLocal) != 0) return 0;
  size_t i = kLocal.size();
  const size_t digits_start = i;
  while (i < name.size() && i - digits_start < 5 && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == digits_start || i >= name.size() || name[i] != '/') return 0;
  return i + 1;
}

}  // namespace

// A connection's view of the tree under mutex_: the global nodes, or in a transaction its
// overlay on top of them, recording every node it touches with the generation it saw.
class Store::View {
 public:
  View(Store& store, Connection& conn, Txn* tx) : store_(store), conn_(conn), tx_(tx) {}

  DomId domid() const { return conn_.domid; }
  bool privileged() const { return conn_.domid == kPrivilegedDomid; }
  Txn* tx() const { return tx_; }

  // The node at `name` or nullptr. In a transaction: ENOSPC beyond the accessed-nodes quota.
  Result<const Node*> Get(const std::string& name) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
    auto global = store_.nodes_.find(name);
    if (!tx_) return global == store_.nodes_.end() ? nullptr : &global->second;
    if (auto it = tx_->overlay.find(name); it != tx_->overlay.end())
      return it->second ? &*it->second : nullptr;
    if (!tx_->accessed.contains(name)) {
      if (!privileged() && tx_->accessed.size() + 1 >= store_.quotas_.transaction_nodes)
        return Fail(XEN_ENOSPC, "xenstore: transaction accessed-nodes quota");
      tx_->accessed[name] = global == store_.nodes_.end() ? 0 : global->second.generation;
    }
    return global == store_.nodes_.end() ? nullptr : &global->second;
  }

  // Stores `node` (already checked by the caller; `name` already read through Get).
  void Put(const std::string& name, Node node) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
    auto got = Get(name);  // callers read `name` first: this can't hit the quota
    const Node* old = got ? *got : nullptr;
    Account(old, -1);
    if (tx_) {
      node.generation = old ? old->generation : store_.generation_;
      Account(&node, +1);
      tx_->overlay[name] = std::move(node);
      return;
    }
    node.generation = ++store_.generation_;
    Account(&node, +1);
    store_.nodes_[name] = std::move(node);
  }

  void Delete(const std::string& name) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
    auto got = Get(name);
    Account(got ? *got : nullptr, -1);
    if (tx_)
      tx_->overlay[name] = std::nullopt;
    else
      store_.nodes_.erase(name);
  }

  // Nodes `domid` owns as this view sees them.
  int64_t Owned(DomId domid) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
    auto it = store_.owned_.find(domid);
    int64_t n = it == store_.owned_.end() ? 0 : it->second;
    if (tx_) {
      auto d = tx_->owned_delta.find(domid);
      if (d != tx_->owned_delta.end()) n += d->second;
    }
    return n;
  }

 private:
  void Account(const Node* node, int delta) XENKVM_NO_THREAD_SAFETY_ANALYSIS {
    if (!node || node->perms.empty()) return;
    const DomId owner = node->perms[0].domid;
    if (tx_)
      tx_->owned_delta[owner] += delta;
    else
      store_.owned_[owner] += delta;
  }

  Store& store_;
  Connection& conn_;
  Txn* tx_;
};

namespace {

// Bytes xenstored charges a node against the node-size quota: its header (generation, counts),
// 8 bytes per permission, the value and the NUL-terminated child names.
template <class NodeT>
size_t NodeSize(const NodeT& node) {
  size_t size = 16 + 8 * node.perms.size() + node.value.size();
  for (const auto& child : node.children) size += child.size() + 1;
  return size;
}

}  // namespace

Store::Store(Quotas quotas) : quotas_(quotas) {
  MutexLock lock(mutex_);
  // As xenstored's setup_structure: /, /tool, /tool/xenstored for dom0 only; @releaseDomain
  // readable by everyone, @introduceDomain by dom0 only.
  const Permissions dom0_only{{kPrivilegedDomid, kNone}};
  nodes_["/"] = Node{"", dom0_only, {"tool"}, generation_++};
  nodes_["/tool"] = Node{"", dom0_only, {"xenstored"}, generation_++};
  nodes_["/tool/xenstored"] = Node{"", dom0_only, {}, generation_++};
  nodes_[std::string(kReleaseDomain)] =
      Node{"", {{kPrivilegedDomid, kNone}, {kDomidAny, kRead}}, {}, generation_++};
  nodes_[std::string(kIntroduceDomain)] = Node{"", dom0_only, {}, generation_++};
  owned_[kPrivilegedDomid] = 5;
}

Store::~Store() = default;

std::string Store::DomainPath(DomId domid) { return "/local/domain/" + std::to_string(domid); }

ConnId Store::Connect(DomId domid, WatchCallback on_event) {
  MutexLock lock(mutex_);
  const ConnId id = next_conn_++;
  auto holder = std::make_shared<CallbackHolder>();
  holder->callback = std::move(on_event);
  Connection conn;
  conn.domid = domid;
  conn.callback = std::move(holder);
  conns_.emplace(id, std::move(conn));
  return id;
}

void Store::Disconnect(ConnId conn) {
  std::shared_ptr<CallbackHolder> holder;
  {
    MutexLock lock(mutex_);
    auto it = conns_.find(conn);
    if (it == conns_.end()) return;
    holder = it->second.callback;
    conns_.erase(it);
  }
  // Calls in flight on other threads finish first; one this thread is inside can't be waited for.
  const int mine = int(
      std::count(callbacks_on_this_thread.begin(), callbacks_on_this_thread.end(), holder.get()));
  std::unique_lock lock(holder->mutex);
  holder->live = false;
  holder->idle.wait(lock, [&] { return holder->in_flight <= mine; });
  if (mine == 0) holder->callback = nullptr;
}

DomId Store::DomainOf(ConnId conn) {
  MutexLock lock(mutex_);
  auto it = conns_.find(conn);
  return it == conns_.end() ? kPrivilegedDomid : it->second.domid;
}

uint32_t Store::NodesOwnedBy(DomId domid) {
  MutexLock lock(mutex_);
  auto it = owned_.find(domid);
  return it == owned_.end() ? 0 : it->second;
}

void Store::Dispatch(Events& events) {
  for (Event& e : events) {
    CallbackHolder& h = *e.callback;
    {
      std::lock_guard lock(h.mutex);
      if (!h.live || !h.callback) continue;
      ++h.in_flight;
    }
    callbacks_on_this_thread.push_back(&h);
    h.callback(e.path, e.token);
    callbacks_on_this_thread.pop_back();
    std::lock_guard lock(h.mutex);
    if (--h.in_flight == 0) h.idle.notify_all();
  }
}

Result<Store::Connection*> Store::ConnLocked(ConnId conn) {
  auto it = conns_.find(conn);
  if (it == conns_.end()) return Fail(XEN_EINVAL, "xenstore: unknown connection");
  return &it->second;
}

Result<std::string> Store::CanonicalLocked(const Connection& c, std::string_view path,
                                           bool allow_special) {
  if (path.empty() || !ValidChars(path) || (path[0] == '@' && !allow_special))
    return Fail(XEN_EINVAL, "xenstore: invalid path");
  std::string name = (path[0] != '/' && path[0] != '@')
                         ? DomainPath(c.domid) + "/" + std::string(path)
                         : std::string(path);
  if ((name.size() > 1 && name.back() == '/') || name.find("//") != std::string::npos)
    return Fail(XEN_EINVAL, "xenstore: invalid path");
  if (c.domid != kPrivilegedDomid && name.size() - LocalPrefixLength(name) >= quotas_.path_max)
    return Fail(XEN_EINVAL, "xenstore: path too long");
  return name;
}

Result<Store::View> Store::ViewLocked(ConnId conn, TxId tx) {
  Connection* c = TRY(ConnLocked(conn));
  if (tx == 0) return View(*this, *c, nullptr);
  auto it = c->transactions.find(tx);
  if (it == c->transactions.end()) return Fail(XEN_ENOENT, "xenstore: no such transaction");
  return View(*this, *c, &it->second);
}

namespace {

// xenstored's errno_from_parents: a failed lookup says ENOENT (or EACCES for a node that exists)
// only if the nearest existing ancestor grants the access; else EACCES, so a domain learns
// nothing about nodes it may not see.
template <class ViewT>
Error ErrorFromParents(ViewT& view, std::string name, int error, uint8_t access) {
  while (name != "/") {
    name = Parent(name);
    auto parent = view.Get(name);
    if (!parent) return parent.error();
    if (*parent) {
      if (AccessFor((*parent)->perms, view.domid()) & access)
        return Error{error, "xenstore: lookup failed"};
      break;
    }
  }
  return Error{XEN_EACCES, "xenstore: permission denied"};
}

template <class ViewT,
          class NodeT = std::remove_cvref_t<decltype(**std::declval<ViewT&>().Get(std::string()))>>
Result<const NodeT*> GetChecked(ViewT& view, const std::string& name, uint8_t access) {
  const NodeT* node = TRY(view.Get(name));
  if (node && (AccessFor(node->perms, view.domid()) & access) == access) return node;
  return tl::unexpected(ErrorFromParents(view, name, node ? XEN_EACCES : XEN_ENOENT, access));
}

}  // namespace

bool Store::WatchPermittedLocked(DomId watcher, const std::string& name,
                                 const Permissions* old_perms) {
  if (old_perms && (AccessFor(*old_perms, watcher) & kRead)) return true;
  auto node = nodes_.find(name);
  if (node == nodes_.end()) return false;
  if (AccessFor(node->second.perms, watcher) & kRead) return true;
  auto parent = nodes_.find(Parent(name));
  return parent != nodes_.end() && (AccessFor(parent->second.perms, watcher) & kRead);
}

void Store::FireLocked(const std::string& name, bool exact, const Permissions* old_perms,
                       Events& events) {
  for (auto& [id, conn] : conns_) {
    if (conn.watches.empty() || !WatchPermittedLocked(conn.domid, name, old_perms)) continue;
    for (const WatchEntry& w : conn.watches) {
      if (exact ? name != w.node : !IsChild(name, w.node)) continue;
      events.push_back(
          Event{conn.callback, name.substr(std::min(w.prefix_len, name.size())), w.token});
    }
  }
}

void Store::FireOrQueueLocked(View& view, const std::string& name, bool exact,
                              const Permissions* old_perms, Events& events) {
  Txn* tx = view.tx();
  if (!tx) return FireLocked(name, exact, old_perms, events);
  auto [it, fresh] = tx->queued_events.try_emplace(name, Txn::Queued{exact, std::nullopt});
  if (fresh) {
    // Watchers that could read the node before the transaction changed it hear of the change.
    auto global = nodes_.find(name);
    if (old_perms)
      it->second.old_perms = *old_perms;
    else if (global != nodes_.end())
      it->second.old_perms = global->second.perms;
  } else if (!exact) {
    it->second.exact = false;
  }
}

// ---- operations ----

Result<std::string> Store::Read(ConnId conn, TxId tx, std::string_view path) {
  MutexLock lock(mutex_);
  View view = TRY(ViewLocked(conn, tx));
  Connection* c = TRY(ConnLocked(conn));
  const std::string name = TRY(CanonicalLocked(*c, path, false));
  const Node* node = TRY(GetChecked(view, name, kRead));
  return node->value;
}

Result<std::pair<uint64_t, std::vector<std::string>>> Store::DirectoryWithGeneration(
    ConnId conn, TxId tx, std::string_view path) {
  MutexLock lock(mutex_);
  View view = TRY(ViewLocked(conn, tx));
  Connection* c = TRY(ConnLocked(conn));
  const std::string name = TRY(CanonicalLocked(*c, path, false));
  const Node* node = TRY(GetChecked(view, name, kRead));
  return std::pair{node->generation, node->children};
}

Result<std::vector<std::string>> Store::Directory(ConnId conn, TxId tx, std::string_view path) {
  auto r = TRY(DirectoryWithGeneration(conn, tx, path));
  return std::move(r.second);
}

Result<Permissions> Store::GetPerms(ConnId conn, TxId tx, std::string_view path) {
  MutexLock lock(mutex_);
  View view = TRY(ViewLocked(conn, tx));
  Connection* c = TRY(ConnLocked(conn));
  const std::string name = TRY(CanonicalLocked(*c, path, true));
  const Node* node = TRY(GetChecked(view, name, kRead));
  return node->perms;
}

namespace {

// Creates `name` and any missing ancestors as xenstored's construct_node/create_node: each new
// node inherits its parent's permissions, an unprivileged creator becomes its owner. Every check
// (quotas, sizes, transaction accesses) happens before the first change, so a failure changes
// nothing.
template <class ViewT, class NodeT>
Result<> CreateNode(ViewT& view, const Quotas& quotas, const std::string& name,
                    std::string_view value) {
  std::vector<std::string> missing{name};
  const NodeT* parent = nullptr;
  for (std::string p = Parent(name);; p = Parent(p)) {
    parent = TRY(view.Get(p));
    if (parent) break;
    missing.push_back(p);
  }
  if (!view.privileged() &&
      view.Owned(view.domid()) + int64_t(missing.size()) >= int64_t(quotas.nodes))
    return Fail(XEN_ENOSPC, "xenstore: node quota");

  // Top-down: the existing parent gains a child, each new node its own child.
  std::vector<std::pair<std::string, NodeT>> writes;
  NodeT top = *parent;
  top.children.push_back(Basename(missing.back()));
  writes.emplace_back(Parent(missing.back()), std::move(top));
  Permissions perms = parent->perms;
  if (!view.privileged()) perms[0].domid = view.domid();
  for (size_t i = missing.size(); i-- > 0;) {
    NodeT node;
    node.perms = perms;
    if (i > 0) node.children.push_back(Basename(missing[i - 1]));
    if (i == 0) node.value = std::string(value);
    writes.emplace_back(missing[i], std::move(node));
  }
  if (!view.privileged())
    for (const auto& [path, node] : writes)
      if (NodeSize(node) >= quotas.node_size) return Fail(XEN_ENOSPC, "xenstore: node too big");
  for (auto& [path, node] : writes) view.Put(path, std::move(node));
  return {};
}

}  // namespace

// The frame of a change to one node: under mutex_, the caller's view and `path` made
// canonical; `change` does the rest; watches fire once the lock is dropped.
template <class Change>
Result<> Store::ChangeNode(ConnId conn, TxId tx, std::string_view path, Change&& change) {
  Events events;
  {
    MutexLock lock(mutex_);
    View view = TRY(ViewLocked(conn, tx));
    Connection* c = TRY(ConnLocked(conn));
    const std::string name = TRY(CanonicalLocked(*c, path, false));
    TRY(change(view, name, events));
  }
  Dispatch(events);
  return {};
}

Result<> Store::Write(ConnId conn, TxId tx, std::string_view path, std::string_view value) {
  auto write = [&](View& view, const std::string& name, Events& events) -> Result<> {
    mutex_.AssertHeld();  // ChangeNode holds it
    auto node = GetChecked(view, name, kWrite);
    if (node) {
      Node updated = **node;
      updated.value = std::string(value);
      if (!view.privileged() && NodeSize(updated) >= quotas_.node_size)
        return Fail(XEN_ENOSPC, "xenstore: node too big");
      view.Put(name, std::move(updated));
    } else if (node.error().xen_errno == XEN_ENOENT) {
      TRY((CreateNode<View, Node>(view, quotas_, name, value)));
    } else {
      return tl::unexpected(node.error());
    }
    FireOrQueueLocked(view, name, false, nullptr, events);
    return {};
  };
  return ChangeNode(conn, tx, path, write);
}

Result<> Store::Mkdir(ConnId conn, TxId tx, std::string_view path) {
  auto mkdir = [&](View& view, const std::string& name, Events& events) -> Result<> {
    mutex_.AssertHeld();  // ChangeNode holds it
    auto node = GetChecked(view, name, kWrite);
    if (node) return {};  // exists: fine
    if (node.error().xen_errno != XEN_ENOENT) return tl::unexpected(node.error());
    TRY((CreateNode<View, Node>(view, quotas_, name, "")));
    FireOrQueueLocked(view, name, false, nullptr, events);
    return {};
  };
  return ChangeNode(conn, tx, path, mkdir);
}

Result<> Store::RemoveSubtreeLocked(View& view, const std::string& name, Events& events) {
  // Collect (and in a transaction, access) every node first: a quota failure changes nothing.
  std::vector<std::string> order;  // children before parents, as xenstored's walk exits
  std::vector<std::pair<std::string, size_t>> stack{{name, 0}};
  while (!stack.empty()) {
    auto& [path, next] = stack.back();
    const Node* node = TRY(view.Get(path));
    if (node && next < node->children.size()) {
      std::string child = Child(path, node->children[next++]);
      stack.emplace_back(std::move(child), 0);
      continue;
    }
    if (node) order.push_back(path);
    stack.pop_back();
  }
  const std::string parent_name = Parent(name);
  const Node* parent = TRY(view.Get(parent_name));
  // Watches fire while the nodes are still visible (their permissions decide who hears).
  for (const std::string& path : order)
    FireOrQueueLocked(view, path, path != name, &(*view.Get(path))->perms, events);
  for (const std::string& path : order) view.Delete(path);
  if (parent) {
    Node updated = *parent;
    std::erase(updated.children, Basename(name));
    view.Put(parent_name, std::move(updated));  // shrinking: no size check, as xenstored
  }
  return {};
}

Result<> Store::Rm(ConnId conn, TxId tx, std::string_view path) {
  auto rm = [&](View& view, const std::string& name, Events& events) -> Result<> {
    mutex_.AssertHeld();  // ChangeNode holds it
    auto node = GetChecked(view, name, kWrite);
    if (!node) {
      // Removing what doesn't exist is fine if its parent does.
      if (node.error().xen_errno != XEN_ENOENT) return tl::unexpected(node.error());
      if (TRY(view.Get(Parent(name)))) return {};
      return Fail(XEN_ENOENT, "xenstore: no such node");
    }
    if (name == "/") return Fail(XEN_EINVAL, "xenstore: can't remove /");
    return RemoveSubtreeLocked(view, name, events);
  };
  return ChangeNode(conn, tx, path, rm);
}

Result<> Store::SetPerms(ConnId conn, TxId tx, std::string_view path, const Permissions& perms) {
  Events events;
  {
    MutexLock lock(mutex_);
    View view = TRY(ViewLocked(conn, tx));
    if (perms.empty()) return Fail(XEN_EINVAL, "xenstore: no permissions");
    if (!view.privileged() && perms.size() >= quotas_.node_perms)
      return Fail(XEN_ENOSPC, "xenstore: permission quota");
    Connection* c = TRY(ConnLocked(conn));
    const std::string name = TRY(CanonicalLocked(*c, path, true));
    const Node* node = TRY(GetChecked(view, name, kWrite | kOwner));
    // Unprivileged domains may not give their nodes away.
    if (!view.privileged() && perms[0].domid != node->perms[0].domid)
      return Fail(XEN_EPERM, "xenstore: can't change owner");
    Node updated = *node;
    const Permissions old_perms = node->perms;
    updated.perms = perms;
    if (!view.privileged() && NodeSize(updated) >= quotas_.node_size)
      return Fail(XEN_ENOSPC, "xenstore: node too big");
    view.Put(name, std::move(updated));
    if (name[0] == '@')
      FireLocked(name, true, &old_perms, events);  // special nodes never sit in transactions
    else
      FireOrQueueLocked(view, name, false, &old_perms, events);
  }
  Dispatch(events);
  return {};
}

// ---- watches ----

Result<> Store::Watch(ConnId conn, std::string_view path, std::string_view token,
                      bool initial_event) {
  Events events;
  {
    MutexLock lock(mutex_);
    Connection* c = TRY(ConnLocked(conn));
    const bool relative = !path.empty() && path[0] != '/' && path[0] != '@';
    const std::string name = TRY(CanonicalLocked(*c, path, true));
    for (const auto& w : c->watches)
      if (w.node == name && w.token == token) return Fail(XEN_EEXIST, "xenstore: watch exists");
    if (c->domid != kPrivilegedDomid && c->watches.size() + 1 >= quotas_.watches)
      return Fail(XEN_ENOSPC, "xenstore: watch quota");
    const size_t prefix = relative ? DomainPath(c->domid).size() + 1 : 0;
    c->watches.push_back(WatchEntry{name, std::string(token), prefix});
    if (initial_event)
      events.push_back(Event{c->callback, name.substr(prefix), std::string(token)});
  }
  Dispatch(events);
  return {};
}

Result<> Store::Unwatch(ConnId conn, std::string_view path, std::string_view token) {
  MutexLock lock(mutex_);
  Connection* c = TRY(ConnLocked(conn));
  const std::string name = TRY(CanonicalLocked(*c, path, true));
  auto it = std::find_if(c->watches.begin(), c->watches.end(),
                         [&](const auto& w) { return w.node == name && w.token == token; });
  if (it == c->watches.end()) return Fail(XEN_ENOENT, "xenstore: no such watch");
  c->watches.erase(it);
  return {};
}

void Store::ResetWatches(ConnId conn) {
  MutexLock lock(mutex_);
  auto c = ConnLocked(conn);
  if (!c) return;
  (*c)->watches.clear();
  (*c)->transactions.clear();
}

// ---- transactions ----

Result<TxId> Store::TransactionStart(ConnId conn, TxId current) {
  MutexLock lock(mutex_);
  Connection* c = TRY(ConnLocked(conn));
  if (current != 0) {
    if (!c->transactions.contains(current)) return Fail(XEN_ENOENT, "xenstore: no transaction");
    return Fail(XEN_EBUSY, "xenstore: nested transaction");
  }
  if (c->domid != kPrivilegedDomid && c->transactions.size() + 1 >= quotas_.transactions)
    return Fail(XEN_ENOSPC, "xenstore: transaction quota");
  TxId id = c->next_tx;
  while (id == 0 || c->transactions.contains(id)) ++id;
  c->next_tx = id + 1;
  c->transactions.emplace(id, Txn{});
  return id;
}

bool Store::TransactionExists(ConnId conn, TxId tx) {
  MutexLock lock(mutex_);
  auto c = ConnLocked(conn);
  return c && (*c)->transactions.contains(tx);
}

Result<> Store::TransactionEnd(ConnId conn, TxId tx, bool commit) {
  Events events;
  {
    MutexLock lock(mutex_);
    Connection* c = TRY(ConnLocked(conn));
    auto it = c->transactions.find(tx);
    if (tx == 0 || it == c->transactions.end())
      return Fail(XEN_ENOENT, "xenstore: no such transaction");
    Txn txn = std::move(it->second);
    c->transactions.erase(it);
    if (!commit) return {};

    for (const auto& [path, generation] : txn.accessed) {
      auto node = nodes_.find(path);
      if ((node == nodes_.end() ? 0 : node->second.generation) != generation)
        return Fail(XEN_EAGAIN, "xenstore: transaction conflict");
    }
    if (c->domid != kPrivilegedDomid) {
      auto delta = txn.owned_delta.find(c->domid);
      if (delta != txn.owned_delta.end() && delta->second > 0 &&
          int64_t(owned_[c->domid]) + delta->second >= int64_t(quotas_.nodes))
        return Fail(XEN_ENOSPC, "xenstore: node quota");
    }
    for (auto& [path, node] : txn.overlay) {
      if (auto old = nodes_.find(path); old != nodes_.end()) {
        owned_[old->second.perms[0].domid]--;
        if (!node) nodes_.erase(old);
      }
      if (node) {
        owned_[node->perms[0].domid]++;
        node->generation = ++generation_;
        nodes_[path] = std::move(*node);
      }
    }
    for (const auto& [path, queued] : txn.queued_events)
      FireLocked(path, queued.exact, queued.old_perms ? &*queued.old_perms : nullptr, events);
  }
  Dispatch(events);
  return {};
}

// ---- domains ----

void Store::IntroduceDomain(DomId domid) {
  Events events;
  {
    MutexLock lock(mutex_);
    introduced_[domid] = true;
    FireLocked(std::string(kIntroduceDomain), true, nullptr, events);
  }
  Dispatch(events);
}

void Store::ReleaseDomain(DomId domid) {
  Events events;
  {
    MutexLock lock(mutex_);
    introduced_.erase(domid);
    FireLocked(std::string(kReleaseDomain), true, nullptr, events);
  }
  Dispatch(events);
}

bool Store::IsIntroduced(DomId domid) {
  MutexLock lock(mutex_);
  return introduced_.contains(domid);
}

}  // namespace xenkvm::xenstore
