"""The utility VM's options, annotations, kernel command line (hcsshim.uvm.options) and schema2 document
(hcsshim.uvm.lcow), without starting anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hcsshim import gojson
from hcsshim.hcs.linux.document import parse
from hcsshim.hcs.linux.qemu import argv as qemu_argv
from hcsshim.uvm.lcow import clone_document, lcow_document, template_document
from hcsshim.uvm.options import BootFiles, UVMOptions, apply_annotations, find_boot_files, kernel_cmdline


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
    # the log and bridge ports are the guest's names of the HvSocket services 109 and 0x40000000
    assert init.split()[:2] == ["-e", "vsock.109"] and "mux:/dev/virtio-ports/vsock.1073741824" in init.split()


def test_the_document_is_upstreams_lcow_document_and_the_backend_makes_it_a_qemu_machine(tmp_path: Path) -> None:
    for name in ("vmlinux", "initrd.img", "rootfs.vhd", "initrd-vhd.cpio"):
        (tmp_path / name).write_bytes(b"")
    opts = UVMOptions(id="a", boot_files_path=str(tmp_path), cpus=2, memory_mb=768, root_fs_type="vhd")
    boot = find_boot_files(opts)
    doc = json.loads(gojson.dumps(lcow_document(opts, boot, "/run/x/a")))
    vm = doc["VirtualMachine"]
    assert doc["Owner"] == "containerd-shim-runhcs-v1" and doc["SchemaVersion"] == {"Major": 2, "Minor": 1}
    assert doc["ShouldTerminateOnLastHandleClosed"] is True and vm["StopOnReset"] is True
    assert vm["Chipset"]["LinuxKernelDirect"]["KernelCmdLine"] == kernel_cmdline(opts, boot)
    assert vm["ComputeTopology"] == {"Memory": {"SizeInMB": 768, "AllowOvercommit": True,
                                                "EnableDeferredCommit": True}, "Processor": {"Count": 2}}
    assert vm["Devices"]["Scsi"] == {"df6d0690-79e5-55b6-a5ec-c1e2f77f580a": {"Attachments": {"0": {
        "Type": "VirtualDisk", "Path": str(tmp_path / "rootfs.vhd"), "ReadOnly": True}}}}
    assert sorted(vm["Devices"]["HvSocket"]["HvSocketConfig"]["ServiceTable"]) == [
        "0000006d-facb-11e6-bd58-64006a7986d3", "40000000-facb-11e6-bd58-64006a7986d3"]
    assert vm["Devices"]["ComPorts"] == {"0": {"NamedPipe": "/run/x/a/console.log"}}
    argv = qemu_argv("qemu", parse("a", json.dumps(doc)), "/run/x/a", "tcg")
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg" and "-no-reboot" in argv
    assert "socket,id=hv0,path=/run/x/a/hvsock/vsock.1073741824.sock,reconnect=1" in argv
    assert "virtserialport,bus=vser0.0,chardev=hv0,name=vsock.1073741824" in argv
    assert any(a.startswith(f"driver=file,node-name=scsi0-lun0-file,filename={tmp_path / 'rootfs.vhd'},read-only=on")
               for a in argv)
    assert "-incoming" not in argv and "memory-backend-file" not in " ".join(argv)


def test_a_template_writes_its_ram_file_and_a_clone_maps_it_private_and_restores(tmp_path: Path) -> None:
    for name in ("vmlinux", "initrd.img", "memory", "state"):
        (tmp_path / name).write_bytes(b"")
    opts = UVMOptions(id="a", boot_files_path=str(tmp_path), memory_mb=256)
    doc = lcow_document(opts, find_boot_files(opts), "/run/x/a")
    tpl = qemu_argv("qemu", parse("t", gojson.dumps(template_document(doc, str(tmp_path / "memory")))), "/r", "tcg")
    assert f"memory-backend-file,id=ram,size=256M,mem-path={tmp_path / 'memory'},share=on" in tpl
    clone = qemu_argv("qemu", parse("c", gojson.dumps(clone_document(doc, str(tmp_path / "state"),
                                                                      memory=str(tmp_path / "memory")))), "/r", "tcg")
    assert f"memory-backend-file,id=ram,size=256M,mem-path={tmp_path / 'memory'},share=off" in clone
    assert clone[clone.index("-incoming") + 1] == "defer"


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
