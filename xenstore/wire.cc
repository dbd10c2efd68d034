// xs_wire request handling; see wire.h. Request checks and answers follow tools/xenstored
// core.c process_message and the do_* handlers.
#include "xenstore/wire.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace xenkvm::xenstore {

namespace {

// The WireConnection whose HandleMessage runs on this thread: events it fires itself are queued
// without waking the transport, which pushes them out after the reply anyway.
thread_local const WireConnection* handling_on_this_thread = nullptr;

struct ErrorName {
  int xen_errno;
  const char* name;
};
// xs_wire.h's xsd_errors, in its order (EINVAL first: the fallback).
constexpr ErrorName kErrorNames[] = {
    {XEN_EINVAL, "EINVAL"}, {XEN_EACCES, "EACCES"},   {XEN_EEXIST, "EEXIST"},
    {XEN_EISDIR, "EISDIR"}, {XEN_ENOENT, "ENOENT"},   {XEN_ENOMEM, "ENOMEM"},
    {XEN_ENOSPC, "ENOSPC"}, {XEN_EIO, "EIO"},         {XEN_ENOTEMPTY, "ENOTEMPTY"},
    {XEN_ENOSYS, "ENOSYS"}, {XEN_EROFS, "EROFS"},     {XEN_EBUSY, "EBUSY"},
    {XEN_EAGAIN, "EAGAIN"}, {XEN_EISCONN, "EISCONN"}, {XEN_E2BIG, "E2BIG"},
    {XEN_EPERM, "EPERM"},
};

// The NUL-terminated strings at the start of a payload (bytes after the last NUL ignored), as
// xenstored's get_strings.
std::vector<std::string_view> Strings(std::string_view payload) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < payload.size()) {
    const size_t nul = payload.find('\0', pos);
    if (nul == std::string_view::npos) break;
    out.push_back(payload.substr(pos, nul - pos));
    pos = nul + 1;
  }
  return out;
}

// Exactly one string, NUL-terminated at the payload's end (xenstored's onearg).
Result<std::string_view> OneArg(std::string_view payload) {
  if (payload.empty() || payload.find('\0') != payload.size() - 1)
    return Fail(XEN_EINVAL, "xenstore: expected one argument");
  return payload.substr(0, payload.size() - 1);
}

size_t CountNuls(std::string_view payload) {
  return std::count(payload.begin(), payload.end(), '\0');
}

std::string Joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out.append(item).push_back('\0');
  return out;
}

// strtoul(…, 10) with xenstored's parse_domid checks: all digits, at most 65535.
Result<DomId> ParseDomid(std::string_view text) {
  if (text.empty() || text.size() > 5) return Fail(XEN_EINVAL, "xenstore: bad domid");
  uint32_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return Fail(XEN_EINVAL, "xenstore: bad domid");
    value = value * 10 + uint32_t(c - '0');
  }
  if (value > 65535) return Fail(XEN_EINVAL, "xenstore: bad domid");
  return value;
}

// atoi's reading of a DIRECTORY_PART offset: leading digits, anything else stops; a minus sign
// makes it negative, which xenstored then compares unsigned (beyond any list).
uint64_t ParseOffset(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && text[i] == ' ') ++i;
  if (i < text.size() && text[i] == '-') return UINT64_MAX;
  if (i < text.size() && text[i] == '+') ++i;
  uint64_t value = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    value = std::min<uint64_t>(value * 10 + uint64_t(text[i] - '0'), UINT32_MAX);
  return value;
}

constexpr std::string_view kOk{"OK\0", 3};

