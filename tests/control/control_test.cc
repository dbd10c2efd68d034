// The control protocol (control/protocol.h) against a fake target: every command, malformed
// and hostile requests; and the socket server (control/server.h): owner-only permissions,
// replacing only a stale socket, concurrent clients, over-long lines, the client limit.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "abi/sync.h"
#include "control/protocol.h"
#include "control/server.h"

namespace xenkvm::control {
namespace {

using Json = nlohmann::json;

// Records calls; xenstore is a map; pause is counted like the Machine's.
class FakeTarget : public ControlTarget {
 public:
  Json Status() override { return {{"state", paused > 0 ? "paused" : "running"}}; }
  Json Stats() override { return {{"ports", Json::array({{{"port", 1}, {"sent", 7}}})}}; }
  Result<> Pause() override {
    ++paused;
    return {};
  }
  Result<> Resume() override {
    if (paused == 0) return Fail(XEN_EINVAL, "not paused");
    --paused;
    return {};
  }
  Result<> Shutdown(const std::string& reason) override {
    MutexLock lock(mutex);
    shutdowns.push_back(reason);
    return {};
  }
  Result<std::string> XenstoreRead(const std::string& path) override {
    MutexLock lock(mutex);
    auto it = store.find(path);
    if (it == store.end()) return Fail(XEN_ENOENT, "no such node");
    return it->second;
  }
  Result<> XenstoreWrite(const std::string& path, const std::string& value) override {
    MutexLock lock(mutex);
    store[path] = value;
    return {};
  }
  Result<std::vector<std::string>> XenstoreList(const std::string& path) override {
    MutexLock lock(mutex);
    std::vector<std::string> out;
    for (const auto& [p, v] : store)
      if (p.rfind(path + "/", 0) == 0) out.push_back(p.substr(path.size() + 1));
    return out;
  }
  Result<size_t> SendKeys(const std::string& text) override {
    MutexLock lock(mutex);
    keys += text;
    return text.size();
  }
  Result<> Save(const std::string& file) override {
    MutexLock lock(mutex);
    saved = file;
    return {};
  }
  Json Migrate(const std::string& uri) override {
    MutexLock lock(mutex);
    migrated_to = uri;
    if (uri.rfind("unix:", 0) != 0) return {{"ok", false}, {"error", "bad target " + uri}};
    return {{"ok", true}, {"downtime_ms", 1.5}};
  }
  Result<> UnplugDisk(const std::string& vdev) override {
    if (vdev != "xvda") return Fail(XEN_ENOENT, "no PV disk by that name");
    MutexLock lock(mutex);
    unplugged.push_back(vdev);
    return {};
  }

