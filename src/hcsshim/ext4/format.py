"""On-disk ext4 structures used by the compact writer: constants, struct layouts, time and xattr encodings.

Everything here is a pure function or a constant; the layout rules (what goes where) live in writer.py.
All multi-byte fields are little-endian. See /work/shared/specs/ext4.md §3 and §5.
"""

from __future__ import annotations

import struct

BLOCK_SIZE = 4096
BLOCKS_PER_GROUP = 32768
INODE_SIZE = 256
MAX_INODES_PER_GROUP = 32768
INODES_PER_GROUP_INCREMENT = BLOCK_SIZE // INODE_SIZE  # 16
GROUPS_PER_DESCRIPTOR_BLOCK = BLOCK_SIZE // 32  # 128

INODE_FIRST = 11
INODE_ROOT = 2
INODE_LOST_AND_FOUND = 11

MAX_FILE_SIZE = 128 * 1024 * 1024 * 1024
DEFAULT_MAX_DISK_SIZE = 16 * 1024 * 1024 * 1024
MAX_MAX_DISK_SIZE = 16 * 1024 * 1024 * 1024 * 1024
SMALL_SYMLINK_SIZE = 59
MAX_BLOCKS_PER_EXTENT = 0x8000
INODE_DATA_SIZE = 60
INODE_USED_SIZE = 152
INODE_EXTRA_SIZE = INODE_SIZE - INODE_USED_SIZE  # 104
XATTR_INODE_OVERHEAD = 4 + 4
XATTR_BLOCK_OVERHEAD = 32 + 4
INLINE_DATA_XATTR_OVERHEAD = XATTR_INODE_OVERHEAD + 16 + 4
INLINE_DATA_SIZE = INODE_DATA_SIZE + INODE_EXTRA_SIZE - INLINE_DATA_XATTR_OVERHEAD  # 136
MAX_LINKS = 65000
EXTENTS_PER_BLOCK = BLOCK_SIZE // 12 - 1  # 340

# Mode bits.
S_IFIFO = 0o010000
S_IFCHR = 0o020000
S_IFDIR = 0o040000
S_IFBLK = 0o060000
S_IFREG = 0o100000
S_IFLNK = 0o120000
S_IFSOCK = 0o140000
TYPE_MASK = 0o170000

# Directory entry file types, by mode type.
FILE_TYPES = {S_IFREG: 1, S_IFDIR: 2, S_IFCHR: 3, S_IFBLK: 4, S_IFIFO: 5, S_IFSOCK: 6, S_IFLNK: 7}

# Inode flags.
INODE_FLAG_HUGE_FILE = 0x40000
INODE_FLAG_EXTENTS = 0x80000
INODE_FLAG_INLINE_DATA = 0x10000000

# Feature flags.
COMPAT_EXT_ATTR = 0x8
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_FILETYPE = 0x2
INCOMPAT_EXTENTS = 0x40
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_INLINE_DATA = 0x8000
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_EXTRA_ISIZE = 0x40
RO_COMPAT_READONLY = 0x1000

SUPERBLOCK_MAGIC = 0xEF53
EXTENT_HEADER_MAGIC = 0xF30A
XATTR_HEADER_MAGIC = 0xEA020000

# The first 152 bytes of an inode (base 128 + extra fields through i_crtime_extra).
# mode uid size_lo atime ctime mtime dtime gid links blocks_lo flags [osd1] block[60] generation file_acl_lo
# size_high [faddr] [blocks_high file_acl_high] uid_high gid_high [checksum_lo reserved] extra_isize checksum_hi
# ctime_extra mtime_extra atime_extra crtime crtime_extra
INODE_STRUCT = struct.Struct("<HHIIIIIHHII4x60sIII4x4xHH4xHHIIIII")
assert INODE_STRUCT.size == INODE_USED_SIZE

