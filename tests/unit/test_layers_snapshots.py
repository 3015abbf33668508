"""Chain IDs of overlay snapshot directories from a snapshotter database laid out as containerd's (the bolt
writer of test_layers_bolt), the fallback keys, and lowerdir parsing. A real containerd's database is read in
tests/integration/test_layer_cache.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_layers_bolt import Tree, write_db

from hcsshim.layers import FALLBACK_PREFIX, LayerError, directory_key, lowerdirs, snapshot_keys, snapshots
from hcsshim.layers import bolt as boltmod

A, B, C = ("sha256:" + c * 64 for c in "abc")


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def snapshotter(root: Path, ids: list[int], table: dict[bytes, Tree] | None) -> list[str]:
    """A snapshotter root with snapshots/<id>/fs for each id and, unless table is None, its metadata.db."""
    dirs = []
    for i in ids:
        d = root / "snapshots" / str(i) / "fs"
        d.mkdir(parents=True)
        dirs.append(str(d))
    if table is not None:
        write_db(root / "metadata.db", {b"v1": {b"parents": {b"\x01\x00\x02": b"x"}, b"snapshots": table}})
    return dirs


def snap(sid: int, kind: int, **extra: bytes) -> Tree:
    return {b"id": uvarint(sid), b"kind": bytes([kind]), b"createdat": b"\x01" + b"\0" * 14,
            **{k.encode(): v for k, v in extra.items()}}


TABLE: dict[bytes, Tree] = {
    f"default/2/{A}".encode(): snap(1, 3),
    f"default/5/{B}".encode(): snap(300, 3, parent=f"default/2/{A}".encode()),  # a two-byte varint id
    f"other/9/{C}".encode(): snap(7, 3),  # another namespace: the directories are still the snapshotter's
    b"default/11/k1": snap(2, 2, parent=f"default/5/{B}".encode()),  # an active snapshot (a container's)
    b"default/12/extract-1 sha256:dd": snap(8, 2),
}


def test_committed_snapshot_directories_get_their_chain_ids_top_most_first(tmp_path: Path) -> None:
    dirs = snapshotter(tmp_path, [300, 1, 7], TABLE)
    assert snapshot_keys(dirs) == [B, A, C]


def test_other_directories_get_fallback_keys_that_are_no_chain_ids(tmp_path: Path) -> None:
    dirs = snapshotter(tmp_path, [300, 2, 8, 44], TABLE)
    plain = tmp_path / "plain"
    plain.mkdir()
    keys = snapshot_keys([*dirs, str(plain)])
    assert keys[0] == B
    assert all(k.startswith(FALLBACK_PREFIX) and len(k) == len(FALLBACK_PREFIX) + 64 for k in keys[1:])
    assert keys[1:] == [directory_key(d) for d in [*dirs[1:], str(plain)]]
    assert len(set(keys)) == len(keys)


def test_a_fallback_key_changes_with_the_directory_identity(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    first = directory_key(str(d))
    assert directory_key(str(d) + "/") == first == directory_key(str(tmp_path / "." / "d"))
    os.rmdir(d)
    d.mkdir()  # a new directory at the same path: a new inode (or at least a new ctime)
    assert directory_key(str(d)) != first


@pytest.mark.parametrize("content", [None, b"", b"not a database at all" * 300])
def test_without_a_readable_database_every_directory_gets_a_fallback_key(tmp_path: Path,
                                                                          content: bytes | None) -> None:
    dirs = snapshotter(tmp_path, [1, 300], None)
    if content is not None:
        (tmp_path / "metadata.db").write_bytes(content)
    assert snapshot_keys(dirs) == [directory_key(d) for d in dirs]


def test_the_database_is_read_once_per_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = snapshotter(tmp_path, [1, 300, 7, 2], TABLE)
    reads = []
    real = boltmod.read

    def counting(path: str, fn: object, **kw: int) -> object:
        reads.append(path)
        return real(path, fn, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshots.bolt, "read", counting)
    assert snapshot_keys(dirs)[:3] == [A, B, C]
    assert reads == [str(tmp_path / "metadata.db")]


def test_a_missing_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    dirs = snapshotter(tmp_path, [1], TABLE)
    os.rmdir(dirs[0])
    with pytest.raises(LayerError, match=f"snapshot key of {dirs[0]}: No such file"):
        snapshot_keys(dirs)
    with pytest.raises(LayerError, match="No such file"):
        snapshot_keys([str(tmp_path / "nope")])


def test_lowerdirs_come_from_overlay_options_top_most_first() -> None:
    opts = ["index=off", "workdir=/s/4/work", "upperdir=/s/4/fs", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs"]
    assert lowerdirs(opts) == ["/s/3/fs", "/s/2/fs", "/s/1/fs"]
    assert lowerdirs(["ro", "lowerdir=/only"]) == ["/only"]
    assert lowerdirs(["rbind", "ro"]) == []


def test_uvarint_decodes_go_encodings() -> None:
    assert [snapshots._uvarint(uvarint(n)) for n in (0, 1, 127, 128, 300, 2**63)] == [0, 1, 127, 128, 300, 2**63]
    assert snapshots._uvarint(b"") is None and snapshots._uvarint(b"\x80") is None
    assert snapshots._uvarint(b"\xff" * 11) is None
