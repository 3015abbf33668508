"""hcsshim.boot: building the guest boot files (`make all`): kernel, vmlinux, initrd.img, rootfs.tar.gz, rootfs.vhd.

Modules: `bootfiles` (the pipeline: `build` and the default Debian base), `archive` (trees, tar/cpio readers and
reproducible writers), `debs` (apt download cache), `kernel` (vmlinux from a bzImage), `modules` and `elf`
(kernel module dependencies and shared-library needs without kmod or ldd), and `init.sh`, the guest's PID 1.
Imports are lazy so `import hcsshim.boot.archive` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hcsshim.boot.bootfiles import BuildError, BuildResult, build

__all__ = ["BuildError", "BuildResult", "build"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hcsshim.boot import bootfiles as _b

        return getattr(_b, name)
    raise AttributeError(name)
