"""hcsshim.boot.archive: root file system trees in memory, read from tar/cpio and written reproducibly.

A `Tree` maps a normalized relative path ("bin/sh", no leading "./" or "/") to an `Entry`. Readers accept
what upstream's `hack/catcpio.sh` accepts for BASE: tar, gzipped tar, newc cpio (070701/070702) and gzipped
cpio, detected by magic bytes rather than by name. Writers make the same bytes from the same tree: entries
sorted by path (parents first), one fixed mtime, owner 0:0 (upstream packs with `cpio -R 0:0`), sequential
inode numbers, and gzip streams with mtime 0 and no file name. Hard links become independent copies.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zlib
from dataclasses import dataclass, replace
from typing import BinaryIO

CPIO_NEWC = b"070701"
CPIO_CRC = b"070702"
GZIP_MAGIC = b"\x1f\x8b"
_TRAILER = "TRAILER!!!"

# Entry kinds
FILE, DIR, SYMLINK, CHAR, BLOCK, FIFO = "file", "dir", "symlink", "char", "block", "fifo"
_KIND_BITS = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK, CHAR: stat.S_IFCHR,
              BLOCK: stat.S_IFBLK, FIFO: stat.S_IFIFO}


class ArchiveError(ValueError):
    """An archive could not be read: unknown format, truncated or malformed."""


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int = 0o755  # permission bits, including setuid/setgid/sticky
    data: bytes = b""  # file contents
    target: str = ""  # symlink target
    rdev: tuple[int, int] = (0, 0)  # device major, minor

    @classmethod
    def file(cls, data: bytes, mode: int = 0o644) -> Entry:
        return cls(FILE, mode, data=data)

    @classmethod
    def dir(cls, mode: int = 0o755) -> Entry:
        return cls(DIR, mode)

    @classmethod
    def symlink(cls, target: str) -> Entry:
        return cls(SYMLINK, 0o777, target=target)


def normalize(path: str) -> str:
    """'./usr//bin/' -> 'usr/bin'; '.' and '/' -> ''. Rejects '..' so an archive cannot escape the tree."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"path {path!r}: '..' components are not allowed")
    return "/".join(parts)


def _sort_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


