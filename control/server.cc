// The control socket server and client call; see server.h.
#include "control/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace xenkvm::control {

namespace {
// The longest reply the client reads (stats of many ports stay far below).
constexpr size_t kMaxReplyBytes = 64u << 20;
// How long a reply write may wait for a client that does not read.
constexpr int kWriteTimeoutMs = 5000;
// How long a connection beyond kMaxClients waits for a slot before it is refused.
constexpr auto kSlotWait = std::chrono::seconds(1);

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    return UsageFail("control socket path empty or too long (at most 107 bytes)");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Whether something listens at `path` (a live socket must not be replaced).
bool Listening(const std::string& path) {
  auto addr = Address(path);
  if (!addr) return false;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0;
  ::close(fd);
  return live;
}
}  // namespace

Result<std::unique_ptr<Server>> Server::Listen(const std::string& path, Dispatcher& dispatcher) {
  TRY(Address(path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return UsageFail("control socket path exists and is not a socket");
    if (Listening(path)) return UsageFail("control socket path is in use by a running VMM");
  }
  // A private directory beside PATH (same filesystem, so rename works).
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  std::string tmp = dir + "/.xenkvm-control-XXXXXX";
  if (::mkdtemp(tmp.data()) == nullptr) return HostFail(errno, "mkdtemp beside the control socket");
  const std::string tmp_sock = tmp + "/s";
  struct Cleanup {  // the directory goes whatever happens
    const std::string& dir;
    const std::string& sock;
    ~Cleanup() {
      ::unlink(sock.c_str());
      ::rmdir(dir.c_str());
    }
  } cleanup{tmp, tmp_sock};
  auto addr = Address(tmp_sock);
  if (!addr) return UsageFail("control socket directory path too long");

  std::unique_ptr<Server> server(new Server(path, dispatcher));
  server->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server->listen_fd_ < 0) return HostFail(errno, "socket(AF_UNIX)");
  if (::bind(server->listen_fd_, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0)
    return HostFail(errno, "bind the control socket");
  if (::chmod(tmp_sock.c_str(), 0600) != 0) return HostFail(errno, "chmod the control socket");
  if (::listen(server->listen_fd_, 8) != 0) return HostFail(errno, "listen on the control socket");
  if (::rename(tmp_sock.c_str(), path.c_str()) != 0)
    return HostFail(errno, "rename the control socket into place");
  if (::lstat(path.c_str(), &st) == 0) {
    server->dev_ = st.st_dev;
    server->ino_ = st.st_ino;
  }
  server->stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (server->stop_fd_ < 0) return HostFail(errno, "eventfd");
  server->accept_thread_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  return server;
}

Server::~Server() {
  if (stop_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    MutexLock lock(mutex_);
    ReapLocked(/*all=*/true);
  }
  struct stat st {};
  if (ino_ != 0 && ::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
    ::unlink(path_.c_str());
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Server::ReapLocked(bool all) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (all || it->done.load(std::memory_order_acquire)) {
      it->thread.join();  // after the stop event, Serve returns promptly
      ::close(it->fd);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::AcceptLoop() {
  for (;;) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    if ((p[0].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the client gave up, or fds ran out: keep serving the others
    MutexLock lock(mutex_);
    ReapLocked(/*all=*/false);
    // At the limit, give clients that just hung up (their threads not yet done) a moment.
    const auto give_up = std::chrono::steady_clock::now() + kSlotWait;
    while (clients_.size() >= kMaxClients && std::chrono::steady_clock::now() < give_up) {
      lock.native().unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      lock.native().lock();
      ReapLocked(/*all=*/false);
    }
    if (clients_.size() >= kMaxClients) {
      (void)WriteLine(fd, ErrorReply("too many control clients"));
      ::close(fd);
      continue;
    }
    Client& client = clients_.emplace_back();
    client.fd = fd;
    client.thread = std::thread([this, &client] {
      Serve(client);
      client.done.store(true, std::memory_order_release);
    });
  }
}

// Reads lines (each at most kMaxRequestBytes; a longer one is answered with an error and
// skipped up to its newline) and answers each in order.
void Server::Serve(Client& client) {
  std::string pending;
  bool skipping = false;  // inside an over-long line
  char buf[4096];
  for (;;) {
    pollfd p[2] = {{client.fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents != 0) return;
    const ssize_t n = ::read(client.fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;
    std::string_view data(buf, static_cast<size_t>(n));
    while (!data.empty()) {
      const size_t nl = data.find('\n');
      const std::string_view part = data.substr(0, nl);
      data = nl == std::string_view::npos ? std::string_view() : data.substr(nl + 1);
      if (!skipping) {
        if (pending.size() + part.size() > kMaxRequestBytes) {
          pending.clear();
          skipping = true;
          if (!WriteLine(client.fd, ErrorReply("request line too long"))) return;
        } else {
          pending.append(part);
        }
      }
      if (nl == std::string_view::npos) break;  // the line goes on in the next read
      if (!skipping) {
        if (!pending.empty() && pending.back() == '\r') pending.pop_back();
        if (!pending.empty() && !WriteLine(client.fd, dispatcher_.Handle(pending))) return;
      }
      pending.clear();
      skipping = false;
    }
  }
}

bool Server::WriteLine(int fd, const std::string& line) {
  std::string out = line + '\n';
  std::string_view rest(out);
  while (!rest.empty()) {
    const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      rest.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd p[2] = {{fd, POLLOUT, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = ::poll(p, 2, kWriteTimeoutMs);
    if (ready <= 0 || p[1].revents != 0) return false;  // a client that does not read
  }
  return true;
}

Result<std::string> Call(const std::string& path, const std::string& request_line) {
  const sockaddr_un addr = TRY(Address(path));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return HostFail(errno, "socket(AF_UNIX)");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
    return HostFail(errno, "connect to the control socket");
  const std::string out = request_line + '\n';
  std::string_view rest(out);
  while (!rest.empty()) {
    const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return HostFail(errno, "send to the control socket");
    rest.remove_prefix(static_cast<size_t>(n));
  }
  std::string reply;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return HostFail(errno, "read from the control socket");
    if (n == 0) return HostFail(ECONNRESET, "the control socket closed without a reply");
    const std::string_view data(buf, static_cast<size_t>(n));
    const size_t nl = data.find('\n');
    reply.append(data.substr(0, nl));
    if (nl != std::string_view::npos) return reply;
    if (reply.size() > kMaxReplyBytes) return HostFail(EMSGSIZE, "control reply too long");
  }
}

}  // namespace xenkvm::control
