"""The compact ext4 writer's layout, byte by byte, against the upstream facts recorded in specs/ext4.md."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.ext4 import format as fmt
from hcsshim.ext4 import verity, vhd
from hcsshim.ext4.writer import Ext4Error, File, Writer, WriterStateError, best_group_count, clean_path
from hcsshim.testing.ext4check import Image


@pytest.fixture
def out(tmp_path: Path) -> Iterator[tuple[int, str]]:
    path = str(tmp_path / "img")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    yield fd, path
    os.close(fd)


def reg(name: bytes, data: bytes, w: Writer, **kw: int) -> None:
    w.create(name, File(fmt.S_IFREG | 0o644, size=len(data), **kw))
    w.write(data)


def test_an_empty_file_system_is_seven_blocks_with_upstreams_superblock(out: tuple[int, str]) -> None:
    fd, path = out
    w = Writer(fd)
    w.close()
    assert os.path.getsize(path) == 28672 == w.disk_size
    img = Image(path)
    assert (img.magic, img.compat, img.incompat, img.ro_compat) == (0xEF53, 0x208, 0x242, 0x104A)
    assert (img.inodes_count, img.blocks_count, img.ipg, img.free_blocks) == (16, 7, 16, 0)  # past-the-end is used
    sb = img.data[1024:2048]
    assert struct.unpack_from("<HH", sb, 348) == (24, 24) and sb[372] == 31
    assert struct.unpack_from("<I", sb, 0x268)[0] == 11
    assert sb[104:120] == bytes(16)  # no UUID
    # group 0: block bitmap at 5, inode bitmap at 6, inode table at 4
    assert img.group_descriptor(0)[:3] == (5, 6, 4)
    root = img.inode(2)
    assert struct.unpack_from("<HH", root, 0)[0] == 0o40755 and struct.unpack_from("<H", root, 26)[0] == 3
    assert struct.unpack_from("<I", root, 32)[0] == 0xC0000


def test_inode_bitmap_padding_is_set_unless_upstream_padding_is_asked_for(tmp_path: Path) -> None:
    for upstream, expect in ((False, b"\xff"), (True, b"\0")):
        path = str(tmp_path / f"{upstream}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        w = Writer(fd, upstream_bitmap_padding=upstream)
        w.close()
        os.close(fd)
        ib = Image(path).inode_bitmap(0)
        assert ib[:2] == b"\xff\x07"  # inodes 1..11
        assert ib[2:] == expect * 4094


def test_inline_data_layout_matches_upstream(out: tuple[int, str]) -> None:
    fd, path = out
    w = Writer(fd, inline_data=True)
    reg(b"e", b"", w)
    reg(b"s100", b"a" * 100, w)
    reg(b"s136", b"b" * 136, w)
    reg(b"s137", b"c" * 137, w)
    w.close()
    img = Image(path)
    e, s100, s136, s137 = (img.inode(n) for n in (12, 13, 14, 15))
    assert e[152:156] == struct.pack("<I", 0xEA020000)
    assert e[156:172] == bytes([4, 7, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0]) + struct.pack("<I", 0x00338AE1)
    assert e[172:176] == b"data"
    for raw, off, size in ((s100, 60, 40), (s136, 24, 76)):
        assert struct.unpack_from("<I", raw, 32)[0] == 0x10040000
        assert struct.unpack_from("<HII", raw, 158) == (off, 0, size)
        assert raw[156 + off : 156 + off + size] == raw[40:41] * size
    assert struct.unpack_from("<I", s137, 32)[0] == 0xC0000


def test_devices_times_and_symlinks_are_encoded_like_upstream(out: tuple[int, str]) -> None:
    fd, path = out
    w = Writer(fd)
    w.create(b"c", File(fmt.S_IFCHR | 0o600, devmajor=1, devminor=3))
    w.create(b"b", File(fmt.S_IFBLK, devmajor=300, devminor=70000))
    w.create(b"old", File(fmt.S_IFDIR | 0o755, mtime=fmt.time_to_fs(-100)))
    w.make_parents(b"old/implicit/x")
    w.create(b"late", File(fmt.S_IFREG, mtime=fmt.time_to_fs(0x90000000)))
    w.create(b"fast", File(fmt.S_IFLNK, linkname=b"x" * 59))
    w.create(b"slow", File(fmt.S_IFLNK, linkname=b"y" * 60))
    w.close()
    img = Image(path)
    c, b, old, implicit, late, fast, slow = (img.inode(n) for n in range(12, 19))
    assert c[40:48] == bytes(4) + b"\x03\x01\x00\x00"
    assert struct.unpack_from("<I", b, 44)[0] == 0x11112C70
    assert struct.unpack_from("<I", old, 16)[0] == 0xFFFFFF9C and struct.unpack_from("<I", old, 136)[0] == 0xFFFFFFFF
    assert struct.unpack_from("<I", implicit, 16)[0] == 0x7FFFFFFF and struct.unpack_from("<I", implicit, 136)[0] == 3
    assert struct.unpack_from("<I", late, 16)[0] == 0x90000000 and struct.unpack_from("<I", late, 136)[0] == 0
    assert fast[40:99] == b"x" * 59 and struct.unpack_from("<I", fast, 32)[0] == 0x40000
    assert struct.unpack_from("<H", fast, 0)[0] == 0o120777
    assert struct.unpack_from("<I", slow, 32)[0] == 0xC0000 and struct.unpack_from("<HH", slow, 40) == (0xF30A, 1)


def test_max_disk_size_reserves_descriptor_blocks_and_marks_them_free(out: tuple[int, str]) -> None:
    fd, path = out
    w = Writer(fd, max_disk_size=128 << 30)
    reg(b"f", b"z" * 5000, w)
    w.close()
    img = Image(path)
    f = img.inode(12)
    assert struct.unpack_from("<HHHHIIHHI", f, 40)[8] == 9  # data starts at block 9
    assert img.free_blocks == 7  # the 7 reserved, unused descriptor blocks


def test_directory_blocks_end_with_a_dummy_entry_and_sort_children_by_inode(out: tuple[int, str]) -> None:
    fd, path = out
    w = Writer(fd)
    for name in (b"zz", b"aa", b"mm"):
        reg(name, b"", w)
    w.close()
    img = Image(path)
    root = img.inode(2)
    blk = struct.unpack_from("<HHHHIIHHI", root, 40)[8]
    d = img.data[blk * 4096 : (blk + 1) * 4096]
    names, off = [], 0
    while off < 4096:
        ino, rl, nl, _ = struct.unpack_from("<IHBB", d, off)
        names.append((ino, d[off + 8 : off + 8 + nl]))
        off += rl
    assert names == [(2, b"."), (2, b".."), (11, b"lost+found"), (12, b"zz"), (13, b"aa"), (14, b"mm"), (0, b"")]


def test_group_count_choice_matches_upstream_examples() -> None:
    assert best_group_count(21, 45) == (1, 48)
    assert best_group_count(86281, 34768) == (3, 11600)
    assert best_group_count(9 * 32000, 14)[1] == 16


def test_writer_errors_name_the_file_and_leave_the_writer_failed(out: tuple[int, str]) -> None:
    fd, _ = out
    w = Writer(fd)
    reg(b"a", b"x", w)
    with pytest.raises(Ext4Error, match="a: cannot overwrite file with non-inline data"):
        w.create(b"a", File(fmt.S_IFREG))
    with pytest.raises(WriterStateError):
        w.close()


def test_write_rejects_more_data_than_announced(out: tuple[int, str]) -> None:
    fd, _ = out
    w = Writer(fd)
    w.create(b"a", File(fmt.S_IFREG, size=1))
    with pytest.raises(Ext4Error, match="wrote too much"):
        w.write(b"xy")


@given(st.lists(st.sampled_from([b"a", b"b", b".", b"..", b""]), max_size=8))
def test_clean_path_matches_posix_clean_of_a_rooted_path(parts: list[bytes]) -> None:
    name = b"/".join(parts)
    want = os.path.normpath(b"/" + name)
    want = want.lstrip(b"/")
    assert b"/".join(clean_path(name)) == want


@given(st.integers(0, 2**31 - 1), st.integers(0, 999_999_999))
def test_time_round_trip_keeps_1970_to_2038_times(secs: int, ns: int) -> None:
    v = fmt.time_to_fs(secs, ns)
    assert fmt.roundtrip_time(v) == v
    assert fmt.fs_time_to_time(v) == ((secs, ns) if v else None)


@pytest.mark.parametrize(("v", "want"), [
    (fmt.time_to_fs(-100), 0x37FFFFFFF),  # any pre-1970 parent: the child gets the clamp value
    (fmt.time_to_fs(0x90000000), 0xFFFFFFFF_90000000),  # 2038..2106: lo kept, extra all ones
    (fmt.time_to_fs(-(2**40)), 0xFFFFFFFF_80000000),  # the low clamp sign-extends on decode
    (0, 0),
])
def test_time_round_trip_keeps_upstreams_lossy_cases(v: int, want: int) -> None:
    assert fmt.roundtrip_time(v) == want


def test_xattr_hash_and_prefixes() -> None:
    assert fmt.xattr_hash(b"data", b"") == 0x00338AE1
    assert fmt.compress_xattr_name(b"trusted.overlay.opaque") == (4, b"overlay.opaque")
    assert fmt.compress_xattr_name(b"system.posix_acl_access") == (2, b"")
    assert fmt.compress_xattr_name(b"other.x") == (0, b"other.x")


def test_vhd_footer_checksum_and_fields() -> None:
    f = vhd.footer(151552 + 8192, unique_id=bytes(range(16)))
    assert len(f) == 512 and f[:8] == b"conectix"
    assert struct.unpack(">QQII", f[40:64]) == (159744, 159744, 0, 2)
    assert struct.unpack(">I", f[64:68])[0] == ~(sum(f) - sum(f[64:68])) & 0xFFFFFFFF


def test_verity_tree_shape_and_root(tmp_path: Path) -> None:
    p = tmp_path / "d"
    p.write_bytes(os.urandom(4096 * 130))
    fd = os.open(p, os.O_RDONLY)
    try:
        levels = verity.hash_levels(fd, 4096 * 130)
    finally:
        os.close(fd)
    assert [len(x) // 4096 for x in levels] == [2, 1]
    import hashlib

    data = p.read_bytes()
    l0 = b"".join(hashlib.sha256(bytes(32) + data[i : i + 4096]).digest() for i in range(0, len(data), 4096))
    assert levels[0][: len(l0)] == l0
    assert verity.root_hash(levels) == hashlib.sha256(bytes(32) + levels[1]).hexdigest()
    sb = verity.superblock(130, uuid=bytes(16))
    assert sb[:8] == b"verity\0\0" and struct.unpack_from("<QH", sb, 72) == (130, 32)
