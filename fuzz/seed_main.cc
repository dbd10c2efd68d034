// Runs a libFuzzer harness (LLVMFuzzerTestOneInput) without libFuzzer, in every build: each
// file of the checked-in seed corpus, then seeded random inputs. A broken invariant aborts the
// harness, which fails the test. Usage: <target>_seeds CORPUS_DIR [RANDOM_INPUTS [MAX_SIZE]].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR [RANDOM_INPUTS [MAX_SIZE]]\n", argv[0]);
    return 2;
  }
  size_t seeds = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1], ec)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(data.data(), data.size());
    ++seeds;
  }
  const long randoms = argc > 2 ? std::atol(argv[2]) : 2000;
  const size_t max_size = argc > 3 ? static_cast<size_t>(std::atol(argv[3])) : 4096;
  std::mt19937_64 rng(20261130);
  std::vector<uint8_t> data;
  for (long i = 0; i < randoms; ++i) {
    data.resize(rng() % (max_size + 1));
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    LLVMFuzzerTestOneInput(data.data(), data.size());
  }
  std::printf("%zu seed inputs and %ld random inputs: no invariant broken\n", seeds, randoms);
  return 0;
}
