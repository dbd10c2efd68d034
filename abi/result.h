// Errors as values. An Error says what a guest sees (a positive Xen errno, returned negated) and,
// apart from that, what went wrong on the host: the host errno of a failed system call and
// which call failed. Result<T> = tl::expected<T, Error>.
//
// Fail(xen_errno, what) is a guest-visible refusal (a bad argument, a full table);
// HostFail(errno, what) is a failed host call (an ioctl, mmap) and reaches a guest only as
// XEN_EIO; UsageFail(what) is a bad request from the user (an option out of range).
// Describe() turns any of them into the one line a log or the CLI prints.
#pragma once

#include <cstring>
#include <string>
#include <tl/expected.hpp>
#include <type_traits>
#include <utility>

extern "C" {
#include <xen/errno.h>
}

namespace xenkvm {

enum class ErrorKind : unsigned char {
  kGuest,  // the guest's request was refused: xen_errno is the answer
  kHost,   // a host call failed: host_errno and message say which and why
  kUsage,  // the user's request (command line, configuration) was invalid
};

struct Error {
  int xen_errno;        // positive XEN_E* value; the guest sees -xen_errno
  const char* message;  // static string, never owned: what failed
  int host_errno = 0;   // positive host errno for kHost, else 0
  ErrorKind kind = ErrorKind::kGuest;
};

template <class T = void>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> Fail(int xen_errno, const char* message) {
  return tl::unexpected<Error>(Error{xen_errno, message});
}

// A host call failed with `host_errno` (e.g. errno after an ioctl). Guests see XEN_EIO.
inline tl::unexpected<Error> HostFail(int host_errno, const char* what) {
  return tl::unexpected<Error>(Error{XEN_EIO, what, host_errno, ErrorKind::kHost});
}

inline tl::unexpected<Error> UsageFail(const char* what) {
  return tl::unexpected<Error>(Error{XEN_EINVAL, what, 0, ErrorKind::kUsage});
}

// One line for a person: "KVM_RUN: Bad address (errno 14)", "vcpu not initialised (Xen
// errno 22)" or the usage message itself.
inline std::string Describe(const Error& e) {
  std::string line = e.message != nullptr ? e.message : "unknown error";
  switch (e.kind) {
    case ErrorKind::kHost:
      line += ": ";
      line += std::strerror(e.host_errno);
      line += " (errno " + std::to_string(e.host_errno) + ")";
      break;
    case ErrorKind::kGuest:
      line += " (Xen errno " + std::to_string(e.xen_errno) + ")";
      break;
    case ErrorKind::kUsage:
      break;
  }
  return line;
}

namespace detail {
template <class T>
T Unwrap(Result<T>&& r) {
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}
}  // namespace detail

}  // namespace xenkvm

// TRY(expr): evaluate a Result; on error return it from the enclosing function.
#define XENKVM_CONCAT_(a, b) a##b
#define XENKVM_CONCAT(a, b) XENKVM_CONCAT_(a, b)
#define TRY(...)                                                               \
  ({                                                                           \
    auto&& XENKVM_CONCAT(try_result_, __LINE__) = (__VA_ARGS__);               \
    if (!XENKVM_CONCAT(try_result_, __LINE__))                                 \
      return tl::unexpected<::xenkvm::Error>(                                  \
          std::move(XENKVM_CONCAT(try_result_, __LINE__)).error());            \
    ::xenkvm::detail::Unwrap(std::move(XENKVM_CONCAT(try_result_, __LINE__))); \
  })
