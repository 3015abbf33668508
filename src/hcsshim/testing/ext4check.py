"""Test helpers for ext4 images: e2fsck and debugfs wrappers, a raw inode reader, and a raw tar header builder.

Used by tests/unit/test_ext4_*.py and tests/integration/test_tar2ext4*.py; needs e2fsprogs (Debian package).
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass, field


def e2fsck(image: str) -> tuple[int, str]:
    """`e2fsck -fn image`: (exit code, combined output)."""
    p = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, errors="replace", check=False)
    return p.returncode, p.stdout + p.stderr


def debugfs(image: str, *commands: str) -> str:
    """Run debugfs requests on the image (read-only), one process for all of them."""
    p = subprocess.run(["debugfs", "-f", "-", image], input="\n".join(commands) + "\n", capture_output=True,
                       text=True, errors="surrogateescape", check=False)
    return p.stdout


def cat(image: str, path: str) -> bytes:
    """A file's contents. debugfs dumps all 60 bytes of i_block for small inline files: cut at i_size."""
    p = subprocess.run(["debugfs", "-R", f'cat "{path}"', image], capture_output=True, check=False)
    out = p.stdout
    if len(out) <= 136:
        out = out[: stat(image, path).size]
    return out


@dataclass
class Stat:
    """What debugfs `stat` says about one inode."""

    ino: int = 0
    type: str = ""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    links: int = 0
    flags: int = 0
    blockcount: int = 0
    times: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (raw lo, raw extra)
    device: tuple[int, int] | None = None
    fast_link: str | None = None
    xattrs: dict[str, bytes] = field(default_factory=dict)


_STAT_RE = {
    "ino": re.compile(r"Inode: (\d+)\s+Type: (.+?)\s+Mode:\s+(\d+)\s+Flags: 0x([0-9a-f]+)"),
    "ids": re.compile(r"User:\s+(\d+)\s+Group:\s+(\d+)(?:\s+Project:\s+\d+)?\s+Size: (\d+)"),
    "links": re.compile(r"Links: (\d+)\s+Blockcount: (\d+)"),
    "time": re.compile(r"^\s*(ctime|atime|mtime|crtime): 0x([0-9a-f]+):([0-9a-f]+)", re.M),
    "dev": re.compile(r"Device major/minor number: (\d+):(\d+)"),
    "fast": re.compile(r'Fast link dest: "(.*)"'),
}


def stat(image: str, path: str) -> Stat:
    out = debugfs(image, f'stat "{path}"', f'ea_list "{path}"')
    st = Stat()
    m = _STAT_RE["ino"].search(out)
    if not m:
        raise FileNotFoundError(f"{image}: {path}: {out.strip()}")
    st.ino, st.type, st.mode, st.flags = int(m[1]), m[2], int(m[3], 8), int(m[4], 16)
    m = _STAT_RE["ids"].search(out)
    assert m, out
    st.uid, st.gid, st.size = int(m[1]), int(m[2]), int(m[3])
    m = _STAT_RE["links"].search(out)
    assert m, out
    st.links, st.blockcount = int(m[1]), int(m[2])
    for m in _STAT_RE["time"].finditer(out):
        st.times[m[1]] = (int(m[2], 16), int(m[3], 16))
    m = _STAT_RE["dev"].search(out)
    if m:
        st.device = (int(m[1]), int(m[2]))
    m = _STAT_RE["fast"].search(out)
    if m:
        st.fast_link = m[1]
    for m in re.finditer(r'^\s*(\S+?) \((\d+)\)(?: = "(.*)")?$', out, re.M):
        st.xattrs[m[1]] = (m[3] or "").encode("latin-1", "replace")
    return st


class Image:
    """Raw access to an ext4 image's superblock and inodes (our 32-byte-descriptor layout)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.data = f.read()
        sb = self.data[1024:2048]
        (self.inodes_count, self.blocks_count, _, self.free_blocks, self.free_inodes, _, log_bs, _, self.bpg, _,
         self.ipg) = struct.unpack_from("<11I", sb, 0)
        self.block_size = 1024 << log_bs
        self.magic = struct.unpack_from("<H", sb, 56)[0]
        self.compat, self.incompat, self.ro_compat = struct.unpack_from("<III", sb, 92)
        self.groups = (self.inodes_count + self.ipg - 1) // self.ipg

    def group_descriptor(self, g: int) -> tuple[int, ...]:
        """(block bitmap, inode bitmap, inode table, free blocks, free inodes, used dirs)."""
        return struct.unpack_from("<IIIHHH", self.data, self.block_size + 32 * g)

    def inode(self, ino: int) -> bytes:
        g, i = divmod(ino - 1, self.ipg)
        table = self.group_descriptor(g)[2]
        off = table * self.block_size + i * 256
        return self.data[off : off + 256]

    def inode_bitmap(self, g: int) -> bytes:
        b = self.group_descriptor(g)[1]
        return self.data[b * self.block_size : (b + 1) * self.block_size]


def _octal(n: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, n)) + b"\0"


def tar_header(name: bytes, typeflag: bytes = b"0", *, size: int = 0, mode: int = 0o644, uid: int = 0, gid: int = 0,
               mtime: int = 0, linkname: bytes = b"", magic: bytes = b"ustar\x0000", devmajor: int = 0,
               devminor: int = 0, prefix: bytes = b"", raw: dict[int, bytes] | None = None,
               checksum: int | None = None) -> bytes:
    """One 512-byte tar header with full control over its fields (`raw` overwrites bytes at offsets)."""
    b = bytearray(512)
    b[0 : len(name)] = name
    b[100:108] = _octal(mode, 8)
    b[108:116] = _octal(uid, 8)
    b[116:124] = _octal(gid, 8)
    b[124:136] = _octal(size, 12)
    b[136:148] = _octal(mtime, 12)
    b[156:157] = typeflag
    b[157 : 157 + len(linkname)] = linkname
    b[257:265] = magic
    b[329:337] = _octal(devmajor, 8)
    b[337:345] = _octal(devminor, 8)
    b[345 : 345 + len(prefix)] = prefix
    for off, val in (raw or {}).items():
        b[off : off + len(val)] = val
    b[148:156] = b" " * 8
    chk = sum(b) if checksum is None else checksum
    b[148:156] = b"%06o\0 " % chk
    return bytes(b)


def tar_entry(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **kw: object) -> bytes:
    """A header plus its data padded to 512 bytes."""
    h = tar_header(name, typeflag, size=len(data), **kw)  # type: ignore[arg-type]
    return h + data + bytes(-len(data) % 512)


def pax_records(records: dict[bytes, bytes]) -> bytes:
    out = b""
    for k, v in records.items():
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


def pax_entry(records: dict[bytes, bytes], typeflag: bytes = b"x", name: bytes = b"PaxHeader") -> bytes:
    return tar_entry(name, pax_records(records), typeflag)


END = bytes(1024)
