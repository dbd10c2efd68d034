// Xenstore node permissions as xenstored defines them (docs/misc/xenstore.txt "PERMISSIONS"):
// entry 0 names the owner and the access of every domain not listed; later entries grant one
// domain read, write, both or none. The owner and the privileged domain (dom0) have full access.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace xenkvm::xenstore {

using DomId = uint32_t;
inline constexpr DomId kPrivilegedDomid = 0;  // dom0: the VMM's own clients
inline constexpr DomId kDomidAny = 0x7FF5;    // xen.h DOMID_ANY: matches every domain

// Access bits, numbered as xenstore_lib.h's XS_PERM_* (the wire carries letters instead).
enum Access : uint8_t {
  kNone = 0,
  kRead = 1,
  kWrite = 2,
  kBoth = kRead | kWrite,
  kOwner = 8,  // only in answers of AccessFor, never stored
};

struct Permission {
  DomId domid = kPrivilegedDomid;
  uint8_t access = kNone;  // kNone, kRead, kWrite or kBoth
  bool operator==(const Permission&) const = default;
};

// Entry 0 is the owner. Never empty in a stored node.
using Permissions = std::vector<Permission>;

// What `caller` may do on a node with these permissions (kRead|kWrite|kOwner for owners and
// dom0), following xenstored's perm_for_conn.
inline uint8_t AccessFor(const Permissions& perms, DomId caller) {
  constexpr uint8_t kAll = kRead | kWrite | kOwner;
  if (caller == kPrivilegedDomid || perms.empty()) return kAll;
  if (perms[0].domid == caller || perms[0].domid == kDomidAny) return kAll;
  for (size_t i = 1; i < perms.size(); ++i)
    if (perms[i].domid == caller || perms[i].domid == kDomidAny) return perms[i].access;
  return perms[0].access;
}

// "r5", "n0", "w7", "b1": one permission in its wire form.
inline std::string FormatPermission(const Permission& p) {
  static constexpr char kLetters[4] = {'n', 'r', 'w', 'b'};
  return kLetters[p.access & kBoth] + std::to_string(p.domid);
}

// Parses the wire form; nullopt for anything else (unknown letter, no or non-decimal domid,
// a domid beyond 16 bits).
inline std::optional<Permission> ParsePermission(std::string_view text) {
  if (text.size() < 2 || text.size() > 6) return std::nullopt;
  Permission p;
  switch (text[0]) {
    case 'n':
      p.access = kNone;
      break;
    case 'r':
      p.access = kRead;
      break;
    case 'w':
      p.access = kWrite;
      break;
    case 'b':
      p.access = kBoth;
      break;
    default:
      return std::nullopt;
  }
  uint32_t domid = 0;
  for (char c : text.substr(1)) {
    if (c < '0' || c > '9') return std::nullopt;
    domid = domid * 10 + uint32_t(c - '0');
  }
  if (domid > 0xFFFF) return std::nullopt;
  p.domid = domid;
  return p;
}

}  // namespace xenkvm::xenstore
