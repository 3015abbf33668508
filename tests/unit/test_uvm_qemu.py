"""The utility VM's options, annotations and QEMU command line (hcsshim.uvm.qemu), without starting QEMU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hcsshim.uvm.qemu import BootFiles, UVMOptions, apply_annotations, find_boot_files, kernel_cmdline, qemu_argv


def test_upstream_annotations_set_memory_processors_root_and_kernel_args() -> None:
    opts = apply_annotations(UVMOptions(id="a", boot_files_path="/b", kernel_args="x=1"), {
        "io.microsoft.virtualmachine.computetopology.memory.sizeinmb": "513",
        "io.microsoft.virtualmachine.computetopology.processor.count": "4",
        "io.microsoft.virtualmachine.bootfilesrootpath": "/other",
        "io.microsoft.virtualmachine.lcow.preferredrootfstype": "VHD",
        "io.microsoft.virtualmachine.lcow.kernelbootoptions": "debug",
        "unrelated": "ignored",
    })
    assert (opts.memory_mb, opts.cpus, opts.boot_files_path, opts.root_fs_type, opts.kernel_args) == (
        514, 4, "/other", "vhd", "x=1 debug")


@pytest.mark.parametrize("key, value, message", [
    ("io.microsoft.virtualmachine.computetopology.memory.sizeinmb", "lots", "not a number"),
    ("io.microsoft.virtualmachine.computetopology.processor.count", "0", "must be positive"),
    ("io.microsoft.virtualmachine.lcow.preferredrootfstype", "iso", "not initrd or vhd"),
])
def test_a_bad_annotation_is_an_error_naming_it(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{key}={value!r}: {message}")):
        apply_annotations(UVMOptions(id="a", boot_files_path="/b"), {key: value})


def test_the_kernel_command_line_ends_with_the_gcs_on_the_bridge_port_after_the_separator(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"")
    (tmp_path / "initrd.img").write_bytes(b"")
    opts = UVMOptions(id="a", boot_files_path=str(tmp_path), cpus=3)
    boot = find_boot_files(opts)
    assert boot == BootFiles(str(tmp_path / "vmlinux"), str(tmp_path / "initrd.img"), None)
    line = kernel_cmdline(opts, boot)
    kernel, init = line.split(" -- ")
    assert "panic=-1" in kernel.split() and "nr_cpus=3" in kernel.split() and "root=/dev/sda" not in kernel
    assert init.split()[:2] == ["-e", "uvm.log"] and "mux:/dev/virtio-ports/uvm.bridge" in init.split()
    argv = qemu_argv("qemu", opts, boot, "/run/x", "tcg")
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg" and "-no-reboot" in argv
    assert f"socket,id=bridge,path={Path('/run/x/bridge.sock')}" in argv


def test_a_vhd_root_needs_rootfs_vhd_and_its_initramfs(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"")
    (tmp_path / "initrd.img").write_bytes(b"")
    opts = UVMOptions(id="a", boot_files_path=str(tmp_path), root_fs_type="vhd")
    with pytest.raises(FileNotFoundError, match=r"no rootfs\.vhd for root fs type vhd"):
        find_boot_files(opts)
    (tmp_path / "rootfs.vhd").write_bytes(b"")
    (tmp_path / "initrd-vhd.cpio").write_bytes(b"")
    boot = find_boot_files(opts)
    assert boot.rootfs_vhd == str(tmp_path / "rootfs.vhd") and boot.initrd == str(tmp_path / "initrd-vhd.cpio")
    assert "root=/dev/sda" in kernel_cmdline(opts, boot).split(" -- ")[0].split()
