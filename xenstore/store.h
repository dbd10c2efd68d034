// The xenstore database with xenstored's semantics (docs/misc/xenstore.txt, tools/xenstored):
// a tree of nodes with values and permissions, transactions with per-node conflict detection
// (EAGAIN), watches, and per-domain quotas that apply to unprivileged domains.
//
// Every operation is made by a connection (a guest ring or an in-VMM client) on behalf of one
// domain; dom0 (kPrivilegedDomid) is privileged. Errors are Result errors with Xen's errno
// values, which the wire layer turns into xsd_errors strings.
//
// Threads: any. Lock: mutex_ guards the whole database. Watch callbacks run with no Store lock
// held, on the thread whose operation fired them, before that operation returns; a callback may
// call the Store again. One connection's callback may run on several threads at once: it must
// be thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "abi/result.h"
#include "abi/sync.h"
#include "snapshot/codec.h"
#include "xenstore/permissions.h"

namespace xenkvm::xenstore {

using ConnId = uint32_t;
using TxId = uint32_t;  // 0: no transaction

// xenstored's default quotas (tools/xenstored/domain.c `quotas[]`). A request fails when it
// would bring a count to the quota (xenstored checks `count + add >= quota`). Dom0 is exempt.
struct Quotas {
  uint32_t nodes = 1000;              // nodes owned per domain -> ENOSPC
  uint32_t watches = 128;             // watches per connection -> ENOSPC
  uint32_t transactions = 10;         // open transactions per connection -> ENOSPC
  uint32_t transaction_nodes = 1024;  // nodes accessed by one transaction -> ENOSPC
  uint32_t node_perms = 5;            // permission entries per node -> ENOSPC
  uint32_t path_max = 2048;           // path length below /local/domain/<id>/ -> EINVAL
  uint32_t node_size = 2048;  // bytes of one node (header, perms, value, children) -> ENOSPC
};

class Store {
 public:
  // Called once per fired watch with the path as the watcher sees it (relative to its home if
  // it registered a relative path) and its token.
  using WatchCallback = std::function<void(const std::string& path, const std::string& token)>;

