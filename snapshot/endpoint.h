// Where a migration stream (stream.h) goes or comes from, named as the operator writes it:
//   unix:PATH  the source connects to PATH; the destination listens there (owner-only, 0600)
//              and takes one connection
//   exec:CMD   (source) runs `/bin/sh -c CMD` with the stream as its stdin and stdout, as QEMU's
//              exec: migration does: exec:ssh HOST xenkvm restore --incoming - tunnels it
//   -          (destination) this process's stdin and stdout
#pragma once

#include <chrono>
#include <string>

#include "abi/result.h"
#include "snapshot/stream.h"

namespace xenkvm::snapshot {

// The source side: unix:PATH or exec:CMD.
Result<Channel> ConnectStream(const std::string& uri);

// The destination side of unix:PATH: the socket is made owner-only without touching the umask
// (bound in a fresh 0700 directory beside PATH, chmod'ed, renamed onto PATH); an existing PATH
// is refused. The socket file goes with the Listener.
class StreamListener {
 public:
  static Result<StreamListener> Listen(const std::string& uri);
  StreamListener(StreamListener&& other) noexcept;
  StreamListener& operator=(StreamListener&&) = delete;
  ~StreamListener();
  // One connection, waiting at most `timeout` (a negative one: for ever).
  Result<Channel> Accept(std::chrono::milliseconds timeout);

 private:
  StreamListener(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

// The destination side of `-`: the stream takes over stdin and stdout; fd 0 then reads
// /dev/null and fd 1 writes to stderr, so nothing else (the guest's console) mixes into it.
Result<Channel> StdioStream();

}  // namespace xenkvm::snapshot
