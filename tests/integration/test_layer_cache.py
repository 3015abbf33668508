"""The layer cache for real: containerd's own snapshotter database through the bolt reader, chain IDs for
single- and multi-layer images, images of real snapshot directories checked with e2fsck and debugfs, several
processes building, holding and being killed, read-only cache roots, and scratch disks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hcsshim import mount
from hcsshim.layers import LayerCache, LayerError, bolt, holder_for, lowerdirs, make_scratch, snapshot_keys
from hcsshim.layers.scratch import scratch_template
from hcsshim.testing.containerd import Containerd
from hcsshim.testing.ext4check import cat, debugfs, e2fsck, stat
from hcsshim.testing.images import LAYERED_REF, build_layered_image, chain_ids, image_diff_ids

pytestmark = pytest.mark.integration

SNAPSHOTTER = "io.containerd.snapshotter.v1.overlayfs"
LABEL = "containerd.io/snapshot/"  # labels with this prefix reach the snapshotter's own database
KINDS = {1: "View", 2: "Active", 3: "Committed"}


@pytest.fixture(scope="module")
def layered_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tar = tmp_path_factory.mktemp("layered") / "layered.tar"
    build_layered_image(tar)
    return tar


@pytest.fixture(scope="module")
def big_layer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plain layer directory whose image takes a noticeable time to build (64 MiB of data)."""
    d = tmp_path_factory.mktemp("big") / "layer"
    (d / "data").mkdir(parents=True)
    (d / "data" / "blob").write_bytes(b"\x5a" * (64 << 20))
    return str(d)


def metadata_db(cd: Containerd) -> str:
    return str(cd.root / SNAPSHOTTER / "metadata.db")


def snapshots_table(cd: Containerd) -> dict[str, dict[str, Any]]:
    """ctr's view: snapshot name -> {Kind, Parent, Labels}."""
    out = {}
    for line in cd.ctr("snapshots", "ls").stdout.decode().splitlines()[1:]:
        name = line.split()[0]
        out[name] = json.loads(cd.ctr("snapshots", "info", name).stdout)
    return out


def prepare(cd: Containerd, key: str, parent: str) -> list[str]:
    """Prepare an active snapshot on `parent`; its overlay lowerdirs, top-most first, as the shim gets them."""
    cd.ctr("snapshots", "prepare", key, parent)
    cmd = cd.ctr("snapshots", "mounts", "/mnt", key).stdout.decode().strip()
    return lowerdirs(cmd.split(" -o ", 1)[1].split(","))


def parents(table: dict[str, dict[str, Any]], name: str) -> list[str]:
    chain = []
    while name:
        chain.append(name)
        name = str(table[name].get("Parent") or "")
    return chain


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_the_bolt_reader_reads_the_snapshotter_database_containerd_wrote(containerd: Containerd) -> None:
    base = next(iter(snapshots_table(containerd)))
    containerd.ctr("snapshots", "prepare", "k1", base)
    labels = {f"{LABEL}l{i:02d}": chr(97 + i) * 4000 for i in range(24)}  # overflow pages, a branch page
    containerd.ctr("snapshots", "label", "k1", *(f"{k}={v}" for k, v in labels.items()))
    for i in range(30):  # enough snapshots for the snapshots bucket to need more than one page
        containerd.ctr("snapshots", "prepare", f"many-{i:02d}", base)
    table = snapshots_table(containerd)

    def collect(s: bolt.Snapshot) -> dict[str, tuple[str, str, dict[str, str]]]:
        v1 = s.root.bucket(b"v1")
        assert v1 is not None
        snaps = v1.bucket(b"snapshots")
        assert snaps is not None and v1.bucket(b"parents") is not None
        out = {}
        for key, b in snaps.items():
            assert isinstance(b, bolt.Bucket)
            ns, _, name = key.decode().split("/", 2)
            assert ns == "default"
            kind = KINDS[(b.get(b"kind") or b"\0")[0]]
            parent = (b.get(b"parent") or b"").decode().split("/", 2)[-1]
            lb = b.bucket(b"labels")
            got = {k.decode(): v.decode() for k, v in lb.items() if isinstance(v, bytes)} if lb else {}
            out[name] = (kind, parent, got)
        assert s.stats["branch"] >= 1 and s.stats["overflow"] >= 1
        return out

    read = bolt.read(metadata_db(containerd), collect)
    assert sorted(read) == sorted(table) and len(read) == 32
    for name, info in table.items():
        kind, parent, got = read[name]
        assert (kind, parent) == (info["Kind"], info.get("Parent", ""))
        want = {k: v for k, v in (info.get("Labels") or {}).items() if k.startswith(LABEL)}
        assert got == want
    assert read["k1"][2] == labels