  explicit Store(Quotas quotas = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const Quotas& quotas() const { return quotas_; }

  // ---- connections ----
  // A client acting as `domid`. on_event receives its watch events (may be empty if it sets
  // no watches). After Disconnect returns no call of it runs on another thread (it may be
  // called from inside one).
  ConnId Connect(DomId domid, WatchCallback on_event = {});
  void Disconnect(ConnId conn);
  // The domain a connection acts for; kPrivilegedDomid for an unknown id.
  DomId DomainOf(ConnId conn);

  // ---- xs_wire operations (paths absolute, or relative to /local/domain/<domid>) ----
  Result<std::string> Read(ConnId conn, TxId tx, std::string_view path);
  Result<> Write(ConnId conn, TxId tx, std::string_view path, std::string_view value);
  Result<> Mkdir(ConnId conn, TxId tx, std::string_view path);
  Result<> Rm(ConnId conn, TxId tx, std::string_view path);
  Result<std::vector<std::string>> Directory(ConnId conn, TxId tx, std::string_view path);
  // The node's generation (changes with every modification) with its children.
  Result<std::pair<uint64_t, std::vector<std::string>>> DirectoryWithGeneration(
      ConnId conn, TxId tx, std::string_view path);
  Result<Permissions> GetPerms(ConnId conn, TxId tx, std::string_view path);
  Result<> SetPerms(ConnId conn, TxId tx, std::string_view path, const Permissions& perms);

  // Watches fire on the node and everything below it. With initial_event the watch fires once
  // at once, as xenstored does after WATCH (the wire layer sends that one itself after its ack).
  Result<> Watch(ConnId conn, std::string_view path, std::string_view token,
                 bool initial_event = true);
  Result<> Unwatch(ConnId conn, std::string_view path, std::string_view token);
  // RESET_WATCHES: drops the connection's watches and transactions.
  void ResetWatches(ConnId conn);

  Result<TxId> TransactionStart(ConnId conn, TxId current = 0);
  // commit=false aborts. A commit after another change to a node the transaction read or wrote
  // fails with EAGAIN (nothing applied). Unknown id or 0: ENOENT. The id is gone either way.
  Result<> TransactionEnd(ConnId conn, TxId tx, bool commit);
  bool TransactionExists(ConnId conn, TxId tx);

  // ---- domains (the VMM acts as the toolstack) ----
  // Fire @introduceDomain / @releaseDomain watches.
  void IntroduceDomain(DomId domid);
  void ReleaseDomain(DomId domid);
  bool IsIntroduced(DomId domid);

  // "/local/domain/<domid>"
  static std::string DomainPath(DomId domid);

  // For tests and statistics.
  uint32_t NodesOwnedBy(DomId domid);

  // ---- snapshots (docs/snapshots.md, store_snapshot.cc) ----
  // The tree (values, permissions, generations), the domains introduced, and each
  // connection's watches and open transactions. Restore checks the whole input first and
  // answers -EINVAL naming what is wrong, changing nothing; then it replaces the tree. A saved
  // connection is matched by id to this Store's own, which must exist and act for the same
  // domain (a restoring VMM connects its clients in the same order); callbacks stay this
  // Store's. Per-domain node counts are recounted from the tree.
  void Save(snapshot::Encoder& out);
  Result<> Restore(snapshot::Decoder& in);

 private:
  struct Node {
    std::string value;
    Permissions perms;
    std::vector<std::string> children;  // in creation order, as xenstored lists them
    uint64_t generation = 0;
  };
  struct Txn {
    std::map<std::string, std::optional<Node>> overlay;  // written nodes; nullopt = deleted
    std::map<std::string, uint64_t> accessed;            // generation at first access; 0 absent
    std::map<DomId, int64_t> owned_delta;                // node ownership changes
    struct Queued {
      bool exact;
      std::optional<Permissions> old_perms;  // the node's permissions when first changed
    };
    std::map<std::string, Queued> queued_events;  // fired at commit
  };
  struct CallbackHolder;  // the callback and its lock (see store.cc)
  struct WatchEntry {
    std::string node;  // canonical
    std::string token;
    size_t prefix_len;  // bytes stripped from event paths (relative watches)
  };
  struct Connection {
    DomId domid;
    std::shared_ptr<CallbackHolder> callback;
    std::vector<WatchEntry> watches;
    std::map<TxId, Txn> transactions;
    TxId next_tx = 1;
  };
  struct Event {
    std::shared_ptr<CallbackHolder> callback;
    std::string path;
    std::string token;
  };
  class View;  // a connection's view of the tree: global, or through a transaction

  using Events = std::vector<Event>;

  Result<Connection*> ConnLocked(ConnId conn) XENKVM_REQUIRES(mutex_);
  Result<std::string> CanonicalLocked(const Connection& c, std::string_view path,
                                      bool allow_special) XENKVM_REQUIRES(mutex_);
  Result<View> ViewLocked(ConnId conn, TxId tx) XENKVM_REQUIRES(mutex_);
  void FireLocked(const std::string& name, bool exact, const Permissions* old_perms, Events& events)
      XENKVM_REQUIRES(mutex_);
  void FireOrQueueLocked(View& view, const std::string& name, bool exact,
                         const Permissions* old_perms, Events& events) XENKVM_REQUIRES(mutex_);
  bool WatchPermittedLocked(DomId watcher, const std::string& name, const Permissions* old_perms)
      XENKVM_REQUIRES(mutex_);
  Result<> RemoveSubtreeLocked(View& view, const std::string& name, Events& events)
      XENKVM_REQUIRES(mutex_);
  static void Dispatch(Events& events);
  template <class Change>
  Result<> ChangeNode(ConnId conn, TxId tx, std::string_view path, Change&& change)
      XENKVM_EXCLUDES(mutex_);

  const Quotas quotas_;
  Mutex mutex_;
  std::unordered_map<std::string, Node> nodes_ XENKVM_GUARDED_BY(mutex_);
  std::unordered_map<DomId, uint32_t> owned_ XENKVM_GUARDED_BY(mutex_);  // nodes per owner
  std::map<ConnId, Connection> conns_ XENKVM_GUARDED_BY(mutex_);
  std::map<DomId, bool> introduced_ XENKVM_GUARDED_BY(mutex_);
  ConnId next_conn_ XENKVM_GUARDED_BY(mutex_) = 1;
  uint64_t generation_ XENKVM_GUARDED_BY(mutex_) = 1;
};

}  // namespace xenkvm::xenstore
