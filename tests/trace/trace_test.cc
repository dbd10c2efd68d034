// The trace writer: what it records is valid Chrome trace-event JSON (parsed back with
// nlohmann-json), one named track per thread, and a full ring drops and says so.
#include "trace/trace.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace xenkvm::trace {
namespace {

nlohmann::json Written(Recorder& r) {
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* f = open_memstream(&buf, &size);
  r.WriteJson(f);
  std::fclose(f);
  std::string text(buf, size);
  std::free(buf);
  return nlohmann::json::parse(text);  // throws (fails the test) on invalid JSON
}

std::vector<nlohmann::json> Named(const nlohmann::json& trace, const std::string& name) {
  std::vector<nlohmann::json> out;
  for (const auto& e : trace["traceEvents"])
    if (e["name"] == name) out.push_back(e);
  return out;
}

TEST(Trace, SlicesAndInstantsWithArgs) {
  Recorder r;
  r.NameThread("vCPU 0");
  const uint64_t start = NowNs();
  r.Slice("event_channel_op", start, {"nr", 32}, {"result", 0});
  r.Instant("deliver", {"port", 5}, {"path", 0, "fast"});
  const nlohmann::json t = Written(r);

  auto names = Named(t, "thread_name");
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0]["args"]["name"], "vCPU 0");
  const int tid = names[0]["tid"];

  auto slices = Named(t, "event_channel_op");
  ASSERT_EQ(slices.size(), 1u);
  EXPECT_EQ(slices[0]["ph"], "X");
  EXPECT_EQ(slices[0]["tid"], tid);
  EXPECT_EQ(slices[0]["args"]["nr"], 32);
  EXPECT_EQ(slices[0]["args"]["result"], 0);
  EXPECT_GE(slices[0]["dur"].get<double>(), 0.0);

  auto instants = Named(t, "deliver");
  ASSERT_EQ(instants.size(), 1u);
  EXPECT_EQ(instants[0]["ph"], "i");
  EXPECT_EQ(instants[0]["args"]["port"], 5);
  EXPECT_EQ(instants[0]["args"]["path"], "fast");
  // Recorded in order on one thread: the instant is not before the slice began.
  EXPECT_GE(instants[0]["ts"].get<double>(), slices[0]["ts"].get<double>());
  EXPECT_EQ(t["otherData"]["dropped"], 0);
}

TEST(Trace, OneTrackPerThread) {
  Recorder r;
  r.Instant("main");
  std::thread([&] {
    r.NameThread("timers");
    r.Instant("timer");
  }).join();
  const nlohmann::json t = Written(r);
  auto main_ev = Named(t, "main");
  auto timer_ev = Named(t, "timer");
  ASSERT_EQ(main_ev.size(), 1u);
  ASSERT_EQ(timer_ev.size(), 1u);
  EXPECT_NE(main_ev[0]["tid"], timer_ev[0]["tid"]);
  bool named = false;
  for (const auto& n : Named(t, "thread_name"))
    if (n["tid"] == timer_ev[0]["tid"]) named = n["args"]["name"] == "timers";
  EXPECT_TRUE(named);
}

TEST(Trace, FullRingDropsAndSaysSo) {
  Recorder r(4);
  for (int i = 0; i < 10; ++i) r.Instant("tick", {"i", i});
  EXPECT_EQ(r.Dropped(), 6u);
  const nlohmann::json t = Written(r);
  auto kept = Named(t, "tick");
  ASSERT_EQ(kept.size(), 4u);
  EXPECT_EQ(kept[3]["args"]["i"], 3);  // the first events are kept
  auto note = Named(t, "events dropped");
  ASSERT_EQ(note.size(), 1u);
  EXPECT_EQ(note[0]["args"]["dropped"], 6);
  EXPECT_EQ(t["otherData"]["dropped"], 6);
}

TEST(Trace, ThreadNamesAreEscaped) {
  Recorder r;
  r.NameThread("a \"quoted\\\" name\n");
  const nlohmann::json t = Written(r);
  auto names = Named(t, "thread_name");
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0]["args"]["name"], "a \"quoted\\\" name\n");
}

TEST(Trace, ANewRecorderStartsEmptyOnTheSameThread) {
  {
    Recorder first;
    first.Instant("old");
  }
  Recorder second;
  second.Instant("new");
  const nlohmann::json t = Written(second);
  EXPECT_TRUE(Named(t, "old").empty());
  EXPECT_EQ(Named(t, "new").size(), 1u);
}

TEST(Trace, ActiveIsNullUntilSet) {
  EXPECT_EQ(Active(), nullptr);
  Recorder r;
  SetActive(&r);
#ifndef XENKVM_TRACE_DISABLED
  EXPECT_EQ(Active(), &r);
#endif
  SetActive(nullptr);
  EXPECT_EQ(Active(), nullptr);
}

}  // namespace
}  // namespace xenkvm::trace
