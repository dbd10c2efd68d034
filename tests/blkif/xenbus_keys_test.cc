// Backend keys and the parsing of the frontend's connection keys.
#include "backends/blkif/xenbus_keys.h"

#include <gtest/gtest.h>

#include <map>

#include "backends/blkif/vdev.h"

namespace xenkvm::blkif {
namespace {

std::map<std::string, std::string> AsMap(const KeyValues& kv) { return {kv.begin(), kv.end()}; }

TEST(XenbusKeys, BackendAdvertisesDiskAndFeatures) {
  DiskFeatures f{.sectors = 8192,
                 .physical_sector_size = 4096,
                 .removable = true,
                 .discard = true,
                 .max_indirect_segments = 128};
  auto keys = AsMap(BackendKeys(f));
  EXPECT_EQ(keys["sectors"], "8192");
  EXPECT_EQ(keys["sector-size"], "512");
  EXPECT_EQ(keys["physical-sector-size"], "4096");
  EXPECT_EQ(keys["info"], "2");
  EXPECT_EQ(keys["mode"], "w");
  EXPECT_EQ(keys["feature-flush-cache"], "1");
  EXPECT_EQ(keys["feature-discard"], "1");
  EXPECT_EQ(keys["discard-granularity"], "4096");
  EXPECT_EQ(keys["feature-max-indirect-segments"], "128");
  EXPECT_EQ(keys["max-ring-page-order"], "4");
  EXPECT_EQ(keys["multi-queue-max-queues"], "4");

  f.read_only = true;
  f.max_indirect_segments = 0;
  keys = AsMap(BackendKeys(f));
  EXPECT_EQ(keys["info"], "6");
  EXPECT_EQ(keys["mode"], "r");
  EXPECT_EQ(keys.count("feature-discard"), 0u);
  EXPECT_EQ(keys.count("feature-max-indirect-segments"), 0u);
}

auto Reader(std::map<std::string, std::string> keys) {
  return [keys](const std::string& k) -> std::optional<std::string> {
    auto it = keys.find(k);
    if (it == keys.end()) return std::nullopt;
    return it->second;
  };
}

TEST(XenbusKeys, SingleQueueOnePage) {
  auto p = ParseFrontendKeys(Reader({{"ring-ref", "8"}, {"event-channel", "5"}}), DiskFeatures{});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->abi, Abi::k64);
  ASSERT_EQ(p->queues.size(), 1u);
  EXPECT_EQ(p->queues[0].ring_refs, std::vector<GrantRef>{8});
  EXPECT_EQ(p->queues[0].event_channel, 5u);
}

TEST(XenbusKeys, MultiQueueMultiPage32Bit) {
  auto p = ParseFrontendKeys(Reader({{"protocol", "x86_32-abi"},
                                     {"multi-queue-num-queues", "2"},
                                     {"ring-page-order", "1"},
                                     {"queue-0/ring-ref0", "8"},
                                     {"queue-0/ring-ref1", "9"},
                                     {"queue-0/event-channel", "5"},
                                     {"queue-1/ring-ref0", "10"},
                                     {"queue-1/ring-ref1", "11"},
                                     {"queue-1/event-channel", "6"}}),
                             DiskFeatures{});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->abi, Abi::k32);
  EXPECT_EQ(p->ring_page_order, 1u);
  ASSERT_EQ(p->queues.size(), 2u);
  EXPECT_EQ(p->queues[1].ring_refs, (std::vector<GrantRef>{10, 11}));
  EXPECT_EQ(p->queues[1].event_channel, 6u);
}

TEST(XenbusKeys, RefusesWhatWasNotAdvertisedOrIsMalformed) {
  const DiskFeatures f{.max_ring_page_order = 1, .max_queues = 2};
  const std::map<std::string, std::string> base = {{"ring-ref", "8"}, {"event-channel", "5"}};
  auto with = [&](std::string k, std::string v) {
    auto m = base;
    m[k] = v;
    return ParseFrontendKeys(Reader(m), f);
  };
  EXPECT_TRUE(with("protocol", "x86_64-abi"));
  EXPECT_FALSE(with("protocol", "arm-abi"));
  EXPECT_FALSE(with("multi-queue-num-queues", "3"));
  EXPECT_FALSE(with("multi-queue-num-queues", "0"));
  EXPECT_FALSE(with("ring-page-order", "2"));
  EXPECT_FALSE(with("ring-ref", "12abc"));
  EXPECT_FALSE(with("ring-ref", "99999999999"));
  EXPECT_FALSE(with("event-channel", ""));
  EXPECT_FALSE(ParseFrontendKeys(Reader({{"ring-ref", "8"}}), f));
}

// docs/misc/vbd-interface.txt's numbering (libxl__device_disk_dev_number).
TEST(Vdev, Numbers) {
  EXPECT_EQ(*VdevNumber("xvda"), 51712u);
  EXPECT_EQ(*VdevNumber("xvdb"), 51728u);
  EXPECT_EQ(*VdevNumber("xvdb1"), 51729u);
  EXPECT_EQ(*VdevNumber("xvdp15"), (202u << 8) | (15u << 4) | 15u);
  EXPECT_EQ(*VdevNumber("xvdq"), (1u << 28) | (16u << 8));   // past the 16 short disks
  EXPECT_EQ(*VdevNumber("xvda16"), (1u << 28) | 16u);        // partition past 15
  EXPECT_EQ(*VdevNumber("xvdaa"), (1u << 28) | (26u << 8));  // bijective base 26
  EXPECT_EQ(*VdevNumber("51712"), 51712u);
  // The emulated-disk names (libxl's numbering): Mini-OS's blkfront opens hda = 768.
  EXPECT_EQ(*VdevNumber("hda"), 768u);
  EXPECT_EQ(*VdevNumber("hdb"), (3u << 8) | (1u << 6));
  EXPECT_EQ(*VdevNumber("hdc"), 22u << 8);
  EXPECT_EQ(*VdevNumber("hdd63"), (22u << 8) | (1u << 6) | 63u);
  EXPECT_EQ(*VdevNumber("sda"), 2048u);
  EXPECT_EQ(*VdevNumber("sdp15"), (8u << 8) | (15u << 4) | 15u);
  for (const char* bad :
       {"", "xvd", "sd", "hd", "hde", "hda64", "hdaa", "sdq", "sda16", "xvdA", "xvda-1", "xvda01",
        "xvda256", "xvdzzzzz", "99999999999", "2147483648", "xvda1x", " xvda"}) {
    auto r = VdevNumber(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().xen_errno, XEN_EINVAL) << bad;
  }
}

}  // namespace
}  // namespace xenkvm::blkif
