"""The read-only bbolt reader against files laid out by a small bbolt writer here (the same page formats bbolt
1.3 writes: meta pages with checksums, branch and leaf pages, nested and inline buckets, overflow pages, a
freelist), its damage handling, and its consistency check under concurrent commits. Databases written by a real
containerd are read in tests/integration/test_layer_cache.py."""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hcsshim.layers import bolt

Tree = dict[bytes, "bytes | Tree"]


class BoltWriter:
    """Lays out bbolt files: each `state(tree)` writes a tree's pages and returns its root page id; `file()`
    puts the given states in the two meta pages."""

    def __init__(self, page_size: int = 4096, *, leaf_max: int = 64, inline: bool = True) -> None:
        self.page_size = page_size
        self.leaf_max = leaf_max
        self.inline = inline
        self.pages: dict[int, bytes] = {}
        self.next = 2

    def _alloc(self, flags: int, count: int, body: bytes) -> int:
        pgid = self.next
        size = bolt.PAGE_HEADER.size + len(body)
        npages = max(1, -(-size // self.page_size))
        header = bolt.PAGE_HEADER.pack(pgid, flags, count, npages - 1)
        self.pages[pgid] = (header + body).ljust(npages * self.page_size, b"\0")
        self.next += npages
        return pgid

    @staticmethod
    def _leaf_body(elems: list[tuple[bytes, int, bytes]]) -> bytes:
        n = len(elems)
        heads, data = [], b""
        for i, (k, flags, v) in enumerate(elems):
            pos = n * bolt.LEAF_ELEMENT.size + len(data) - i * bolt.LEAF_ELEMENT.size
            heads.append(bolt.LEAF_ELEMENT.pack(flags, pos, len(k), len(v)))
            data += k + v
        return b"".join(heads) + data

    @staticmethod
    def _branch_body(elems: list[tuple[bytes, int]]) -> bytes:
        n = len(elems)
        heads, data = [], b""
        for i, (k, child) in enumerate(elems):
            pos = n * bolt.BRANCH_ELEMENT.size + len(data) - i * bolt.BRANCH_ELEMENT.size
            heads.append(bolt.BRANCH_ELEMENT.pack(pos, len(k), child))
            data += k
        return b"".join(heads) + data

    def _elements(self, tree: Tree) -> list[tuple[bytes, int, bytes]]:
        out = []
        for k in sorted(tree):
            v = tree[k]
            if isinstance(v, dict):
                out.append((k, bolt.BUCKET_LEAF, self._bucket_value(v)))
            else:
                out.append((k, 0, v))
        return out

    def _bucket_value(self, tree: Tree) -> bytes:
        elems = self._elements(tree)
        body = self._leaf_body(elems)
        small = bolt.PAGE_HEADER.size + len(body) <= self.page_size // 4
        if self.inline and small and not any(isinstance(v, dict) for v in tree.values()):
            page = bolt.PAGE_HEADER.pack(0, bolt.LEAF_PAGE, len(elems), 0) + body
            return bolt.BUCKET_HEADER.pack(0, 7) + page
        return bolt.BUCKET_HEADER.pack(self._tree_pages(elems), 7)

    def _tree_pages(self, elems: list[tuple[bytes, int, bytes]]) -> int:
        """Write leaves (split by size and leaf_max) and the branch levels above them; the root page id."""
        level: list[tuple[bytes, int]] = []
        chunk: list[tuple[bytes, int, bytes]] = []
        for e in elems:
            if chunk and (len(chunk) >= self.leaf_max
                          or bolt.PAGE_HEADER.size + len(self._leaf_body([*chunk, e])) > self.page_size):
                level.append((chunk[0][0], self._alloc(bolt.LEAF_PAGE, len(chunk), self._leaf_body(chunk))))
                chunk = []
            chunk.append(e)
        level.append((chunk[0][0] if chunk else b"", self._alloc(bolt.LEAF_PAGE, len(chunk), self._leaf_body(chunk))))
        while len(level) > 1:
            nxt = []
            for i in range(0, len(level), self.leaf_max):
                part = level[i:i + self.leaf_max]
                nxt.append((part[0][0], self._alloc(bolt.BRANCH_PAGE, len(part), self._branch_body(part))))
            level = nxt
        return level[0][1]

    def state(self, tree: Tree) -> int:
        return self._tree_pages(self._elements(tree))

    def file(self, *metas: tuple[int, int, int]) -> bytes:
        """The file with meta page `slot` holding (root, txid) for each (slot, root, txid)."""
        freelist = self._alloc(bolt.FREELIST_PAGE, 0, b"")
        hwm = self.next
        out = bytearray(hwm * self.page_size)
        for pgid, data in self.pages.items():
            out[pgid * self.page_size:pgid * self.page_size + len(data)] = data
        for slot, root, txid in metas:
            out[slot * self.page_size:(slot + 1) * self.page_size] = meta_page(self.page_size, slot, root, freelist,
                                                                              hwm, txid)
        return bytes(out)


def meta_page(page_size: int, slot: int, root: int, freelist: int, hwm: int, txid: int) -> bytes:
    fields = [bolt.MAGIC, bolt.VERSION, page_size, 0, root, 0, freelist, hwm, txid]
    raw = struct.pack("<IIIIQQQQQ", *fields)
    meta = raw + struct.pack("<Q", bolt.fnv1a64(raw))
    return (bolt.PAGE_HEADER.pack(slot, bolt.META_PAGE, 0, 0) + meta).ljust(page_size, b"\0")


def write_db(path: Path, tree: Tree, *, page_size: int = 4096, leaf_max: int = 64, inline: bool = True) -> Path:
    w = BoltWriter(page_size, leaf_max=leaf_max, inline=inline)
    root = w.state(tree)
    path.write_bytes(w.file((0, root, 2), (1, root, 3)))
    return path


def read_tree(path: Path) -> dict[bytes, object]:
    return bolt.read(str(path), lambda s: s.root.to_dict())


SAMPLE: Tree = {
    b"v1": {
        b"parents": {b"\x01\x00\x02": b"default/3/mykey"},
        b"snapshots": {
            b"default/2/sha256:" + b"a" * 64: {b"id": b"\x01", b"kind": b"\x03", b"inodes": b"\xbc\x04"},
            b"default/3/mykey": {b"id": b"\x02", b"kind": b"\x02", b"labels": {b"x": b"y"}},
        },
    },
}


def test_nested_and_inline_buckets_and_values_read_back_as_written(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE)
    assert read_tree(db) == SAMPLE


def test_buckets_read_the_same_when_none_is_inline(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE, inline=False)
    assert read_tree(db) == SAMPLE


def test_get_and_bucket_tell_values_from_buckets(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE)

    def probe(s: bolt.Snapshot) -> tuple[object, ...]:
        v1 = s.root.bucket(b"v1")
        assert v1 is not None
        snaps = v1.bucket(b"snapshots")
        assert snaps is not None
        mykey = snaps.bucket(b"default/3/mykey")
        assert mykey is not None
        return (v1.get(b"snapshots"), snaps.bucket(b"nope"), mykey.get(b"kind"), mykey.bucket(b"kind"),
                mykey.bucket(b"labels") is not None, s.root.get(b"v1"))

    assert bolt.read(str(db), probe) == (None, None, b"\x02", None, True, None)


def test_a_bucket_spread_over_branch_pages_finds_every_key_in_order(tmp_path: Path) -> None:
    tree: Tree = {b"big": {f"k{i:05d}".encode(): f"value {i}".encode() * 3 for i in range(2000)}}
    db = write_db(tmp_path / "m.db", tree, leaf_max=8)

    def check(s: bolt.Snapshot) -> int:
        big = s.root.bucket(b"big")
        assert big is not None
        keys = [k for k, _ in big.items()]
        assert keys == sorted(tree[b"big"])  # type: ignore[arg-type]
        for i in (0, 1, 7, 8, 999, 1999):
            assert big.get(f"k{i:05d}".encode()) == f"value {i}".encode() * 3
        assert big.get(b"k") is None and big.get(b"k00000x") is None and big.get(b"z") is None
        return len(keys)

    assert bolt.read(str(db), check) == 2000
    raw = db.read_bytes()
    flags = {struct.unpack_from("<H", raw, p + 8)[0] for p in range(2 * 4096, len(raw), 4096)}
    assert bolt.BRANCH_PAGE in flags  # and several levels of them: 2000 / 8 / 8 > 8


def test_a_value_larger_than_a_page_is_read_from_its_overflow_pages(tmp_path: Path) -> None:
    big = os.urandom(3 * 4096 + 123)
    db = write_db(tmp_path / "m.db", {b"b": {b"small": b"1", b"large": big, b"z": b"2"}})
    assert read_tree(db) == {b"b": {b"small": b"1", b"large": big, b"z": b"2"}}


def test_other_page_sizes_are_read(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE, page_size=16384)
    assert read_tree(db) == SAMPLE


def two_states(tmp_path: Path, new_txid: int = 5) -> tuple[Path, int]:
    w = BoltWriter()
    old = w.state({b"state": {b"v": b"old"}})
    new = w.state({b"state": {b"v": b"new"}})
    db = tmp_path / "m.db"
    db.write_bytes(w.file((0, old, 4), (1, new, new_txid)))
    return db, w.page_size


def test_the_valid_meta_with_the_higher_txid_is_the_current_state(tmp_path: Path) -> None:
    db, _ = two_states(tmp_path)
    assert read_tree(db) == {b"state": {b"v": b"new"}}
    db, _ = two_states(tmp_path, new_txid=3)
    assert read_tree(db) == {b"state": {b"v": b"old"}}


def test_a_meta_page_with_a_bad_checksum_falls_back_to_the_other(tmp_path: Path) -> None:
    db, ps = two_states(tmp_path)
    raw = bytearray(db.read_bytes())
    raw[ps + 16 + 24] ^= 0xFF  # the newer meta's root page id: a torn meta write
    db.write_bytes(raw)
    assert read_tree(db) == {b"state": {b"v": b"old"}}


def test_meta_page_1_is_found_when_meta_page_0_is_damaged(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE, page_size=8192)
    raw = bytearray(db.read_bytes())
    raw[16:20] = b"\0\0\0\0"  # meta 0's magic
    db.write_bytes(raw)
    assert read_tree(db) == SAMPLE


def version_3(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[16 + 4] = out[4096 + 16 + 4] = 3  # the version field of both metas
    return bytes(out)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda raw: b"x" * 50, "too short"),
    (lambda raw: b"\0" * 8192, "bad magic"),
    (version_3, "no valid meta page"),
])
def test_what_is_not_a_bbolt_database_says_so(tmp_path: Path, damage: Callable[[bytes], bytes], message: str) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE)
    db.write_bytes(damage(db.read_bytes()))
    with pytest.raises(bolt.BoltError, match=message):
        read_tree(db)