bool PrivilegedOnly(uint32_t type) {
  switch (type) {
    case XS_CONTROL:
    case XS_INTRODUCE:
    case XS_RELEASE:
    case XS_IS_DOMAIN_INTRODUCED:
    case XS_RESUME:
    case XS_SET_TARGET:
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* XsdErrorName(int xen_errno) {
  for (const auto& e : kErrorNames)
    if (e.xen_errno == xen_errno) return e.name;
  return "EINVAL";
}

WireConnection::WireConnection(Store& store, DomId domid, Limits limits,
                               std::function<void()> on_output)
    : store_(store), domid_(domid), limits_(limits), on_output_(std::move(on_output)) {
  conn_ = store_.Connect(domid_, [this](const std::string& path, const std::string& token) {
    QueueEvent(path, token, handling_on_this_thread != this);
  });
}

WireConnection::~WireConnection() { Detach(); }

void WireConnection::Detach() { store_.Disconnect(conn_); }

void WireConnection::QueueEvent(const std::string& path, const std::string& token, bool notify) {
  std::string bytes(sizeof(xsd_sockmsg), '\0');
  bytes.append(path).push_back('\0');
  bytes.append(token).push_back('\0');
  const size_t len = bytes.size() - sizeof(xsd_sockmsg);
  if (len > XENSTORE_PAYLOAD_MAX) return;  // xenstored doesn't send over-long events
  xsd_sockmsg header{.type = XS_WATCH_EVENT, .req_id = 0, .tx_id = 0, .len = uint32_t(len)};
  std::memcpy(bytes.data(), &header, sizeof(header));
  {
    MutexLock lock(out_mutex_);
    if (out_bytes_ + bytes.size() > limits_.queued_bytes) return;  // over quota: dropped
    // An identical event still waiting says all this one would (special paths excepted).
    if (path[0] != '@') {
      for (size_t i = 0; i < out_.size(); ++i)
        if (!out_[i].reply && (i > 0 || out_offset_ == 0) && out_[i].bytes == bytes) return;
    }
    out_bytes_ += bytes.size();
    out_.push_back(Out{std::move(bytes), false});
  }
  if (notify && on_output_) on_output_();
}

void WireConnection::QueueReply(const xsd_sockmsg& request, uint32_t type,
                                std::string_view payload) {
  if (payload.size() > XENSTORE_PAYLOAD_MAX) {
    payload = std::string_view("E2BIG\0", 6);
    type = XS_ERROR;
  }
  xsd_sockmsg header = request;
  header.type = type;
  header.len = uint32_t(payload.size());
  std::string bytes(reinterpret_cast<const char*>(&header), sizeof(header));
  bytes.append(payload);
  MutexLock lock(out_mutex_);
  out_bytes_ += bytes.size();
  ++outstanding_;
  out_.push_back(Out{std::move(bytes), true});
}

void WireConnection::HandleMessage(const xsd_sockmsg& header, std::string_view payload) {
  const WireConnection* outer = handling_on_this_thread;
  handling_on_this_thread = this;
  Result<std::string> reply = Dispatch(header, payload);
  if (reply) {
    QueueReply(header, header.type, *reply);
  } else {
    const char* name = XsdErrorName(reply.error().xen_errno);
    QueueReply(header, XS_ERROR, std::string_view(name, std::strlen(name) + 1));
  }
  // WATCH: the initial event follows the ack, as xenstored sends it, with the path as the
  // watcher gave it (canonical for absolute paths, its own relative form otherwise).
  if (reply && header.type == XS_WATCH) {
    auto args = Strings(payload);
    QueueEvent(std::string(args[0]), std::string(args[1]), false);
  }
  handling_on_this_thread = outer;
}

Result<std::string> WireConnection::Dispatch(const xsd_sockmsg& header, std::string_view payload) {
  const uint32_t type = header.type;
  if (type >= XS_TYPE_COUNT || type == XS_WATCH_EVENT || type == XS_ERROR || type == 20)
    return Fail(XEN_ENOSYS, "xenstore: unknown message type");
  if (PrivilegedOnly(type) && domid_ != kPrivilegedDomid)
    return Fail(XEN_EACCES, "xenstore: privileged operation");

  // Everything but WATCH/UNWATCH runs in the transaction the header names (0: none).
  TxId tx = 0;
  if (type != XS_WATCH && type != XS_UNWATCH) {
    tx = header.tx_id;
    if (tx != 0 && !store_.TransactionExists(conn_, tx))
      return Fail(XEN_ENOENT, "xenstore: no such transaction");
  }

  switch (type) {
    case XS_READ: {
      const std::string_view path = TRY(OneArg(payload));
      return store_.Read(conn_, tx, path);
    }
    case XS_WRITE: {
      const size_t nul = payload.find('\0');
      if (nul == std::string_view::npos) return Fail(XEN_EINVAL, "xenstore: no path");
      TRY(store_.Write(conn_, tx, payload.substr(0, nul), payload.substr(nul + 1)));
      return std::string(kOk);
    }
    case XS_MKDIR: {
      const std::string_view path = TRY(OneArg(payload));
      TRY(store_.Mkdir(conn_, tx, path));
    }
      return std::string(kOk);
    case XS_RM: {
      const std::string_view path = TRY(OneArg(payload));
      TRY(store_.Rm(conn_, tx, path));
    }
      return std::string(kOk);
    case XS_DIRECTORY: {
      const std::string_view path = TRY(OneArg(payload));
      return Joined(TRY(store_.Directory(conn_, tx, path)));
    }
    case XS_DIRECTORY_PART: {
      // path, offset -> "<generation>\0" + the children from offset that fit, with an extra
      // NUL once the list is complete.
      if (CountNuls(payload) != 2) return Fail(XEN_EINVAL, "xenstore: expected two arguments");
      auto args = Strings(payload);
      auto [generation, children] = TRY(store_.DirectoryWithGeneration(conn_, tx, args[0]));
      const std::string list = Joined(children);
      std::string out = std::to_string(generation);
      out.push_back('\0');
      const uint64_t offset = ParseOffset(args[1]);
      if (offset >= list.size()) {
        out.push_back('\0');
        return out;
      }
      const size_t max = XENSTORE_PAYLOAD_MAX - out.size() - 1;
      size_t len = 0;
      while (true) {
        const size_t child = std::strlen(list.c_str() + offset + len);
        if (len + child >= max) break;
        len += child + 1;
        if (offset + len == list.size()) break;
      }
      out.append(list, offset, len);
      if (offset + len == list.size()) out.push_back('\0');
      return out;
    }
    case XS_GET_PERMS: {
      const std::string_view path = TRY(OneArg(payload));
      std::string out;
      for (const auto& p : TRY(store_.GetPerms(conn_, tx, path)))
        out.append(FormatPermission(p)).push_back('\0');
      return out;
    }
    case XS_SET_PERMS: {
      const size_t count = CountNuls(payload);
      if (count < 2) return Fail(XEN_EINVAL, "xenstore: expected path and permissions");
      auto args = Strings(payload);
      Permissions perms;
      for (size_t i = 1; i < args.size(); ++i) {
        auto p = ParsePermission(args[i]);
        if (!p) return Fail(XEN_EINVAL, "xenstore: bad permission");
        perms.push_back(*p);
      }
      TRY(store_.SetPerms(conn_, tx, args[0], perms));
      return std::string(kOk);
    }
    case XS_WATCH: {
      auto args = Strings(payload);
      if (args.size() != 2) return Fail(XEN_EINVAL, "xenstore: expected path and token");
      TRY(store_.Watch(conn_, args[0], args[1], /*initial_event=*/false));
      return std::string(kOk);
    }
    case XS_UNWATCH: {
      auto args = Strings(payload);
      if (args.size() != 2) return Fail(XEN_EINVAL, "xenstore: expected path and token");
      TRY(store_.Unwatch(conn_, args[0], args[1]));
      return std::string(kOk);
    }
    case XS_RESET_WATCHES:
      store_.ResetWatches(conn_);
      return std::string(kOk);
    case XS_TRANSACTION_START: {
      const TxId id = TRY(store_.TransactionStart(conn_, tx));
      return std::to_string(id) + '\0';
    }
    case XS_TRANSACTION_END: {
      const std::string_view arg = TRY(OneArg(payload));
      if (arg != "T" && arg != "F") return Fail(XEN_EINVAL, "xenstore: expected T or F");
      TRY(store_.TransactionEnd(conn_, tx, arg == "T"));
      return std::string(kOk);
    }
    case XS_GET_DOMAIN_PATH: {
      const std::string_view arg = TRY(OneArg(payload));
      const DomId domid = TRY(ParseDomid(arg));
      return Store::DomainPath(domid) + '\0';
    }
    case XS_IS_DOMAIN_INTRODUCED: {  // dom0 only (refused above otherwise)
      const std::string_view arg = TRY(OneArg(payload));
      const DomId domid = TRY(ParseDomid(arg));
      return std::string(store_.IsIntroduced(domid) ? "T" : "F") + '\0';
    }
    default:
      // CONTROL, INTRODUCE, RELEASE, RESUME, SET_TARGET from dom0: the VMM is the toolstack
      // and drives these through the Store API, not the wire.
      return Fail(XEN_ENOSYS, "xenstore: not offered on the wire");
  }
}

Result<size_t> WireConnection::ConsumeInput(std::span<const char> bytes) {
  if (broken_) return Fail(XEN_EIO, "xenstore: connection broken");
  size_t used = 0;
  while (used < bytes.size()) {
    if (header_used_ < sizeof(xsd_sockmsg)) {
      // A new message starts only while the guest reads its replies.
      if (header_used_ == 0 && OutstandingReplies() >= limits_.outstanding) break;
      const size_t n = std::min(sizeof(xsd_sockmsg) - header_used_, bytes.size() - used);
      std::memcpy(header_bytes_ + header_used_, bytes.data() + used, n);
      header_used_ += n;
      used += n;
      if (header_used_ < sizeof(xsd_sockmsg)) break;
      xsd_sockmsg header;
      std::memcpy(&header, header_bytes_, sizeof(header));
      if (header.len > XENSTORE_PAYLOAD_MAX) {
        broken_ = true;
        return Fail(XEN_E2BIG, "xenstore: payload beyond XENSTORE_PAYLOAD_MAX");
      }
      payload_.clear();
      payload_.reserve(header.len);
    }
    xsd_sockmsg header;
    std::memcpy(&header, header_bytes_, sizeof(header));
    const size_t n = std::min<size_t>(header.len - payload_.size(), bytes.size() - used);
    payload_.append(bytes.data() + used, n);
    used += n;
    if (payload_.size() < header.len) break;
    header_used_ = 0;
    HandleMessage(header, payload_);
  }
  return used;
}

size_t WireConnection::CopyOutput(std::span<char> out) {
  MutexLock lock(out_mutex_);
  size_t copied = 0;
  while (copied < out.size() && !out_.empty()) {
    Out& front = out_.front();
    const size_t n = std::min(front.bytes.size() - out_offset_, out.size() - copied);
    std::memcpy(out.data() + copied, front.bytes.data() + out_offset_, n);
    copied += n;
    out_offset_ += n;
    if (out_offset_ == front.bytes.size()) {
      out_bytes_ -= front.bytes.size();
      if (front.reply) --outstanding_;
      out_.pop_front();
      out_offset_ = 0;
    }
  }
  return copied;
}

size_t WireConnection::OutputBytes() {
  MutexLock lock(out_mutex_);
  return out_bytes_ - out_offset_;
}

uint32_t WireConnection::OutstandingReplies() {
  MutexLock lock(out_mutex_);
  return outstanding_;
}

void WireConnection::Reset() {
  header_used_ = 0;
  payload_.clear();
  broken_ = false;
  store_.ResetWatches(conn_);
  MutexLock lock(out_mutex_);
  out_.clear();
  out_offset_ = out_bytes_ = 0;
  outstanding_ = 0;
}

}  // namespace xenkvm::xenstore