  std::atomic<int> paused{0};
  Mutex mutex;
  std::vector<std::string> shutdowns XENKVM_GUARDED_BY(mutex);
  std::map<std::string, std::string> store XENKVM_GUARDED_BY(mutex);
  std::string keys XENKVM_GUARDED_BY(mutex);
  std::string saved XENKVM_GUARDED_BY(mutex);
  std::string migrated_to XENKVM_GUARDED_BY(mutex);
  std::vector<std::string> unplugged XENKVM_GUARDED_BY(mutex);
};

class ProtocolTest : public ::testing::Test {
 protected:
  Json Ask(const std::string& line) {
    const std::string reply = dispatcher.Handle(line);
    EXPECT_EQ(reply.find('\n'), std::string::npos) << reply;  // one reply line
    return Json::parse(reply);  // throws (fails the test) if the reply is not JSON
  }
  static bool IsError(const Json& reply, const std::string& part) {
    return reply.value("ok", true) == false &&
           reply.value("error", std::string()).find(part) != std::string::npos;
  }
  FakeTarget target;
  Dispatcher dispatcher{target};
};

TEST_F(ProtocolTest, StatusStatsPauseResume) {
  Json r = Ask(R"({"command":"status"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["state"], "running");
  r = Ask(R"({"command":"stats"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["ports"][0]["sent"], 7);
  EXPECT_EQ(Ask(R"({"command":"pause"})")["ok"], true);
  EXPECT_EQ(Ask(R"({"command":"status"})")["state"], "paused");
  EXPECT_EQ(Ask(R"({"command":"resume"})")["ok"], true);
  EXPECT_EQ(Ask(R"({"command":"status"})")["state"], "running");
  EXPECT_TRUE(IsError(Ask(R"({"command":"resume"})"), "not paused"));
}

TEST_F(ProtocolTest, ShutdownReasons) {
  EXPECT_EQ(Ask(R"({"command":"shutdown"})")["ok"], true);
  EXPECT_EQ(Ask(R"({"command":"shutdown","reason":"reboot"})")["ok"], true);
  EXPECT_TRUE(IsError(Ask(R"({"command":"shutdown","reason":"explode"})"), "poweroff or reboot"));
  MutexLock lock(target.mutex);
  EXPECT_EQ(target.shutdowns, (std::vector<std::string>{"poweroff", "reboot"}));
}

TEST_F(ProtocolTest, XenstoreReadWriteLs) {
  EXPECT_TRUE(IsError(Ask(R"({"command":"xenstore-read","path":"/a/b"})"), "no such node"));
  EXPECT_EQ(Ask(R"({"command":"xenstore-write","path":"/a/b","value":"v1"})")["ok"], true);
  EXPECT_EQ(Ask(R"({"command":"xenstore-write","path":"/a/c","value":""})")["ok"], true);
  Json r = Ask(R"({"command":"xenstore-read","path":"/a/b"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["value"], "v1");
  r = Ask(R"({"command":"xenstore-ls","path":"/a"})");
  EXPECT_EQ(r["children"], Json::array({"b", "c"}));
}

TEST_F(ProtocolTest, SendKeyAndSave) {
  Json r = Ask(R"({"command":"send-key","text":"ls\r\u0003"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["bytes"], 4);
  r = Ask(R"({"command":"save","file":"/tmp/x.snap"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_TRUE(r["took_ms"].is_number()) << r;
  MutexLock lock(target.mutex);
  EXPECT_EQ(target.keys, std::string("ls\r\x03"));
  EXPECT_EQ(target.saved, "/tmp/x.snap");
}

// The target's whole reply comes back: its figures on success, its own line on failure.
TEST_F(ProtocolTest, MigrateRepliesWithTheTargetsResult) {
  Json r = Ask(R"({"command":"migrate","uri":"unix:/tmp/in"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["downtime_ms"], 1.5);
  r = Ask(R"({"command":"migrate","uri":"tcp:host"})");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"], "bad target tcp:host");
  EXPECT_EQ(Ask(R"({"command":"migrate"})")["ok"], false);  // uri is required
  MutexLock lock(target.mutex);
  EXPECT_EQ(target.migrated_to, "tcp:host");
}

TEST_F(ProtocolTest, DiskUnplugNamesTheDisk) {
  EXPECT_EQ(Ask(R"({"command":"disk-unplug","vdev":"xvda"})")["ok"], true);
  Json r = Ask(R"({"command":"disk-unplug","vdev":"xvdz"})");
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("no PV disk"), std::string::npos) << r;
  EXPECT_EQ(Ask(R"({"command":"disk-unplug"})")["ok"], false);  // vdev is required
  MutexLock lock(target.mutex);
  EXPECT_EQ(target.unplugged, std::vector<std::string>{"xvda"});
}

TEST_F(ProtocolTest, IdIsEchoed) {
  Json r = Ask(R"({"command":"status","id":42})");
  EXPECT_EQ(r["id"], 42);
  r = Ask(R"({"command":"nope","id":"x"})");
  EXPECT_EQ(r["id"], "x");
  EXPECT_EQ(r["ok"], false);
}

TEST_F(ProtocolTest, MalformedRequestsGetErrors) {
  EXPECT_TRUE(IsError(Ask("{"), "malformed JSON"));
  EXPECT_TRUE(IsError(Ask("not json"), "malformed JSON"));
  EXPECT_TRUE(IsError(Ask(R"({"command":"status"} trailing)"), "malformed JSON"));
  EXPECT_TRUE(IsError(Ask(std::string("{\"command\":\"st\xff\"}")), "malformed JSON"));
  EXPECT_TRUE(IsError(Ask(std::string(5000, '[')), "malformed JSON"));
  EXPECT_TRUE(IsError(Ask("[1,2]"), "JSON object"));
  EXPECT_TRUE(IsError(Ask("\"status\""), "JSON object"));
  EXPECT_TRUE(IsError(Ask("{}"), "\"command\""));
  EXPECT_TRUE(IsError(Ask(R"({"command":7})"), "\"command\""));
  EXPECT_TRUE(IsError(Ask(R"({"command":"reboot-host"})"), "unknown command: reboot-host"));
}

TEST_F(ProtocolTest, WrongArgumentsGetErrors) {
  EXPECT_TRUE(IsError(Ask(R"({"command":"xenstore-read"})"), "missing \"path\""));
  EXPECT_TRUE(IsError(Ask(R"({"command":"xenstore-write","path":"/a"})"), "missing \"value\""));
  EXPECT_TRUE(IsError(Ask(R"({"command":"xenstore-read","path":5})"), "must be a string"));
  EXPECT_TRUE(IsError(Ask(R"({"command":"xenstore-read","path":null})"), "must be a string"));
  EXPECT_TRUE(IsError(Ask(R"({"command":"status","verbose":"1"})"), "unknown field"));
  EXPECT_TRUE(IsError(Ask(R"({"command":"pause","path":"/"})"), "unknown field"));
  EXPECT_EQ(target.paused, 0);  // a refused request did nothing
}

// A reply carrying bytes that are not UTF-8 (a guest-written xenstore value) is still JSON.
TEST_F(ProtocolTest, RepliesWithNonUtf8BytesStayValid) {
  ASSERT_TRUE(target.XenstoreWrite("/bin", std::string("a\xff\xfe", 3)));
  Json r = Ask(R"({"command":"xenstore-read","path":"/bin"})");
  EXPECT_EQ(r["ok"], true);
  EXPECT_TRUE(r["value"].is_string());
}

TEST(BuildRequest, MapsArgumentsToFields) {
  auto r = BuildRequest("xenstore-write", {"/a", "v"});
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (Json{{"command", "xenstore-write"}, {"path", "/a"}, {"value", "v"}}));
  r = BuildRequest("shutdown", {});
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (Json{{"command", "shutdown"}}));
  EXPECT_TRUE(BuildRequest("shutdown", {"reboot"}));
  EXPECT_FALSE(BuildRequest("shutdown", {"reboot", "now"}));
  EXPECT_FALSE(BuildRequest("xenstore-write", {"/a"}));
  EXPECT_FALSE(BuildRequest("status", {"x"}));
  r = BuildRequest("frobnicate", {});  // the server answers unknown commands
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["command"], "frobnicate");
  EXPECT_FALSE(BuildRequest("frobnicate", {"x"}));
}

// ---------------------------------------------------------------- the socket server

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/xenkvm-control-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
    path = dir + "/ctl.sock";
  }
  void TearDown() override {
    server.reset();
    std::remove(path.c_str());
    rmdir(dir.c_str());
  }
  void Start() {
    auto s = Server::Listen(path, dispatcher);
    ASSERT_TRUE(s) << Describe(s.error());
    server = std::move(*s);
  }
  // A raw connection for line-level tests.
  int Connect() {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }
  static void Send(int fd, const std::string& data) {
    ASSERT_EQ(send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
  }
  static std::string ReadLine(int fd) {
    std::string line;
    char c;
    while (read(fd, &c, 1) == 1) {
      if (c == '\n') return line;
      line.push_back(c);
    }
    return line + "<EOF>";
  }

  std::string dir, path;
  FakeTarget target;
  Dispatcher dispatcher{target};
  std::unique_ptr<Server> server;
};

TEST_F(ServerTest, SocketIsOwnerOnlyAndRemovedAtTheEnd) {
  Start();
  struct stat st {};
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Nothing but the socket is left beside it (the private directory is gone).
  int entries = 0;
  if (FILE* ls = popen(("ls -A " + dir).c_str(), "r")) {
    char line[256];
    while (fgets(line, sizeof(line), ls)) ++entries;
    pclose(ls);
  }
  EXPECT_EQ(entries, 1);
  auto reply = Call(path, R"({"command":"status"})");
  ASSERT_TRUE(reply) << Describe(reply.error());
  EXPECT_EQ(Json::parse(*reply)["state"], "running");
  server.reset();
  EXPECT_NE(lstat(path.c_str(), &st), 0);
}

TEST_F(ServerTest, RefusesALiveSocketOrAFileReplacesAStaleSocket) {
  Start();
  auto second = Server::Listen(path, dispatcher);
  EXPECT_FALSE(second);  // another VMM is listening there
  server.reset();
  // A stale socket (bound, nobody listening) is replaced.
  {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  Start();
  EXPECT_TRUE(Call(path, R"({"command":"status"})"));
  server.reset();
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_FALSE(Server::Listen(path, dispatcher));  // a regular file is never clobbered
  EXPECT_FALSE(Server::Listen(std::string(200, 'x'), dispatcher));  // beyond sun_path
}

TEST_F(ServerTest, SeveralRequestsPerConnectionInOrder) {
  Start();
  const int fd = Connect();
  Send(fd, "{\"command\":\"pause\",\"id\":1}\n{\"command\":\"status\",\"id\":2}\r\n\n");
  Json a = Json::parse(ReadLine(fd));
  Json b = Json::parse(ReadLine(fd));
  EXPECT_EQ(a["id"], 1);
  EXPECT_EQ(b["id"], 2);
  EXPECT_EQ(b["state"], "paused");
  // A request split across writes.
  Send(fd, "{\"command\":");
  Send(fd, "\"resume\"}\n");
  EXPECT_EQ(Json::parse(ReadLine(fd))["ok"], true);
  close(fd);
}

TEST_F(ServerTest, OverlongLineGetsAnErrorAndTheConnectionGoesOn) {
  Start();
  const int fd = Connect();
  std::thread writer([fd] {
    // Longer than the bound, in pieces, then a good request.
    const std::string chunk(4096, 'x');
    for (size_t sent = 0; sent < kMaxRequestBytes * 4; sent += chunk.size()) Send(fd, chunk);
    Send(fd, "\n{\"command\":\"status\"}\n");
  });
  Json first = Json::parse(ReadLine(fd));
  EXPECT_EQ(first["ok"], false);
  EXPECT_NE(first["error"].get<std::string>().find("too long"), std::string::npos);
  EXPECT_EQ(Json::parse(ReadLine(fd))["state"], "running");
  writer.join();
  close(fd);
}

TEST_F(ServerTest, ConcurrentClients) {
  Start();
  constexpr int kThreads = 8, kEach = 40;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const std::string key = "/t" + std::to_string(t) + "/" + std::to_string(i);
        const std::string value = std::to_string(t * 1000 + i);
        Json w{{"command", "xenstore-write"}, {"path", key}, {"value", value}};
        Json r{{"command", "xenstore-read"}, {"path", key}};
        auto wr = Call(path, w.dump());
        auto rd = Call(path, r.dump());
        if (wr && rd && Json::parse(*rd)["value"] == value) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good, kThreads * kEach);
  MutexLock lock(target.mutex);
  EXPECT_EQ(target.store.size(), static_cast<size_t>(kThreads * kEach));
}

TEST_F(ServerTest, ClientsBeyondTheLimitAreRefusedOthersServed) {
  Start();
  std::vector<int> held;
  for (size_t i = 0; i < Server::kMaxClients; ++i) {
    held.push_back(Connect());
    Send(held.back(), "{\"command\":\"status\"}\n");
    EXPECT_EQ(Json::parse(ReadLine(held.back()))["ok"], true);  // accepted and served
  }
  const int extra = Connect();
  Json refused = Json::parse(ReadLine(extra));
  EXPECT_EQ(refused["ok"], false);
  EXPECT_NE(refused["error"].get<std::string>().find("too many"), std::string::npos);
  close(extra);
  close(held.back());
  held.pop_back();
  // A slot frees once its client leaves (reaped at the next accept).
  bool served = false;
  for (int attempt = 0; attempt < 100 && !served; ++attempt) {
    auto r = Call(path, R"({"command":"status"})");
    served = r && Json::parse(*r)["ok"] == true;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(served);
  for (int fd : held) close(fd);
}

TEST_F(ServerTest, ServerStopsWithClientsConnected) {
  Start();
  const int fd = Connect();
  Send(fd, "{\"command\":\"status\"}\n");
  EXPECT_EQ(Json::parse(ReadLine(fd))["ok"], true);
  server.reset();  // returns although the client never closed
  EXPECT_EQ(ReadLine(fd), "<EOF>");
  close(fd);
}

}  // namespace
}  // namespace xenkvm::control
