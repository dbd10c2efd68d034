// libFuzzer entry: hostile xenstore ring traffic against the ring backend and the xs_wire
// parser (see the harness).
#include <cstdlib>

#include "fuzz/xenstore_ring_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!xenkvm::fuzz::RunXenstoreRing(std::span(data, size))) std::abort();
  return 0;
}