class Tree:
    """A root file system: path -> Entry. Adding a path creates missing parent directories (0755)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: str) -> bool:
        return normalize(path) in self.entries

    def get(self, path: str) -> Entry | None:
        return self.entries.get(normalize(path))

    def add(self, path: str, entry: Entry) -> None:
        p = normalize(path)
        if not p:
            return  # the root itself: always a 0755 directory
        p = self._resolve_parents(p)
        parts = p.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            cur = self.entries.get(parent)
            if cur is None or cur.kind != DIR:
                self.entries[parent] = Entry.dir()  # a file in the way is replaced, as unpacking would do
        old = self.entries.get(p)
        if old is not None and old.kind == SYMLINK and entry.kind == DIR:
            # Keep a symlink to a directory (GNU tar --keep-directory-symlink): a delta's bin/ must not
            # break a usr-merged base's bin -> usr/bin.
            resolved = self.entries.get(self._resolve_parents(f"{p}/_").removesuffix("/_"))
            if resolved is not None and resolved.kind == DIR:
                return
        if old is not None and old.kind == DIR and entry.kind != DIR:
            # A directory replaced by a non-directory takes its contents with it.
            prefix = p + "/"
            for k in [k for k in self.entries if k.startswith(prefix)]:
                del self.entries[k]
        if old is not None and old.kind == DIR and entry.kind == DIR:
            entry = replace(old, mode=entry.mode)
        self.entries[p] = entry

    def _resolve_parents(self, p: str) -> str:
        """Follow symlinked parent directories (usr-merged `bin -> usr/bin`), as unpacking over a tree does."""
        for _ in range(40):
            parts = p.split("/")
            for i in range(1, len(parts)):
                cur = self.entries.get("/".join(parts[:i]))
                if cur is not None and cur.kind == SYMLINK:
                    stack = [] if cur.target.startswith("/") else parts[:i - 1]
                    for c in cur.target.split("/"):
                        if c == "..":
                            if stack:
                                stack.pop()  # as the kernel does, ".." at the root stays at the root
                        elif c not in ("", "."):
                            stack.append(c)
                    p = "/".join(stack + parts[i:])
                    break
            else:
                return p
        raise ArchiveError(f"path {p!r}: too many levels of symbolic links")

    def merge(self, other: Tree) -> None:
        """Overlay `other` on this tree (its entries win), like unpacking it on top."""
        for p in sorted(other.entries, key=_sort_key):
            self.add(p, other.entries[p])

    def paths(self) -> list[str]:
        return sorted(self.entries, key=_sort_key)

    def size(self) -> int:
        return sum(len(e.data) for e in self.entries.values())


# ---------------------------------------------------------------- reading

def detect(data: bytes) -> str:
    """'gzip', 'cpio' or 'tar' from the first bytes of an archive; ArchiveError otherwise."""
    if data[:2] == GZIP_MAGIC:
        return "gzip"
    if data[:6] in (CPIO_NEWC, CPIO_CRC):
        return "cpio"
    if data[257:262] == b"ustar" or (len(data) >= 512 and _v7_tar_checksum_ok(data[:512])):
        return "tar"
    if len(data) >= 1024 and len(data) % 512 == 0 and not data.strip(b"\0"):
        return "tar"  # an empty tar: end-of-archive blocks only
    if data[:6] in (b"070707", b"\xc7\x71", b"\x71\xc7"):
        raise ArchiveError("only the newc cpio format is supported (cpio -H newc)")
    raise ArchiveError("unknown archive format (expected tar, tar.gz, newc cpio or cpio.gz)")


def _v7_tar_checksum_ok(block: bytes) -> bool:
    try:
        want = int(block[148:156].split(b"\0")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return want == sum(block[:148]) + 32 * 8 + sum(block[156:])


def read_archive(data: bytes, what: str = "archive") -> Tree:
    """Parse a tar, cpio or gzipped tar/cpio held in memory."""
    try:
        kind = detect(data)
        if kind == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as e:
                raise ArchiveError(f"bad gzip data: {e}") from None
            kind = detect(data)
            if kind == "gzip":
                raise ArchiveError("gzip inside gzip")
        return read_cpio(data) if kind == "cpio" else read_tar(data)
    except ArchiveError as e:
        raise ArchiveError(f"read {what}: {e}") from None


def read_tar(data: bytes) -> Tree:
    tree = Tree()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                path = normalize(m.name)
                mode = m.mode & 0o7777
                if m.isreg() or m.islnk():
                    f = tf.extractfile(m)
                    if f is None:
                        raise ArchiveError(f"{m.name}: hard link target {m.linkname!r} missing")
                    tree.add(path, Entry(FILE, mode, data=f.read()))
                elif m.isdir():
                    tree.add(path, Entry(DIR, mode))
                elif m.issym():
                    tree.add(path, Entry(SYMLINK, 0o777, target=m.linkname))
                elif m.ischr():
                    tree.add(path, Entry(CHAR, mode, rdev=(m.devmajor, m.devminor)))
                elif m.isblk():
                    tree.add(path, Entry(BLOCK, mode, rdev=(m.devmajor, m.devminor)))
                elif m.isfifo():
                    tree.add(path, Entry(FIFO, mode))
    except (tarfile.TarError, EOFError, KeyError) as e:
        raise ArchiveError(f"bad tar: {e}") from None
    return tree


def read_cpio(data: bytes) -> Tree:
    tree = Tree()
    pos = 0
    links: dict[tuple[int, int, int], list[str]] = {}  # hard-link groups: newc stores data in the last one
    while True:
        hdr = data[pos:pos + 110]
        if len(hdr) < 110:
            raise ArchiveError(f"truncated cpio header at offset {pos}")
        if hdr[:6] not in (CPIO_NEWC, CPIO_CRC):
            raise ArchiveError(f"bad cpio magic {hdr[:6]!r} at offset {pos}")
        try:
            f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ArchiveError(f"bad cpio header at offset {pos}") from None
        ino, mode, _uid, _gid, nlink, _mtime, size, devmaj, devmin, rmaj, rmin, namesize, _check = f
        name_end = pos + 110 + namesize
        name = data[pos + 110:name_end - 1].decode("utf-8", "surrogateescape")
        pos = (name_end + 3) & ~3
        body = data[pos:pos + size]
        if len(body) < size:
            raise ArchiveError(f"{name}: truncated file data")
        pos = (pos + size + 3) & ~3
        if name == _TRAILER:
            break
        path = normalize(name)
        fmt, perm = stat.S_IFMT(mode), mode & 0o7777
        if fmt == stat.S_IFREG:
            tree.add(path, Entry(FILE, perm, data=body))
            if nlink > 1:
                links.setdefault((ino, devmaj, devmin), []).append(path)
        elif fmt == stat.S_IFDIR:
            tree.add(path, Entry(DIR, perm))
        elif fmt == stat.S_IFLNK:
            tree.add(path, Entry(SYMLINK, 0o777, target=body.decode("utf-8", "surrogateescape")))
        elif fmt == stat.S_IFCHR:
            tree.add(path, Entry(CHAR, perm, rdev=(rmaj, rmin)))
        elif fmt == stat.S_IFBLK:
            tree.add(path, Entry(BLOCK, perm, rdev=(rmaj, rmin)))
        elif fmt == stat.S_IFIFO:
            tree.add(path, Entry(FIFO, perm))
        elif fmt != stat.S_IFSOCK:
            raise ArchiveError(f"{name}: unknown file type {oct(fmt)}")
    for group in links.values():
        content = next((tree.entries[p].data for p in reversed(group) if tree.entries[p].data), b"")
        for p in group:
            tree.entries[p] = replace(tree.entries[p], data=content)
    return tree


# ---------------------------------------------------------------- writing

def gzip_bytes(raw: bytes, level: int = 6) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level) as g:
        g.write(raw)
    return out.getvalue()


def cpio_bytes(tree: Tree, mtime: int = 0) -> bytes:
    """The tree as an uncompressed newc cpio (`find . | cpio -o -H newc -R 0:0`, but reproducible)."""
    out = io.BytesIO()

    def put(name: str, mode: int, nlink: int, body: bytes, rdev: tuple[int, int], ino: int) -> None:
        nb = name.encode("utf-8", "surrogateescape") + b"\0"
        fields = (ino, mode, 0, 0, nlink, mtime, len(body), 0, 0, rdev[0], rdev[1], len(nb), 0)
        out.write(CPIO_NEWC + b"".join(b"%08X" % v for v in fields) + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(body)
        out.write(b"\0" * (-len(body) % 4))

    put(".", stat.S_IFDIR | 0o755, 2, b"", (0, 0), 1)
    for ino, p in enumerate(tree.paths(), start=2):
        e = tree.entries[p]
        body = e.data if e.kind == FILE else e.target.encode("utf-8", "surrogateescape") if e.kind == SYMLINK else b""
        put(p, _KIND_BITS[e.kind] | e.mode, 2 if e.kind == DIR else 1, body, e.rdev, ino)
    put(_TRAILER, 0, 1, b"", (0, 0), 0)
    return out.getvalue()


def tar_bytes(tree: Tree, mtime: int = 0) -> bytes:
    """The tree as an uncompressed PAX tar with owner 0:0 and a fixed mtime."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for p in tree.paths():
            e = tree.entries[p]
            ti = tarfile.TarInfo(p)
            ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = mtime, e.mode, 0, 0, "root", "root"
            fileobj: BinaryIO | None = None
            if e.kind == FILE:
                ti.type, ti.size, fileobj = tarfile.REGTYPE, len(e.data), io.BytesIO(e.data)
            elif e.kind == DIR:
                ti.type = tarfile.DIRTYPE
            elif e.kind == SYMLINK:
                ti.type, ti.linkname = tarfile.SYMTYPE, e.target
            elif e.kind in (CHAR, BLOCK):
                ti.type = tarfile.CHRTYPE if e.kind == CHAR else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = e.rdev
            else:
                ti.type = tarfile.FIFOTYPE
            tf.addfile(ti, fileobj)
    return out.getvalue()


def write_cpio_gz(tree: Tree, path: str, mtime: int = 0, level: int = 6) -> int:
    data = gzip_bytes(cpio_bytes(tree, mtime), level)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def write_tar_gz(tree: Tree, path: str, mtime: int = 0, level: int = 6) -> int:
    data = gzip_bytes(tar_bytes(tree, mtime), level)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