def test_reads_stay_consistent_while_containerd_commits(containerd: Containerd) -> None:
    base = next(iter(snapshots_table(containerd)))
    containerd.ctr("snapshots", "prepare", "k1", base)
    stop = threading.Event()
    commits = [0]

    def commit() -> None:
        while not stop.is_set():
            commits[0] += 1
            containerd.ctr("snapshots", "label", "k1", f"{LABEL}n={commits[0]}", f"{LABEL}pad={'p' * 3000}")

    def label(s: bolt.Snapshot) -> int:
        v1 = s.root.bucket(b"v1")
        snaps = v1.bucket(b"snapshots") if v1 else None
        assert snaps is not None
        k1 = next(v for k, v in snaps.items() if k.endswith(b"/k1"))
        assert isinstance(k1, bolt.Bucket)
        lb = k1.bucket(b"labels")
        return int(lb.get(LABEL.encode() + b"n") or b"0") if lb else 0

    t = threading.Thread(target=commit)
    t.start()
    seen, torn = [], 0
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                seen.append(bolt.read(metadata_db(containerd), label))
            except bolt.TornReadError:
                torn += 1  # allowed (callers fall back); any other error is not
    finally:
        stop.set()
        t.join()
    print(f"\ncommits {commits[0]}, reads {len(seen)}, torn {torn}")
    assert commits[0] >= 10 and len(seen) >= 100
    assert seen == sorted(seen) and seen[-1] >= commits[0] - 2  # never older than a state already read


def test_snapshot_keys_are_the_chain_ids_containerd_reports(containerd: Containerd, layered_tar: Path) -> None:
    containerd.import_image(layered_tar, LAYERED_REF)
    table = snapshots_table(containerd)
    expected = list(reversed(chain_ids(image_diff_ids(layered_tar))))  # top-most first
    assert all(table[c]["Kind"] == "Committed" for c in expected)
    dirs = prepare(containerd, "layered", expected[0])
    assert len(dirs) == 3
    assert snapshot_keys(dirs) == expected == parents(table, expected[0])

    busybox = [c for c in table if not table[c].get("Parent") and c not in expected]
    assert len(busybox) == 1
    one = prepare(containerd, "single", busybox[0])
    assert snapshot_keys(one) == busybox
    assert snapshot_keys([*one, *dirs]) == [*busybox, *expected]


