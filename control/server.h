// The control socket (docs/control.md): a unix stream socket at a path, owner-only (0600),
// serving the control protocol (protocol.h), one request line -> one reply line, to several
// clients at once. One accept thread and one thread per connected client (at most
// kMaxClients; one more waits up to a second for a slot, then gets an error reply); nothing
// here runs on a vCPU thread.
//
// The socket file is made race-free without touching the process umask (other threads create
// files too): bound inside a fresh 0700 directory next to PATH, chmod'ed 0600 there, then
// renamed onto PATH. An existing PATH is replaced only if it is a socket nobody listens on.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "abi/result.h"
#include "abi/sync.h"
#include "control/protocol.h"

namespace xenkvm::control {

// Threads: Listen/destructor on one thread; the rest is internal. Lock: mutex_ guards the
// client list; a leaf.
class Server {
 public:
  static constexpr size_t kMaxClients = 16;
  static Result<std::unique_ptr<Server>> Listen(const std::string& path, Dispatcher& dispatcher);
  // Closes every connection (requests being handled finish first), removes the socket file.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  struct Client {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  Server(std::string path, Dispatcher& dispatcher)
      : path_(std::move(path)), dispatcher_(dispatcher) {}
  void AcceptLoop();
  void Serve(Client& client);
  // Writes all of `line` and a newline; false: the client is gone or the server stopping.
  bool WriteLine(int fd, const std::string& line);
  void ReapLocked(bool all) XENKVM_REQUIRES(mutex_);

  const std::string path_;
  Dispatcher& dispatcher_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;  // eventfd: readable once the server stops
  dev_t dev_ = 0;     // the socket file we made (removed at the end only if still ours)
  ino_t ino_ = 0;
  std::thread accept_thread_;
  Mutex mutex_;
  std::list<Client> clients_ XENKVM_GUARDED_BY(mutex_);
};

// The client side: connects to `path`, sends one request line, returns the reply line.
Result<std::string> Call(const std::string& path, const std::string& request_line);

}  // namespace xenkvm::control