# Group descriptor (32 bytes): block bitmap, inode bitmap, inode table, free blocks, free inodes, used dirs.
GROUP_DESCRIPTOR_STRUCT = struct.Struct("<IIIHHH14x")
assert GROUP_DESCRIPTOR_STRUCT.size == 32

EXTENT_HEADER = struct.Struct("<HHHHI")  # magic, entries, max, depth, generation
EXTENT_LEAF = struct.Struct("<IHHI")  # ee_block, ee_len, ee_start_hi, ee_start_lo
EXTENT_INDEX = struct.Struct("<IIHH")  # ei_block, ei_leaf_lo, ei_leaf_hi, unused
DIRENT = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type
XATTR_ENTRY = struct.Struct("<BBHIII")  # name_len, name_index, value_offs, value_inum, value_size, hash

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
# Unix seconds of Go's zero time.Time (January 1, year 1 UTC): IsZero() is true for it.
GO_ZERO_TIME_UNIX = -62135596800


def time_to_fs(secs: int | None, nsec: int = 0) -> int:
    """Encode a time (Unix seconds, nanoseconds in [0, 1e9)) as upstream's 64-bit value (§3.6).

    `None` stands for Go's zero time (a time absent from the tar) and encodes as 0.
    The inode stores `v & 0xffffffff` as the time and `v >> 32` as its `_extra` field.
    """
    if secs is None or (secs == GO_ZERO_TIME_UNIX and nsec == 0):
        return 0
    if secs < -0x80000000:
        return 0x80000000
    if secs > 0x37FFFFFFF:
        return 0x37FFFFFFF
    return ((secs & _U64) | (nsec << 34)) & _U64


def fs_time_to_time(v: int) -> tuple[int, int] | None:
    """Decode upstream's 64-bit time value (fsTimeToTime): (seconds, nanoseconds), or None for 0."""
    if v == 0:
        return None
    s = v & 0x3FFFFFFFF
    if 0x7FFFFFFF < s < 0x100000000:
        s -= 0x100000000
    ns = v >> 34
    if ns >= 1_000_000_000:
        s += 1
        ns -= 1_000_000_000
    return s, ns


def roundtrip_time(v: int) -> int:
    """The lossy decode-then-encode that implicit parents and opaque directories go through."""
    if v < 0x80000000:  # 1970..2038 without nanoseconds, and 0: unchanged
        return v
    t = fs_time_to_time(v)
    if t is None:
        return 0
    return time_to_fs(t[0], t[1])


_XATTR_PREFIXES = (
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (8, b"system.richacl"),
    (7, b"system."),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
)
_XATTR_INDEX_PREFIX = {i: p for i, p in _XATTR_PREFIXES}


def compress_xattr_name(name: bytes) -> tuple[int, bytes]:
    """Split an xattr name into (name index, short name) with the first matching prefix (§5.6)."""
    for index, prefix in _XATTR_PREFIXES:
        if name.startswith(prefix):
            return index, name[len(prefix) :]
    return 0, name


def decompress_xattr_name(index: int, name: bytes) -> bytes:
    """The inverse of compress_xattr_name (unknown indexes keep the short name)."""
    return _XATTR_INDEX_PREFIX.get(index, b"") + name


def xattr_hash(name: bytes, value: bytes) -> int:
    """ext4's xattr entry hash over the short name and the value's little-endian 32-bit words."""
    h = 0
    for c in name:
        h = ((h << 5) & _U32) ^ (h >> 27) ^ c
    n = len(value)
    if n:
        if n % 4:
            value = bytes(value) + b"\0" * (4 - n % 4)
        for (w,) in struct.iter_unpack("<I", value):
            h = ((h << 16) & _U32) ^ (h >> 16) ^ w
    return h


def encode_device(major: int, minor: int) -> int:
    """The 'new' (huge) device number encoding stored in i_block[4:8]."""
    return ((minor & 0xFF) | (major << 8) | ((minor & 0xFFFFFF00) << 12)) & _U32


def pad4(n: int) -> int:
    return (n + 3) & ~3
