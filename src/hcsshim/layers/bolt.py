"""A read-only reader of bbolt database files (go.etcd.io/bbolt 1.3, the format containerd keeps its metadata in).

Standard library only, and it never locks or writes the file: containerd holds the database open read-write
(bbolt takes an exclusive flock on it), so a reader here must not wait for that lock and must tolerate commits
happening while it reads.

The file format (bbolt page.go, db.go, bucket.go; all integers little-endian):

* The file is an array of pages of `page_size` bytes. Every page starts with a 16-byte header: id u64,
  flags u16 (0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist), count u16, overflow u32. A page with
  overflow n spans n + 1 consecutive pages.
* Pages 0 and 1 are meta pages; after the header: magic u32 (0xED0CDAED), version u32 (2), page_size u32,
  flags u32, the root bucket (root page id u64, sequence u64), freelist page id u64, pgid u64 (the high-water
  mark: no page id at or above it is in use), txid u64, checksum u64 (FNV-1a 64 of the 56 bytes before it;
  0 means unchecked). A commit writes meta page txid % 2 last, so the current state is the valid meta with
  the higher txid, and the other one is the state before it.
* A branch page holds `count` elements of 16 bytes (pos u32, ksize u32, child pgid u64): the child's first
  key is at the element's own offset + pos. A leaf page holds elements of 16 bytes (flags u32, pos u32,
  ksize u32, vsize u32) with the key at the element's offset + pos and the value right after it. Keys are
  sorted bytewise.
* A leaf element with flag 0x01 is a nested bucket: its value is a bucket header (root pgid u64, sequence
  u64); root 0 means an inline bucket, whose root leaf page (header and elements) follows the header inside
  the value itself.

Consistency without a lock: bbolt copies on write, and the pages reachable from the meta of txid T are only
reused by transaction T + 2 or later, which starts after T + 1's meta is written. So a read of state T is
consistent if, once it is over, the file's newest valid meta still has txid T: `Snapshot.verify()` checks
that (and `read` retries a few times when it fails). Anything that does not parse (bad magic, no valid meta,
a page id past the high-water mark or the end of the file, an element outside its page, a page of the
wrong type, a tree too deep) raises BoltError; TornReadError is the subclass for "the file changed while it
was being read".
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["BoltError", "Bucket", "Meta", "Snapshot", "TornReadError", "read"]

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
META = struct.Struct("<IIIIQQQQQQ")  # magic, version, page_size, flags, root, sequence, freelist, pgid, txid, checksum
BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, pgid
LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize
BUCKET_HEADER = struct.Struct("<QQ")  # root, sequence

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF = 0x01

# Page sizes to look for meta page 1 at when meta page 0 is damaged (bbolt uses the OS page size).
_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536, 1024, 2048)
_MAX_DEPTH = 64  # a B+tree of 4 KiB pages is never this deep; deeper means a cycle
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3

T = TypeVar("T")


class BoltError(Exception):
    """The file is not a readable bbolt database (or not one in a consistent state)."""


class TornReadError(BoltError):
    """The database was committed to while it was being read: the pages read may not belong together."""


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True)
class Meta:
    """One meta page's content."""

    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int
    checksum: int

    @classmethod
    def parse(cls, raw: bytes) -> Meta | None:
        """The meta in `raw` (the page from its header on), or None when it does not validate."""
        end = PAGE_HEADER.size + META.size
        if len(raw) < end:
            return None
        fields = META.unpack_from(raw, PAGE_HEADER.size)
        magic, version, page_size, flags, root, sequence, freelist, pgid, txid, checksum = fields
        if magic != MAGIC or version != VERSION:
            return None
        if checksum != 0 and checksum != fnv1a64(raw[PAGE_HEADER.size:end - 8]):
            return None
        return cls(page_size, flags, root, sequence, freelist, pgid, txid, checksum)


