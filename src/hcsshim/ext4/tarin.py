"""Tar input for tar2ext4: a streaming tar reader that behaves like Go's archive/tar, and the conversion loop.

Python's tarfile differs from Go's reader in ways that change the image (global PAX headers come back as
entries, PAX times keep nanoseconds, atime/ctime only from GNU/STAR fields, truncated streams that end at a
header or inside padding are a clean end...), so this module parses headers itself (spec §2). Data is never
buffered whole: it is copied to the writer in chunks, or by the kernel (copy_file_range) from a regular file.

Input is read with read(2), never mapped: a file truncated while we read it then gives a short read and
`unexpected EOF` (or an I/O error from a kernel copy), where a mapping would kill the process with SIGBUS.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from typing import Final

from hcsshim.ext4 import format as fmt
from hcsshim.ext4.writer import Ext4Error, Writer

CHUNK: Final = 1 << 20
_BIG: Final = 256 << 10
ZERO_BLOCK: Final = bytes(512)
MAX_SPECIAL_FILE_SIZE: Final = 1 << 20

ERR_HEADER = "archive/tar: invalid tar header"
ERR_UNEXPECTED_EOF = "unexpected EOF"

# Type flags.
TYPE_REG = ord("0")
TYPE_REGA = 0
TYPE_LINK = ord("1")
TYPE_SYMLINK = ord("2")
TYPE_CHAR = ord("3")
TYPE_BLOCK = ord("4")
TYPE_DIR = ord("5")
TYPE_FIFO = ord("6")
TYPE_XHEADER = ord("x")
TYPE_XGLOBAL = ord("g")
TYPE_GNU_SPARSE = ord("S")
TYPE_GNU_LONGNAME = ord("L")
TYPE_GNU_LONGLINK = ord("K")
_HEADER_ONLY: Final = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))
MODE_TYPES: Final = {TYPE_REG: fmt.S_IFREG, TYPE_SYMLINK: fmt.S_IFLNK, TYPE_CHAR: fmt.S_IFCHR,
                      TYPE_BLOCK: fmt.S_IFBLK, TYPE_DIR: fmt.S_IFDIR, TYPE_FIFO: fmt.S_IFIFO}

_FORMAT_V7, _FORMAT_USTAR, _FORMAT_GNU, _FORMAT_STAR = 1, 2, 3, 4

_OCTAL = re.compile(rb"[0-7]+")
_DECIMAL = re.compile(rb"[+-]?[0-9]+")
_DIGITS = re.compile(rb"[0-9]*")
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


class TarError(Ext4Error):
    """The input is not a tar stream Go's reader accepts (its message is Go's)."""


class _ParseError(Exception):
    pass


def _parse_string(b: bytes) -> bytes:
    i = b.find(0)
    return b if i < 0 else b[:i]


def _parse_octal(b: bytes) -> int:
    b = b.strip(b" \x00")
    if not b:
        return 0
    b = _parse_string(b)
    if not _OCTAL.fullmatch(b):
        raise _ParseError
    x = int(b, 8)
    if x >> 64:
        raise _ParseError
    return x - (1 << 64) if x >> 63 else x


def _parse_numeric(b: bytes) -> int:
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise _ParseError
            x = (x << 8) | c
        if x >> 63:
            raise _ParseError
        return ~x if inv else x
    return _parse_octal(b)


def _parse_int(v: bytes) -> int:
    """strconv.ParseInt(v, 10, 64)."""
    if not _DECIMAL.fullmatch(v):
        raise _ParseError
    x = int(v)
    if not _I64_MIN <= x <= _I64_MAX:
        raise _ParseError
    return x


def parse_pax_time(v: bytes) -> tuple[int, int]:
    """Go's parsePAXTime: (seconds, nanoseconds in [0, 1e9)) with the fraction truncated to 9 digits."""
    ss, _dot, sn = v.partition(b".")
    secs = _parse_int(ss)
    if not sn:
        return secs, 0
    if not _DIGITS.fullmatch(sn):
        raise _ParseError
    ns = int((sn + b"000000000")[:9])
    if ss[:1] == b"-":
        ns = -ns
    s, ns = divmod(secs * 1_000_000_000 + ns, 1_000_000_000)
    return s, ns


def parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Go's parsePAX: records `LEN key=value\\n`; GNU sparse 0.0 offset/numbytes pairs become GNU.sparse.map."""
    recs: dict[bytes, bytes] = {}
    sparse: list[bytes] = []
    s = data
    while s:
        sp = s.find(b" ")
        if sp < 0:
            raise _ParseError
        nstr = s[:sp]
        if not _DECIMAL.fullmatch(nstr):
            raise _ParseError
        n = int(nstr)
        if n < 5 or n > len(s):
            raise _ParseError
        n -= sp + 1
        if n <= 0:
            raise _ParseError
        rest = s[sp + 1 :]
        rec, nl, s = rest[: n - 1], rest[n - 1 : n], rest[n:]
        if nl != b"\n":
            raise _ParseError
        k, eq, v = rec.partition(b"=")
        if not eq or not k:
            raise _ParseError
        if k in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\0" in v:
                raise _ParseError
        elif b"\0" in k:
            raise _ParseError
        if k in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            if ((len(sparse) % 2 == 0 and k != b"GNU.sparse.offset")
                    or (len(sparse) % 2 == 1 and k != b"GNU.sparse.numbytes") or b"," in v):
                raise _ParseError
            sparse.append(v)
        else:
            recs[k] = v
    if sparse:
        recs[b"GNU.sparse.map"] = b",".join(sparse)
    return recs


class Header:
    """One tar entry as Go's reader returns it (names are raw bytes; times (secs, ns) or None = zero time)."""

    __slots__ = ("atime", "ctime", "devmajor", "devminor", "gid", "linkname", "mode", "mtime", "name", "pax",
                 "size", "sparse", "typeflag", "uid")

    def __init__(self) -> None:
        self.pax: dict[bytes, bytes] | None = None
        self.sparse: list[tuple[int, int]] | None = None
        self.atime: tuple[int, int] | None = None
        self.ctime: tuple[int, int] | None = None
        self.devmajor = 0
        self.devminor = 0


