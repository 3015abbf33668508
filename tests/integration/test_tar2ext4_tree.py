"""tar2ext4 with a directory as the source (like mkfs.ext4 -d), and random tars (hypothesis) through e2fsck."""

from __future__ import annotations

import hashlib
import os
import socket
import stat as stmod
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hcsshim import ext4
from hcsshim.testing.ext4check import END, cat, debugfs, e2fsck, pax_entry, stat, tar_entry

pytestmark = pytest.mark.integration


def make_tree(root: Path) -> None:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"file data")
    (root / "big").write_bytes(os.urandom(300_000))
    os.link(root / "big", root / "d" / "hard")
    (root / "l").symlink_to("d/f")
    (root / "longlink").symlink_to("t" * 100)
    os.mkfifo(root / "fifo")
    os.mknod(root / "chr", 0o620 | stmod.S_IFCHR, os.makedev(4, 5))
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    os.setxattr(root / "d" / "f", "user.k", b"value")
    os.chown(root / "d" / "f", 1234, 5678)
    os.chmod(root / "d" / "e", 0o711)
    os.utime(root / "d" / "f", ns=(1_500_000_000_111_111_111, 1_600_000_000_123_456_789))


def test_a_directory_converts_with_its_content_attributes_and_hard_links(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    img = str(tmp_path / "t.img")
    p = subprocess.run([sys.executable, "-m", "hcsshim.cmd.tar2ext4", "-i", str(src), "-o", img],
                       capture_output=True, check=False)
    assert p.returncode == 0, p.stderr
    rc, out = e2fsck(img)
    assert rc == 0, out
    assert cat(img, "/d/f") == b"file data"
    assert hashlib.sha256(cat(img, "/big")).digest() == hashlib.sha256((src / "big").read_bytes()).digest()
    f = stat(img, "/d/f")
    assert (f.uid, f.gid, f.xattrs.get("user.k")) == (1234, 5678, b"value")
    assert f.times["mtime"] == (1_600_000_000, 123456789 << 2)
    assert f.times["atime"] == (1_500_000_000, 111111111 << 2)
    assert stat(img, "/d/e").mode == 0o711
    assert stat(img, "/big").ino == stat(img, "/d/hard").ino and stat(img, "/big").links == 2
    assert stat(img, "/l").fast_link == "d/f"
    assert cat(img, "/longlink") == b"t" * 100
    assert stat(img, "/chr").device == (4, 5)
    assert stat(img, "/fifo").type == "FIFO"
    assert stat(img, "/sock").type == "socket"


def test_a_directory_with_whiteouts_converts_them_for_overlay(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "o").mkdir(parents=True)
    (src / "o" / ".wh..wh..opq").write_bytes(b"")
    (src / ".wh.gone").write_bytes(b"")
    img = str(tmp_path / "t.img")
    ext4.convert(str(src), img, ext4.Options(convert_whiteout=True))
    assert e2fsck(img)[0] == 0
    assert stat(img, "/o").xattrs.get("trusted.overlay.opaque") == b"y"
    assert stat(img, "/gone").type == "character special"


def test_a_missing_source_fails_without_output(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "hcsshim.cmd.tar2ext4", "-i", str(tmp_path / "nope"), "-o",
                        str(tmp_path / "o.img")], capture_output=True, check=False)
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert os.listdir(tmp_path) == []


# ---- property-based: random tars with every entry kind ----

# Names debugfs can be asked about (no quotes or spaces); the reader's byte handling is fuzzed in the unit tests.
NAMES = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789._-\u00e9", min_size=1, max_size=12).map(
    lambda t: t.encode()).filter(lambda b: b not in (b".", b".."))
INLINE_EDGES = st.sampled_from([0, 1, 59, 60, 61, 135, 136, 137, 4095, 4096, 4097])
SYMLINK_EDGES = st.sampled_from([1, 58, 59, 60, 61, 200])


@st.composite
def tar_trees(draw: st.DrawFn) -> tuple[bytes, dict[bytes, tuple[str, object]]]:
    """A tar of unique paths and what each must be in the image."""
    data = b""
    want: dict[bytes, tuple[str, object]] = {}
    dirs = [b""]
    regs: list[bytes] = []
    for _ in range(draw(st.integers(1, 14))):
        parent = draw(st.sampled_from(dirs))
        name = (parent + b"/" if parent else b"") + draw(NAMES)
        if name in want or any(name.startswith(k + b"/") for k in want):
            continue
        kind = draw(st.sampled_from(["dir", "reg", "reg", "sym", "chr", "blk", "fifo", "link", "xattr"]))
        mtime = draw(st.integers(0, 2**31 - 1))
        if kind == "dir":
            data += tar_entry(name + b"/", typeflag=b"5", mode=draw(st.integers(0, 0o7777)), mtime=mtime)
            dirs.append(name)
            want[name] = ("dir", None)
        elif kind in ("reg", "xattr"):
            size = draw(st.one_of(INLINE_EDGES, st.integers(0, 9000)))
            content = bytes([draw(st.integers(0, 255))]) * size
            if kind == "xattr":
                val = draw(st.binary(min_size=0, max_size=300))
                data += pax_entry({b"SCHILY.xattr.user.p": val, b"mtime": b"%d.%09d" % (mtime, 123)})
            data += tar_entry(name, content, mode=0o644, uid=draw(st.integers(0, 2**21 - 1)), mtime=mtime)
            want[name] = ("reg", content)
            regs.append(name)
        elif kind == "sym":
            target = b"t" * draw(SYMLINK_EDGES)
            if len(target) > 100:
                data += pax_entry({b"linkpath": target})
            data += tar_entry(name, typeflag=b"2", linkname=target[:100])
            want[name] = ("sym", target)
        elif kind in ("chr", "blk"):
            major, minor = draw(st.integers(0, 4095)), draw(st.integers(0, 2**20 - 1))
            data += tar_entry(name, typeflag=b"3" if kind == "chr" else b"4", devmajor=major, devminor=minor)
            want[name] = (kind, (major, minor))
        elif kind == "fifo":
            data += tar_entry(name, typeflag=b"6")
            want[name] = ("fifo", None)
        elif kind == "link" and regs:
            target = draw(st.sampled_from(regs))
            data += tar_entry(name, typeflag=b"1", linkname=target)
            want[name] = ("link", target)
    return data + END, want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tar_trees(), st.booleans())
def test_random_tars_give_images_e2fsck_accepts_with_the_same_content(case: tuple[bytes, dict], inline: bool) -> None:
    data, want = case
    with tempfile.TemporaryDirectory() as tmp:
        tar, img = os.path.join(tmp, "t.tar"), os.path.join(tmp, "t.img")
        Path(tar).write_bytes(data)
        ext4.convert(tar, img, ext4.Options(inline_data=inline))
        rc, out = e2fsck(img)
        assert rc == 0, out
        listing = debugfs(img, *[f'stat "/{os.fsdecode(n)}"' for n in want])
        assert listing.count("Inode:") == len(want)
        for name, (kind, val) in want.items():
            path = "/" + os.fsdecode(name)
            if kind == "reg":
                assert cat(img, path) == val
            elif kind == "sym":
                s = stat(img, path)
                assert s.size == len(val) and (s.fast_link is not None) == (len(val) <= 59)
            elif kind in ("chr", "blk"):
                assert stat(img, path).device == val
            elif kind == "link":
                a, b = stat(img, path), stat(img, "/" + os.fsdecode(val))
                assert a.ino == b.ino and a.links >= 2
