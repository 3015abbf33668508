"""hcsshim.boot.modules/elf/kernel on Debian's real kernel package: modinfo, load order, vmlinux, DT_NEEDED.

The kernel package is downloaded once into the test cache (hcsshim.testing.bootfiles).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from hcsshim.boot.elf import ElfError, dynamic, modinfo, sections
from hcsshim.boot.kernel import KernelError, extract_vmlinux, kernel_release
from hcsshim.boot.modules import (
    EARLY_MODULES,
    GUEST_MODULES,
    MODULE_SIG_MAGIC,
    ModuleError,
    ModuleIndex,
    load_order,
    strip_signature,
)
from hcsshim.testing.bootfiles import kernel_tree


@pytest.fixture(scope="module")
def kernel() -> tuple[Path, str]:
    return kernel_tree()


@pytest.fixture(scope="module")
def index(kernel: tuple[Path, str]) -> ModuleIndex:
    root, release = kernel
    return ModuleIndex.scan(root / "lib/modules" / release)


def test_modinfo_reads_name_and_hard_dependencies_of_a_real_module(kernel: tuple[Path, str]) -> None:
    root, release = kernel
    (ko,) = (root / "lib/modules" / release).rglob("ext4.ko")
    info = modinfo(ko.read_bytes(), ko.name)
    assert info["name"] == ["ext4"]
    assert set(info["depends"][0].split(",")) >= {"jbd2", "mbcache", "crc16"}
    assert info["vermagic"][0].startswith(release)


def test_every_guest_module_loads_after_everything_it_depends_on(index: ModuleIndex) -> None:
    order = index.closure(GUEST_MODULES)
    pos = {m.name: i for i, m in enumerate(order)}
    assert len(pos) == len(order), "a module appears twice"
    for m in order:
        for d in m.depends:
            assert pos[d] < pos[m.name], f"{m.name} before its dependency {d}"
    for wanted in GUEST_MODULES:
        assert index.resolve(wanted).name in pos


def test_soft_dependencies_resolve_through_aliases_preferring_generic_code(index: ModuleIndex) -> None:
    names = [m.name for m in index.closure(["ext4"])]
    # ext4's softdep "pre: crc32c" names an alias; the SSE4.2 variant would not load under TCG
    assert "crc32c_generic" in names and "crc32c_intel" not in names
    assert names.index("crc32c_generic") < names.index("ext4")
    assert names[-1] == "ext4"


def test_dependencies_come_in_request_order_where_the_graph_allows(index: ModuleIndex) -> None:
    names = [m.name for m in index.closure(["virtio_rng", "virtio_console"])]
    assert names.index("virtio_rng") < names.index("virtio_console")
    assert names[0] in ("virtio_ring", "virtio")


def test_the_early_load_list_holds_the_boot_critical_modules_and_the_late_list_the_rest(index: ModuleIndex) -> None:
    early, later = load_order(index, GUEST_MODULES)
    e, l_ = [m.name for m in early], [m.name for m in later]
    assert not set(e) & set(l_)
    assert set(e) | set(l_) == {m.name for m in index.closure(GUEST_MODULES)}
    assert {"virtio_pci", "virtio_console"} <= set(e)
    assert {"virtio_scsi", "ext4", "overlay", "9p", "vmw_vsock_virtio_transport", "dm_verity", "virtio_net",
            "bridge"} <= set(l_)
    loaded = set(e)
    for m in later:  # every late module's dependencies are loaded before it
        assert set(m.depends) <= loaded, m.name
        loaded.add(m.name)
    assert len(EARLY_MODULES) < len(GUEST_MODULES)


def test_an_unknown_module_is_a_clear_error(index: ModuleIndex) -> None:
    with pytest.raises(ModuleError, match="no-such-mod: not found"):
        index.closure(["no-such-mod"])


def test_a_stripped_module_keeps_its_modinfo_and_loses_only_the_signature(kernel: tuple[Path, str]) -> None:
    root, release = kernel
    (ko,) = (root / "lib/modules" / release).rglob("virtio?rng.ko")
    data = ko.read_bytes()
    assert data.endswith(MODULE_SIG_MAGIC)
    stripped = strip_signature(data)
    assert not stripped.endswith(MODULE_SIG_MAGIC)
    assert modinfo(stripped)["name"] == ["virtio_rng"]
    assert strip_signature(stripped) == stripped
    # the ELF section table still lies inside the file
    assert {s.name for s in sections(stripped)} >= {".modinfo", ".text"}


def test_vmlinux_is_the_x86_64_elf_inside_the_bzimage_with_a_pvh_entry_note(kernel: tuple[Path, str]) -> None:
    root, release = kernel
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    bz = vmlinuz.read_bytes()
    assert kernel_release(bz) == release
    elf = extract_vmlinux(bz)
    assert elf[:4] == b"\x7fELF" and struct.unpack_from("<H", elf, 18)[0] == 62  # EM_X86_64
    notes = b"".join(elf[s.offset:s.offset + s.size] for s in sections(elf) if s.name.startswith(".note"))
    assert b"Xen\0" in notes  # XEN_ELFNOTE_PHYS32_ENTRY: what QEMU's PVH boot looks for


def test_a_corrupt_bzimage_is_rejected_clearly(kernel: tuple[Path, str]) -> None:
    root, _ = kernel
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    bz = bytearray(vmlinuz.read_bytes())
    with pytest.raises(KernelError, match="not a bzImage"):
        extract_vmlinux(b"\0" * 4096, "x")
    mid = len(bz) // 2
    bz[mid:mid + 4096] = b"\0" * 4096
    with pytest.raises(KernelError, match="corrupt payload"):
        extract_vmlinux(bytes(bz), "x")


def test_dt_needed_and_interpreter_of_a_real_program() -> None:
    dyn = dynamic(Path(sys.executable).resolve().read_bytes())
    assert dyn.interp == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in dyn.needed


def test_non_elf_input_is_an_elf_error() -> None:
    with pytest.raises(ElfError, match="not an ELF"):
        modinfo(b"#!/bin/sh\n", "script")
