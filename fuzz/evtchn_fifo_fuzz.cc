// libFuzzer entry: hostile FIFO event-channel sequences against the engine (see the harness).
#include <cstdlib>

#include "fuzz/evtchn_fifo_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!xenkvm::fuzz::RunFifoOps(std::span(data, size))) std::abort();
  return 0;
}
