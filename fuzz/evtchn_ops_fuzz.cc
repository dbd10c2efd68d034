// libFuzzer entry: hostile EVTCHNOP_* sequences against the engine (see the harness).
#include <cstdlib>

#include "fuzz/evtchn_ops_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!xenkvm::fuzz::RunEvtchnOps(std::span(data, size))) std::abort();
  return 0;
}
