"""The fixed-disk VHD footer appended to images (spec §7): 512 big-endian bytes after the disk contents."""

from __future__ import annotations

import os
import struct

FOOTER_SIZE = 512


def footer(size: int, unique_id: bytes | None = None) -> bytes:
    """A fixed VHD footer for a disk of `size` bytes (no CHS geometry, zero timestamp, random unique ID)."""
    b = bytearray(FOOTER_SIZE)
    b[0:8] = b"conectix"
    struct.pack_into(">IIQI", b, 8, 0x00000002, 0x00010000, 0xFFFFFFFFFFFFFFFF, 0)
    struct.pack_into(">I", b, 32, 0x000A0000)
    struct.pack_into(">QQII", b, 40, size, size, 0, 2)
    b[68:84] = unique_id if unique_id is not None else os.urandom(16)
    struct.pack_into(">I", b, 64, ~sum(b) & 0xFFFFFFFF)
    return bytes(b)
