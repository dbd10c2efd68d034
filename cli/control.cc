// The control socket's Machine target and the `xenkvm ctl` client; see control.h.
#include "cli/control.h"

#include "cli/options.h"
#include "control/server.h"
#include "snapshot/endpoint.h"

namespace xenkvm::cli {

namespace {
using Json = nlohmann::json;

Json HistogramJson(const trace::Histogram& h) {
  Json buckets = Json::array();
  for (int b = 0; b < trace::Histogram::kBuckets; ++b) {
    const uint64_t count = h.BucketCount(b);
    if (count == 0) continue;
    const uint64_t upper = b == 0 ? 0 : b >= 64 ? UINT64_MAX : (uint64_t{1} << b) - 1;
    buckets.push_back({{"upper_ns", upper}, {"count", count}});
  }
  return {{"count", h.Count()}, {"buckets", buckets}};
}
}  // namespace

Json StatsJson(vmm::Machine& m, const trace::Stats* latency) {
  Json ports = Json::array();
  for (const auto& [port, c] : m.engine().AllCounters()) {
    ports.push_back({{"port", port},
                     {"sent", c.sent},
                     {"delivered", c.delivered},
                     {"coalesced", c.coalesced},
                     {"masked", c.masked},
                     {"deferred", c.deferred}});
  }
  Json hypercalls = Json::object();
  for (const auto& [nr, count] : m.domain().HypercallCounts())
    hypercalls[std::to_string(nr)] = count;
  Json disks = Json::array();
  for (const auto& d : m.DiskStatistics()) {
    disks.push_back({{"vdev", d.vdev},
                     {"path", d.path},
                     {"requests", d.stats.requests},
                     {"reads", d.stats.reads},
                     {"writes", d.stats.writes},
                     {"read_bytes", d.stats.read_bytes},
                     {"write_bytes", d.stats.write_bytes},
                     {"errors", d.stats.errors}});
  }
  const auto con = m.ConsoleCounters();
  const auto xs = m.XenstoreCounters();
  Json stats = {{"ports", ports},
                {"hypercalls", hypercalls},
                {"disks", disks},
                {"console_ring",
                 {{"out_bytes", con.out_bytes},
                  {"in_bytes", con.in_bytes},
                  {"notifies", con.notifies},
                  {"bad_indexes", con.bad_indexes}}},
                {"xenstore_ring",
                 {{"requests_bytes", xs.requests_bytes},
                  {"reply_bytes", xs.reply_bytes},
                  {"notifies", xs.notifies},
                  {"errors", xs.errors},
                  {"reconnections", xs.reconnections}}}};
  if (latency != nullptr) {
    stats["latency"] = {{"hypercall", HistogramJson(latency->hypercall)},
                        {"send_to_upcall", HistogramJson(latency->send_to_upcall)}};
  }
  return stats;
}

Json MachineControl::Status() {
  uint32_t up = 0;
  for (uint32_t v = 0; v < machine_.VcpuCount(); ++v) up += machine_.VcpuIsUp(v) ? 1 : 0;
  const uint32_t paused = machine_.PauseCount();
  return {{"state", machine_.Stopping() ? "ending"
                    : paused            ? "paused"
                                        : "running"},
          {"pause_count", paused},
          {"name", machine_.config().name},
          {"domid", machine_.domain().domid()},
          {"vcpus", machine_.VcpuCount()},
          {"vcpus_up", up},
          {"memory_mib", machine_.config().memory_mib},
          {"hypercall_path", vmm::HypercallPathName(machine_.hypercall_path())},
          {"pio_exit_rip", kvm::PioExitRipName(machine_.pio_exit_rip())},
          {"system_time_ns", machine_.SystemTimeNs()},
          {"last_stage", machine_.LastStage()}};
}

// As dom0 (the toolstack), outside any transaction.
Result<std::string> MachineControl::XenstoreRead(const std::string& path) {
  return machine_.store().Read(machine_.store_dom0(), 0, path);
}
Result<> MachineControl::XenstoreWrite(const std::string& path, const std::string& value) {
  return machine_.store().Write(machine_.store_dom0(), 0, path, value);
}
Result<std::vector<std::string>> MachineControl::XenstoreList(const std::string& path) {
  return machine_.store().Directory(machine_.store_dom0(), 0, path);
}

Result<size_t> MachineControl::SendKeys(const std::string& text) {
  return machine_.ConsoleInput(text);
}

Result<> MachineControl::Save(const std::string& file) { return machine_.Save(file); }

Json MachineControl::Migrate(const std::string& uri) {
  auto channel = snapshot::ConnectStream(uri);
  if (!channel)
    return {
        {"ok", false},
        {"error", "migration failed: " + Describe(channel.error()) + "; the guest runs on here"}};
  const vmm::Machine::MigrationReport report = machine_.MigrateOut(*channel);
  if (!report.ok) {
    return {{"ok", false},
            {"error", "migration failed: " + report.error +
                          (report.paused ? "" : "; the guest runs on here")},
            {"paused", report.paused}};
  }
  char line[160];
  std::snprintf(line, sizeof(line), "migrated to %s: downtime %.1f ms, total %.1f ms", uri.c_str(),
                report.downtime_ms, report.total_ms);
  machine_.Stop(vmm::MachineEnd{vmm::EndReason::kMigrated, 0, line});
  return {{"ok", true},
          {"downtime_ms", report.downtime_ms},
          {"total_ms", report.total_ms},
          {"rounds", report.rounds},
          {"pages_sent", report.pages_sent},
          {"final_pages", report.final_pages},
          {"bytes", report.bytes}};
}

Result<> MachineControl::UnplugDisk(const std::string& vdev) { return machine_.UnplugDisk(vdev); }

int RunCtl(const std::string& socket, const std::string& command,
           const std::vector<std::string>& args, FILE* out, FILE* err) {
  auto request = control::BuildRequest(command, args);
  if (!request) {
    std::fprintf(err, "xenkvm ctl: %s: %s (see xenkvm ctl --help)\n", command.c_str(),
                 request.error().message);
    return kExitUsage;
  }
  auto reply = control::Call(socket, control::Dump(*request));
  if (!reply) {
    std::fprintf(err, "xenkvm ctl: %s: %s\n", socket.c_str(), Describe(reply.error()).c_str());
    return kExitHostError;
  }
  std::fprintf(out, "%s\n", reply->c_str());
  const Json parsed = Json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  const bool ok = parsed.is_object() && parsed.contains("ok") && parsed["ok"] == true;
  return ok ? 0 : kExitHostError;
}

}  // namespace xenkvm::cli
