"""Cache keys for containerd overlay snapshot directories: their chain IDs, read from the snapshotter's database.

The shim only sees the overlay mount containerd hands it (`lowerdir=<root>/snapshots/12/fs:<root>/snapshots/7/fs`,
top-most first). containerd's overlay snapshotter (containerd 1.6 snapshots/overlay/overlay.go,
snapshots/storage/bolt.go) keeps `<root>/metadata.db`, a bbolt database: bucket "v1" -> "snapshots" -> one
bucket per snapshot whose key is `<namespace>/<n>/<name>` (metadata/snapshot.go createKey; for a committed
layer the name is its chain ID `sha256:<hex>`) and which holds "id" (a uvarint: the <id> of the
`snapshots/<id>` directory), "kind" (one byte: 1 view, 2 active, 3 committed), "parent" and timestamps.

`snapshot_keys` maps each directory to its chain ID when it is a committed snapshot the database knows, and
otherwise to a fallback key derived from the directory's identity: `dirid:<sha256 of realpath, st_dev,
st_ino, st_ctime_ns>` (the prefix is not a digest algorithm, so it never equals a chain ID). Each database is
read once per call, with the bolt reader's consistency check; when it cannot be read (missing, torn by a
concurrent commit three times over, not bbolt) its directories get fallback keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable

from hcsshim.layers import bolt
from hcsshim.layers.errors import LayerError

__all__ = ["FALLBACK_PREFIX", "directory_key", "lowerdirs", "snapshot_ids", "snapshot_keys"]

log = logging.getLogger(__name__)

FALLBACK_PREFIX = "dirid:"
KIND_COMMITTED = 3
_CHAIN_ID = re.compile(r"sha256:[0-9a-f]{64}")


def lowerdirs(options: Iterable[str]) -> list[str]:
    """The lowerdir paths (top-most first) of an overlay mount's options, e.g. a containerd Mount's."""
    for opt in options:
        if opt.startswith("lowerdir="):
            return [d for d in opt[len("lowerdir="):].split(":") if d]
    return []


def _uvarint(b: bytes) -> int | None:
    """Go's binary.Uvarint; None for an empty, truncated or overlong encoding."""
    x = shift = 0
    for i, byte in enumerate(b):
        if i == 10:
            return None
        x |= (byte & 0x7F) << shift
        if byte < 0x80:
            return x
        shift += 7
    return None


def snapshot_ids(db_path: str) -> dict[str, str]:
    """{snapshot directory id: chain ID} of the committed snapshots in an overlay snapshotter's metadata.db.

    Raises bolt.BoltError or OSError when the database cannot be read.
    """

    def collect(snap: bolt.Snapshot) -> dict[str, str]:
        v1 = snap.root.bucket(b"v1")
        snapshots = v1.bucket(b"snapshots") if v1 is not None else None
        out: dict[str, str] = {}
        if snapshots is None:
            return out
        for key, value in snapshots.items():
            if not isinstance(value, bolt.Bucket):
                continue
            parts = key.decode("utf-8", "replace").split("/", 2)
            if len(parts) != 3 or not _CHAIN_ID.fullmatch(parts[2]):
                continue
            if value.get(b"kind") != bytes([KIND_COMMITTED]):
                continue
            sid = _uvarint(value.get(b"id") or b"")
            if sid is not None:
                out[str(sid)] = parts[2]
        return out

    return bolt.read(db_path, collect)


def directory_key(path: str) -> str:
    """The fallback key of a directory: its identity (realpath, device, inode, ctime), never a chain ID."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise LayerError(f"snapshot key of {path}: {exc.strerror}") from None
    if not os.path.isdir(real):
        raise LayerError(f"snapshot key of {path}: not a directory")
    ident = f"{real}\0{st.st_dev}\0{st.st_ino}\0{st.st_ctime_ns}".encode("utf-8", "surrogateescape")
    return FALLBACK_PREFIX + hashlib.sha256(ident).hexdigest()


def _snapshot_dir(path: str) -> tuple[str, str] | None:
    """(snapshotter root, snapshot id) of `<root>/snapshots/<id>/fs`, else None."""
    p = os.path.normpath(os.path.abspath(path))
    fs = os.path.basename(p)
    sid_dir = os.path.dirname(p)
    sid = os.path.basename(sid_dir)
    snapshots = os.path.dirname(sid_dir)
    if fs != "fs" or not sid.isdigit() or os.path.basename(snapshots) != "snapshots":
        return None
    return os.path.dirname(snapshots), sid


def snapshot_keys(dirs: list[str]) -> list[str]:
    """One cache key per directory, in order: its chain ID when the snapshotter's database knows it, else its
    fallback key. Raises LayerError when a directory does not exist."""
    located = [_snapshot_dir(d) for d in dirs]
    tables: dict[str, dict[str, str]] = {}
    for loc in located:
        if loc is not None and loc[0] not in tables:
            db = os.path.join(loc[0], "metadata.db")
            try:
                tables[loc[0]] = snapshot_ids(db)
            except FileNotFoundError:
                tables[loc[0]] = {}
            except (OSError, bolt.BoltError) as exc:
                log.warning("snapshot keys: read %s: %s (using directory keys)", db, exc)
                tables[loc[0]] = {}
    keys = []
    for d, loc in zip(dirs, located, strict=True):
        chain = tables[loc[0]].get(loc[1]) if loc is not None else None
        if chain is not None and os.path.isdir(d):
            keys.append(chain)
        else:
            keys.append(directory_key(d))
    return keys
