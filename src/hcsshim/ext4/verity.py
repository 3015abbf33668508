"""dm-verity for ext4 images: the SHA-256 hash tree, its superblock, and the root hash (spec §8).

Format version 1, salt (32 zero bytes) hashed before each block, 4 KiB data and hash blocks. The tree is
written top level first and level 0 last (veritysetup's hash-device layout), after a 4 KiB superblock block.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Final

BLOCK: Final = 4096
SALT: Final = bytes(32)
_READ: Final = 1 << 20


class VerityError(Exception):
    """The data cannot be hashed (not a whole number of blocks, or empty)."""


def _hash_blocks(data: bytes | bytearray | memoryview, base: hashlib._Hash) -> bytes:
    mv = memoryview(data)
    out = bytearray()
    for i in range(0, len(mv), BLOCK):
        h = base.copy()
        h.update(mv[i : i + BLOCK])
        out += h.digest()
    return bytes(out)


def _pad_block(b: bytes) -> bytes:
    return b + bytes(-len(b) % BLOCK)


def _hash_range(fd: int, start: int, end: int, offset: int, base: hashlib._Hash) -> bytes:
    out = bytearray()
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(_READ, end - pos), offset + pos)
        if not chunk or len(chunk) % BLOCK:
            raise VerityError("dm-verity: failed to read data block")
        out += _hash_blocks(chunk, base)
        pos += len(chunk)
    return bytes(out)


def hash_levels(fd: int, size: int, offset: int = 0) -> list[bytes]:
    """The tree levels over `size` bytes of fd from `offset`, level 0 first, each padded to whole blocks.

    One thread: splitting level 0 over threads was measured slower (the per-block work holds the GIL).
    """
    if size <= 0 or size % BLOCK:
        raise VerityError(f"dm-verity: data size {size} is not a positive multiple of {BLOCK}")
    base = hashlib.sha256(SALT)
    levels = [_pad_block(_hash_range(fd, 0, size, offset, base))]
    while len(levels[-1]) != BLOCK:
        levels.append(_pad_block(_hash_blocks(levels[-1], base)))
    return levels


def root_hash(levels: list[bytes]) -> str:
    return hashlib.sha256(SALT + levels[-1]).hexdigest()


def superblock(data_blocks: int, uuid: bytes | None = None) -> bytes:
    """The 4 KiB block holding the 512-byte verity superblock (random UUID unless given)."""
    b = bytearray(BLOCK)
    b[0:8] = b"verity\0\0"
    struct.pack_into("<II", b, 8, 1, 1)
    b[16:32] = uuid if uuid is not None else os.urandom(16)
    b[32:38] = b"sha256"
    struct.pack_into("<IIQH", b, 64, BLOCK, BLOCK, data_blocks, len(SALT))
    b[88 : 88 + len(SALT)] = SALT
    return bytes(b)


def tree_bytes(levels: list[bytes]) -> list[bytes]:
    """The levels in on-disk order: top first, level 0 last."""
    return list(reversed(levels))


def append_verity(fd: int, data_size: int) -> str:
    """Hash the first data_size bytes of fd and write superblock + tree at data_size; returns the root hash."""
    levels = hash_levels(fd, data_size)
    pos = data_size
    for chunk in [superblock(data_size // BLOCK), *tree_bytes(levels)]:
        mv = memoryview(chunk)
        while mv:
            k = os.pwrite(fd, mv, pos)
            mv = mv[k:]
            pos += k
    return root_hash(levels)