def test_both_metas_with_bad_checksums_are_reported(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE)
    raw = bytearray(db.read_bytes())
    for off in (16 + 56, 4096 + 16 + 56):
        raw[off] ^= 1
    db.write_bytes(raw)
    with pytest.raises(bolt.BoltError, match="no valid meta page"):
        read_tree(db)


def damaged_leaf(tmp_path: Path, patch: int, value: bytes) -> Path:
    w = BoltWriter(inline=False)
    root = w.state({b"b": {b"k": b"v"}})
    raw = bytearray(w.file((0, root, 2), (1, root, 3)))
    leaf = 2 * 4096  # the first page written: bucket b's leaf
    raw[leaf + patch:leaf + patch + len(value)] = value
    db = tmp_path / "m.db"
    db.write_bytes(raw)
    return db


@pytest.mark.parametrize(("patch", "value", "message"), [
    (0, struct.pack("<Q", 9), "says it is page 9"),
    (16 + 4, struct.pack("<I", 5000), "outside the page"),
    (10, struct.pack("<H", 300), "outside the page"),
    (8, struct.pack("<H", bolt.FREELIST_PAGE), "neither a branch nor a leaf"),
])
def test_damaged_pages_raise_bolt_errors(tmp_path: Path, patch: int, value: bytes, message: str) -> None:
    db = damaged_leaf(tmp_path, patch, value)
    with pytest.raises(bolt.BoltError, match=message):
        read_tree(db)


