// Terminal output filter; see terminal_filter.h.
#include "vmm/terminal_filter.h"

namespace xenkvm::vmm {

void TerminalFilter::Filter(std::span<const char> in, std::string* out) {
  for (char ch : in) {
    const auto b = static_cast<uint8_t>(ch);
    if (pending_c2_) {
      pending_c2_ = false;
      if (b >= 0xa0 && b <= 0xbf) {
        out->push_back('\xc2');
        out->push_back(ch);
        continue;
      }
      if (b >= 0x80 && b <= 0x9f) continue;  // a C1 control (e.g. CSI) in UTF-8: drop both
      // A malformed sequence: drop the lead byte, judge this one afresh.
    }
    if (continuation_left_ > 0) {
      if (b >= 0x80 && b <= 0xbf) {
        --continuation_left_;
        out->push_back(ch);
        continue;
      }
      continuation_left_ = 0;  // truncated sequence: the terminal shows what it has
    }
    if (b == '\n' || b == '\t' || (b >= 0x20 && b < 0x7f)) {
      out->push_back(ch);
    } else if (b == 0xc2) {
      pending_c2_ = true;
    } else if (b >= 0xc3 && b <= 0xdf) {
      continuation_left_ = 1;
      out->push_back(ch);
    } else if (b >= 0xe0 && b <= 0xef) {
      continuation_left_ = 2;
      out->push_back(ch);
    } else if (b >= 0xf0 && b <= 0xf4) {
      continuation_left_ = 3;
      out->push_back(ch);
    }
    // Everything else (C0 controls including ESC and '\r', DEL, raw C1 bytes, stray
    // continuation bytes, invalid leads) is dropped.
  }
}

}  // namespace xenkvm::vmm
