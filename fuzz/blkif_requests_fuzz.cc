// libFuzzer entry: hostile blkif rings and requests against the backend's validator (see the
// harness).
#include <cstdlib>

#include "fuzz/blkif_requests_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!xenkvm::fuzz::RunBlkifRequests(std::span(data, size))) std::abort();
  return 0;
}
