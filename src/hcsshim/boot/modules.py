"""hcsshim.boot.modules: choosing the guest's kernel modules and the order busybox insmod loads them in.

The build host has no kmod (no modinfo, no depmod), so the dependency graph comes from each `.ko`'s
`.modinfo` section: `depends=` (hard dependencies, by module name) and `softdep=pre: ...` (by name or
alias: ext4 asks for `crc32c`, which the `crc32c_generic` module provides under that alias). `closure`
returns the requested modules plus everything they need, dependencies first; ties keep the order of the
request, so a caller can put the modules it wants early (virtio_rng, virtio_console) first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hcsshim.boot.elf import modinfo

# What a Linux utility VM needs (spec §9.2); each name must exist in the kernel package, in this order
# where dependencies allow. Names use the kernel's spelling (dashes and underscores are equivalent). What a
# container's layers need comes first: the GCS waits for the modules a request needs, not for the whole list.
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_console", "virtio_scsi", "sd_mod", "ext4", "overlay", "9p", "9pnet_virtio",
    "virtio_net", "veth", "bridge", "virtio_rng", "virtio_mmio", "virtio_blk", "loop", "vmw_vsock_virtio_transport",
    "dm_verity", "virtio_pmem", "nd_pmem",
)


# Loaded before the child starts: what the GCS needs to reach the host (its virtio-serial ports). Everything
# else (SCSI, ext4, overlay, 9p, vsock, dm-verity, network, pmem, entropy) loads in the background, at low
# priority, while the GCS's Python starts; init then creates /run/hcsshim/modules.ready. A request that needs
# some of them waits until those are live in /sys/module (or that file exists). Under TCG each module costs
# ~30 ms, the GCS's start ~3 s.
EARLY_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_console")  # PCI: QEMU's q35 (virtio_mmio loads later)

# What the small initramfs that boots rootfs.vhd (initrd-vhd.cpio) loads to mount root=/dev/sda.
ROOT_MODULES: tuple[str, ...] = ("virtio_pci", "virtio_scsi", "sd_mod", "ext4")


def load_order(index: ModuleIndex, wanted: Iterable[str], early: Iterable[str] = EARLY_MODULES,
               ) -> tuple[list[Module], list[Module]]:
    """(modules to load before the child, modules to load after): both dependency-ordered, no overlap.

    Only the early names that are also wanted count; the late list never needs a module of its own
    that is not already loaded or earlier in it.
    """
    wanted = [canonical(w) for w in wanted]
    first = index.closure([e for e in early if canonical(e) in wanted])
    done = {m.name for m in first}
    later = [m for m in index.closure(wanted) if m.name not in done]
    return first, later


class ModuleError(LookupError):
    """A requested module (or one of its dependencies) is not in the kernel's module tree."""


def canonical(name: str) -> str:
    return name.replace("-", "_")


@dataclass
class Module:
    name: str
    path: str  # relative to /lib/modules/<version>
    depends: tuple[str, ...]
    softdeps: tuple[str, ...]  # "pre:" soft dependencies (names or aliases)
    aliases: tuple[str, ...] = ()
    vermagic: str = ""


@dataclass
class ModuleIndex:
    """Every module of one kernel version, by name, with the aliases that name them."""

    modules: dict[str, Module] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, moddir: Path) -> ModuleIndex:
        """Read the `.modinfo` of every `.ko` under `moddir` (a /lib/modules/<version> directory)."""
        idx = cls()
        for root, dirs, files in os.walk(moddir):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(".ko"):
                    p = Path(root) / f
                    idx.add(p.relative_to(moddir).as_posix(), p.read_bytes())
        if not idx.modules:
            raise ModuleError(f"scan kernel modules: no .ko files under {moddir}")
        return idx

    def add(self, relpath: str, data: bytes) -> Module:
        info = modinfo(data, relpath)
        name = canonical(info.get("name", [Path(relpath).name.removesuffix(".ko")])[0])
        depends = tuple(canonical(d) for v in info.get("depends", []) for d in v.split(",") if d)
        soft: list[str] = []
        for v in info.get("softdep", []):
            # "pre: a b post: c" -> the pre list
            words = v.split()
            mode = ""
            for w in words:
                if w.endswith(":"):
                    mode = w[:-1]
                elif mode == "pre":
                    soft.append(canonical(w))
        aliases = tuple(a for a in info.get("alias", []) if not any(c in a for c in "*?["))
        m = Module(name, relpath, depends, tuple(soft), aliases, (info.get("vermagic") or [""])[0])
        self.modules[name] = m
        for a in aliases:
            self.aliases.setdefault(canonical(a), []).append(name)
        return m

    def resolve(self, name: str) -> Module | None:
        n = canonical(name)
        if n in self.modules:
            return self.modules[n]
        # Several modules may provide an alias (crc32c: crc32c_generic and crc32c_intel). Prefer the
        # generic C one: accelerated variants refuse to load on CPUs without the instructions (QEMU TCG).
        targets = sorted(self.aliases.get(n, []), key=lambda t: ("generic" not in t, t))
        return self.modules.get(targets[0]) if targets else None

    def closure(self, wanted: Iterable[str]) -> list[Module]:
        """`wanted` and everything it depends on, each module after its dependencies.

        Hard dependencies that are missing raise ModuleError; soft dependencies that resolve to nothing
        (built into the kernel, or optional) are skipped.
        """
        order: list[Module] = []
        done: set[str] = set()
        visiting: set[str] = set()

        def visit(m: Module, chain: tuple[str, ...]) -> None:
            if m.name in done:
                return
            if m.name in visiting:
                raise ModuleError(f"kernel modules: dependency cycle {' -> '.join((*chain, m.name))}")
            visiting.add(m.name)
            for d in m.depends:
                dep = self.modules.get(d)
                if dep is None:
                    raise ModuleError(f"kernel module {m.name}: dependency {d} not found")
                visit(dep, (*chain, m.name))
            for s in m.softdeps:
                dep = self.resolve(s)
                if dep is not None and dep.name != m.name:
                    visit(dep, (*chain, m.name))
            visiting.discard(m.name)
            done.add(m.name)
            order.append(m)

        for w in wanted:
            m = self.resolve(w)
            if m is None:
                raise ModuleError(f"kernel module {w}: not found in the kernel package")
            visit(m, ())
        return order


MODULE_SIG_MAGIC = b"~Module signature appended~\n"


def strip_signature(data: bytes) -> bytes:
    """The module without its appended signature (as `strip --strip-debug` + sign-file's inverse would give).

    Checking an RSA signature per module costs ~40 ms of guest time under TCG (1.7 s for the 50 modules);
    the kernel (MODULE_SIG without MODULE_SIG_FORCE) loads unsigned modules and marks itself tainted (E).
    Layout: module | signature | struct module_signature (12 bytes, big-endian sig_len last) | magic.
    """
    if not data.endswith(MODULE_SIG_MAGIC):
        return data
    body = data[:-len(MODULE_SIG_MAGIC)]
    sig_len = int.from_bytes(body[-4:], "big")
    end = len(body) - 12 - sig_len
    if end <= 0:
        raise ModuleError("module signature: length beyond start of module")
    return body[:end]
