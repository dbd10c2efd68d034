// The console ring backend against a fake guest in plain memory: output and input with
// wrap-around, the notify-only-when-moved rule (with a Mini-OS-style guest that notifies back on
// every event), backpressure on input, hostile indexes.
#include "backends/console_ring.h"

#include <gtest/gtest.h>

#include <string>

extern "C" {
#include <xen/io/console.h>
}

#include "backends/ring_bytes.h"
#include "tests/backends/fake_ring_page.h"

namespace xenkvm::backends {
namespace {

class ConsoleRingTest : public ::testing::Test {
 protected:
  xencons_interface* ring() { return page_.As<xencons_interface>(); }
  // Guest output: as much as fits.
  size_t GuestWrite(std::string_view text) {
    const uint32_t cons = LoadIndex(&ring()->out_cons);
    const uint32_t prod = LoadIndex(&ring()->out_prod);
    const size_t n = std::min<size_t>(text.size(), sizeof(ring()->out) - (prod - cons));
    CopyToRing(ring()->out, prod, text.substr(0, n));
    StoreIndex(&ring()->out_prod, prod + uint32_t(n));
    return n;
  }
  std::string GuestRead() {
    const uint32_t cons = LoadIndex(&ring()->in_cons);
    const uint32_t prod = LoadIndex(&ring()->in_prod);
    std::string text(prod - cons, '\0');
    CopyFromRing(ring()->in, cons, text);
    StoreIndex(&ring()->in_cons, prod);
    return text;
  }
  void StartIndexesAt(uint32_t index) {
    ring()->in_cons = ring()->in_prod = ring()->out_cons = ring()->out_prod = index;
  }

  FakeRingPage page_;
  std::string output_;
  int notifies_ = 0;
  ConsoleRing console_{
      page_.memory(), FakeRingPage::kGpa,
      [this](std::span<const char> bytes) { output_.append(bytes.data(), bytes.size()); },
      [this] { ++notifies_; }};
};

TEST_F(ConsoleRingTest, OutputWrapsAroundTheRingAndTheIndexes) {
  StartIndexesAt(0xFFFFFF00u);  // indexes wrap through 2^32 during the test
  std::string expected;
  for (int i = 0; i < 40; ++i) {
    const std::string line = "line " + std::to_string(i) + " " + std::string(i * 7, 'x') + "\n";
    ASSERT_EQ(GuestWrite(line), line.size());
    expected += line;
    console_.OnGuestSend(2);
  }
  EXPECT_EQ(output_, expected);
  EXPECT_EQ(ring()->out_cons, ring()->out_prod);
  EXPECT_EQ(notifies_, 40);  // each send moved bytes
}

TEST_F(ConsoleRingTest, InputWrapsAndIsBoundedByTheGuestsSpace) {
  StartIndexesAt(0xFFFFFFF0u);
  std::string typed;
  for (int i = 0; i < 3000; ++i) typed.push_back(char('a' + i % 26));
  EXPECT_EQ(console_.Input(typed), typed.size());
  EXPECT_EQ(ring()->in_prod - ring()->in_cons, sizeof(ring()->in));  // full, not more
  EXPECT_EQ(console_.PendingInput(), typed.size() - sizeof(ring()->in));
  std::string got;
  for (int round = 0; round < 10 && got.size() < typed.size(); ++round) {
    got += GuestRead();
    console_.OnGuestSend(2);  // "consumed": the backend refills
  }
  EXPECT_EQ(got, typed);
  EXPECT_EQ(console_.PendingInput(), 0u);
}

TEST_F(ConsoleRingTest, NotifiesOnlyWhenDataMoved) {
  console_.OnGuestSend(2);
  console_.OnGuestSend(2);
  EXPECT_EQ(notifies_, 0);
  EXPECT_FALSE(console_.Service());
  // A Mini-OS-like guest: its handler consumes input and notifies back on every event. With a
  // backend that notifies only when it moved data, the exchange ends.
  int guest_events = 0;
  std::string got;
  console_.SetNotify([&] {
    ++notifies_;
    ++guest_events;
    ASSERT_LT(guest_events, 100) << "event storm";
    got += GuestRead();
    console_.OnGuestSend(2);
  });
  ASSERT_EQ(console_.Input(std::string_view("hello\n")), 6u);
  EXPECT_EQ(got, "hello\n");
  EXPECT_EQ(guest_events, 1);
}

TEST_F(ConsoleRingTest, InputBackpressure) {
  const std::string lots(ConsoleRing::kMaxPendingInput * 2, 'q');
  // At most kMaxPendingInput wait in the backend; the ring takes its share at once.
  EXPECT_EQ(console_.Input(lots), ConsoleRing::kMaxPendingInput);
  EXPECT_EQ(console_.PendingInput(), ConsoleRing::kMaxPendingInput - sizeof(ring()->in));
  EXPECT_EQ(console_.Input(lots), sizeof(ring()->in));
  EXPECT_EQ(console_.Input(lots), 0u);  // the guest reads nothing: the caller must wait
}

TEST_F(ConsoleRingTest, HostileIndexesNeverOverrunOrHang) {
  ring()->out_prod = 0x12345678;
  ring()->out_cons = 0x00000010;  // claims 300 MB of output
  console_.OnGuestSend(2);
  EXPECT_EQ(output_.size(), sizeof(ring()->out));  // one ring's worth, no more
  EXPECT_EQ(ring()->out_cons, ring()->out_prod);
  EXPECT_EQ(console_.counters().bad_indexes, 1u);
  // The guest's in_cons runs ahead of our in_prod: no space we could trust, nothing written.
  ring()->in_cons = 0x7000;
  ring()->in_prod = 0;
  const int before = notifies_;
  console_.Input(std::string_view("abc"));
  EXPECT_EQ(ring()->in_prod, 0u);
  EXPECT_EQ(notifies_, before);
  EXPECT_EQ(console_.PendingInput(), 3u);
  // Once the guest's index is sane again, the input flows.
  ring()->in_cons = 0;
  console_.OnGuestSend(2);
  EXPECT_EQ(GuestRead(), "abc");
}

TEST(ConsoleRingNoPage, RingOutsideGuestMemoryIsIgnored) {
  FakeRingPage page;
  int notifies = 0;
  ConsoleRing console(page.memory(), 0xdead0000, nullptr, [&] { ++notifies; });
  console.OnGuestSend(2);
  EXPECT_EQ(console.Input(std::string_view("x")), 1u);
  EXPECT_EQ(notifies, 0);
}

}  // namespace
}  // namespace xenkvm::backends