class TarReader:
    """Reads entries from a file descriptor (pipe or file) the way Go's archive/tar.Reader does.

    `next()` returns the next Header or None at the end of the archive; the entry's data is then consumed with
    `copy_data` (or skipped by the following `next()`).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.off = 0
        self.remaining = 0  # physical data bytes of the current entry not consumed yet
        self.pad = 0
        self.bytes_read = 0  # input bytes consumed (for progress)
        try:
            import stat

            self.regular = stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self.regular = False

    # ---- raw input ----

    def _read_full(self, n: int) -> bytes:
        """Up to n bytes; fewer only at the end of the input."""
        buf, off = self.buf, self.off
        end = off + n
        if end <= len(buf):
            self.off = end
            self.bytes_read += n
            return buf[off:end]
        parts = [buf[off:]]
        have = len(buf) - off
        self.buf, self.off = b"", 0
        while True:
            chunk = os.read(self.fd, max(CHUNK, n - have))
            if not chunk:
                break
            need = n - have
            if len(chunk) >= need:
                parts.append(chunk[:need])
                self.buf, self.off = chunk, need
                have = n
                break
            parts.append(chunk)
            have += len(chunk)
        self.bytes_read += have
        return b"".join(parts)

    def _must_read(self, n: int) -> bytes:
        b = self._read_full(n)
        if len(b) < n:
            raise TarError(ERR_UNEXPECTED_EOF)
        return b

    def _skip(self, n: int) -> int:
        """Discard up to n bytes; returns how many were discarded."""
        avail = len(self.buf) - self.off
        if n <= avail:
            self.off += n
            self.bytes_read += n
            return n
        done = avail
        self.buf, self.off = b"", 0
        if self.regular:
            try:
                cur = os.lseek(self.fd, 0, os.SEEK_CUR)
                end = os.fstat(self.fd).st_size
                k = max(0, min(n - done, end - cur))
                os.lseek(self.fd, cur + k, os.SEEK_SET)
                done += k
            except OSError:
                pass
        while done < n:
            chunk = os.read(self.fd, min(CHUNK, n - done))
            if not chunk:
                break
            done += len(chunk)
        self.bytes_read += done
        return done

    def _data(self, n: int) -> bytes:
        """Read n bytes of the current entry's data (special files, sparse maps)."""
        if n > self.remaining:
            n = self.remaining
        b = self._read_full(n)
        self.remaining -= len(b)
        if len(b) < n:
            raise TarError(ERR_UNEXPECTED_EOF)
        return b

    def drain(self) -> None:
        """Read and discard the rest of the input (what the CLI does after the archive ends)."""
        if self.regular:
            return
        self.buf, self.off = b"", 0
        while os.read(self.fd, CHUNK):
            pass

    # ---- entries ----

    def next(self) -> Header | None:
        if self.remaining:
            n = self.remaining
            self.remaining = 0
            if self._skip(n) < n:
                raise TarError(ERR_UNEXPECTED_EOF)
        pax: dict[bytes, bytes] | None = None
        long_name = b""
        long_link = b""
        while True:
            pad = self.pad
            off = self.off + pad
            if off + 512 <= len(self.buf):  # the usual case: padding and header are in the buffer
                self.pad = 0
                blk = self.buf[off : off + 512]
                self.off = off + 512
                self.bytes_read += pad + 512
            else:
                if pad:
                    self.pad = 0
                    if len(self._read_full(pad)) < pad:
                        return None  # Go's tryReadFull: the end of input inside padding is a clean end
                blk = self._read_full(512)
            if len(blk) < 512:
                if not blk:
                    return None
                raise TarError(ERR_UNEXPECTED_EOF)
            if blk == ZERO_BLOCK:
                blk2 = self._read_full(512)
                if len(blk2) < 512:
                    if not blk2:
                        return None
                    raise TarError(ERR_UNEXPECTED_EOF)
                if blk2 == ZERO_BLOCK:
                    return None
                raise TarError(ERR_HEADER)
            try:
                hdr, form = _parse_header(blk)
            except _ParseError:
                raise TarError(ERR_HEADER) from None
            self._set_regular(hdr)
            tf = hdr.typeflag
            if tf in (TYPE_XHEADER, TYPE_XGLOBAL):
                data = self._special()
                try:
                    pax = parse_pax(data)
                except _ParseError:
                    raise TarError(ERR_HEADER) from None
                if tf == TYPE_XGLOBAL:
                    # Go merges the records into the 'g' header (ignoring errors) and returns only its name,
                    # type flag and records: tar2ext4 turns that into an empty regular file (spec §2 item 1).
                    g = Header()
                    g.name = hdr.name
                    g.typeflag = tf
                    g.linkname = b""
                    g.mode = g.uid = g.gid = g.size = 0
                    g.mtime = None
                    try:
                        self._merge_pax(g, pax)
                    except TarError:
                        g.pax = None
                    g.linkname, g.mode, g.uid, g.gid, g.size = b"", 0, 0, 0, 0
                    g.mtime = g.atime = g.ctime = None
                    return g
                continue
            if tf in (TYPE_GNU_LONGNAME, TYPE_GNU_LONGLINK):
                data = _parse_string(self._special())
                if tf == TYPE_GNU_LONGNAME:
                    long_name = data
                else:
                    long_link = data
                continue
            if pax is not None:
                self._merge_pax(hdr, pax)
            if long_name:
                hdr.name = long_name
            if long_link:
                hdr.linkname = long_link
            if tf == TYPE_REGA:
                hdr.typeflag = TYPE_DIR if hdr.name.endswith(b"/") else TYPE_REG
            if pax is not None or tf == TYPE_REGA:  # the size or the type may have changed
                self._set_regular(hdr)
            if pax is not None or tf == TYPE_GNU_SPARSE:
                self._handle_sparse(hdr, blk, form)
            return hdr

    def _set_regular(self, hdr: Header) -> None:
        nb = 0 if hdr.typeflag in _HEADER_ONLY else hdr.size
        if nb < 0:
            raise TarError(ERR_HEADER)
        self.remaining = nb
        self.pad = -nb % 512

    def _special(self) -> bytes:
        if self.remaining > MAX_SPECIAL_FILE_SIZE:
            raise TarError("archive/tar: header field too long")
        return self._data(self.remaining)

    @staticmethod
    def _merge_pax(hdr: Header, pax: dict[bytes, bytes]) -> None:
        try:
            for k, v in pax.items():
                if not v:
                    continue
                if k == b"path":
                    hdr.name = v
                elif k == b"linkpath":
                    hdr.linkname = v
                elif k == b"uid":
                    hdr.uid = _parse_int(v)
                elif k == b"gid":
                    hdr.gid = _parse_int(v)
                elif k == b"atime":
                    hdr.atime = parse_pax_time(v)
                elif k == b"mtime":
                    hdr.mtime = parse_pax_time(v)
                elif k == b"ctime":
                    hdr.ctime = parse_pax_time(v)
                elif k == b"size":
                    hdr.size = _parse_int(v)
        except _ParseError:
            raise TarError(ERR_HEADER) from None
        hdr.pax = pax

    def _handle_sparse(self, hdr: Header, blk: bytes, form: int) -> None:
        sp: list[tuple[int, int]] | None = None
        try:
            sp = self._old_gnu_sparse(hdr, blk, form) if hdr.typeflag == TYPE_GNU_SPARSE else self._pax_sparse(hdr)
        except _ParseError:
            raise TarError(ERR_HEADER) from None
        if sp is None:
            return
        if hdr.typeflag in _HEADER_ONLY or not _valid_sparse(sp, hdr.size):
            raise TarError(ERR_HEADER)
        hdr.sparse = sp

    def _old_gnu_sparse(self, hdr: Header, blk: bytes, form: int) -> list[tuple[int, int]]:
        if form != _FORMAT_GNU:
            raise _ParseError
        hdr.size = _parse_numeric(blk[483:495])
        sp: list[tuple[int, int]] = []
        base, count, ext_at = 386, 4, 482
        while True:
            for i in range(count):
                e = blk[base + 24 * i : base + 24 * i + 24]
                if e[0] == 0:
                    break
                sp.append((_parse_numeric(e[:12]), _parse_numeric(e[12:])))
            if blk[ext_at] > 0:
                blk = self._must_read(512)
                base, count, ext_at = 0, 21, 504
                continue
            return sp

    def _pax_sparse(self, hdr: Header) -> list[tuple[int, int]] | None:
        recs = hdr.pax
        if not recs:
            return None
        major, minor = recs.get(b"GNU.sparse.major", b""), recs.get(b"GNU.sparse.minor", b"")
        if major == b"0" and minor in (b"0", b"1"):
            is1x0 = False
        elif major == b"1" and minor == b"0":
            is1x0 = True
        elif major or minor:
            return None
        elif recs.get(b"GNU.sparse.map", b""):
            is1x0 = False
        else:
            return None
        name = recs.get(b"GNU.sparse.name", b"")
        if name:
            hdr.name = name
        size = recs.get(b"GNU.sparse.size", b"") or recs.get(b"GNU.sparse.realsize", b"")
        if size:
            hdr.size = _parse_int(size)
        if is1x0:
            return self._sparse_map_1x0()
        num = _parse_int(recs.get(b"GNU.sparse.numblocks", b""))
        if num < 0:
            raise _ParseError
        fields = recs.get(b"GNU.sparse.map", b"").split(b",")
        if fields == [b""]:
            fields = []
        if len(fields) != 2 * num:
            raise _ParseError
        return [(_parse_int(fields[i]), _parse_int(fields[i + 1])) for i in range(0, len(fields), 2)]

    def _sparse_map_1x0(self) -> list[tuple[int, int]]:
        buf = b""
        lines: list[bytes] = []

        def feed(count: int) -> None:
            nonlocal buf
            while len(lines) < count:
                blk = self._data(512) if self.remaining >= 512 else None
                if blk is None:
                    raise TarError(ERR_UNEXPECTED_EOF)
                buf += blk
                *done, buf = buf.split(b"\n")
                lines.extend(done)

        feed(1)
        num = _parse_int(lines.pop(0))
        if num < 0:
            raise _ParseError
        feed(2 * num)
        return [(_parse_int(lines[2 * i]), _parse_int(lines[2 * i + 1])) for i in range(num)]

    # ---- data ----

    def copy_data(self, writer: Writer, n: int) -> None:
        """Copy the next n data bytes of the current entry into the writer's current file."""
        if n > self.remaining:
            raise TarError(ERR_UNEXPECTED_EOF)
        self.remaining -= n
        buf, off = self.buf, self.off
        avail = len(buf) - off
        if n <= avail:
            writer.write(memoryview(buf)[off : off + n])
            self.off = off + n
            self.bytes_read += n
            return
        if avail:
            writer.write(memoryview(buf)[off:])
            n -= avail
            self.bytes_read += avail
        self.buf, self.off = b"", 0
        if self.regular and n >= _BIG:
            # Big data goes file to file in the kernel (queued in order with the writer's other writes): its
            # pages never enter our resident set. Only what the file holds now is handed over; a file cut
            # shorter meanwhile makes that copy fail with an I/O error.
            try:
                cur = os.lseek(self.fd, 0, os.SEEK_CUR)
                k = min(n & ~(CHUNK - 1) or n, max(0, os.fstat(self.fd).st_size - cur))
            except OSError:
                k = 0
            if k:
                k = writer.write_from_fd(self.fd, k, cur)
                if k:
                    os.lseek(self.fd, cur + k, os.SEEK_SET)
                    n -= k
                    self.bytes_read += k
        while n > 0:
            chunk = os.read(self.fd, max(CHUNK, min(n, 8 * CHUNK)))
            if not chunk:
                raise TarError(ERR_UNEXPECTED_EOF)
            if len(chunk) > n:
                writer.write(memoryview(chunk)[:n])
                self.buf, self.off = chunk, n
                self.bytes_read += n
                return
            writer.write(chunk)
            n -= len(chunk)
            self.bytes_read += len(chunk)

    def copy_sparse(self, writer: Writer, hdr: Header) -> None:
        """Expand a sparse entry: data fragments from the archive, holes as zero bytes."""
        assert hdr.sparse is not None
        phys = sum(length for _, length in hdr.sparse)
        if phys > self.remaining:
            raise TarError("archive/tar: sparse file references non-existent data")
        if phys < self.remaining:
            raise TarError("archive/tar: sparse file contains unreferenced data")
        pos = 0
        for off, length in hdr.sparse:
            _write_zeros(writer, off - pos)
            self.copy_data(writer, length)
            pos = off + length
        _write_zeros(writer, hdr.size - pos)


