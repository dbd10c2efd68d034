// libFuzzer target: the control socket's request lines (control/protocol) on arbitrary bytes,
// each line of the input one request to a Dispatcher over a small fake target. Checked: no
// crash or exception escapes, and every reply is one line of JSON: an object whose "ok" is a
// boolean and which carries "error" exactly when ok is false.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "control/protocol.h"

namespace {
using xenkvm::Result;
using Json = nlohmann::json;

// Answers every command; the xenstore map is bounded so long runs stay small.
class FakeTarget : public xenkvm::control::ControlTarget {
 public:
  Json Status() override { return {{"state", paused_ ? "paused" : "running"}}; }
  Json Stats() override { return {{"ports", Json::array()}}; }
  Result<> Pause() override {
    ++paused_;
    return {};
  }
  Result<> Resume() override {
    if (paused_ == 0) return xenkvm::Fail(XEN_EINVAL, "not paused");
    --paused_;
    return {};
  }
  Result<> Shutdown(const std::string&) override { return {}; }
  Result<std::string> XenstoreRead(const std::string& path) override {
    auto it = store_.find(path);
    if (it == store_.end()) return xenkvm::Fail(XEN_ENOENT, "no such node");
    return it->second;
  }
  Result<> XenstoreWrite(const std::string& path, const std::string& value) override {
    if (store_.size() >= 64) store_.clear();
    store_[path] = value;
    return {};
  }
  Result<std::vector<std::string>> XenstoreList(const std::string&) override {
    std::vector<std::string> out;
    for (const auto& [p, v] : store_) out.push_back(p);
    return out;
  }
  Result<size_t> SendKeys(const std::string& text) override { return text.size(); }
  Result<> UnplugDisk(const std::string& vdev) override {
    if (vdev != "xvda") return xenkvm::Fail(XEN_ENOENT, "no such disk");
    return {};
  }
  Result<> Save(const std::string&) override {
    return xenkvm::Fail(XEN_EOPNOTSUPP, "not supported");
  }
  nlohmann::json Migrate(const std::string& uri) override {
    return {{"ok", false}, {"error", "not supported: " + uri}};
  }

 private:
  unsigned paused_ = 0;
  std::map<std::string, std::string> store_;
};

void Check(bool ok, const char* what, const std::string& reply) {
  if (ok) return;
  std::fprintf(stderr, "bad reply (%s): %s\n", what, reply.c_str());
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FakeTarget target;
  xenkvm::control::Dispatcher dispatcher(target);
  std::string_view input(reinterpret_cast<const char*>(data), size);
  while (!input.empty()) {
    const size_t nl = input.find('\n');
    const std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    const std::string reply = dispatcher.Handle(line);
    Check(reply.find('\n') == std::string::npos, "more than one line", reply);
    const Json parsed = Json::parse(reply, nullptr, /*allow_exceptions=*/false);
    Check(parsed.is_object(), "not a JSON object", reply);
    Check(parsed.contains("ok") && parsed["ok"].is_boolean(), "no boolean ok", reply);
    Check(parsed["ok"].get<bool>() != parsed.contains("error"), "ok and error disagree", reply);
  }
  return 0;
}
