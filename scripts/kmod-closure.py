#!/usr/bin/env python3
"""Copies kernel modules and everything they need into a directory, in load order.

  kmod-closure.py MODULE_DIR DEST NAME...   (prints the load order, space-separated)

Debian's linux-image package has no modules.dep, so each module's needs come from the
`depends=` field of its .modinfo section. Modules are written uncompressed as DEST/NAME.ko
(6.12 ships .ko.xz, which busybox's insmod can't read); names not found are built into the
kernel and skipped.
"""
import lzma
import os
import struct
import sys


def depends(elf):
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][4]
    for name, _, _, _, off, size in sections:
        if elf[names + name: elf.index(b"\0", names + name)] == b".modinfo":
            for field in elf[off: off + size].split(b"\0"):
                if field.startswith(b"depends="):
                    return [d.decode().replace("-", "_") for d in field[8:].split(b",") if d]
    return []


def main():
    moddir, dest, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
    files = {}
    for root, _, names in os.walk(moddir):
        for n in names:
            for suffix in (".ko", ".ko.xz"):
                if n.endswith(suffix):
                    files[n[: -len(suffix)].replace("-", "_")] = os.path.join(root, n)
    order, seen = [], set()

    def visit(name):
        if name in seen or name not in files:
            seen.add(name)
            return
        seen.add(name)
        data = open(files[name], "rb").read()
        elf = lzma.decompress(data) if files[name].endswith(".xz") else data
        for d in depends(elf):
            visit(d)
        with open(os.path.join(dest, name + ".ko"), "wb") as out:
            out.write(elf)
        order.append(name)

    for w in wanted:
        visit(w.replace("-", "_"))
    print(" ".join(order))


main()
