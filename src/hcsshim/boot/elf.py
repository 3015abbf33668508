"""hcsshim.boot.elf: the few ELF facts the boot build needs, read with the stdlib alone.

A kernel module's `.modinfo` section (NUL-separated `key=value` strings: name, depends, softdep, alias,
vermagic) replaces kmod's modinfo/depmod, which the build host does not have; a program's or library's
DT_NEEDED list and PT_INTERP replace ldd, so the default base gets exactly the shared libraries its
programs load. Only 64-bit little-endian ELF is handled (the guest is x86_64).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"

_PT_INTERP = 3
_PT_DYNAMIC = 2
_PT_LOAD = 1
_DT_NULL = 0
_DT_NEEDED = 1
_DT_STRTAB = 5


class ElfError(ValueError):
    """The bytes are not an ELF file this module can read."""


@dataclass(frozen=True)
class _Section:
    name: str
    offset: int
    size: int


def _header(data: bytes, what: str) -> tuple[int, int, int, int, int, int, int]:
    if data[:4] != ELF_MAGIC:
        raise ElfError(f"{what}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(f"{what}: only 64-bit little-endian ELF is supported")
    (phoff, shoff) = struct.unpack_from("<QQ", data, 0x20)
    (phentsize, phnum, shentsize, shnum, shstrndx) = struct.unpack_from("<HHHHH", data, 0x36)
    return phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx


def sections(data: bytes, what: str = "ELF") -> list[_Section]:
    """The section table: name, file offset and size of each section."""
    _, shoff, _, _, shentsize, shnum, shstrndx = _header(data, what)
    if shoff == 0 or shnum == 0:
        return []
    raw = []
    for i in range(shnum):
        base = shoff + i * shentsize
        if base + 64 > len(data):
            raise ElfError(f"{what}: section header {i} beyond end of file")
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, base)
        raw.append((name, off, size))
    _, str_off, str_size = raw[shstrndx]
    strtab = data[str_off:str_off + str_size]
    out = []
    for name, off, size in raw:
        end = strtab.find(b"\0", name)
        out.append(_Section(strtab[name:end].decode("ascii", "replace"), off, size))
    return out


def modinfo(data: bytes, what: str = "module") -> dict[str, list[str]]:
    """The `.modinfo` strings of a kernel module, as key -> values (alias and softdep repeat)."""
    for s in sections(data, what):
        if s.name == ".modinfo":
            info: dict[str, list[str]] = {}
            for item in data[s.offset:s.offset + s.size].split(b"\0"):
                if b"=" in item:
                    k, _, v = item.decode("utf-8", "replace").partition("=")
                    info.setdefault(k, []).append(v)
            return info
    raise ElfError(f"{what}: no .modinfo section (not a kernel module?)")


@dataclass(frozen=True)
class Dynamic:
    """What the dynamic loader needs to run a file: its interpreter (programs only) and DT_NEEDED sonames."""

    interp: str | None
    needed: tuple[str, ...]


def dynamic(data: bytes, what: str = "ELF") -> Dynamic:
    """PT_INTERP and the DT_NEEDED entries of a program or shared library (empty for static files)."""
    phoff, _, phentsize, phnum, *_ = _header(data, what)
    interp = None
    dyn: tuple[int, int] | None = None
    loads: list[tuple[int, int, int]] = []  # vaddr, offset, filesz
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, base)
        if p_type == _PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        elif p_type == _PT_DYNAMIC:
            dyn = (p_offset, p_filesz)
        elif p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    if dyn is None:
        return Dynamic(interp, ())
    needed_offs: list[int] = []
    strtab_vaddr = None
    off, size = dyn
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == _DT_NULL:
            break
        if tag == _DT_NEEDED:
            needed_offs.append(val)
        elif tag == _DT_STRTAB:
            strtab_vaddr = val
    if strtab_vaddr is None:
        raise ElfError(f"{what}: dynamic section without a string table")
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab_vaddr < vaddr + filesz:
            strtab_off = strtab_vaddr - vaddr + offset
            break
    else:
        raise ElfError(f"{what}: dynamic string table outside every loadable segment")
    names = []
    for n in needed_offs:
        start = strtab_off + n
        names.append(data[start:data.index(b"\0", start)].decode())
    return Dynamic(interp, tuple(names))
