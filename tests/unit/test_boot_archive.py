"""hcsshim.boot.archive: trees, BASE format detection, reproducible cpio/tar writers (checked with GNU cpio)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcsshim.boot.archive import (
    BLOCK,
    CHAR,
    FIFO,
    ArchiveError,
    Entry,
    Tree,
    cpio_bytes,
    detect,
    gzip_bytes,
    read_archive,
    tar_bytes,
)

names = st.text(alphabet="abcdefgh_-.0123456789", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
entries = st.one_of(
    st.builds(Entry.file, st.binary(max_size=300), st.sampled_from([0o644, 0o755, 0o4755, 0o600])),
    st.builds(Entry.dir, st.sampled_from([0o755, 0o700, 0o1777])),
    st.builds(Entry.symlink, st.sampled_from(["/bin/busybox", "../lib", "x", "a b"])),
    st.builds(lambda k, r: Entry(k, 0o600, rdev=r), st.sampled_from([CHAR, BLOCK]),
              st.tuples(st.integers(0, 255), st.integers(0, 255))),
    st.just(Entry(FIFO, 0o644)),
)


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    t = Tree()
    for parts, e in draw(st.lists(st.tuples(st.lists(names, min_size=1, max_size=3), entries), max_size=15)):
        t.add("/".join(parts), e)
    return t


def sample_tree() -> Tree:
    t = Tree()
    t.add("bin/busybox", Entry.file(b"\x7fELF busybox", 0o755))
    t.add("bin/sh", Entry.symlink("busybox"))
    t.add("etc/passwd", Entry.file(b"root:x:0:0::/root:/bin/sh\n"))
    t.add("tmp", Entry.dir(0o1777))
    t.add("dev/console", Entry(CHAR, 0o600, rdev=(5, 1)))
    return t


@settings(max_examples=60, deadline=None)
@given(trees())
def test_a_tree_survives_a_cpio_round_trip(t: Tree) -> None:
    assert read_archive(cpio_bytes(t)).entries == t.entries


@settings(max_examples=60, deadline=None)
@given(trees())
def test_a_tree_survives_a_tar_round_trip(t: Tree) -> None:
    assert read_archive(tar_bytes(t)).entries == t.entries


@settings(max_examples=30, deadline=None)
@given(trees())
def test_the_same_tree_always_gives_the_same_bytes_whatever_the_insertion_order(t: Tree) -> None:
    rev = Tree()
    for p in reversed(list(t.entries)):
        rev.entries[p] = t.entries[p]
    assert cpio_bytes(rev) == cpio_bytes(t)
    assert tar_bytes(rev) == tar_bytes(t)
    assert gzip_bytes(cpio_bytes(t)) == gzip_bytes(cpio_bytes(rev))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_is_rejected_with_an_archive_error_not_a_crash(data: bytes) -> None:
    try:
        read_archive(data)
    except ArchiveError:
        pass


def test_gzip_output_has_no_timestamp_or_file_name() -> None:
    gz = gzip_bytes(b"hello")
    assert gz[4:8] == b"\0\0\0\0"  # MTIME
    assert gz[3] & 0x08 == 0  # no FNAME


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "cpio", "cpio.gz"])
def test_base_formats_are_detected_by_content_not_name(fmt: str) -> None:
    t = sample_tree()
    raw = tar_bytes(t) if fmt.startswith("tar") else cpio_bytes(t)
    data = gzip_bytes(raw) if fmt.endswith(".gz") else raw
    assert detect(data) == ("gzip" if fmt.endswith(".gz") else fmt)
    assert read_archive(data).entries == t.entries


def test_a_gnu_tar_with_hard_links_reads_as_two_copies(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root/a").write_bytes(b"data")
    os.link(tmp_path / "root/a", tmp_path / "root/b")
    subprocess.run(["tar", "-C", tmp_path / "root", "-cf", tmp_path / "x.tar", "."], check=True)
    t = read_archive((tmp_path / "x.tar").read_bytes())
    assert t.get("a") == t.get("b") == Entry.file(b"data", 0o644)


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is installed by make setup")
def test_gnu_cpio_newc_archives_with_hard_links_are_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"BB" * 100)
    os.chmod(root / "bin/busybox", 0o755)
    os.link(root / "bin/busybox", root / "bin/ls")
    (root / "bin/sh").symlink_to("busybox")
    listing = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    arc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=listing,
                         capture_output=True, check=True).stdout
    t = read_archive(gzip.compress(arc))
    assert t.get("bin/busybox") == t.get("bin/ls") == Entry.file(b"BB" * 100, 0o755)
    assert t.get("bin/sh") == Entry.symlink("busybox")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio is installed by make setup")
def test_gnu_cpio_unpacks_our_cpio_with_owner_root(tmp_path: Path) -> None:
    subprocess.run(["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"], cwd=tmp_path,
                   input=cpio_bytes(sample_tree(), mtime=1_700_000_000), check=True)
    assert (tmp_path / "bin/busybox").read_bytes() == b"\x7fELF busybox"
    assert os.readlink(tmp_path / "bin/sh") == "busybox"
    assert (tmp_path / "tmp").stat().st_mode & 0o7777 == 0o1777
    listing = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=cpio_bytes(sample_tree()),
                             capture_output=True, check=True).stdout.decode()
    assert all(" root " in line for line in listing.splitlines())


def test_tar_entries_are_owned_by_root_with_one_mtime() -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(sample_tree(), mtime=42))) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "etc",
                                         "etc/passwd", "tmp"]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 42)}


def test_unknown_and_old_cpio_formats_fail_with_a_clear_message() -> None:
    with pytest.raises(ArchiveError, match="unknown archive format"):
        read_archive(b"PK\x03\x04" + b"\0" * 600, "BASE x.zip")
    with pytest.raises(ArchiveError, match="newc"):
        read_archive(b"070707" + b"0" * 600)
    with pytest.raises(ArchiveError, match="BASE b: bad gzip"):
        read_archive(b"\x1f\x8b\x08\0garbage", "BASE b")


def test_a_truncated_cpio_fails_with_a_clear_message() -> None:
    with pytest.raises(ArchiveError, match="truncated"):
        read_archive(cpio_bytes(sample_tree())[:300])


def test_paths_escaping_the_root_are_rejected() -> None:
    t = Tree()
    with pytest.raises(ArchiveError, match=r"'\.\.'"):
        t.add("a/../../etc/passwd", Entry.file(b"x"))


def test_merging_a_delta_overrides_base_files_and_follows_symlinked_directories() -> None:
    base = Tree()
    base.add("usr/bin/python3", Entry.file(b"py"))
    base.add("bin", Entry.symlink("usr/bin"))  # usr-merged base
    base.add("init", Entry.file(b"base init", 0o755))
    delta = Tree()
    delta.add("init", Entry.file(b"our init", 0o755))
    delta.add("bin/gcs", Entry.file(b"gcs", 0o755))
    base.merge(delta)
    assert base.get("init") == Entry.file(b"our init", 0o755)
    assert base.get("bin") == Entry.symlink("usr/bin")
    assert base.get("usr/bin/gcs") == Entry.file(b"gcs", 0o755)


def test_a_directory_replaced_by_a_file_loses_its_contents() -> None:
    t = Tree()
    t.add("etc/x/y", Entry.file(b"1"))
    t.add("etc/x", Entry.file(b"2"))
    assert t.paths() == ["etc", "etc/x"]
