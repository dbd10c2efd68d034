// PVH ELF loader; see pvh_loader.h.
#include "vmm/pvh_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "abi/xen.h"
#include "mem/layout_guard.h"

namespace xenkvm::vmm {

namespace {
// Low memory below 1 MiB that PVH images don't load into; used for the boot structures when
// free (same spot as other PVH VMMs use), else the pages after the image.
constexpr uint64_t kBootDataLow = 0x6000;
constexpr uint64_t kBootDataSize = 0x3000;  // start_info + memmap page + cmdline page

struct Segment {
  uint64_t paddr, offset, filesz, memsz;
  bool executable = false;  // PF_X
};

struct ParsedElf {
  uint64_t entry = 0;  // e_entry (informational; PVH enters at the note's address)
  std::vector<Segment> loads;
  std::vector<Segment> notes;
};

// Like Xen's libelf, an image whose notes aren't in a PT_NOTE segment (Mini-OS) is searched
// through its SHT_NOTE sections instead.
template <class Ehdr, class Shdr>
Result<> AddSectionNotes(std::span<const uint8_t> image, const Ehdr& eh,
                         std::vector<Segment>* notes) {
  if (eh.e_shnum == 0) return {};
  if (eh.e_shentsize != sizeof(Shdr)) return Fail(XEN_EINVAL, "ELF shentsize");
  const uint64_t sh_end = eh.e_shoff + uint64_t{eh.e_shnum} * sizeof(Shdr);
  if (eh.e_shoff > image.size() || sh_end > image.size())
    return Fail(XEN_EINVAL, "ELF section headers truncated");
  for (uint32_t i = 0; i < eh.e_shnum; ++i) {
    Shdr sh;
    std::memcpy(&sh, image.data() + eh.e_shoff + i * sizeof(Shdr), sizeof(sh));
    if (sh.sh_type != SHT_NOTE) continue;
    if (sh.sh_offset > image.size() || sh.sh_size > image.size() - sh.sh_offset) {
      return Fail(XEN_EINVAL, "ELF note section truncated");
    }
    notes->push_back(Segment{0, sh.sh_offset, sh.sh_size, sh.sh_size});
  }
  return {};
}

template <class Ehdr, class Phdr, class Shdr>
Result<ParsedElf> ParsePhdrs(std::span<const uint8_t> image) {
  if (image.size() < sizeof(Ehdr)) return Fail(XEN_EINVAL, "ELF header truncated");
  Ehdr eh;
  std::memcpy(&eh, image.data(), sizeof(eh));
  if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386)
    return Fail(XEN_EINVAL, "ELF is not x86");
  if (eh.e_phentsize != sizeof(Phdr)) return Fail(XEN_EINVAL, "ELF phentsize");
  const uint64_t ph_end = eh.e_phoff + uint64_t{eh.e_phnum} * sizeof(Phdr);
  if (eh.e_phoff > image.size() || ph_end > image.size())
    return Fail(XEN_EINVAL, "ELF program headers truncated");
  ParsedElf out;
  out.entry = eh.e_entry;
  for (uint32_t i = 0; i < eh.e_phnum; ++i) {
    Phdr ph;
    std::memcpy(&ph, image.data() + eh.e_phoff + i * sizeof(Phdr), sizeof(ph));
    Segment s{ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz};
    if (s.offset > image.size() || s.filesz > image.size() - s.offset)
      return Fail(XEN_EINVAL, "ELF segment truncated");
    if (ph.p_type == PT_LOAD && s.memsz != 0) {
      if (s.filesz > s.memsz) return Fail(XEN_EINVAL, "ELF filesz > memsz");
      s.executable = (ph.p_flags & PF_X) != 0;
      out.loads.push_back(s);
    } else if (ph.p_type == PT_NOTE) {
      out.notes.push_back(s);
    }
  }
  if (out.notes.empty()) TRY(AddSectionNotes<Ehdr, Shdr>(image, eh, &out.notes));
  return out;
}

// The descriptor of the first ELF note of owner "Xen" and type `type`, if any.
std::optional<std::span<const uint8_t>> FindXenNote(std::span<const uint8_t> image,
                                                    const std::vector<Segment>& notes,
                                                    uint32_t wanted) {
  for (const Segment& s : notes) {
    uint64_t pos = s.offset;
    const uint64_t end = s.offset + s.filesz;
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

// XEN_ELFNOTE_PHYS32_ENTRY: a 32- or 64-bit value below 4 GiB.
std::optional<uint32_t> FindPhys32Entry(std::span<const uint8_t> image,
                                        const std::vector<Segment>& notes) {
  const auto desc = FindXenNote(image, notes, XEN_ELFNOTE_PHYS32_ENTRY);
  if (!desc || (desc->size() != 4 && desc->size() != 8)) return std::nullopt;
  uint64_t value = 0;
  std::memcpy(&value, desc->data(), desc->size());
  if (value > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(value);
}

// XEN_ELFNOTE_GUEST_OS: a NUL-terminated name ("linux" for Linux); bounded, printable only.
std::string FindGuestOs(std::span<const uint8_t> image, const std::vector<Segment>& notes) {
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

// Zeroes guest memory in place (no buffer the size of the range).
Result<> ZeroFill(mem::GuestMemory& memory, uint64_t gpa, uint64_t size) {
  mem::LayoutGuard guard = mem::LayoutGuard::Acquire(memory);
  uint8_t* host = TRY(memory.TranslateGuarded(gpa, size));
  std::memset(host, 0, size);
  return {};
}

bool Overlaps(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
  return a < b + b_len && b < a + a_len;
}
}  // namespace

Result<PvhBoot> LoadPvhImage(std::span<const uint8_t> image, mem::GuestMemory& memory,
                             uint64_t ram_size, const std::string& cmdline,
                             std::span<const xen::MemoryMapEntry> memory_map, uint64_t rsdp_paddr) {
  if (image.size() < EI_NIDENT || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0) {
    return Fail(XEN_EINVAL, "not an ELF file");
  }
  ParsedElf elf =
      image[EI_CLASS] == ELFCLASS64   ? TRY((ParsePhdrs<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr>(image)))
      : image[EI_CLASS] == ELFCLASS32 ? TRY((ParsePhdrs<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr>(image)))
                                      : TRY(Result<ParsedElf>(Fail(XEN_EINVAL, "ELF class")));
  auto entry = FindPhys32Entry(image, elf.notes);
  if (!entry) return Fail(XEN_EINVAL, "no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH image");
  if (elf.loads.empty()) return Fail(XEN_EINVAL, "ELF has no loadable segment");

  PvhBoot boot;
  boot.entry = *entry;
  boot.guest_os = FindGuestOs(image, elf.notes);
  // Work is bounded by guest RAM: every segment lies in RAM and together they fit in it (so
  // thousands of overlapping huge segments can't make loading take hours).
  uint64_t total = 0;
  bool entry_loaded = false;
  for (const Segment& s : elf.loads) {
    if (s.paddr >= ram_size || s.memsz > ram_size - s.paddr)
      return Fail(XEN_EFAULT, "ELF segment outside guest RAM");
    total += s.memsz;
    if (total > ram_size) return Fail(XEN_EFAULT, "ELF segments larger than guest RAM");
    entry_loaded |= boot.entry >= s.paddr && boot.entry - s.paddr < s.memsz;
  }
  if (!entry_loaded) return Fail(XEN_EINVAL, "PVH entry point outside the loaded segments");
  for (const Segment& s : elf.loads) {
    if (s.filesz != 0) TRY(memory.Write(s.paddr, std::as_bytes(image.subspan(s.offset, s.filesz))));
    if (s.memsz > s.filesz) TRY(ZeroFill(memory, s.paddr + s.filesz, s.memsz - s.filesz));
    boot.image_end = std::max(boot.image_end, s.paddr + s.memsz);
    if (s.executable && s.filesz != 0) boot.code.push_back({s.paddr, s.filesz});
  }

  uint64_t base = kBootDataLow;
  for (const Segment& s : elf.loads) {
    if (Overlaps(base, kBootDataSize, s.paddr, s.memsz))
      base = (boot.image_end + 0xfff) & ~0xfffull;
  }
  if (base + kBootDataSize > ram_size) return Fail(XEN_EFAULT, "no room for hvm_start_info");

  const uint64_t memmap_gpa = base + 0x1000;
  const uint64_t cmdline_gpa = base + 0x2000;
  if (cmdline.size() >= 0x1000) return Fail(XEN_EINVAL, "command line longer than 4095 bytes");
  std::vector<hvm_memmap_table_entry> table;
  for (const auto& e : memory_map) table.push_back({e.addr, e.size, e.type, 0});
  if (table.size() * sizeof(hvm_memmap_table_entry) > 0x1000)
    return Fail(XEN_EINVAL, "memory map too long");
  TRY(memory.Write(memmap_gpa, std::as_bytes(std::span(table))));
  std::vector<std::byte> line(cmdline.size() + 1);
  std::memcpy(line.data(), cmdline.c_str(), cmdline.size() + 1);
  TRY(memory.Write(cmdline_gpa, line));

  hvm_start_info info{};
  info.magic = XEN_HVM_START_MAGIC_VALUE;
  info.version = 1;  // has memmap_paddr / memmap_entries
  info.cmdline_paddr = cmdline_gpa;
  info.memmap_paddr = memmap_gpa;
  info.memmap_entries = static_cast<uint32_t>(table.size());
  info.rsdp_paddr = rsdp_paddr;
  TRY(memory.WriteObj(base, info));
  boot.start_info_gpa = base;
  return boot;
}

}  // namespace xenkvm::vmm
