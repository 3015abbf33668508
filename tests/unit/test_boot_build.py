"""hcsshim.boot.bootfiles and the bootfiles CLI: BASE handling, reproducibility, what the delta ships.

Builds here use a tiny BASE and one kernel module; the kernel package comes from the test cache.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hcsshim.boot.archive import Entry, Tree, cpio_bytes, gzip_bytes, read_archive, tar_bytes
from hcsshim.boot.bootfiles import BUSYBOX_PATH, GUEST_SITE, BuildError, build, guest_python
from hcsshim.testing.bootfiles import DEBS, kernel_tree


@pytest.fixture(scope="module")
def release() -> str:
    return kernel_tree()[1]  # warms the package cache once


def small_base() -> Tree:
    t = Tree()
    t.add("bin/busybox", Entry.file(b"base busybox", 0o755))
    t.add("bin/sh", Entry.symlink("busybox"))
    t.add("init", Entry.file(b"#!/bin/sh\necho base init\n", 0o755))
    t.add("etc/motd", Entry.file(b"from the base\n"))
    return t


def digests(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_two_builds_from_the_same_inputs_are_byte_identical(tmp_path: Path, release: str) -> None:
    base = tmp_path / "base.tar.gz"
    base.write_bytes(gzip_bytes(tar_bytes(small_base())))
    a = build(base, tmp_path / "a", DEBS, modules=("virtio_rng",))
    b = build(base, tmp_path / "b", DEBS, modules=("virtio_rng",))
    assert a.files == b.files
    da, db = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert da == db
    assert {"kernel", "vmlinux", "initrd.img", "initrd.cpio", "rootfs.tar.gz", "rootfs.vhd", "delta.tar.gz",
            "info/packages", "info/kernel.version", "info/base", "info/build.json"} <= set(da)
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")], "temporary files left"


def test_a_cpio_base_is_merged_under_the_delta_which_wins(tmp_path: Path, release: str) -> None:
    base = tmp_path / "base.cpio"
    base.write_bytes(cpio_bytes(small_base()))
    res = build(base, tmp_path / "out", DEBS, vhd=False, modules=("virtio_rng",))
    assert res.kernel_release == release
    root = read_archive((tmp_path / "out/initrd.img").read_bytes())
    assert root.get("etc/motd") == Entry.file(b"from the base\n")
    assert root.get("bin/busybox") == Entry.file(b"base busybox", 0o755)  # the base's own busybox stays
    init = root.get("init")
    assert init is not None and init.data.startswith(b"#!/usr/lib/hcsshim/busybox sh") and init.mode == 0o755
    assert root.get(BUSYBOX_PATH).data[:4] == b"\x7fELF"
    assert root.get("bin/gcs").mode == 0o755
    assert root.get(f"{GUEST_SITE}/hcsshim/guest/main.py") is not None
    assert root.get(f"{GUEST_SITE}/hcsshim/guest/__pycache__/main.{sys.implementation.cache_tag}.pyc") is not None
    # virtio_rng is not one of the modules loaded before the child: it goes to the background list
    assert root.get(f"lib/modules/{release}/hcsshim.load").data == b""
    later = root.get(f"lib/modules/{release}/hcsshim.load.later").data.decode().split()
    assert later[-1].endswith("virtio-rng.ko") and all(root.get(f"lib/modules/{release}/{m}") for m in later)
    # the tar has the same tree as the initrd, the delta only ours
    assert read_archive((tmp_path / "out/rootfs.tar.gz").read_bytes()).entries == root.entries
    delta = read_archive((tmp_path / "out/delta.tar.gz").read_bytes())
    assert delta.get("etc/motd") is None and delta.get("init") == init
    info = json.loads((tmp_path / "out/info/build.json").read_text())
    assert info["kernel"] == release and info["modules_requested"] == ["virtio_rng"]
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    assert (tmp_path / "out/info/base").read_text() == f"sha256:{digest} base.cpio\n"
    pkgs = (tmp_path / "out/info/packages").read_text()
    assert "busybox-static " in pkgs and "sha256:" in pkgs


def test_a_broken_base_fails_naming_the_base_and_leaves_out_as_it_was(tmp_path: Path, release: str) -> None:
    base = tmp_path / "base.tar"
    base.write_bytes(b"not an archive" * 100)
    with pytest.raises(BuildError, match=r"BASE .*base\.tar: unknown archive format"):
        build(base, tmp_path / "new", DEBS, vhd=False, modules=("virtio_rng",))
    assert not (tmp_path / "new").exists(), "a failed build removes the output directory it created"
    (tmp_path / "old").mkdir()
    (tmp_path / "old/initrd.img").write_bytes(b"previous build")
    with pytest.raises(BuildError):
        build(base, tmp_path / "old", DEBS, vhd=False, modules=("virtio_rng",))
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["initrd.img"]
    assert (tmp_path / "old/initrd.img").read_bytes() == b"previous build"


def test_a_missing_base_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"read BASE .*nope\.tar"):
        build(tmp_path / "nope.tar", tmp_path / "out", DEBS)


def test_the_guest_gets_only_stdlib_only_hcsshim_code() -> None:
    tree, shipped = guest_python(lambda _m: None)
    assert {"guest", "bridge", "transport"} <= set(shipped)
    assert not {"shim", "ttrpc", "api", "uvm", "boot", "cmd"} & set(shipped)
    assert all(p.startswith(f"{GUEST_SITE}/hcsshim/") for p in tree.paths() if p.endswith(".py"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hcsshim.cmd.bootfiles", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_help_exits_zero() -> None:
    p = run_cli("build", "--help")
    assert p.returncode == 0 and "--base" in p.stdout and "--cache" in p.stdout


def test_cli_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    p = run_cli("build", "--base", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "out"))
    assert p.returncode == 1
    assert "missing.tar.gz" in p.stderr and "Traceback" not in p.stderr
    assert run_cli("build", "--bogus").returncode == 2
    assert run_cli().returncode == 2
