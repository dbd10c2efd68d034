// Migration stream endpoints; see endpoint.h.
#include "snapshot/endpoint.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace xenkvm::snapshot {

namespace {

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return UsageFail("migration socket path empty or too long (at most 107 bytes)");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

std::string UnixPath(const std::string& uri) { return uri.substr(5); }
bool IsUnix(const std::string& uri) { return uri.rfind("unix:", 0) == 0; }

Result<Channel> Exec(const std::string& command) {
  if (command.empty()) return UsageFail("exec: needs a command");
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return HostFail(errno, "socketpair for exec:");
  const char* argv[] = {"sh", "-c", command.c_str(), nullptr};
  sigset_t none;
  sigemptyset(&none);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return HostFail(e, "fork for exec:");
  }
  if (pid == 0) {
    // Only async-signal-safe calls here (the VMM has threads). The VMM blocks its stop signals
    // in every thread; the command must not inherit that.
    ::dup2(fds[1], 0);
    ::dup2(fds[1], 1);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv("/bin/sh", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[1]);
  return Channel(fds[0], fds[0], pid);
}

}  // namespace

Result<Channel> ConnectStream(const std::string& uri) {
  if (uri.rfind("exec:", 0) == 0) return Exec(uri.substr(5));
  if (!IsUnix(uri)) return UsageFail("migration target must be unix:PATH or exec:COMMAND");
  const sockaddr_un addr = TRY(UnixAddress(UnixPath(uri)));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return HostFail(errno, "socket(AF_UNIX)");
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    ::close(fd);
    return HostFail(e, "connect to the migration destination");
  }
  return Channel(fd, fd);
}

Result<StreamListener> StreamListener::Listen(const std::string& uri) {
  if (!IsUnix(uri)) return UsageFail("--incoming must be unix:PATH or - (stdin and stdout)");
  const std::string path = UnixPath(uri);
  TRY(UnixAddress(path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return UsageFail("--incoming unix:PATH already exists");
  const size_t slash = path.rfind('/');
  std::string dir =
      (slash == std::string::npos ? "." : path.substr(0, slash)) + "/.xenkvm-in-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) return HostFail(errno, "mkdtemp beside --incoming");
  const std::string tmp = dir + "/s";
  struct Cleanup {
    const std::string& dir;
    const std::string& sock;
    ~Cleanup() {
      ::unlink(sock.c_str());
      ::rmdir(dir.c_str());
    }
  } cleanup{dir, tmp};
  const sockaddr_un addr = TRY(UnixAddress(tmp));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return HostFail(errno, "socket(AF_UNIX)");
  StreamListener listener(fd, "");
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
    return HostFail(errno, "bind the migration socket");
  if (::chmod(tmp.c_str(), 0600) != 0) return HostFail(errno, "chmod the migration socket");
  if (::listen(fd, 1) != 0) return HostFail(errno, "listen on the migration socket");
  // rename() would replace a PATH made meanwhile; link() refuses it.
  if (::link(tmp.c_str(), path.c_str()) != 0)
    return HostFail(errno, "put the migration socket in place");
  listener.path_ = path;
  return listener;
}

StreamListener::StreamListener(StreamListener&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {
  other.path_.clear();
}

StreamListener::~StreamListener() {
  if (!path_.empty()) ::unlink(path_.c_str());
  if (fd_ >= 0) ::close(fd_);
}

Result<Channel> StreamListener::Accept(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    const int wait_ms =
        timeout.count() < 0 ? -1 : int(std::clamp<int64_t>(left.count(), 0, INT32_MAX));
    const int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return HostFail(errno, "poll the migration socket");
    if (ready == 0) return HostFail(ETIMEDOUT, "no migration source connected in time");
    const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
    if (fd < 0) return HostFail(errno, "accept on the migration socket");
    // One connection only: nobody else may connect after it.
    if (!path_.empty()) ::unlink(path_.c_str());
    path_.clear();
    return Channel(fd, fd);
  }
}

Result<Channel> StdioStream() {
  const int in = ::fcntl(0, F_DUPFD_CLOEXEC, 3);
  const int out = ::fcntl(1, F_DUPFD_CLOEXEC, 3);
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0 || out < 0 || null < 0 || ::dup2(null, 0) < 0 || ::dup2(2, 1) < 0) {
    const int e = errno;
    for (int fd : {in, out, null})
      if (fd >= 0) ::close(fd);
    return HostFail(e, "take stdin and stdout for the migration stream");
  }
  ::close(null);
  return Channel(in, out);
}

}  // namespace xenkvm::snapshot
