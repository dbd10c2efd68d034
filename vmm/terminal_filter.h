// Neutralises guest text before it reaches the user's terminal: a guest must not be able to
// send escape sequences (retitle, remap keys, move the cursor over the VMM's own messages).
// Like Xen's console for unprivileged guests (is_console_printable) it keeps printable ASCII,
// '\n' and '\t'; unlike it, it also keeps well-formed UTF-8 other than the C1 controls.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace xenkvm::vmm {

// Threads: one caller at a time (state carries a UTF-8 sequence across calls).
class TerminalFilter {
 public:
  // Appends the safe part of `in` to *out.
  void Filter(std::span<const char> in, std::string* out);

 private:
  uint8_t continuation_left_ = 0;  // UTF-8 continuation bytes still expected
  bool pending_c2_ = false;        // saw 0xC2: U+0080..U+00BF follows, the first 32 are C1
};

}  // namespace xenkvm::vmm