_ZEROS = bytes(CHUNK)


def _write_zeros(writer: Writer, n: int) -> None:
    while n > 0:
        k = min(n, CHUNK)
        writer.write(memoryview(_ZEROS)[:k])
        n -= k


def _valid_sparse(sp: list[tuple[int, int]], size: int) -> bool:
    if size < 0:
        return False
    pre_end = 0
    for off, length in sp:
        if off < 0 or length < 0 or off > _I64_MAX - length or off + length > size or pre_end > off:
            return False
        pre_end = off + length
    return True


_HDR = struct.Struct("100s24s12s12s8sB100s6s2s64s16s155s12s")
_NUM_CACHE: dict[bytes, int] = {}
_TRIPLE_CACHE: dict[bytes, tuple[int, ...]] = {}


def _num(f: bytes) -> int:
    """parseNumeric with a small cache: many size and time fields repeat across entries."""
    v = _NUM_CACHE.get(f)
    if v is None:
        d = f[:-1]
        # The usual zero-padded, NUL-terminated octal field first.
        v = int(d, 8) if f[-1] == 0 and d.isdigit() and b"8" not in d and b"9" not in d else _parse_numeric(f)
        if len(_NUM_CACHE) >= 16384:
            _NUM_CACHE.clear()
        _NUM_CACHE[f] = v
    return v


