// Console stream targets; see console_targets.h.
#include "cli/console_targets.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace xenkvm::cli {

namespace {
constexpr char kFilePrefix[] = "file:";

bool IsFile(const std::string& v) { return v.rfind(kFilePrefix, 0) == 0 && v.size() > 5; }
}  // namespace

std::string CheckConsoleIoTarget(const std::string& value) {
  if (value == "stdout" || value == "stderr" || value == "none" || IsFile(value)) return {};
  return "expected stdout, stderr, file:PATH or none";
}

std::string CheckConsoleTarget(const std::string& value) {
  if (value == "stdio" || value == "none" || IsFile(value)) return {};
  return "expected stdio, file:PATH or none";
}

ConsoleTargets::~ConsoleTargets() {
  for (int fd : owned_) ::close(fd);
}

Result<int> ConsoleTargets::OpenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return HostFail(errno, "open console file");
  owned_.push_back(fd);
  return fd;
}

Result<> ConsoleTargets::Open(const std::string& console_io, const std::string& console,
                              vmm::ConsoleConfig* config) {
  if (console_io == "stdout") {
    config->xen_fd = STDOUT_FILENO;
  } else if (console_io == "stderr") {
    config->xen_fd = STDERR_FILENO;
  } else if (console_io == "none") {
    config->xen_fd = -1;
  } else {
    config->xen_fd = TRY(OpenFile(console_io.substr(5)));
  }
  config->input_fd = -1;  // input only with the ring on stdio
  if (console == "stdio") {
    config->ring_fd = STDOUT_FILENO;
    config->input_fd = STDIN_FILENO;
  } else if (console == "none") {
    config->ring_fd = -1;
  } else if (IsFile(console_io) && console == console_io) {
    config->ring_fd = config->xen_fd;  // one file for both: one descriptor keeps them in order
  } else {
    config->ring_fd = TRY(OpenFile(console.substr(5)));
  }
  return {};
}

}  // namespace xenkvm::cli
