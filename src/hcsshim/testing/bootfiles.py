"""hcsshim.testing.bootfiles: boot files and kernel packages for tests, built or unpacked once and cached.

Downloaded packages are cached under /var/cache/hcsshim-test (override with HCSSHIM_TEST_CACHE) so reruns are
fast; the boot files are the installed default ones (hcsshim.boot.installed: rebuilt when the guest's sources
change, under a lock that serializes concurrent test processes).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hcsshim.boot import debs
from hcsshim.boot.installed import ensure_installed

CACHE = Path(os.environ.get("HCSSHIM_TEST_CACHE", "/var/cache/hcsshim-test"))
DEBS = CACHE / "debs"


def _lock(name: str) -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def kernel_tree() -> tuple[Path, str]:
    """Debian's kernel package unpacked: (root, kernel release)."""
    fd = _lock("debs")
    try:
        kpkg, _ = debs.resolve()
        deb = debs.fetch([kpkg], DEBS)[kpkg]
        root = debs.extract(deb, DEBS)
    finally:
        os.close(fd)
    (release,) = [p.name for p in (root / "lib/modules").iterdir()]
    return root, release


def default_bootfiles() -> Path:
    """The default boot files (no BASE), where the shim finds them by default (hcsshim.uvm.bootpath): `make setup`
    installs them, and this builds them when they are missing or older than this checkout's guest code."""
    return ensure_installed(cache=DEBS)