def _pread(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _read_metas(fd: int, path: str) -> tuple[int, Meta]:
    """(page size, current meta): the valid meta with the higher txid, as bbolt's DB.meta() picks it."""
    head = _pread(fd, 4096, 0)
    if len(head) < PAGE_HEADER.size + META.size:
        raise BoltError(f"{path}: too short for a bbolt database ({len(head)} bytes)")
    candidates: list[Meta] = []
    m0 = Meta.parse(head)
    if m0 is not None and m0.page_size in _PAGE_SIZES:
        page_size = m0.page_size
        candidates.append(m0)
        m1 = Meta.parse(_pread(fd, PAGE_HEADER.size + META.size, page_size))
        if m1 is not None and m1.page_size == page_size:
            candidates.append(m1)
    else:  # meta 0 damaged (or mid-write): find meta 1 by trying the page sizes bbolt could have used
        for size in _PAGE_SIZES:
            m1 = Meta.parse(_pread(fd, PAGE_HEADER.size + META.size, size))
            if m1 is not None and m1.page_size == size:
                page_size = size
                candidates.append(m1)
                break
    if not candidates:
        if struct.unpack_from("<I", head, PAGE_HEADER.size)[0] != MAGIC:
            raise BoltError(f"{path}: not a bbolt database (bad magic)")
        raise BoltError(f"{path}: no valid meta page (bad checksum or version)")
    return page_size, max(candidates, key=lambda m: m.txid)


class _Page:
    """One page (with its overflow) or an inline bucket's page: `data` starts at the page header."""

    __slots__ = ("count", "data", "flags", "pgid")

    def __init__(self, data: bytes, pgid: int, what: str) -> None:
        if len(data) < PAGE_HEADER.size:
            raise BoltError(f"{what}: page {pgid} is truncated")
        _, self.flags, self.count, _ = PAGE_HEADER.unpack_from(data)
        self.data = data
        self.pgid = pgid

    def leaf_elements(self, what: str) -> list[tuple[bytes, int, bytes]]:
        """[(key, flags, value)] of a leaf page."""
        out = []
        data, n = self.data, len(self.data)
        for i in range(self.count):
            at = PAGE_HEADER.size + i * LEAF_ELEMENT.size
            if at + LEAF_ELEMENT.size > n:
                raise BoltError(f"{what}: leaf page {self.pgid}: element {i} outside the page")
            flags, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(data, at)
            k = at + pos
            if k + ksize + vsize > n:
                raise BoltError(f"{what}: leaf page {self.pgid}: element {i} data outside the page")
            out.append((data[k:k + ksize], flags, data[k + ksize:k + ksize + vsize]))
        return out

    def branch_elements(self, what: str) -> list[tuple[bytes, int]]:
        """[(first key, child pgid)] of a branch page."""
        out = []
        data, n = self.data, len(self.data)
        for i in range(self.count):
            at = PAGE_HEADER.size + i * BRANCH_ELEMENT.size
            if at + BRANCH_ELEMENT.size > n:
                raise BoltError(f"{what}: branch page {self.pgid}: element {i} outside the page")
            pos, ksize, child = BRANCH_ELEMENT.unpack_from(data, at)
            k = at + pos
            if k + ksize > n:
                raise BoltError(f"{what}: branch page {self.pgid}: element {i} key outside the page")
            out.append((data[k:k + ksize], child))
        return out


class Snapshot:
    """The database as of one meta page, read lazily page by page from an open descriptor.

    Use within `read` (which opens, verifies and retries); `root` is the top-level bucket.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.page_size, self.meta = _read_metas(fd, path)
        self._pages: dict[int, _Page] = {}
        self.stats = {"branch": 0, "leaf": 0, "other": 0, "overflow": 0}  # pages read: by type; how many overflow
        if not 2 <= self.meta.root < self.meta.pgid:
            raise BoltError(f"{path}: root page {self.meta.root} outside the database (pgid {self.meta.pgid})")
        self.root = Bucket(self, self.meta.root, None, "/")

    def page(self, pgid: int, what: str) -> _Page:
        cached = self._pages.get(pgid)
        if cached is not None:
            return cached
        if not 2 <= pgid < self.meta.pgid:
            raise BoltError(f"{what}: page {pgid} outside the database (high-water mark {self.meta.pgid})")
        off = pgid * self.page_size
        head = _pread(self.fd, self.page_size, off)
        if len(head) < self.page_size:
            raise BoltError(f"{what}: page {pgid} past the end of the file")
        page_id, _, _, overflow = PAGE_HEADER.unpack_from(head)
        if page_id != pgid:
            raise BoltError(f"{what}: page {pgid} says it is page {page_id}")
        if overflow:
            if pgid + overflow >= self.meta.pgid:
                raise BoltError(f"{what}: page {pgid} overflows past the high-water mark")
            rest = _pread(self.fd, overflow * self.page_size, off + self.page_size)
            if len(rest) < overflow * self.page_size:
                raise BoltError(f"{what}: page {pgid} overflows past the end of the file")
            head += rest
        p = _Page(head, pgid, what)
        self._pages[pgid] = p
        self.stats["branch" if p.flags & BRANCH_PAGE else "leaf" if p.flags & LEAF_PAGE else "other"] += 1
        self.stats["overflow"] += overflow > 0
        return p

    def verify(self) -> None:
        """Raise TornReadError unless the file's current meta is still the one this snapshot read."""
        _, now = _read_metas(self.fd, self.path)
        if now.txid != self.meta.txid:
            raise TornReadError(f"{self.path}: committed to while being read (txid {self.meta.txid} -> {now.txid})")


class Bucket:
    """A bucket of the snapshot: sorted keys, each a value (bytes) or a nested Bucket."""

    def __init__(self, snap: Snapshot, root: int, inline: _Page | None, name: str, sequence: int = 0) -> None:
        self._snap = snap
        self._root = root
        self._inline = inline
        self.name = name  # the bucket's path from the top, for error messages
        self.sequence = sequence

    def _what(self) -> str:
        return f"{self._snap.path}: bucket {self.name}"

    def _open(self, key: bytes, value: bytes) -> Bucket:
        name = self.name.rstrip("/") + "/" + key.decode("utf-8", "backslashreplace")
        if len(value) < BUCKET_HEADER.size:
            raise BoltError(f"{self._snap.path}: bucket {name}: header truncated")
        root, sequence = BUCKET_HEADER.unpack_from(value)
        if root == 0:
            page = _Page(value[BUCKET_HEADER.size:], 0, f"{self._snap.path}: bucket {name}")
            if page.flags & LEAF_PAGE == 0:
                raise BoltError(f"{self._snap.path}: bucket {name}: inline page is not a leaf")
            return Bucket(self._snap, 0, page, name, sequence)
        return Bucket(self._snap, root, None, name, sequence)

    def _elements(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every (key, flags, value) of the bucket's leaves, in key order."""
        if self._inline is not None:
            yield from self._inline.leaf_elements(self._what())
            return
        stack: list[tuple[int, int]] = [(self._root, 0)]
        while stack:
            pgid, depth = stack.pop()
            if depth > _MAX_DEPTH:
                raise BoltError(f"{self._what()}: tree deeper than {_MAX_DEPTH} pages (a cycle?)")
            page = self._snap.page(pgid, self._what())
            if page.flags & LEAF_PAGE:
                yield from page.leaf_elements(self._what())
            elif page.flags & BRANCH_PAGE:
                children = page.branch_elements(self._what())
                stack.extend((child, depth + 1) for _, child in reversed(children))
            else:
                raise BoltError(f"{self._what()}: page {pgid} is neither a branch nor a leaf (flags {page.flags:#x})")

    def _find(self, key: bytes) -> tuple[int, bytes] | None:
        """(flags, value) of `key`, descending the tree by the branch keys."""
        page = self._inline
        if page is None:
            pgid, depth = self._root, 0
            while True:
                page = self._snap.page(pgid, self._what())
                if page.flags & LEAF_PAGE:
                    break
                if not page.flags & BRANCH_PAGE:
                    raise BoltError(f"{self._what()}: page {pgid} is neither a branch nor a leaf")
                children = page.branch_elements(self._what())
                if not children:
                    return None
                # the last child whose first key is <= key (the first child when key sorts before all)
                i = max(bisect.bisect_right([k for k, _ in children], key) - 1, 0)
                pgid = children[i][1]
                depth += 1
                if depth > _MAX_DEPTH:
                    raise BoltError(f"{self._what()}: tree deeper than {_MAX_DEPTH} pages (a cycle?)")
        for k, flags, value in page.leaf_elements(self._what()):
            if k == key:
                return flags, value
        return None

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`, or None when it is missing or names a nested bucket."""
        found = self._find(key)
        if found is None or found[0] & BUCKET_LEAF:
            return None
        return found[1]

    def bucket(self, key: bytes) -> Bucket | None:
        """The nested bucket `key`, or None when it is missing or a plain value."""
        found = self._find(key)
        if found is None or not found[0] & BUCKET_LEAF:
            return None
        return self._open(key, found[1])

    def items(self) -> Iterator[tuple[bytes, bytes | Bucket]]:
        """(key, value or nested Bucket) for every key, in key order."""
        for key, flags, value in self._elements():
            yield key, self._open(key, value) if flags & BUCKET_LEAF else value

    def to_dict(self) -> dict[bytes, object]:
        """The whole bucket as nested dicts (tests and debugging)."""
        return {k: v.to_dict() if isinstance(v, Bucket) else v for k, v in self.items()}


def read(path: str, fn: Callable[[Snapshot], T], *, retries: int = 3) -> T:
    """Open `path` read-only, run fn on a consistent snapshot of it and return fn's result.

    fn runs again (up to `retries` times in all) when the database was committed to during the read, or when
    what it read did not parse and the file then turned out to have changed. Raises BoltError (TornReadError
    when every attempt raced a commit) and OSError (the file cannot be opened or read).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        last: TornReadError | None = None
        for _ in range(max(retries, 1)):
            snap = Snapshot(fd, path)  # one of the two metas is always intact: a failure here is no race
            try:
                result = fn(snap)
            except TornReadError as exc:
                last = exc
                continue
            except BoltError:  # maybe garbage from a concurrent commit: tell the two apart
                try:
                    snap.verify()
                except TornReadError as exc:
                    last = exc
                    continue
                raise
            try:
                snap.verify()
            except TornReadError as exc:
                last = exc
                continue
            return result
        assert last is not None
        raise last
    finally:
        os.close(fd)
