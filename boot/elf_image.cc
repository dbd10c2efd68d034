// PVH ELF parsing; see elf_image.h.
#include "boot/elf_image.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "abi/xen.h"

namespace xenkvm::boot {

namespace {

// A note area: [offset, offset + size) of the file.
struct NoteArea {
  uint64_t offset, size;
};

// Like Xen's libelf, an image whose notes aren't in a PT_NOTE segment (Mini-OS) is searched
// through its SHT_NOTE sections instead.
template <class Ehdr, class Shdr>
Result<> AddSectionNotes(std::span<const uint8_t> image, const Ehdr& eh,
                         std::vector<NoteArea>* notes) {
  if (eh.e_shnum == 0) return {};
  if (eh.e_shentsize != sizeof(Shdr)) return Fail(XEN_EINVAL, "ELF shentsize");
  const uint64_t sh_end = eh.e_shoff + uint64_t{eh.e_shnum} * sizeof(Shdr);
  if (eh.e_shoff > image.size() || sh_end > image.size())
    return Fail(XEN_EINVAL, "ELF section headers truncated");
  for (uint32_t i = 0; i < eh.e_shnum; ++i) {
    Shdr sh;
    std::memcpy(&sh, image.data() + eh.e_shoff + i * sizeof(Shdr), sizeof(sh));
    if (sh.sh_type != SHT_NOTE) continue;
    if (sh.sh_offset > image.size() || sh.sh_size > image.size() - sh.sh_offset)
      return Fail(XEN_EINVAL, "ELF note section truncated");
    notes->push_back(NoteArea{sh.sh_offset, sh.sh_size});
  }
  return {};
}

// The descriptor of the first note of owner "Xen" and type `wanted`, if any. Every area lies
// inside the image (checked by the caller); a note running past its area ends the search.
std::optional<std::span<const uint8_t>> FindXenNote(std::span<const uint8_t> image,
                                                    const std::vector<NoteArea>& notes,
                                                    uint32_t wanted) {
  for (const NoteArea& area : notes) {
    uint64_t pos = area.offset;
    const uint64_t end = area.offset + area.size;
    while (pos + 12 <= end) {
      uint32_t namesz, descsz, type;
      std::memcpy(&namesz, image.data() + pos, 4);
      std::memcpy(&descsz, image.data() + pos + 4, 4);
      std::memcpy(&type, image.data() + pos + 8, 4);
      const uint64_t name_at = pos + 12;
      const uint64_t desc_at = name_at + ((uint64_t{namesz} + 3) & ~3ull);
      const uint64_t next = desc_at + ((uint64_t{descsz} + 3) & ~3ull);
      if (next > end) break;
      if (type == wanted && namesz == 4 && std::memcmp(image.data() + name_at, "Xen", 4) == 0)
        return image.subspan(desc_at, descsz);
      pos = next;
    }
  }
  return std::nullopt;
}

// XEN_ELFNOTE_PHYS32_ENTRY: a 32- or 64-bit value below 4 GiB (Linux emits it with _ASM_PTR,
// 8 bytes on x86_64).
std::optional<uint32_t> FindPhys32Entry(std::span<const uint8_t> image,
                                        const std::vector<NoteArea>& notes) {
  const auto desc = FindXenNote(image, notes, XEN_ELFNOTE_PHYS32_ENTRY);
  if (!desc || (desc->size() != 4 && desc->size() != 8)) return std::nullopt;
  uint64_t value = 0;
  std::memcpy(&value, desc->data(), desc->size());
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(value);
}

// XEN_ELFNOTE_GUEST_OS: a NUL-terminated name ("linux" for Linux); bounded, printable only.
std::string FindGuestOs(std::span<const uint8_t> image, const std::vector<NoteArea>& notes) {
  constexpr size_t kMaxName = 32;
  const auto desc = FindXenNote(image, notes, XEN_ELFNOTE_GUEST_OS);
  std::string name;
  if (!desc) return name;
  for (uint8_t c : desc->first(std::min(desc->size(), kMaxName))) {
    if (c == 0) break;
    if (c < 0x20 || c > 0x7e) return {};
    name.push_back(static_cast<char>(c));
  }
  return name;
}

template <class Ehdr, class Phdr, class Shdr>
Result<ElfImage> Parse(std::span<const uint8_t> image) {
  if (image.size() < sizeof(Ehdr)) return Fail(XEN_EINVAL, "ELF header truncated");
  Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386)
    return Fail(XEN_EINVAL, "ELF is not x86");
  if (eh.e_phentsize != sizeof(Phdr)) return Fail(XEN_EINVAL, "ELF phentsize");
  const uint64_t ph_end = eh.e_phoff + uint64_t{eh.e_phnum} * sizeof(Phdr);
  if (eh.e_phoff > image.size() || ph_end > image.size())
    return Fail(XEN_EINVAL, "ELF program headers truncated");
  ElfImage out;
  out.elf_entry = eh.e_entry;
  out.elf64 = sizeof(Ehdr) == sizeof(Elf64_Ehdr);
  std::vector<NoteArea> notes;
  for (uint32_t i = 0; i < eh.e_phnum; ++i) {
    Phdr ph;
    std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(Phdr), sizeof(ph));
    ElfSegment s{ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz};
    if (s.offset > image.size() || s.filesz > image.size() - s.offset)
      return Fail(XEN_EINVAL, "ELF segment truncated");
    if (ph.p_type == PT_LOAD && s.memsz != 0) {
      if (s.filesz > s.memsz) return Fail(XEN_EINVAL, "ELF filesz > memsz");
      s.executable = (ph.p_flags & PF_X) != 0;
      out.loads.push_back(s);
    } else if (ph.p_type == PT_NOTE) {
      notes.push_back(NoteArea{s.offset, s.filesz});
    }
  }
  if (notes.empty()) TRY((AddSectionNotes<Ehdr, Shdr>(image, eh, &notes)));
  const auto entry = FindPhys32Entry(image, notes);
  if (!entry) return Fail(XEN_EINVAL, "no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image");
  if (out.loads.empty()) return Fail(XEN_EINVAL, "ELF has no loadable segment");
  out.pvh_entry = *entry;
  out.guest_os = FindGuestOs(image, notes);
  return out;
}

}  // namespace

bool IsElf(std::span<const uint8_t> image) {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

Result<ElfImage> ParseElfImage(std::span<const uint8_t> image) {
  if (image.size() < EI_NIDENT || !IsElf(image)) return Fail(XEN_EINVAL, "not an ELF file");
  switch (image[EI_CLASS]) {
    case ELFCLASS64:
      return Parse<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr>(image);
    case ELFCLASS32:
      return Parse<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr>(image);
    default:
      return Fail(XEN_EINVAL, "ELF class");
  }
}

}  // namespace xenkvm::boot
