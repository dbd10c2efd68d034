// Hostile-frontend harness for the blkif backend's guest boundary: interprets bytes as ring
// contents (indexes included) and indirect pages, runs the ring consumer and the request
// validator over them, and checks what the backend promises: only the three blkif statuses come
// back, an accepted request stays inside its granted pages and the disk, read-only disks accept
// only reads, the ring never yields more than its size, and every grant mapping is released.
// Shared by the libFuzzer target (fuzz/, clang) and a seeded unit test (tests/blkif/).
#pragma once

#include <cstdint>
#include <cstdio>
#include <span>

#include "backends/blkif/request.h"
#include "backends/blkif/ring.h"
#include "tests/blkif/fake_frontend.h"

namespace xenkvm::fuzz {

inline bool RunBlkifRequests(std::span<const uint8_t> input) {
  using namespace blkif;
  bool ok = true;
  auto check = [&](bool condition, const char* what) {
    if (!condition) {
      std::fprintf(stderr, "invariant broken: %s\n", what);
      ok = false;
    }
  };
  size_t pos = 0;
  auto byte = [&]() -> uint8_t { return pos < input.size() ? input[pos++] : 0; };

  // Layout: 4 ring pages, 4 pages of indirect segments / data. Refs 8..15 map them, with the
  // data pages granted read-only every other one.
  testing::FakeGrants grants(8);
  std::vector<GrantRef> refs;
  for (uint32_t p = 0; p < 8; ++p) refs.push_back(grants.Grant(p, p >= 4 && p % 2 == 1));
  const uint8_t config = byte();
  const Abi abi = (config & 1) ? Abi::k32 : Abi::k64;
  const uint32_t order = (config >> 1) % 3;
  const DiskLimits limits{.sectors = uint64_t(byte()) << (byte() % 40),
                          .read_only = (config & 8) != 0,
                          .flush = (config & 16) != 0,
                          .barrier = (config & 32) != 0,
                          .discard = (config & 64) != 0,
                          .discard_secure = (config & 128) != 0,
                          .max_indirect_segments = uint32_t(byte()) * 4};
  // Fill every page with input; small values are likelier to be valid refs/sectors.
  for (uint32_t p = 0; p < 8; ++p)
    for (size_t i = 0; i < kPageSize; ++i) {
      const uint8_t b = byte();
      grants.Page(p)[i] = (b & 0x80) ? b : uint8_t(b % 16);
    }
  // Ring indexes: anything at all, sometimes sane.
  auto* idx = reinterpret_cast<uint32_t*>(grants.Page(0));
  idx[0] = (byte() & 3) != 0 ? byte() % 64 : uint32_t(byte()) << 24 | byte();  // req_prod

  {
    std::vector<GrantMapping> pages;
    for (uint32_t p = 0; p < (1u << order); ++p)
      pages.push_back(std::move(*grants.Map(refs[p], true)));
    BackRing ring(std::move(pages), abi, "fuzz");
    ParsedRequest parsed;
    std::vector<GrantMapping> maps;
    uint32_t taken = 0;
    for (int step = 0; step < 4096; ++step) {
      auto req = ring.Next();
      if (!req) {
        if (!ring.FinalCheckForRequests() || ring.in_flight() >= ring.size()) break;
        continue;
      }
      ++taken;
      check(taken <= ring.size(), "ring yielded more requests than it holds");
      const int16_t status = ParseRequest(*req, limits, grants, parsed);
      check(status == BLKIF_RSP_OKAY || status == BLKIF_RSP_ERROR || status == BLKIF_RSP_EOPNOTSUPP,
            "status outside blkif's set");
      if (status == BLKIF_RSP_OKAY) {
        check(!limits.read_only || parsed.op == Op::kRead, "read-only disk accepted a write");
        check(parsed.offset % kSectorSize == 0 && parsed.length % kSectorSize == 0, "unaligned");
        check(parsed.length == 0 ||
                  (parsed.offset / kSectorSize <= limits.sectors &&
                   parsed.length / kSectorSize <= limits.sectors - parsed.offset / kSectorSize),
              "request outside the disk");
        uint64_t sum = 0;
        for (const Segment& s : parsed.segments) {
          check(s.length > 0 && s.offset % kSectorSize == 0 && s.offset + s.length <= kPageSize,
                "segment outside its page");
          sum += s.length;
        }
        if (parsed.op != Op::kDiscard) check(sum == parsed.length, "segments disagree with length");
        check(parsed.segments.size() <=
                  std::max<uint32_t>(BLKIF_MAX_SEGMENTS_PER_REQUEST, limits.max_indirect_segments),
              "too many segments");
        if (MapSegments(parsed, grants, maps)) {
          check(maps.size() == parsed.segments.size(), "a segment left unmapped");
        }
        maps.clear();
      }
      // Answer every other request at once so the ring keeps moving.
      if (step % 2 == 0) ring.PutResponse(req->id, req->operation, status);
      ring.PushResponses();
    }
  }
  check(grants.active_mappings() == 0, "grant mapping leaked");
  return ok;
}

}  // namespace xenkvm::fuzz
