// Errors as values. An Error carries the (positive) Xen errno a guest will see negated,
// plus a short static message for logs. Result<T> = tl::expected<T, Error>.
#pragma once

#include <type_traits>
#include <utility>

#include <tl/expected.hpp>

extern "C" {
#include <xen/errno.h>
}

namespace xenkvm {

struct Error {
  int xen_errno;        // positive XEN_E* value; the guest sees -xen_errno
  const char* message;  // static string, never owned
};

template <class T = void>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> Fail(int xen_errno, const char* message) {
  return tl::unexpected<Error>(Error{xen_errno, message});
}

// The value a hypercall returns in rax for a finished Result<>: 0 or -errno.
inline long ToHypercallReturn(const Result<>& r) { return r ? 0 : -static_cast<long>(r.error().xen_errno); }

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
#define TRY(...)                                                           \
  ({                                                                       \
    auto&& XENKVM_CONCAT(try_result_, __LINE__) = (__VA_ARGS__);           \
    if (!XENKVM_CONCAT(try_result_, __LINE__))                             \
      return tl::unexpected<::xenkvm::Error>(                              \
          std::move(XENKVM_CONCAT(try_result_, __LINE__)).error());        \
    ::xenkvm::detail::Unwrap(std::move(XENKVM_CONCAT(try_result_, __LINE__))); \
  })
