// libFuzzer entry: hostile snapshot files against the loader (snapshot/format.h). Every input is
// opened twice: against this host, and against the host its own header names (so a mutated
// file gets past the host check and into its sections). Open must refuse or index the file;
// every indexed section must then load, and lie inside the file.
#include <cstdlib>
#include <cstring>

#include "snapshot/format.h"

namespace {

void Check(const xenkvm::snapshot::Source& source, const xenkvm::snapshot::HostFacts& here) {
  auto reader = xenkvm::snapshot::Reader::Open(source, here);
  if (!reader) {
    if (reader.error().message == nullptr) std::abort();
    return;
  }
  for (const auto& section : reader->sections()) {
    if (section.offset > source.size() || section.length > source.size() - section.offset)
      std::abort();
    if (!reader->Load(section)) std::abort();  // Open verified it: loading must succeed
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  xenkvm::snapshot::SpanSource source(bytes);
  Check(source, xenkvm::snapshot::CurrentHostFacts());
  if (size >= xenkvm::snapshot::kHeaderSize) {
    xenkvm::snapshot::HostFacts own;
    std::memcpy(own.cpu_vendor.data(), data + 16, own.cpu_vendor.size());
    std::memcpy(&own.page_size, data + 28, 4);
    std::memcpy(&own.xsave_features, data + 32, 8);
    std::memcpy(&own.xsave_size, data + 40, 4);
    Check(source, own);
  }
  return 0;
}
