"""hcsshim.boot.kernel: the uncompressed `vmlinux` inside a bzImage, for QEMU's PVH direct boot.

A bzImage is real-mode setup code followed by a protected-mode part whose compressed payload is the
kernel ELF. The boot protocol header (at 0x1f1) gives `setup_sects`, and `payload_offset`/`payload_length`
(protocol 2.08+) locate the payload inside the protected-mode part. Debian's kernel compresses it with XZ,
which the stdlib's lzma reads; gzip payloads are handled too. Booting the ELF (which carries a PVH note)
skips the in-guest decompression, which costs seconds under TCG.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib

from hcsshim.boot.elf import ELF_MAGIC


class KernelError(ValueError):
    """The file is not a bzImage this module can unpack."""


def extract_vmlinux(bzimage: bytes, what: str = "kernel") -> bytes:
    """The ELF kernel inside `bzimage` (bytes of a vmlinuz)."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise KernelError(f"{what}: not a bzImage (no HdrS boot header)")
    version = struct.unpack_from("<H", bzimage, 0x206)[0]
    if version < 0x208:
        raise KernelError(f"{what}: boot protocol {version >> 8}.{version & 0xff} has no payload fields")
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    if len(payload) != payload_length:
        raise KernelError(f"{what}: payload beyond end of file")
    try:
        if payload[:6] == b"\xfd7zXZ\x00":
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = d.decompress(payload)  # trailing bytes (the appended size) land in d.unused_data
        elif payload[:2] == b"\x1f\x8b":
            d2 = zlib.decompressobj(wbits=31)
            elf = d2.decompress(payload)
        else:
            raise KernelError(f"{what}: unsupported payload compression (magic {payload[:6].hex()})")
    except (lzma.LZMAError, zlib.error, gzip.BadGzipFile) as e:
        raise KernelError(f"{what}: corrupt payload: {e}") from None
    if elf[:4] != ELF_MAGIC:
        raise KernelError(f"{what}: payload is not an ELF kernel")
    return elf


def kernel_release(bzimage: bytes, what: str = "kernel") -> str:
    """The kernel release string ("6.1.0-57-amd64") from the bzImage header's version pointer."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise KernelError(f"{what}: not a bzImage (no HdrS boot header)")
    ptr = struct.unpack_from("<H", bzimage, 0x20E)[0] + 0x200
    end = bzimage.find(b"\0", ptr)
    if ptr <= 0x200 or end < 0:
        raise KernelError(f"{what}: no kernel version string")
    return bzimage[ptr:end].decode("ascii", "replace").split()[0]
