// Trace rings and the Chrome trace-event JSON writer; see trace.h.
#include "trace/trace.h"

#include <time.h>

#include <cinttypes>

namespace xenkvm::trace {

namespace {
std::atomic<uint64_t> next_recorder_id{1};

struct ThreadCache {
  uint64_t recorder_id = 0;
  Ring* ring = nullptr;
};
thread_local ThreadCache this_thread;

// Names are ours (literals or formatted numbers) but a thread name could hold anything: escape.
void WriteString(std::FILE* out, const std::string& s) {
  std::fputc('"', out);
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      std::fputc('\\', out);
      std::fputc(ch, out);
    } else if (ch < 0x20) {
      std::fprintf(out, "\\u%04x", ch);
    } else {
      std::fputc(ch, out);
    }
  }
  std::fputc('"', out);
}

void WriteUs(std::FILE* out, uint64_t ns) {
  std::fprintf(out, "%" PRIu64 ".%03" PRIu64, ns / 1000, ns % 1000);
}
}  // namespace

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

Recorder::Recorder(uint32_t events_per_thread)
    : id_(next_recorder_id.fetch_add(1)),
      capacity_(events_per_thread == 0 ? 1 : events_per_thread),
      start_ns_(NowNs()) {}

Ring& Recorder::ThisThreadRing() {
  if (this_thread.recorder_id == id_) return *this_thread.ring;
  MutexLock lock(mutex_);
  const auto tid = static_cast<uint32_t>(tracks_.size() + 1);
  tracks_.push_back(Track{std::make_unique<Ring>(tid, capacity_), "thread " + std::to_string(tid)});
  this_thread = ThreadCache{id_, tracks_.back().ring.get()};
  return *this_thread.ring;
}

namespace {
// An event with up to three arguments; unused ones have a null key.
Event MakeEvent(const char* name, char phase, uint64_t ts_ns, Arg a, Arg b, Arg c) {
  Event e;
  e.ts_ns = ts_ns;
  e.name = name;
  e.phase = phase;
  e.args[0] = a;
  e.args[1] = b;
  e.args[2] = c;
  e.nargs = static_cast<uint8_t>((a.key != nullptr) + (b.key != nullptr) + (c.key != nullptr));
  return e;
}
}  // namespace

void Recorder::Instant(const char* name, Arg a, Arg b, Arg c) {
  Record(MakeEvent(name, 'i', NowNs(), a, b, c));
}

void Recorder::Slice(const char* name, uint64_t start_ns, Arg a, Arg b, Arg c) {
  const uint64_t now = NowNs();
  Event e = MakeEvent(name, 'X', start_ns, a, b, c);
  e.dur_ns = now > start_ns ? now - start_ns : 0;
  Record(e);
}

void Recorder::NameThread(std::string name) {
  Ring& ring = ThisThreadRing();
  MutexLock lock(mutex_);
  tracks_[ring.tid() - 1].name = std::move(name);
}

uint64_t Recorder::Dropped() {
  MutexLock lock(mutex_);
  uint64_t total = 0;
  for (const Track& t : tracks_) total += t.ring->dropped();
  return total;
}

void Recorder::WriteJson(std::FILE* out) {
  MutexLock lock(mutex_);
  std::fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n", out);
  std::fputs(
      "{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":"
      "\"xenkvm\"}}",
      out);
  uint64_t dropped_total = 0;
  for (const Track& t : tracks_) {
    const Ring& ring = *t.ring;
    std::fprintf(
        out, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"name\":\"thread_name\",\"args\":{\"name\":",
        ring.tid());
    WriteString(out, t.name);
    std::fputs("}}", out);
    std::fprintf(out,
                 ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%u,\"name\":\"thread_sort_index\",\"args\":{"
                 "\"sort_index\":%u}}",
                 ring.tid(), ring.tid());
    const uint32_t n = ring.count();
    uint64_t last_ns = start_ns_;
    for (uint32_t i = 0; i < n; ++i) {
      const Event& e = ring.at(i);
      const uint64_t ts = e.ts_ns > start_ns_ ? e.ts_ns - start_ns_ : 0;
      last_ns = e.ts_ns + e.dur_ns;
      std::fprintf(out, ",\n{\"ph\":\"%c\",\"pid\":1,\"tid\":%u,\"name\":\"%s\",\"ts\":", e.phase,
                   ring.tid(), e.name);
      WriteUs(out, ts);
      if (e.phase == 'X') {
        std::fputs(",\"dur\":", out);
        WriteUs(out, e.dur_ns);
      } else {
        std::fputs(",\"s\":\"t\"", out);
      }
      if (e.nargs != 0) {
        std::fputs(",\"args\":{", out);
        bool first = true;
        for (const Arg& a : e.args) {
          if (a.key == nullptr) continue;
          std::fprintf(out, "%s\"%s\":", first ? "" : ",", a.key);
          if (a.str != nullptr)
            std::fprintf(out, "\"%s\"", a.str);
          else
            std::fprintf(out, "%" PRId64, a.value);
          first = false;
        }
        std::fputc('}', out);
      }
      std::fputc('}', out);
    }
    if (const uint64_t dropped = ring.dropped(); dropped != 0) {
      dropped_total += dropped;
      std::fprintf(out,
                   ",\n{\"ph\":\"i\",\"pid\":1,\"tid\":%u,\"name\":\"events dropped\",\"s\":\"t\","
                   "\"ts\":",
                   ring.tid());
      WriteUs(out, last_ns > start_ns_ ? last_ns - start_ns_ : 0);
      std::fprintf(out, ",\"args\":{\"dropped\":%" PRIu64 ",\"kept\":%u}}", dropped, n);
    }
  }
  std::fprintf(out, "\n],\"otherData\":{\"events_per_thread\":%u,\"dropped\":%" PRIu64 "}}\n",
               capacity_, dropped_total);
}

}  // namespace xenkvm::trace
