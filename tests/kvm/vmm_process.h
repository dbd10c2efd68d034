// A `xenkvm` process for kvm tests, its stdout+stderr collected by a thread and a SIGKILL at
// the end of its time; control requests against its socket (straight from the test, or through
// `xenkvm ctl`); a scratch directory; the release of a guest run with "hold=1".
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "control/protocol.h"
#include "control/server.h"

namespace xenkvm::testing {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// A child running `args` (args[0] a path) with stdout and stderr on one pipe (out_fd), and
// stdin on another (in_fd) or on /dev/null: the console ring reads stdin, never the tester's
// terminal. pid -1 if it could not start.
struct Child {
  pid_t pid = -1;
  int out_fd = -1;
  int in_fd = -1;
};
inline Child Spawn(const std::vector<std::string>& args, bool stdin_pipe = false) {
  int out[2], in[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0) return {};
  if (stdin_pipe && pipe2(in, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return {};
  }
  std::vector<char*> argv;  // built before the fork: the child only dups and execs
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(stdin_pipe ? in[0] : open("/dev/null", O_RDONLY), 0);
    dup2(out[1], 1);
    dup2(out[1], 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  if (stdin_pipe) close(in[0]);
  if (pid < 0) {
    close(out[0]);
    if (stdin_pipe) close(in[1]);
    return {};
  }
  return {pid, out[0], in[1]};
}

// A xenkvm run with its stdout+stderr collected by a thread.
class Vmm {
 public:
  explicit Vmm(const std::vector<std::string>& args) {
    const Child child = Spawn(args);
    pid_ = child.pid;
    if (pid_ < 0) return;
    reader_ = std::thread([this, fd = child.out_fd] {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) {
        std::lock_guard<std::mutex> lock(mutex_);
        output_.append(buf, static_cast<size_t>(n));
      }
      close(fd);
    });
  }
  ~Vmm() {
    if (pid_ > 0 && !waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }
  std::string output() {
    std::lock_guard<std::mutex> lock(mutex_);
    return output_;
  }
  bool WaitForOutput(const std::string& marker, std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (output().find(marker) == std::string::npos) {
      if (std::chrono::steady_clock::now() > end || Exited()) return false;
      std::this_thread::sleep_for(50ms);
    }
    return true;
  }
  bool Exited() {
    if (waited_) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    waited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return true;
  }
  // The exit code, or -1 after a SIGKILL at `limit`.
  int Wait(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!Exited()) {
      if (std::chrono::steady_clock::now() > end) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        waited_ = true;
        return -1;
      }
      std::this_thread::sleep_for(50ms);
    }
    if (reader_.joinable()) reader_.join();
    return exit_code_;
  }

 private:
  pid_t pid_ = -1;
  bool waited_ = false;
  int exit_code_ = -1;
  std::thread reader_;
  std::mutex mutex_;
  std::string output_;
};

struct CtlResult {
  int exit_code = -1;
  Json reply;  // null if the output was not one JSON line
  std::string output;
};

// `xenkvm ctl SOCKET ARGS...` (XENKVM_BINARY: the xenkvm under test) (arguments are ours: no shell
// quoting needed beyond '').
inline CtlResult Ctl(const std::string& socket, const std::vector<std::string>& args) {
  std::string cmd = std::string(XENKVM_BINARY) + " ctl '" + socket + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  cmd += " 2>&1";
  CtlResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.reply = Json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  if (r.reply.is_discarded()) r.reply = nullptr;
  return r;
}

// A scratch directory, removed with what it holds. Under /dev/shm: a unix socket needs a local
// filesystem, and in the nested-KVM VM /tmp is the host's over 9p.
struct TempDir {
  TempDir() {
    char tmpl[] = "/dev/shm/xenkvm-test-XXXXXX";
    path = mkdtemp(tmpl) ? tmpl : "";
  }
  ~TempDir() {
    if (!path.empty()) std::system(("rm -rf '" + path + "'").c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path;
};

inline bool WaitForPath(const std::string& path, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  struct stat st {};
  while (stat(path.c_str(), &st) != 0) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// One request straight from the test (a `xenkvm ctl` process is slow to start in the nested VM):
// the parsed reply, {"call_failed": why} when the socket did not answer, or null.
inline Json Request(const std::string& sock, const std::string& command,
                    const std::vector<std::string>& args = {}) {
  auto request = xenkvm::control::BuildRequest(command, args);
  if (!request) return nullptr;
  auto reply = xenkvm::control::Call(sock, xenkvm::control::Dump(*request));
  if (!reply) return {{"call_failed", xenkvm::Describe(reply.error())}};
  const Json parsed = Json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? Json(nullptr) : parsed;
}
inline bool Ok(const Json& reply) { return reply.is_object() && reply.value("ok", false); }

// A guest run with "hold=1" (guests/runtime/xs.h) goes on with its work until this: its
// xenstore key data/release, written through the control socket of the VMM it runs in now.
inline Json Release(const std::string& sock) {
  if (!WaitForPath(sock, 30s)) return {{"call_failed", "no control socket at " + sock}};
  const Json status = Request(sock, "status");
  if (!Ok(status)) return status;
  const std::string home = "/local/domain/" + std::to_string(status.value("domid", 0));
  return Request(sock, "xenstore-write", {home + "/data/release", "1"});
}

}  // namespace xenkvm::testing
