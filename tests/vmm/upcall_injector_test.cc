// The upcall injector's decisions (docs/upcalls.md), without KVM: which route a raise takes,
// what happens right before KVM_RUN (callback ExtINT now, an interrupt window, or the resend of
// a dropped vector MSI), and what the retry thread does with a dropped MSI.
#include "vmm/upcall_injector.h"

#include <gtest/gtest.h>

namespace xenkvm::vmm {
namespace {

TEST(UpcallInjector, RaisePrefersThePerVcpuVector) {
  EXPECT_EQ(DecideRaise(0xf3, 0), RaiseAction::kSendMsi);
  EXPECT_EQ(DecideRaise(0xf3, 0xe0), RaiseAction::kSendMsi);
  EXPECT_EQ(DecideRaise(0, 0xe0), RaiseAction::kQueueCallback);
  EXPECT_EQ(DecideRaise(0, 0), RaiseAction::kNone);
}

EntryState Callback(bool pending, bool ready, bool if_flag) {
  EntryState s;
  s.callback_vector = 0xe0;
  s.upcall_pending = pending;
  s.ready_for_injection = ready;
  s.if_flag = if_flag;
  return s;
}

TEST(UpcallInjector, CallbackInjectsWhenTheGuestCanTakeIt) {
  const EntryAction a = DecideEntry(Callback(true, true, true));
  EXPECT_TRUE(a.queue_extint);
  EXPECT_FALSE(a.request_window);
  EXPECT_FALSE(a.resend_msi);
}

TEST(UpcallInjector, CallbackAsksForAWindowWhenBlocked) {
  for (auto [ready, if_flag] :
       {std::pair{false, true}, std::pair{true, false}, std::pair{false, false}}) {
    const EntryAction a = DecideEntry(Callback(true, ready, if_flag));
    EXPECT_FALSE(a.queue_extint);
    EXPECT_TRUE(a.request_window);
  }
}

TEST(UpcallInjector, CallbackIsLevelLikeNothingWithoutPending) {
  const EntryAction a = DecideEntry(Callback(false, true, true));
  EXPECT_FALSE(a.queue_extint);
  EXPECT_FALSE(a.request_window);  // a window asked earlier is withdrawn
}

TEST(UpcallInjector, PerVcpuVectorOverridesCallbackAtEntry) {
  EntryState s = Callback(true, true, true);
  s.upcall_vector = 0xf3;
  const EntryAction a = DecideEntry(s);
  EXPECT_FALSE(a.queue_extint);
  EXPECT_FALSE(a.request_window);
  EXPECT_FALSE(a.resend_msi);  // not dropped: the MSI already went in
  s.msi_dropped = true;
  EXPECT_TRUE(DecideEntry(s).resend_msi);
  s.upcall_pending = false;
  EXPECT_FALSE(DecideEntry(s).resend_msi);  // the guest consumed it meanwhile
}

TEST(UpcallInjector, NoRouteDoesNothingAtEntry) {
  EntryState s;
  s.upcall_pending = true;
  s.ready_for_injection = true;
  s.if_flag = true;
  s.msi_dropped = true;
  const EntryAction a = DecideEntry(s);
  EXPECT_FALSE(a.queue_extint || a.request_window || a.resend_msi);
}

TEST(UpcallInjector, RetryResendsOnlyWhileDroppedAndPending) {
  EXPECT_EQ(DecideRetry(false, 0xf3, true), RetryAction::kNothing);
  EXPECT_EQ(DecideRetry(true, 0xf3, true), RetryAction::kResend);
  EXPECT_EQ(DecideRetry(true, 0xf3, false), RetryAction::kForget);
  EXPECT_EQ(DecideRetry(true, 0, true), RetryAction::kForget);  // vector withdrawn
}

}  // namespace
}  // namespace xenkvm::vmm