def test_page_ids_past_the_high_water_mark_are_rejected(tmp_path: Path) -> None:
    w = BoltWriter(inline=False)
    w.state({b"b": {b"k": b"v"}})
    db = tmp_path / "m.db"
    db.write_bytes(w.file((0, 999, 2), (1, 999, 3)))
    with pytest.raises(bolt.BoltError, match="outside the database"):
        read_tree(db)


def test_a_branch_page_pointing_at_itself_is_a_cycle_not_a_hang(tmp_path: Path) -> None:
    w = BoltWriter()
    pgid = w.next
    w._alloc(bolt.BRANCH_PAGE, 1, w._branch_body([(b"a", pgid)]))
    db = tmp_path / "m.db"
    db.write_bytes(w.file((0, pgid, 2), (1, pgid, 3)))
    with pytest.raises(bolt.BoltError, match="deeper than"):
        read_tree(db)
    with pytest.raises(bolt.BoltError, match="deeper than"):
        bolt.read(str(db), lambda s: s.root.get(b"a"))


def test_a_commit_during_the_read_is_detected_and_the_read_retried(tmp_path: Path) -> None:
    w = BoltWriter()
    old = w.state({b"state": {b"v": b"old"}})
    new = w.state({b"state": {b"v": b"new"}})
    db = tmp_path / "m.db"
    raw = w.file((0, old, 4), (1, old, 3))
    db.write_bytes(raw)
    hwm = struct.unpack_from("<Q", raw, 16 + 40)[0]
    freelist = struct.unpack_from("<Q", raw, 16 + 32)[0]
    attempts = []

    def commit_once(s: bolt.Snapshot) -> dict[bytes, object]:
        seen = s.root.to_dict()
        if not attempts:  # a writer commits txid 5 (meta page 1) while we read txid 4
            with open(db, "r+b") as f:
                f.seek(4096)
                f.write(meta_page(4096, 1, new, freelist, hwm, 5))
        attempts.append(seen)
        return seen

    assert bolt.read(str(db), commit_once) == {b"state": {b"v": b"new"}}
    assert attempts == [{b"state": {b"v": b"old"}}, {b"state": {b"v": b"new"}}]


