#!/usr/bin/env python3
"""Flash and RAM use of an ESP32 RISC-V ELF, from its section headers (like `size -A`).

Flash: every allocated section with contents (code, read-only data and the model image, plus
the initial values of .data), i.e. what the flashed app image carries. RAM: every allocated
section whose address is in the chip's SRAM (not in the flash-mapped windows), .bss included;
the stack gets what is left of the RAM region (esp-hal's .stack section). esp-hal's `*_dummy`
sections only reserve address space and are not counted.
"""
import struct
import sys

# Windows through which the ESP32-C2/C3/C6/H2 (and S3) see flash: DROM and IROM.
FLASH_WINDOWS = [(0x3C00_0000, 0x3E00_0000), (0x4200_0000, 0x4400_0000)]
SHF_ALLOC = 0x2
SHT_NOBITS = 8


def sections(path):
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 1:
        sys.exit(f"{path}: not a 32-bit ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    hdrs = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdrs[shstrndx][4]
    for name, typ, flags, addr, _off, size, *_ in hdrs:
        end = data.index(b"\0", strtab + name)
        yield data[strtab + name:end].decode(), typ, flags, addr, size


def main():
    path = sys.argv[1]
    flash = ram = stack = 0
    rows = []
    for name, typ, flags, addr, size in sections(path):
        if not flags & SHF_ALLOC or size == 0:
            continue
        in_flash = any(lo <= addr < hi for lo, hi in FLASH_WINDOWS)
        if name.endswith("_dummy"):
            # esp-hal's placeholders: address space aliasing code placed elsewhere (the same
            # SRAM seen through the instruction bus, the flash MMU's alignment), not memory.
            where = "alias"
        elif name == ".stack":
            stack = size
            where = "stack"
        else:
            if typ != SHT_NOBITS:
                flash += size
            if not in_flash:
                ram += size
            where = "flash" if in_flash else "RAM"
        rows.append((name, addr, size, where))
    print(f"{'section':<24}{'address':>12}{'bytes':>10}  where")
    for name, addr, size, where in rows:
        print(f"{name:<24}{addr:>#12x}{size:>10}  {where}")
    print(f"flash (app image): {flash} bytes ({flash / 1024:.1f} KiB)")
    print(f"static RAM (RAM code + .data + .bss, the arena included): {ram} bytes ({ram / 1024:.1f} KiB)")
    if stack:
        print(f"stack (the rest of the RAM region): {stack} bytes ({stack / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