def test_images_of_snapshot_directories_keep_whiteouts_and_opaque_directories(
        containerd: Containerd, layered_tar: Path, tmp_path: Path) -> None:
    containerd.import_image(layered_tar, LAYERED_REF)
    top = chain_ids(image_diff_ids(layered_tar))[-1]
    dirs = prepare(containerd, "c1", top)
    cache = LayerCache(tmp_path / "cache")
    holder = holder_for(os.getpid(), "c1")
    layers = [cache.acquire(d, key=k, holder=holder) for d, k in zip(dirs, snapshot_keys(dirs), strict=True)]
    assert [la.built for la in layers] == [True, True, True]
    for la in layers:
        rc, out = e2fsck(la.path)
        assert rc == 0, out
    l3, l2, l1 = (la.path for la in layers)
    whiteout = stat(l2, "/data/remove-me")
    assert (whiteout.type, whiteout.device) == ("character special", (0, 0))
    assert stat(l2, "/opaque").xattrs.get("trusted.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in stat(l1, "/opaque").xattrs
    assert cat(l2, "/opaque/new") == b"new\n" and cat(l1, "/opaque/old") == b"old\n"
    assert cat(l1, "/data/remove-me") == b"lower\n" and cat(l3, "/data/keep") == b"top\n"
    assert "busybox" in debugfs(l1, "ls -l /bin")
    with pytest.raises(FileNotFoundError):
        stat(l3, "/opaque")  # layer 3 does not touch it

    again = [cache.acquire(d, key=la.key, holder=holder) for d, la in zip(dirs, layers, strict=True)]
    assert [a.built for a in again] == [False, False, False]
    assert [a.path for a in again] == [la.path for la in layers]
    for la in layers:
        cache.release(la.key, holder)
    assert cache.holders(layers[0].key) == [] and cache.keys() == sorted(la.key for la in layers)


ACQUIRE = """
import json, os, sys, time
from hcsshim.layers import LayerCache, holder_for
root, layer, key, go = sys.argv[1:5]
while not os.path.exists(go):
    time.sleep(0.001)
got = LayerCache(root).acquire(layer, key=key, holder=holder_for(os.getpid(), "t"))
print(json.dumps({"built": got.built, "path": got.path}), flush=True)
if len(sys.argv) > 5:
    time.sleep(float(sys.argv[5]))
"""
KEY = "sha256:" + "ab" * 32


def test_processes_acquiring_one_key_at_once_build_it_once(tmp_path: Path, big_layer: str) -> None:
    go = tmp_path / "go"
    procs = [spawn(ACQUIRE, str(tmp_path / "cache"), big_layer, KEY, str(go)) for _ in range(3)]
    time.sleep(0.3)  # every process started and is waiting
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["built"] for r in results) == [False, False, True]
    assert len({r["path"] for r in results}) == 1
    rc, out = e2fsck(results[0]["path"])
    assert rc == 0, out
    assert os.listdir(tmp_path / "cache" / "images") == [os.path.basename(results[0]["path"])]


def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_a_sigkilled_holders_references_are_stale_and_gc_removes_its_image(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "f").write_bytes(b"f")
    cache = LayerCache(tmp_path / "cache")
    go = tmp_path / "go"
    go.touch()
    p = spawn(ACQUIRE, cache.root, str(layer), KEY, str(go), "60")
    try:
        assert p.stdout is not None
        assert json.loads(p.stdout.readline())["built"] is True
        holders = cache.holders(KEY)
        assert len(holders) == 1 and holders[0] == holder_for(p.pid, "t")
        assert cache.gc(max_unused_age=0, max_bytes=0) == []  # a live holder's image stays
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert cache.holders(KEY) == []
    assert cache.gc(max_unused_age=0) == [KEY]
    assert cache.keys() == [] and os.listdir(cache.refs_dir) == []


def test_a_build_killed_midway_leaves_no_finished_looking_image(tmp_path: Path, big_layer: str) -> None:
    cache = LayerCache(tmp_path / "cache")
    go = tmp_path / "go"
    go.touch()
    p = spawn(ACQUIRE, cache.root, big_layer, KEY, str(go))

    def building() -> bool:
        return os.path.isdir(cache.images_dir) and any(f.endswith(".tmp") for f in os.listdir(cache.images_dir))

    try:
        wait_for(building)
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not os.path.exists(cache.image_path(KEY)) and cache.keys() == []
    assert building()  # the dead builder's temp file

    got = cache.acquire(big_layer, key=KEY, holder="after")
    assert got.built is True  # the lock died with the builder: nobody waits for it
    assert cache.gc() == [] and not building()  # leftovers go, the image stays
    rc, out = e2fsck(got.path)
    assert rc == 0, out


