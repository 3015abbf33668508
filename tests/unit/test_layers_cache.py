"""The layer cache within one process: builds and hits, references and holders, gc's rules, maybe_gc's rate
limit and errors. Layers here are plain directories (no device nodes, no root needed); snapshot directories from
a real containerd, e2fsck and debugfs, and several processes are in tests/integration/test_layer_cache.py."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hcsshim import ext4
from hcsshim.layers import (
    DEFAULT_ROOT,
    ENV_ROOT,
    LayerCache,
    LayerError,
    holder_alive,
    holder_for,
)
from hcsshim.layers.cache import flock_file

K1, K2, K3 = ("sha256:" + c * 64 for c in "123")
ME = holder_for(os.getpid(), "test")


@pytest.fixture
def cache(tmp_path: Path) -> LayerCache:
    return LayerCache(tmp_path / "cache")


def layer(tmp_path: Path, name: str = "layer", size: int = 1000) -> str:
    d = tmp_path / name
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "f").write_bytes(os.urandom(size))
    return str(d)


def dead_holder(name: str = "gone") -> str:
    """A holder naming this pid with a start time it never had: a process that exited and whose pid came back."""
    boot, pid, start, _ = ME.split(":", 4)[1:]
    return f"proc:{boot}:{pid}:{int(start) + 1}:{name}"


def leftovers(cache: LayerCache) -> list[str]:
    return sorted(f for f in os.listdir(cache.images_dir) if f.endswith(".tmp"))


def age(path: str, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_the_first_acquire_builds_the_image_and_the_next_one_uses_it(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    first = cache.acquire(d, key=K1, holder="a")
    second = cache.acquire(d, key=K1, holder="b")
    assert (first.built, second.built) == (True, False)
    assert first.path == second.path == cache.image_path(K1)
    assert first.key == K1 and first.holder == "a"
    assert os.stat(first.path).st_mode & 0o777 == 0o444
    with open(first.path, "rb") as f:
        assert ext4.ext4_filesystem_size(f.fileno()) == os.path.getsize(first.path)
    assert cache.keys() == [K1]
    assert cache.holders(K1) == ["a", "b"]
    assert leftovers(cache) == []


def test_acquiring_twice_for_one_holder_records_one_reference(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    cache.acquire(d, key=K1, holder="a")
    cache.acquire(d, key=K1, holder="a")
    assert cache.holders(K1) == ["a"]
    assert cache.release(K1, "a") is True
    assert cache.holders(K1) == []
    assert cache.release(K1, "a") is False


def test_release_drops_only_that_reference_and_keeps_the_image(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    for h in ("a", "b"):
        cache.acquire(d, key=K1, holder=h)
    assert cache.release(K1, "a")
    assert cache.holders(K1) == ["b"]
    assert cache.release(K1, "b")
    assert cache.keys() == [K1] and os.path.exists(cache.image_path(K1))
    assert cache.acquire(d, key=K1, holder="c").built is False


def test_release_holder_drops_all_of_a_holders_references(tmp_path: Path, cache: LayerCache) -> None:
    for k, name in ((K1, "l1"), (K2, "l2"), (K3, "l3")):
        cache.acquire(layer(tmp_path, name), key=k, holder="shim-1/task")
    cache.acquire(layer(tmp_path, "l1b"), key=K1, holder="shim-2/task")
    cache.release(K3, "shim-1/task")
    assert cache.release_holder("shim-1/task") == [K1, K2]
    assert cache.holders(K1) == ["shim-2/task"] and cache.holders(K2) == []
    assert cache.release_holder("shim-1/task") == []


def test_holders_with_odd_characters_round_trip(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    odd = ["..", ".", "a/b", "x y%z", "ünï", "h-1"]
    for h in odd:
        cache.acquire(d, key=K1, holder=h)
    assert cache.holders(K1) == sorted(odd)
    with pytest.raises(LayerError, match="invalid holder"):
        cache.acquire(d, key=K1, holder="")


def test_a_holder_for_a_process_is_alive_while_the_process_runs() -> None:
    assert holder_alive(ME)
    assert ME.startswith("proc:") and ME.endswith(":test")
    assert not holder_alive(dead_holder())
    boot, rest = ME.split(":", 2)[1:]
    assert not holder_alive(f"proc:{'0' * len(boot)}:{rest}")  # another boot
    assert holder_alive("any string that names no process")


def test_a_holder_for_an_exited_process_is_dead_even_before_it_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        h = holder_for(child.pid, "task")
        assert holder_alive(h)
        child.kill()
        deadline = time.monotonic() + 5
        while holder_alive(h) and time.monotonic() < deadline:  # a zombie until wait()
            time.sleep(0.01)
        assert not holder_alive(h)
    finally:
        child.kill()
        child.wait()
    assert not holder_alive(h)
    with pytest.raises(LayerError, match=f"holder for pid {child.pid} \\(task\\): no such process"):
        holder_for(child.pid, "task")


def test_gc_keeps_recently_used_unreferenced_images_by_default(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path), key=K1, holder="a")
    cache.release(K1, "a")
    age(cache.image_path(K1), 3 * 24 * 3600)
    assert cache.gc() == []
    assert cache.keys() == [K1]


def test_gc_removes_unreferenced_images_unused_for_max_unused_age(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path, "l1"), key=K1, holder="a")
    cache.acquire(layer(tmp_path, "l2"), key=K2, holder="a")
    cache.release_holder("a")
    age(cache.image_path(K1), 7200)
    age(cache.image_path(K2), 60)
    assert cache.gc(max_unused_age=3600) == [K1]
    assert cache.keys() == [K2]
    assert sorted(os.listdir(cache.locks_dir)) == [os.path.basename(cache.image_path(K2))[:-5] + ".lock"]
    assert sorted(os.listdir(cache.refs_dir)) == [os.path.basename(cache.image_path(K2))[:-5]]
    assert cache.gc(max_unused_age=0) == [K2]
    assert cache.keys() == [] and os.listdir(cache.locks_dir) == [] and os.listdir(cache.refs_dir) == []


def test_gc_never_removes_a_referenced_image(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path), key=K1, holder=ME)
    cache.acquire(layer(tmp_path, "l2"), key=K2, holder="not-a-process")
    age(cache.image_path(K1), 10**8)
    assert cache.gc(max_unused_age=0, max_bytes=0) == []
    assert cache.keys() == [K1, K2]


def test_references_of_dead_holders_do_not_count_and_gc_removes_them(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path), key=K1, holder=dead_holder("crashed-shim"))
    assert cache.holders(K1) == []
    assert cache.gc(max_unused_age=0) == [K1]
    assert not os.path.exists(os.path.join(cache.refs_dir, os.path.basename(cache.image_path(K1))[:-5]))


def test_over_max_bytes_the_least_recently_used_unreferenced_images_go(tmp_path: Path, cache: LayerCache) -> None:
    for i, k in enumerate((K1, K2, K3)):
        cache.acquire(layer(tmp_path, f"l{i}", size=200_000), key=k, holder="a")
    cache.release_holder("a")
    for k, ago in ((K1, 300), (K2, 100), (K3, 200)):
        age(cache.image_path(k), ago)
    one = os.stat(cache.image_path(K1)).st_blocks * 512
    assert cache.gc(max_bytes=one + one // 2) == [K1, K3]
    assert cache.keys() == [K2]


def test_over_max_bytes_referenced_images_still_stay(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path, "l1"), key=K1, holder="a")
    cache.acquire(layer(tmp_path, "l2"), key=K2, holder="b")
    cache.release(K2, "b")
    assert cache.gc(max_bytes=0) == [K2]
    assert cache.keys() == [K1]


def test_gc_skips_a_key_being_built_and_removes_its_temp_files_after(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path), key=K1, holder="a")
    cache.release(K1, "a")
    name = os.path.basename(cache.image_path(K1))[:-5]
    temps = [f".{name}.ext4.123.abcd.tmp", f"..{name}.ext4.123.abcd.tmp.x1y2z3.tmp"]
    for t in temps:
        Path(cache.images_dir, t).write_bytes(b"half an image")
    with flock_file(os.path.join(cache.locks_dir, name + ".lock"), fcntl.LOCK_EX):  # as a builder holds it
        assert cache.gc(max_unused_age=0) == []
        assert leftovers(cache) == sorted(temps)
    assert cache.gc(max_unused_age=3600) == []  # a crashed builder's leftovers go; the image stays
    assert leftovers(cache) == [] and cache.keys() == [K1]


def test_gc_cleans_leftovers_of_keys_that_have_no_image(tmp_path: Path, cache: LayerCache) -> None:
    cache.acquire(layer(tmp_path), key=K1, holder="a")
    name = "sha256-" + "9" * 64
    Path(cache.images_dir, f".{name}.ext4.1.2.tmp").write_bytes(b"x")
    Path(cache.locks_dir, f"{name}.lock").touch()
    Path(cache.refs_dir, name).mkdir()
    Path(cache.refs_dir, name, "h-" + dead_holder()).touch()
    assert cache.gc() == []
    assert os.listdir(cache.images_dir) == [os.path.basename(cache.image_path(K1))]
    assert not Path(cache.locks_dir, f"{name}.lock").exists() and not Path(cache.refs_dir, name).exists()


def test_acquire_and_gc_racing_on_one_key_never_lose_an_acquired_image(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    stop = threading.Event()
    errors: list[BaseException] = []
    removed: list[str] = []

    def collect() -> None:
        try:
            while not stop.is_set():
                removed.extend(cache.gc(max_unused_age=0, max_bytes=0))
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=collect)
    t.start()
    try:
        builds = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            got = cache.acquire(d, key=K1, holder="a")
            builds += got.built
            assert os.path.exists(got.path)  # held: gc must not take it away
            time.sleep(0.002)
            assert os.path.exists(got.path)
            cache.release(K1, "a")
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert builds >= 2 and len(removed) >= 1  # the race really happened both ways
    assert leftovers(cache) == []


def test_maybe_gc_runs_at_most_once_per_interval(tmp_path: Path, cache: LayerCache) -> None:
    assert cache.maybe_gc() == []  # no cache yet: nothing, and nothing created
    assert not os.path.exists(cache.root)
    cache.acquire(layer(tmp_path, "l1"), key=K1, holder="a")
    cache.acquire(layer(tmp_path, "l2"), key=K2, holder="a")
    cache.release_holder("a")
    age(cache.image_path(K1), 7200)
    assert cache.maybe_gc(max_unused_age=3600) == [K1]
    age(cache.image_path(K2), 7200)
    assert cache.maybe_gc(max_unused_age=3600) == []  # ran less than a minute ago (in any process)
    age(os.path.join(cache.root, "gc.stamp"), 61)
    with flock_file(os.path.join(cache.root, "gc.lock"), fcntl.LOCK_EX):
        assert cache.maybe_gc(max_unused_age=3600) == []  # another gc is running: do not wait for it
    assert cache.maybe_gc(max_unused_age=3600) == [K2]


def test_a_missing_layer_directory_is_an_error_naming_it(tmp_path: Path, cache: LayerCache) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(LayerError, match=f"^acquire layer {missing} \\(key {K1}\\): No such file or directory$"):
        cache.acquire(missing, key=K1, holder="a")
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(LayerError, match=f"acquire layer {f} .*: not a directory"):
        cache.acquire(f, key=K1, holder="a")
    assert cache.keys() == []


def test_a_key_that_is_no_digest_is_refused(tmp_path: Path, cache: LayerCache) -> None:
    d = layer(tmp_path)
    for bad in ("", "sha256", "sha256:", "../x:y", "sha256:a/b", "SHA256:ab", "sha256:a.b"):
        with pytest.raises(LayerError, match="invalid key"):
            cache.acquire(d, key=bad, holder="a")


def test_a_cache_root_that_cannot_be_created_is_an_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    cache = LayerCache(blocker / "cache")
    d = layer(tmp_path)
    message = f"acquire layer {d} .*: layer cache {blocker}/cache: create .*: Not a directory"
    with pytest.raises(LayerError, match=message):
        cache.acquire(d, key=K1, holder="a")


def test_a_failed_conversion_leaves_no_temp_file_and_no_image(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache", options=ext4.Options(max_disk_size=1 << 20))
    d = layer(tmp_path, size=3 << 20)
    with pytest.raises(LayerError, match=f"acquire layer {d} \\(key {K1}\\): convert to ext4: disk exceeded"):
        cache.acquire(d, key=K1, holder="a")
    assert os.listdir(cache.images_dir) == [] and cache.holders(K1) == []
    assert LayerCache(cache.root).acquire(d, key=K1, holder="a").built is True  # nothing poisoned


def test_the_root_comes_from_the_argument_the_environment_or_the_default(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ROOT, raising=False)
    assert LayerCache().root == DEFAULT_ROOT == "/var/lib/hcsshim/layers"
    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "env"))
    assert LayerCache().root == str(tmp_path / "env")
    assert LayerCache(tmp_path / "arg").root == str(tmp_path / "arg")
    assert not (tmp_path / "env").exists()