def test_a_database_committed_to_on_every_attempt_gives_a_torn_read_error(tmp_path: Path) -> None:
    w = BoltWriter()
    root = w.state({b"b": {b"k": b"v"}})
    db = tmp_path / "m.db"
    raw = w.file((0, root, 2), (1, root, 3))
    db.write_bytes(raw)
    hwm, freelist = struct.unpack_from("<Q", raw, 16 + 40)[0], struct.unpack_from("<Q", raw, 16 + 32)[0]
    txid = [3]

    def always_commit(s: bolt.Snapshot) -> None:
        txid[0] += 1
        with open(db, "r+b") as f:
            f.seek((txid[0] % 2) * 4096)
            f.write(meta_page(4096, txid[0] % 2, root, freelist, hwm, txid[0]))

    with pytest.raises(bolt.TornReadError, match="committed to while being read"):
        bolt.read(str(db), always_commit, retries=3)
    assert txid[0] == 6


def test_garbage_read_during_a_commit_is_retried_rather_than_reported(tmp_path: Path) -> None:
    db, _ = two_states(tmp_path, new_txid=3)  # current: old (txid 4 in meta 0)
    calls = []

    def flaky(s: bolt.Snapshot) -> bytes | None:
        calls.append(s.meta.txid)
        if len(calls) == 1:
            raw = bytearray(db.read_bytes())  # the commit of txid 5 lands (meta 1 now names the new state)
            raw[4096:8192] = meta_page(4096, 1, *struct.unpack_from("<Q", raw, 4096 + 16 + 16),
                                       *struct.unpack_from("<QQ", raw, 4096 + 16 + 32), 5)
            db.write_bytes(raw)
            raise bolt.BoltError("garbage")  # what a reader sees in pages being overwritten
        b = s.root.bucket(b"state")
        return b.get(b"v") if b else None

    assert bolt.read(str(db), flaky) == b"new"
    assert calls == [4, 5]


def test_the_reader_neither_waits_for_the_writers_lock_nor_writes(tmp_path: Path) -> None:
    db = write_db(tmp_path / "m.db", SAMPLE)
    before = (db.read_bytes(), os.stat(db).st_mtime_ns)
    with open(db, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as containerd's bbolt holds it
        assert read_tree(db) == SAMPLE
    assert (db.read_bytes(), os.stat(db).st_mtime_ns) == before


def test_the_fnv1a_checksum_matches_go_hash_fnv() -> None:
    assert bolt.fnv1a64(b"") == 0xCBF29CE484222325
    assert bolt.fnv1a64(b"a") == 0xAF63DC4C8601EC8C  # Go: fnv.New64a().Write([]byte("a"))


keys = st.binary(min_size=1, max_size=24)
trees = st.recursive(
    st.dictionaries(keys, st.binary(max_size=300), max_size=12),
    lambda children: st.dictionaries(keys, st.one_of(st.binary(max_size=5000), children), max_size=10),
    max_leaves=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees, leaf_max=st.integers(2, 9), inline=st.booleans())
def test_any_tree_reads_back_as_written(tmp_path: Path, tree: Tree, leaf_max: int, inline: bool) -> None:
    db = write_db(tmp_path / "h.db", {b"top": tree}, leaf_max=leaf_max, inline=inline)
    assert read_tree(db) == {b"top": tree}

    def lookups(s: bolt.Snapshot) -> None:
        top = s.root.bucket(b"top")
        assert top is not None
        for k, v in tree.items():
            if isinstance(v, dict):
                assert top.bucket(k) is not None and top.get(k) is None
            else:
                assert top.get(k) == v and top.bucket(k) is None

    bolt.read(str(db), lookups)