def test_a_read_only_cache_gives_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "f").write_bytes(b"x")
    root = tmp_path / "cache"
    root.mkdir()
    cache = LayerCache(root)
    mount.mount_raw(str(root), str(root), None, mount.MS_BIND)
    try:
        mount.mount_raw(str(root), str(root), None, mount.MS_BIND | mount.MS_REMOUNT | mount.MS_RDONLY)
        with pytest.raises(LayerError, match=f"acquire layer {layer} .*: layer cache {root}: create .*Read-only"):
            cache.acquire(layer, key=KEY, holder="a")
    finally:
        mount.umount_raw(str(root))
    assert os.listdir(root) == []

    LayerCache(root).acquire(layer, key="sha256:" + "cd" * 32, holder="a")  # make the directories, then
    images = Path(cache.images_dir)  # only the images directory is read-only: the build itself fails
    mount.mount_raw(str(images), str(images), None, mount.MS_BIND)
    try:
        mount.mount_raw(str(images), str(images), None, mount.MS_BIND | mount.MS_REMOUNT | mount.MS_RDONLY)
        with pytest.raises(LayerError, match=f"acquire layer {layer} \\(key {KEY}\\): .*Read-only file system"):
            cache.acquire(layer, key=KEY, holder="a")
    finally:
        mount.umount_raw(str(images))
    assert cache.keys() == ["sha256:" + "cd" * 32] and cache.holders(KEY) == []
    assert not any(f.endswith(".tmp") for f in os.listdir(images))


def allocated(path: str | Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_20_gib_scratch_is_a_sparse_clean_ext4_made_in_milliseconds(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    t0 = time.monotonic()
    first = make_scratch(tmp_path / "c1.img", 20, cache_root=root)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    second = make_scratch(tmp_path / "c2.img", 20, cache_root=root)
    warm = time.monotonic() - t0
    template = scratch_template(20, cache_root=root)
    print(f"\nscratch 20 GiB: cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms, "
          f"allocated {allocated(first) // 1024} KiB (template {allocated(template) // 1024} KiB)")
    for img in (first, second):
        assert os.path.getsize(img) == 20 << 30
        assert allocated(img) < 1 << 20
        assert os.stat(img).st_mode & 0o777 == 0o600
        rc, out = e2fsck(img)
        assert rc == 0, out
    header = subprocess.run(["dumpe2fs", first], capture_output=True, text=True, check=True).stdout
    features = next(line for line in header.splitlines() if line.startswith("Filesystem features:"))
    assert "has_journal" not in features and "sparse_super2" in features and "resize_inode" not in features
    groups = [line for line in header.splitlines() if re.match(r"Group \d+:", line)]
    assert len(groups) == 160 and all("ITABLE_ZEROED" in g for g in groups)  # nothing left for lazyinit
    assert cold < 5 and warm < 1
    assert os.stat(first).st_ino != os.stat(second).st_ino


def test_scratch_templates_are_made_once_per_size_by_one_process(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    go = tmp_path / "go"
    code = """
import os, sys, time
from hcsshim.layers import make_scratch
root, go, out = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.001)
make_scratch(out, 2, cache_root=root)
"""
    procs = [spawn(code, root, str(go), str(tmp_path / f"s{i}.img")) for i in range(3)]
    time.sleep(0.3)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    template = scratch_template(2, cache_root=root)
    assert sorted(os.listdir(Path(root) / "scratch")) == [os.path.basename(template), "2g.lock"]
    for i in range(3):
        rc, out = e2fsck(str(tmp_path / f"s{i}.img"))
        assert rc == 0, out


def test_bad_scratch_requests_are_errors_that_leave_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    with pytest.raises(LayerError, match="size must be a positive number of GiB"):
        make_scratch(tmp_path / "s.img", 0, cache_root=root)
    missing = tmp_path / "no" / "s.img"
    with pytest.raises(LayerError, match=f"make scratch {missing} \\(1 GiB\\): .*No such file or directory"):
        make_scratch(missing, 1, cache_root=root)
    assert sorted(os.listdir(tmp_path)) == ["cache"]
    assert all(not f.endswith(".tmp") for f in os.listdir(Path(root) / "scratch"))
