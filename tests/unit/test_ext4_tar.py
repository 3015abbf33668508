"""The Go-compatible tar reader: PAX/GNU specials, times, end-of-archive and truncation rules, bad headers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcsshim.ext4.tarin import Header, TarError, TarReader, parse_pax, parse_pax_time
from hcsshim.testing.ext4check import END, pax_entry, pax_records, tar_entry, tar_header


def entries(tmp_path: Path, data: bytes) -> list[Header]:
    p = tmp_path / "t.tar"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        r = TarReader(fd)
        out = []
        while (h := r.next()) is not None:
            out.append(h)
        return out
    finally:
        os.close(fd)


def test_global_pax_header_comes_back_as_an_entry_and_does_not_apply_to_later_ones(tmp_path: Path) -> None:
    data = pax_entry({b"mtime": b"5", b"comment": b"c"}, b"g", b"pax_global_header") + tar_entry(b"a", mtime=7) + END
    g, a = entries(tmp_path, data)
    assert (g.name, g.typeflag, g.size, g.mode, g.mtime) == (b"pax_global_header", ord("g"), 0, 0, None)
    assert g.pax == {b"mtime": b"5", b"comment": b"c"}
    assert a.mtime == (7, 0) and a.pax is None


def test_pax_records_override_fields_and_keep_nanoseconds(tmp_path: Path) -> None:
    data = pax_entry({b"path": b"long/" + b"p" * 200, b"linkpath": b"t", b"uid": b"70000", b"gid": b"9",
                      b"mtime": b"1.123456789123", b"atime": b"-1.5", b"ctime": b"3", b"size": b"2",
                      b"SCHILY.xattr.user.a": b"\xff\x00v"})
    data += tar_header(b"short", size=0) + b"ab" + bytes(510) + END
    (h,) = entries(tmp_path, data)
    assert h.name == b"long/" + b"p" * 200 and h.linkname == b"t"
    assert (h.uid, h.gid, h.size) == (70000, 9, 2)
    assert h.mtime == (1, 123456789) and h.atime == (-2, 500000000) and h.ctime == (3, 0)
    assert h.pax is not None and h.pax[b"SCHILY.xattr.user.a"] == b"\xff\x00v"


def test_gnu_long_names_and_ustar_prefix_are_applied(tmp_path: Path) -> None:
    data = tar_entry(b"././@LongLink", b"n" * 300 + b"\0", typeflag=b"L", magic=b"ustar  \0")
    data += tar_entry(b"././@LongLink", b"l" * 200 + b"\0", typeflag=b"K", magic=b"ustar  \0")
    data += tar_entry(b"x", typeflag=b"2", linkname=b"y", magic=b"ustar  \0")
    data += tar_entry(b"name", prefix=b"the/prefix")
    a, b = entries(tmp_path, data + END)
    assert a.name == b"n" * 300 and a.linkname == b"l" * 200
    assert b.name == b"the/prefix/name"


def test_atime_and_ctime_come_only_from_gnu_and_star_headers(tmp_path: Path) -> None:
    gnu = tar_entry(b"g", magic=b"ustar  \0", raw={345: b"00000000012\0", 357: b"00000000013\0"})
    gnu_empty = tar_entry(b"e", magic=b"ustar  \0")
    ustar = tar_entry(b"u", raw={345: b"00000000012\0"})
    star = tar_entry(b"s", raw={476: b"00000000014\0", 488: b"00000000015\0", 508: b"tar\0"})
    g, e, u, s = entries(tmp_path, gnu + gnu_empty + ustar + star + END)
    assert (g.atime, g.ctime) == ((10, 0), (11, 0))
    assert (e.atime, e.ctime) == (None, None)
    assert (u.atime, u.ctime) == (None, None) and u.name == b"00000000012/u"
    assert (s.atime, s.ctime) == ((12, 0), (13, 0))


def test_old_regular_type_with_a_trailing_slash_is_a_directory(tmp_path: Path) -> None:
    d, f = entries(tmp_path, tar_entry(b"d/", typeflag=b"\0") + tar_entry(b"f", b"x", typeflag=b"\0") + END)
    assert d.typeflag == ord("5") and f.typeflag == ord("0")


def test_base256_numbers_and_signed_checksums_are_accepted(tmp_path: Path) -> None:
    neg = (-100).to_bytes(12, "big", signed=True)
    neg = bytes([neg[0] | 0x80]) + neg[1:]
    h = tar_header(b"n", raw={136: neg, 108: b"\x80\0\0\0\0\x01\x00\x00", 0: b"n\xe9"})
    signed = sum(b if b < 128 else b - 256 for b in h[:148] + b" " * 8 + h[156:])
    h2 = tar_header(b"n\xe9", checksum=signed, raw={136: neg, 108: b"\x80\0\0\0\0\x01\x00\x00"})
    (a,) = entries(tmp_path, h2 + END)
    assert a.mtime == (-100, 0) and a.uid == 65536 and a.name == b"n\xe9"


@pytest.mark.parametrize(("cut", "ok"), [(256, False), (513, True), (600, True), (1024, True), (1100, False),
                                         (1536, False), (1600, True), (2048, True)])
def test_truncation_rules_match_go(tmp_path: Path, cut: int, ok: bool) -> None:
    data = (tar_entry(b"f0", b"x", magic=b"ustar  \0") + tar_entry(b"f1", b"y", magic=b"ustar  \0") + END)[:cut]
    p = tmp_path / "t.tar"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        r = TarReader(fd)

        def run() -> int:
            n = 0
            while r.next() is not None:
                n += 1
                if r.remaining:
                    r._data(r.remaining)
            return n

        if ok:
            run()
        else:
            with pytest.raises(TarError, match="unexpected EOF"):
                run()
    finally:
        os.close(fd)


def test_end_of_archive_rules(tmp_path: Path) -> None:
    assert [h.name for h in entries(tmp_path, tar_entry(b"a") + bytes(512))] == [b"a"]
    assert [h.name for h in entries(tmp_path, tar_entry(b"a") + END + tar_entry(b"b"))] == [b"a"]
    with pytest.raises(TarError, match="invalid tar header"):
        entries(tmp_path, tar_entry(b"a") + bytes(512) + tar_entry(b"b"))


@pytest.mark.parametrize("blk", [
    tar_header(b"a", checksum=12),
    tar_header(b"a", raw={100: b"0000x44\0"}),
    tar_header(b"a", raw={124: b"-0000000001\0"}),
    tar_header(b"a", raw={124: b"\xff" * 12}),
])
def test_corrupt_headers_are_invalid(tmp_path: Path, blk: bytes) -> None:
    with pytest.raises(TarError, match="invalid tar header"):
        entries(tmp_path, blk + END)


def test_gnu_sparse_pax_1_0_is_expanded_with_zero_holes(tmp_path: Path) -> None:
    sparse_map = b"2\n0\n3\n10\n2\n"
    body = sparse_map + bytes(-len(sparse_map) % 512) + b"abcde"
    data = pax_entry({b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"sp",
                      b"GNU.sparse.realsize": b"16"})
    data += tar_entry(b"GNUSparseFile.0/sp", body) + END
    (h,) = entries(tmp_path, data)
    assert h.name == b"sp" and h.size == 16 and h.sparse == [(0, 3), (10, 2)]


def test_pax_parser_rejects_malformed_records() -> None:
    assert parse_pax(pax_records({b"a": b"b", b"GNU.sparse.offset": b"1", b"GNU.sparse.numbytes": b"2"})) == {
        b"a": b"b", b"GNU.sparse.map": b"1,2"}
    for bad in (b"3 a=b\n", b"10 a=b\n", b"x a=b\n", b"6 ab\n", b"7 =bc\n", b"9 path=\0\n"):
        with pytest.raises(Exception):  # noqa: B017 - _ParseError is private
            parse_pax(bad)


@pytest.mark.parametrize(("text", "want"), [
    (b"1", (1, 0)), (b"1.5", (1, 500000000)), (b"1.1234567899", (1, 123456789)), (b"-1.5", (-2, 500000000)),
    (b"-0.5", (-1, 500000000)), (b"+7.000000001", (7, 1)),
])
def test_pax_times_are_parsed_like_go(text: bytes, want: tuple[int, int]) -> None:
    assert parse_pax_time(text) == want


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b and b"/" not in b),
                          st.binary(max_size=2000), st.integers(0, 2**33), st.integers(0, 0o7777)),
                min_size=0, max_size=8, unique_by=lambda t: t[0]),
       st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
def test_reader_agrees_with_tarfile_on_archives_it_writes(tmp_path_factory: pytest.TempPathFactory,
                                                          files: list[tuple[bytes, bytes, int, int]],
                                                          form: int) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=form, encoding="utf-8", errors="surrogateescape") as t:
        for name, data, mtime, mode in files:
            ti = tarfile.TarInfo(name.decode("utf-8", "surrogateescape"))
            ti.size, ti.mtime, ti.mode = len(data), mtime, mode
            t.addfile(ti, io.BytesIO(data))
    tmp = tmp_path_factory.mktemp("h")
    p = tmp / "t.tar"
    p.write_bytes(buf.getvalue())
    fd = os.open(p, os.O_RDONLY)
    try:
        r = TarReader(fd)
        got = []
        while (h := r.next()) is not None:
            got.append((h.name, r._data(r.remaining), h.mtime, h.mode))
    finally:
        os.close(fd)
    assert got == [(n, d, (m, 0), mo) for n, d, m, mo in files]


_TRUNCATE_WHILE_READING = """
import os, sys
from hcsshim import ext4
src, out = sys.argv[1], sys.argv[2]
def progress(n):
    if os.path.getsize(src) > 2 << 20:
        os.truncate(src, 2 << 20)  # another process cuts the tar while we read it
try:
    ext4.convert(src, out, progress=progress)
except ext4.Ext4Error as exc:
    sys.exit(f"error: {exc}")
"""


def test_an_input_truncated_while_being_read_gives_an_error_not_a_crash(tmp_path: Path) -> None:
    # 200 entries of 20 KiB: the cut at 2 MiB falls inside a file's data, past what was read ahead at the first
    # progress call. A mapped input would die of SIGBUS there; read(2) sees the end of the file.
    src, out = tmp_path / "in.tar", tmp_path / "out.img"
    src.write_bytes(b"".join(tar_entry(b"f%03d" % i, bytes([i]) * 20480) for i in range(200)) + END)
    proc = subprocess.run([sys.executable, "-c", _TRUNCATE_WHILE_READING, str(src), str(out)],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 1, proc
    assert proc.stderr.strip() == b"error: unexpected EOF"
    assert not out.exists() and os.listdir(tmp_path) == ["in.tar"]