def _nums(f: bytes, width: int) -> tuple[int, ...]:
    """Several adjacent numeric fields (mode/uid/gid, devmajor/devminor) parsed and cached together."""
    v = _TRIPLE_CACHE.get(f)
    if v is None:
        v = tuple(_parse_numeric(f[i : i + width]) for i in range(0, len(f), width))
        if len(_TRIPLE_CACHE) >= 4096:
            _TRIPLE_CACHE.clear()
        _TRIPLE_CACHE[f] = v
    return v


def _checksum_ok(blk: bytes, field: bytes) -> bool:
    stored = _num(field) if not field[0] & 0x80 else _parse_octal(field)
    # An ASCII block's byte sum is < 65521, so Adler-32's low half (1 + sum mod 65521) gives it exactly.
    total = ((zlib.adler32(blk) & 0xFFFF) - 1) % 65521 if blk.isascii() else sum(blk)
    unsigned = total - sum(field) + 256
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for c in blk if c >= 0x80) + 256 * sum(1 for c in field if c >= 0x80)
    return stored == signed


def _parse_header(blk: bytes) -> tuple[Header, int]:
    (name, ids, size, mtime, chk, tf, link, magic, version, _names, dev, prefix, tail) = _HDR.unpack(blk)
    if not _checksum_ok(blk, chk):
        raise _ParseError
    if magic == b"ustar\x00":
        form = _FORMAT_STAR if tail[8:12] == b"tar\x00" else _FORMAT_USTAR
    elif magic == b"ustar " and version == b" \x00":
        form = _FORMAT_GNU
    else:
        form = _FORMAT_V7
    hdr = Header()
    hdr.typeflag = tf
    hdr.name = name.partition(b"\0")[0]
    hdr.linkname = link.partition(b"\0")[0]
    hdr.size = _num(size)
    hdr.mode, hdr.uid, hdr.gid = _nums(ids, 8)
    hdr.mtime = (_num(mtime), 0)
    if form != _FORMAT_V7:
        hdr.devmajor, hdr.devminor = _nums(dev, 8)
        pre = b""
        if form == _FORMAT_GNU:
            try:
                if prefix[0]:
                    hdr.atime = (_num(prefix[0:12]), 0)
                if prefix[12]:
                    hdr.ctime = (_num(prefix[12:24]), 0)
            except _ParseError:
                hdr.atime = hdr.ctime = None
                s = prefix.partition(b"\0")[0]
                if s.isascii():
                    pre = s
        elif form == _FORMAT_USTAR:
            pre = prefix.partition(b"\0")[0]
        else:
            pre = prefix[:131].partition(b"\0")[0]
            hdr.atime = (_num(prefix[131:143]), 0)
            hdr.ctime = (_num(prefix[143:155]), 0)
        if pre:
            hdr.name = pre + b"/" + hdr.name
    return hdr, form
