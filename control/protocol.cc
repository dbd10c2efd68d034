// The control protocol's requests and replies; see protocol.h.
#include "control/protocol.h"

#include <algorithm>
#include <chrono>
#include <exception>

namespace xenkvm::control {

namespace {
using Json = nlohmann::json;

Json Ok() { return Json{{"ok", true}}; }
Json ErrorJson(std::string_view message) {
  return Json{{"ok", false}, {"error", std::string(message)}};
}
Json FromResult(const Result<>& r) { return r ? Ok() : ErrorJson(Describe(r.error())); }

const CommandSpec* Find(std::string_view name) {
  for (const CommandSpec& c : Commands())
    if (name == c.name) return &c;
  return nullptr;
}
}  // namespace

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> kCommands = {
      {"status", {}, 0, "run state, name, domid, vCPUs, memory, system time"},
      {"stats", {}, 0, "the counters --stats prints"},
      {"pause",
       {},
       0,
       "park every vCPU and freeze the timers (counted: pause twice, resume twice)"},
      {"resume", {}, 0, "undo one pause"},
      {"shutdown",
       {"reason"},
       0,
       "REASON poweroff (default) or reboot into control/shutdown; forced after --grace; "
       "a second shutdown stops at once"},
      {"xenstore-read", {"path"}, 1, "PATH's value"},
      {"xenstore-write", {"path", "value"}, 2, "write VALUE at PATH (as dom0)"},
      {"xenstore-ls", {"path"}, 1, "PATH's children"},
      {"send-key", {"text"}, 1, "TEXT into the guest's console input"},
      {"save", {"file"}, 1, "save the guest to FILE"},
      {"migrate",
       {"uri"},
       1,
       "live-migrate the guest to URI: unix:PATH (xenkvm restore --incoming unix:PATH) or "
       "exec:COMMAND (its stdin/stdout, e.g. exec:'ssh HOST xenkvm restore --incoming -'); "
       "the VMM ends once the guest runs there, and goes on if the destination fails"},
      {"disk-unplug",
       {"vdev"},
       1,
       "ask the guest to release PV disk VDEV (backend Closing, online=0); its xenstore "
       "directories go once the frontend has closed"},
  };
  return kCommands;
}

std::string Dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string ErrorReply(std::string_view message) { return Dump(ErrorJson(message)); }

std::string Dispatcher::Handle(std::string_view line) {
  // The parser is not recursive and refuses bytes that are not UTF-8; no exceptions.
  Json request = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) return ErrorReply("malformed JSON");
  Json reply;
  try {
    reply = Dispatch(request);
  } catch (const std::exception& e) {  // e.g. bad_alloc; the target's own calls return errors
    reply = ErrorJson(std::string("internal error: ") + e.what());
  }
  // A client may tag requests; the tag comes back (any JSON value, as given).
  if (request.is_object() && request.contains("id")) reply["id"] = request["id"];
  return Dump(reply);
}

Json Dispatcher::Dispatch(const Json& request) {
  if (!request.is_object()) return ErrorJson("a request is a JSON object");
  auto command_it = request.find("command");
  if (command_it == request.end() || !command_it->is_string())
    return ErrorJson("a request needs \"command\": a string");
  const std::string command = command_it->get<std::string>();
  const CommandSpec* spec = Find(command);
  if (spec == nullptr) return ErrorJson("unknown command: " + command);
  // Every field a string; none missing, none unknown ("id" aside).
  std::vector<std::string> args(spec->fields.size());
  std::vector<bool> given(spec->fields.size(), false);
  for (const auto& item : request.items()) {
    const std::string& key = item.key();
    const Json& value = item.value();
    if (key == "command" || key == "id") continue;
    auto field = std::find_if(spec->fields.begin(), spec->fields.end(),
                              [&key](const char* f) { return key == f; });
    if (field == spec->fields.end()) return ErrorJson(command + ": unknown field \"" + key + "\"");
    if (!value.is_string()) return ErrorJson(command + ": \"" + key + "\" must be a string");
    const size_t i = static_cast<size_t>(field - spec->fields.begin());
    args[i] = value.get<std::string>();
    given[i] = true;
  }
  for (size_t i = 0; i < spec->required; ++i)
    if (!given[i]) return ErrorJson(command + ": missing \"" + spec->fields[i] + "\"");

  if (command == "status") {
    Json reply = target_.Status();
    reply["ok"] = true;
    return reply;
  }
  if (command == "stats") {
    Json reply = target_.Stats();
    reply["ok"] = true;
    return reply;
  }
  // How long the VMM took, for the operator (and benchmarks, without the client's time).
  auto timed = [](auto&& call) {
    const auto start = std::chrono::steady_clock::now();
    Json reply = FromResult(call());
    if (reply["ok"] == true)
      reply["took_ms"] =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    return reply;
  };
  if (command == "pause") return timed([this] { return target_.Pause(); });
  if (command == "resume") return timed([this] { return target_.Resume(); });
  if (command == "shutdown") {
    const std::string reason = given[0] ? args[0] : "poweroff";
    if (reason != "poweroff" && reason != "reboot")
      return ErrorJson("shutdown: reason must be poweroff or reboot");
    return FromResult(target_.Shutdown(reason));
  }
  if (command == "xenstore-read") {
    auto value = target_.XenstoreRead(args[0]);
    if (!value) return ErrorJson(Describe(value.error()));
    Json reply = Ok();
    reply["value"] = *value;
    return reply;
  }
  if (command == "xenstore-write") return FromResult(target_.XenstoreWrite(args[0], args[1]));
  if (command == "xenstore-ls") {
    auto children = target_.XenstoreList(args[0]);
    if (!children) return ErrorJson(Describe(children.error()));
    Json reply = Ok();
    reply["children"] = *children;
    return reply;
  }
  if (command == "send-key") {
    auto taken = target_.SendKeys(args[0]);
    if (!taken) return ErrorJson(Describe(taken.error()));
    Json reply = Ok();
    reply["bytes"] = *taken;
    return reply;
  }
  if (command == "save") return timed([&] { return target_.Save(args[0]); });
  if (command == "migrate") {
    Json reply = target_.Migrate(args[0]);
    if (!reply.is_object() || !reply.contains("ok")) return ErrorJson("migrate: no result");
    return reply;
  }
  if (command == "disk-unplug") return FromResult(target_.UnplugDisk(args[0]));
  return ErrorJson("unknown command: " + command);  // a CommandSpec without a handler
}

Result<Json> BuildRequest(const std::string& command, const std::vector<std::string>& args) {
  Json request{{"command", command}};
  const CommandSpec* spec = Find(command);
  if (spec == nullptr) {
    if (!args.empty()) return UsageFail("unknown command (and it takes no arguments here)");
    return request;
  }
  if (args.size() < spec->required || args.size() > spec->fields.size())
    return UsageFail("wrong number of arguments for this command");
  for (size_t i = 0; i < args.size(); ++i) request[spec->fields[i]] = args[i];
  return request;
}

}  // namespace xenkvm::control
