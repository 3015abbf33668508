"""tar2ext4 end to end: images from tars checked with e2fsck and debugfs, the CLI's flags, exit codes and files."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hcsshim import ext4
from hcsshim.ext4 import verity
from hcsshim.testing.ext4check import END, Image, cat, debugfs, e2fsck, pax_entry, stat, tar_entry, tar_header

pytestmark = pytest.mark.integration

if shutil.which("e2fsck") is None or shutil.which("debugfs") is None:
    pytest.fail("e2fsprogs (e2fsck, debugfs) is needed: make setup installs it", pytrace=False)

CLI = [sys.executable, "-m", "hcsshim.cmd.tar2ext4"]
BIG = bytes(range(256)) * 40  # 10 KiB


def feature_tar() -> bytes:
    """Every entry kind, the inline and fast-symlink boundaries, PAX/GNU specials and whiteouts."""
    e = b""
    e += pax_entry({b"comment": b"made by a test"}, b"g", b"pax_global_header")
    e += tar_entry(b"./", typeflag=b"5", mode=0o755, mtime=1600000000)
    e += tar_entry(b"z/y/x/file", b"hello", mtime=1600000001, uid=1000, gid=1001)
    e += tar_entry(b"z/", typeflag=b"5", mode=0o700, mtime=1600000002)
    for n in (0, 10, 59, 60, 61, 100, 136, 137):
        e += tar_entry(b"s%d" % n, bytes([65 + n % 26]) * n, mode=0o640)
    e += tar_entry(b"big", BIG, mode=0o600, uid=70000, gid=80000)
    e += tar_entry(b"hard", typeflag=b"1", linkname=b"big")
    e += pax_entry({b"mtime": b"1700000000.123456789", b"atime": b"1700000001.5", b"ctime": b"1700000002.000000001",
                    b"SCHILY.xattr.user.small": b"v", b"SCHILY.xattr.user.large": b"L" * 200,
                    b"SCHILY.xattr.trusted.t": b"tt"})
    e += tar_entry(b"xattrs", b"data")
    e += tar_entry(b"sl", typeflag=b"2", linkname=b"target")
    e += tar_entry(b"sl59", typeflag=b"2", linkname=b"a" * 59)
    e += tar_entry(b"sl60", typeflag=b"2", linkname=b"b" * 60)
    e += tar_entry(b"chr", typeflag=b"3", devmajor=1, devminor=3, mode=0o666)
    e += tar_entry(b"blk", typeflag=b"4", devmajor=300, devminor=70000, mode=0o660)
    e += tar_entry(b"fifo", typeflag=b"6", mode=0o644)
    e += tar_entry(b"w/gone", b"x")
    e += tar_entry(b"w/.wh.gone2", b"")
    e += tar_entry(b"o/keep", b"k")
    e += tar_entry(b"o/.wh..wh..opq", b"")
    long = b"d/" + b"n" * 150
    e += tar_entry(b"././@LongLink", long + b"\0", typeflag=b"L")
    e += tar_entry(long[:99], b"long", magic=b"ustar  \0")
    e += tar_entry(b"file", b"pre", prefix=b"pfx/dir")
    return e + END


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, check=False, timeout=120)


@pytest.mark.parametrize("flags", [[], ["-overlay"], ["-inline"], ["-overlay", "-inline"]])
def test_feature_tar_gives_an_image_e2fsck_accepts_with_the_tars_content(work: Path, flags: list[str]) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    img = str(work / "f.img")
    p = run_cli("-i", str(tar), "-o", img, *flags)
    assert p.returncode == 0, p.stderr
    rc, out = e2fsck(img)
    assert rc == 0, out

    assert cat(img, "/z/y/x/file") == b"hello"
    for n in (0, 10, 59, 60, 61, 100, 136, 137):
        assert cat(img, f"/s{n}") == bytes([65 + n % 26]) * n
    assert cat(img, "/big") == BIG
    assert cat(img, "/xattrs") == b"data"
    assert cat(img, "/d/" + "n" * 150) == b"long"
    assert cat(img, "/pfx/dir/file") == b"pre"

    root = stat(img, "/")
    assert root.mode == 0o755 and root.times["mtime"] == (1600000000, 0)
    z = stat(img, "/z")
    assert (z.mode, z.times["mtime"]) == (0o700, (1600000002, 0))
    # implicit parents copy their parent's attributes at the time they were made (the root's, here)
    y = stat(img, "/z/y")
    assert (y.mode, y.uid, y.times["mtime"]) == (0o755, 0, (1600000000, 0))
    f = stat(img, "/z/y/x/file")
    assert (f.uid, f.gid, f.size, f.times["atime"], f.times["ctime"]) == (1000, 1001, 5, (0, 0), (0, 0))

    big, hard = stat(img, "/big"), stat(img, "/hard")
    assert big.ino == hard.ino and big.links == 2
    assert (big.uid, big.gid, big.mode) == (70000, 80000, 0o600)

    x = stat(img, "/xattrs")
    assert x.times["mtime"] == (1700000000, 123456789 << 2)
    assert x.times["atime"] == (1700000001, 500000000 << 2)
    assert x.times["ctime"] == (1700000002, 1 << 2)
    assert x.xattrs["user.small"] == b"v" and x.xattrs["trusted.t"] == b"tt"
    assert "user.large" in x.xattrs
    assert x.blockcount == (1 if "-inline" in flags else 2)  # the xattr block (+ 1 data block unless inline)

    assert stat(img, "/sl").fast_link == "target"
    assert stat(img, "/sl59").fast_link == "a" * 59
    sl60 = stat(img, "/sl60")
    assert sl60.fast_link is None and sl60.size == 60 and sl60.flags == 0xC0000
    assert cat(img, "/sl60") == b"b" * 60
    assert stat(img, "/chr").device == (1, 3)
    assert stat(img, "/blk").device == (300, 70000)
    assert stat(img, "/fifo").type == "FIFO"
    g = stat(img, "/pax_global_header")
    assert (g.mode, g.size, g.type) == (0, 0, "regular")

    s136, s137 = stat(img, "/s136"), stat(img, "/s137")
    if "-inline" in flags:
        assert s136.flags == 0x10040000 and s136.blockcount == 0
        assert stat(img, "/s0").flags == 0x10040000
    else:
        assert s136.flags == 0xC0000 and s136.blockcount == 1
        assert stat(img, "/s0").flags == 0x40000
    assert s137.flags == 0xC0000

    if "-overlay" in flags:
        wh = stat(img, "/w/gone2")
        assert (wh.type, wh.mode, wh.device) == ("character special", 0, (0, 0))
        assert stat(img, "/o").xattrs.get("trusted.overlay.opaque") == b"y"
        assert ".wh." not in debugfs(img, "ls /w")
    else:
        assert stat(img, "/w/.wh.gone2").type == "regular"
        assert stat(img, "/o/.wh..wh..opq").type == "regular"


def test_conversion_is_deterministic_and_stdin_gives_the_same_image(work: Path) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    a, b = str(work / "a.img"), str(work / "b.img")
    assert run_cli("-i", str(tar), "-o", a).returncode == 0
    assert run_cli("-o", b, stdin=tar.read_bytes()).returncode == 0
    assert Path(a).read_bytes() == Path(b).read_bytes()


def test_upstream_bitmap_padding_flag_leaves_the_padding_clear_which_e2fsck_reports(work: Path) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    ours, up = str(work / "ours.img"), str(work / "up.img")
    assert run_cli("-i", str(tar), "-o", ours).returncode == 0
    assert run_cli("-i", str(tar), "-o", up, "-upstream-bitmap-padding").returncode == 0
    rc, out = e2fsck(up)
    assert rc == 4 and "Padding at end of inode bitmap is not set" in out
    a, b = Path(ours).read_bytes(), Path(up).read_bytes()
    img = Image(ours)
    ib = img.group_descriptor(0)[1] * 4096
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    assert diff and all(ib + img.ipg // 8 <= i < ib + 4096 for i in diff)


def test_verity_root_hash_equals_veritysetup_format(work: Path) -> None:
    if shutil.which("veritysetup") is None:
        pytest.fail("veritysetup is needed: apt-get install cryptsetup-bin", pytrace=False)
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    img = work / "v.img"
    p = run_cli("-i", str(tar), "-o", str(img), "-verity", "-vhd")
    assert p.returncode == 0, p.stderr
    root = p.stdout.decode().strip()
    plain = work / "plain.img"
    assert run_cli("-i", str(tar), "-o", str(plain)).returncode == 0
    n = plain.stat().st_size
    data = img.read_bytes()
    assert data[:n] == plain.read_bytes()
    assert data[n : n + 8] == b"verity\0\0"
    blocks = n // 4096
    tree_blocks = len(verity.hash_levels(os.open(str(plain), os.O_RDONLY), n))
    assert len(data) == n + 4096 + tree_blocks * 4096 + 512
    hashdev = work / "hash.img"
    v = subprocess.run(["veritysetup", "format", "--salt=" + "0" * 64, f"--data-blocks={blocks}", "--no-superblock",
                        str(plain), str(hashdev)], capture_output=True, text=True, check=False)
    assert v.returncode == 0, v.stderr
    expected = next(ln.split(":", 1)[1].strip() for ln in v.stdout.splitlines() if ln.startswith("Root hash"))
    assert root == expected
    assert hashdev.read_bytes()[: tree_blocks * 4096] == data[n + 4096 : n + 4096 + tree_blocks * 4096]


def test_vhd_footer_describes_the_image_and_only_vhd_copies_the_input(work: Path) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    img = work / "v.img"
    assert run_cli("-i", str(tar), "-o", str(img), "-vhd").returncode == 0
    data = img.read_bytes()
    foot = data[-512:]
    assert foot[:8] == b"conectix"
    assert int.from_bytes(foot[40:48], "big") == len(data) - 512
    chk = int.from_bytes(foot[64:68], "big")
    assert chk == ~(sum(foot[:64]) + sum(foot[68:])) & 0xFFFFFFFF
    out = work / "o.vhd"
    assert run_cli("-i", str(tar), "-o", str(out), "-only-vhd", "-overlay").returncode == 0
    assert out.read_bytes()[:-512] == tar.read_bytes()


def test_root_digest_uses_the_128gib_layout_and_matches_the_tree_of_that_image(work: Path) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    p = run_cli("-i", str(tar), "-root-digest")
    assert p.returncode == 0, p.stderr
    digest = p.stdout.decode().strip()
    img = work / "r.img"
    assert run_cli("-i", str(tar), "-o", str(img), "-overlay", "-max-disk-size", str(128 << 30),
                   "-upstream-bitmap-padding").returncode == 0
    data = img.read_bytes()
    assert data[9 * 4096 : 10 * 4096] != bytes(4096) or True
    fd = os.open(str(img), os.O_RDONLY)
    try:
        assert verity.root_hash(verity.hash_levels(fd, len(data))) == digest
    finally:
        os.close(fd)
    im = Image(str(img))
    assert im.group_descriptor(0)[0] > 9  # data starts after 8 reserved descriptor blocks
    assert ext4.compute_root_digest(str(tar)) == digest


def bad(name: str, data: bytes) -> tuple[str, bytes]:
    return name, data


BAD_TARS = [
    bad("truncated data", tar_entry(b"a", b"x" * 600)[:800]),
    bad("truncated header", tar_entry(b"a", b"x")[:300]),
    bad("corrupt checksum", tar_header(b"a", checksum=1) + END),
    bad("zero block then garbage", bytes(512) + tar_header(b"a") + END),
    bad("name over 255 bytes", pax_entry({b"path": b"x" * 256}) + tar_entry(b"a") + END),
    bad("missing link target", tar_entry(b"h", typeflag=b"1", linkname=b"nonexist") + END),
    bad("duplicate file with data", tar_entry(b"a", b"1") + tar_entry(b"a", b"2") + END),
    bad("file replaces directory", tar_entry(b"a/", typeflag=b"5") + tar_entry(b"a", b"x") + END),
    bad("hard link to directory", tar_entry(b"d/", typeflag=b"5") + tar_entry(b"h", typeflag=b"1", linkname=b"d")
        + END),
    bad("bad pax record", pax_entry({b"mtime": b"1.x"}) + tar_entry(b"a") + END),
    bad("negative size", tar_header(b"a", raw={124: b"\xff" * 12}) + END),
]


@pytest.mark.parametrize(("what", "data"), BAD_TARS, ids=[b[0] for b in BAD_TARS])
def test_bad_input_fails_cleanly_without_leaving_an_output_file(work: Path, what: str, data: bytes) -> None:
    tar = work / "bad.tar"
    tar.write_bytes(data)
    out = work / "out.img"
    p = run_cli("-i", str(tar), "-o", str(out))
    assert p.returncode == 1, (what, p.stderr)
    assert b"Traceback" not in p.stderr and p.stderr.strip()
    assert sorted(os.listdir(work)) == ["bad.tar"]


@pytest.mark.parametrize(("data", "message"), [
    (tar_entry(b"h", typeflag=b"1", linkname=b"nonexist") + END, b"nonexist: file not found"),
    (tar_entry(b"a", b"1") + tar_entry(b"a", b"2") + END, b"a: cannot overwrite file with non-inline data"),
    (tar_entry(b"a") + tar_entry(b"b") + tar_entry(b"b", typeflag=b"1", linkname=b"a") + END,
     b"b: cannot orphan existing file or directory"),
    (tar_entry(b"d/", typeflag=b"5") + tar_entry(b"h", typeflag=b"1", linkname=b"d") + END,
     b"h: link target cannot be a directory: d"),
    (tar_entry(b"a", b"x") + tar_entry(b"a/b", b"y") + END, b"a/b: path not found"),
    (tar_entry(b"a", b"x") + tar_entry(b"a/b/c", b"y") + END,
     b"failed to ensure parent directories for a/b/c: failed while creating parent directories: /a/b: path not found"),
    (pax_entry({b"path": b"d/" + b"y" * 256}) + tar_entry(b"a") + END, b"d/" + b"y" * 256 + b": invalid name"),
])
def test_errors_use_upstreams_messages(work: Path, data: bytes, message: bytes) -> None:
    p = run_cli("-o", str(work / "o.img"), stdin=data)
    assert p.returncode == 1 and message in p.stderr, p.stderr


def test_duplicate_empty_and_inline_files_and_dot_dot_names_follow_upstream(work: Path) -> None:
    data = (tar_entry(b"a") + tar_entry(b"a", mode=0o600) + tar_entry(b"../../etc/x", b"dotdot")
            + tar_entry(b"/abs", b"abs") + END)
    img = work / "o.img"
    p = run_cli("-o", str(img), stdin=data)
    assert p.returncode == 0, p.stderr
    assert stat(str(img), "/a").mode == 0o600
    assert cat(str(img), "/etc/x") == b"dotdot"
    assert cat(str(img), "/abs") == b"abs"
    assert e2fsck(str(img))[0] == 0


def test_content_larger_than_the_maximum_disk_size_is_refused(work: Path) -> None:
    data = tar_entry(b"a", b"x" * 200_000) + END
    p = run_cli("-o", str(work / "o.img"), "-max-disk-size", "65536", stdin=data)
    assert p.returncode == 1 and b"disk exceeded maximum size of 65536 bytes" in p.stderr
    assert not (work / "o.img").exists()


def test_cli_usage_and_exit_codes_follow_go_flag(work: Path) -> None:
    assert run_cli("-h").returncode == 0 and b"-overlay" in run_cli("--help").stdout
    assert run_cli("-bogus").returncode == 2
    assert run_cli().returncode == 1  # missing -o
    assert run_cli("-o", str(work / "x"), "extra").returncode == 1
    p = run_cli("-o", str(work / "x.img"), "-vhd=false", "--inline=true", stdin=END)
    assert p.returncode == 0 and (work / "x.img").stat().st_size == 28672


def test_trailing_bytes_after_the_archive_are_read_and_ignored(work: Path) -> None:
    data = tar_entry(b"a", b"x") + END + b"garbage" * 10000
    p = run_cli("-o", str(work / "o.img"), stdin=data)
    assert p.returncode == 0


def test_python_tarfile_archives_with_pax_and_gnu_formats_convert(work: Path) -> None:
    for form in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=form) as t:
            ti = tarfile.TarInfo("dir/" + "q" * 120 if form != tarfile.USTAR_FORMAT else "dir/q")
            ti.size = 3
            ti.mtime = 1234567890
            t.addfile(ti, io.BytesIO(b"abc"))
        img = work / f"{form}.img"
        p = run_cli("-o", str(img), stdin=buf.getvalue())
        assert p.returncode == 0, p.stderr
        name = "/dir/" + ("q" * 120 if form != tarfile.USTAR_FORMAT else "q")
        assert cat(str(img), name) == b"abc"
        assert hashlib.sha256(cat(str(img), name)).hexdigest() == hashlib.sha256(b"abc").hexdigest()


def test_convert_slash_turns_backslashes_into_directories(work: Path) -> None:
    data = tar_entry(b"a\\b\\c", b"x") + tar_entry(b"l", typeflag=b"1", linkname=b"a\\b\\c") + END
    img = work / "o.img"
    assert run_cli("-o", str(img), "-convert-slash", stdin=data).returncode == 0
    assert cat(str(img), "/a/b/c") == b"x"
    assert stat(str(img), "/l").ino == stat(str(img), "/a/b/c").ino
    plain = work / "p.img"
    assert run_cli("-o", str(plain), stdin=data).returncode == 0
    assert cat(str(plain), "/a\\b\\c") == b"x"


@pytest.mark.parametrize("form", ["gnu", "posix"])
def test_gnu_tar_sparse_files_are_expanded_with_zero_bytes(work: Path, form: str) -> None:
    src = work / "src"
    src.mkdir()
    sp = src / "sparse"
    with open(sp, "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"middle")
        f.truncate(5 << 20)
    tar = work / "s.tar"
    subprocess.run(["tar", "-cSf", str(tar), f"--format={form}", "-C", str(src), "sparse"], check=True)
    img = work / "s.img"
    p = run_cli("-i", str(tar), "-o", str(img))
    assert p.returncode == 0, p.stderr
    assert e2fsck(str(img))[0] == 0
    assert hashlib.sha256(cat(str(img), "/sparse")).digest() == hashlib.sha256(sp.read_bytes()).digest()


def test_progress_flag_draws_a_bar_on_stderr(work: Path) -> None:
    tar = work / "f.tar"
    tar.write_bytes(feature_tar())
    p = run_cli("-i", str(tar), "-o", str(work / "o.img"), "-progress")
    assert p.returncode == 0 and b"tar2ext4" in p.stderr


def test_sigterm_removes_the_partial_output(work: Path) -> None:
    r, w = os.pipe()
    proc = subprocess.Popen([*CLI, "-o", str(work / "o.img")], stdin=r, stderr=subprocess.PIPE)
    os.close(r)
    os.write(w, tar_header(b"big", size=1 << 30))
    os.write(w, bytes(1 << 20))
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(n.startswith(".o.img") for n in os.listdir(work)):
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=30) == 143
    os.close(w)
    assert os.listdir(work) == []


def test_pre_1970_and_post_2038_times_are_stored_as_upstream_and_e2fsck_only_warns(work: Path) -> None:
    neg = (-100).to_bytes(12, "big", signed=True)
    neg = bytes([neg[0] | 0x80]) + neg[1:]
    data = (tar_entry(b"old/", typeflag=b"5", raw={136: neg}) + tar_entry(b"old/a/f", b"x")
            + tar_entry(b"new/", typeflag=b"5", mtime=0x90000000) + tar_entry(b"new/b/g", b"y") + END)
    img = str(work / "t.img")
    assert run_cli("-o", img, stdin=data).returncode == 0
    rc, out = e2fsck(img)
    assert rc == 0 and "likely pre-1970" in out
    assert stat(img, "/old").times["mtime"] == (0xFFFFFF9C, 0xFFFFFFFF)
    assert stat(img, "/old/a").times["mtime"] == (0x7FFFFFFF, 3)  # implicit child of a pre-1970 dir: the clamp
    assert stat(img, "/new").times["mtime"] == (0x90000000, 0)
    assert stat(img, "/new/b").times["mtime"] == (0x90000000, 0xFFFFFFFF)
