"""Extended attributes as upstream compactext4 lays them out (spec §5.6): placement, entry encoding, block order.

Entries are (name index, short name, value). Placement is greedy in the given order: the inode's area (96
bytes of budget) first, else the xattr block (4060). Entries are packed from the start of a region and values
from its end downward.
"""

from __future__ import annotations

import struct

from hcsshim.ext4 import format as fmt
from hcsshim.ext4.format import BLOCK_SIZE
from hcsshim.ext4.gosort import go_sort_slice


class XattrState:
    __slots__ = ("block", "block_left", "inode", "inode_left")

    def __init__(self) -> None:
        self.inode: list[tuple[int, bytes, bytes]] = []
        self.block: list[tuple[int, bytes, bytes]] = []
        self.inode_left = fmt.INODE_EXTRA_SIZE - fmt.XATTR_INODE_OVERHEAD
        self.block_left = BLOCK_SIZE - fmt.XATTR_BLOCK_OVERHEAD

    def add(self, name: bytes, value: bytes) -> bool:
        index, short = fmt.compress_xattr_name(name)
        length = fmt.pad4(len(short)) + 16 + fmt.pad4(len(value))
        if self.inode_left >= length:
            self.inode.append((index, short, value))
            self.inode_left -= length
        elif self.block_left >= length:
            self.block.append((index, short, value))
            self.block_left -= length
        else:
            return False
        return True


def put_xattrs(xattrs: list[tuple[int, bytes, bytes]], b: bytearray, start: int, length: int, delta: int) -> None:
    offset = length + delta
    eoff = start
    dend = start + length
    for index, short, value in xattrs:
        vl = fmt.pad4(len(value))
        offset -= vl
        fmt.XATTR_ENTRY.pack_into(b, eoff, len(short), index, offset & 0xFFFF, 0, len(value),
                                  fmt.xattr_hash(short, value))
        b[eoff + 16 : eoff + 16 + len(short)] = short
        eoff += fmt.pad4(len(short)) + 16
        dend -= vl
        b[dend : dend + vl] = bytes(value) + bytes(vl - len(value))


def get_xattrs(b: bytes | bytearray, start: int, end: int, delta: int, out: dict[bytes, bytes]) -> None:
    eoff = start
    while eoff < end:
        name_len = b[eoff]
        if name_len == 0:
            break
        index = b[eoff + 1]
        (offset,) = struct.unpack_from("<H", b, eoff + 2)
        (size,) = struct.unpack_from("<I", b, eoff + 8)
        short = bytes(b[eoff + 16 : eoff + 16 + name_len])
        voff = start + offset - delta
        out[fmt.decompress_xattr_name(index, short)] = bytes(b[voff : voff + size])
        eoff += fmt.pad4(name_len) + 16


def _less(a: tuple[int, bytes, bytes], b: tuple[int, bytes, bytes]) -> bool:
    # Upstream's (non-strict-weak) comparator for block xattrs: kept as is, it decides the byte order.
    return a[0] < b[0] or len(a[1]) < len(b[1]) or a[1] < b[1]


def sort_block_xattrs(x: list[tuple[int, bytes, bytes]]) -> None:
    """Upstream's order for block entries: Go's sort.Slice with its (non-strict-weak) comparator."""
    go_sort_slice(x, _less)
