"""The template store (hcsshim.uvm.template) without a VM: keys, verification on load, commit and gc."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from hcsshim.hcs.linux.accel import qemu_binary
from hcsshim.uvm.options import UVMOptions, find_boot_files
from hcsshim.uvm.template import TemplateError, TemplateKey, TemplateStore


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    d = tmp_path / "boot"
    d.mkdir()
    (d / "vmlinux").write_bytes(b"kernel" * 1000)
    (d / "initrd.img").write_bytes(b"initrd" * 1000)
    return d


def key_of(store: TemplateStore, boot: Path, **kw):
    opts = UVMOptions(id=kw.pop("id", "vm1"), boot_files_path=str(boot), memory_mb=kw.pop("memory_mb", 256),
                      cpus=1, **kw)
    return store.key(opts, find_boot_files(opts), qemu_binary(), "tcg")


def test_the_key_follows_the_boot_files_contents_and_the_vm_shape_but_not_its_id(tmp_path: Path, boot: Path) -> None:
    store = TemplateStore(str(tmp_path / "store"))
    k1 = key_of(store, boot)
    assert key_of(store, boot, id="another-vm").digest == k1.digest
    os.utime(boot / "initrd.img")  # touched, same contents: the same key (its digest is recomputed)
    assert key_of(store, boot).digest == k1.digest
    (boot / "initrd.img").write_bytes(b"a new initrd")
    k2 = key_of(store, boot)
    assert k2.digest != k1.digest and k2.parts["initrd"] != k1.parts["initrd"]
    assert key_of(store, boot, memory_mb=512).digest != k2.digest
    assert key_of(store, boot, gcs_log_level="debug").digest != k2.digest  # the GCS's flags are in the cmdline
    assert k2.parts["qemu"].startswith("QEMU emulator version")


def make_template(store: TemplateStore, key: TemplateKey) -> None:
    fd = store.lock(key)
    try:
        staging = store.staging(key)
        with open(os.path.join(staging, "memory"), "wb") as f:
            f.truncate(key.parts["memory_mb"] << 20)
        Path(staging, "state").write_bytes(b"device state")
        store.commit(key, staging, hashlib.sha256(b"device state").hexdigest())
    finally:
        store.unlock(fd)


def test_a_committed_template_loads_and_damage_is_a_template_error(tmp_path: Path, boot: Path) -> None:
    store = TemplateStore(str(tmp_path / "store"))
    key = key_of(store, boot)
    assert store.load(key) is None
    make_template(store, key)
    tpl = store.load(key)
    assert tpl is not None and os.path.basename(tpl.path) == key.digest
    assert not [n for n in os.listdir(store.root) if n.startswith(".build-")]

    Path(tpl.state).write_bytes(b"other state")
    with pytest.raises(TemplateError, match="damaged"):
        store.load(key)
    make_template(store, key)  # a rebuild replaces it
    os.truncate(tpl.memory, 1)
    with pytest.raises(TemplateError, match="memory file"):
        store.load(key)
    make_template(store, key)
    meta = Path(tpl.path) / "meta.json"
    data = json.loads(meta.read_text())
    data["parts"]["hcsshim"] = "0.0.0"
    meta.write_text(json.dumps(data))
    with pytest.raises(TemplateError, match="made for something else"):
        store.load(key)
    make_template(store, key)
    os.unlink(tpl.state)
    with pytest.raises(TemplateError, match="state is missing"):
        store.load(key)


def test_a_dead_builders_directory_goes_and_gc_keeps_the_newest(tmp_path: Path, boot: Path) -> None:
    store = TemplateStore(str(tmp_path / "store"))
    key = key_of(store, boot)
    os.makedirs(os.path.join(store.root, f".build-{key.digest}-99999-dead"))
    make_template(store, key)
    assert not [n for n in os.listdir(store.root) if n.startswith(".build-")]
    keys = [key_of(store, boot, memory_mb=64 + i) for i in range(3)]
    for k in keys:
        make_template(store, k)
    assert sorted(store.gc(keep=2)) == sorted([key.digest, keys[0].digest])  # the two least recently made
    assert store.load(keys[2]) is not None and store.load(key) is None


def test_remove_takes_a_template_away_whole_and_a_rebuild_tells_builds_apart(tmp_path: Path, boot: Path) -> None:
    store = TemplateStore(str(tmp_path / "store"))
    key = key_of(store, boot)
    make_template(store, key)
    first = store.load(key)
    assert first is not None and first.built > 0
    store.remove(key)
    assert store.load(key) is None
    assert not [n for n in os.listdir(store.root) if n.startswith(".build-")]  # nothing half-removed left
    store.remove(key)  # nothing to remove: no error
    make_template(store, key)
    second = store.load(key)
    assert second is not None and second.built != first.built
