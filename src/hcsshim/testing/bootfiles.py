"""hcsshim.testing.bootfiles: boot files and kernel packages for tests, built or unpacked once and cached.

The cache lives under /var/cache/hcsshim-test (override with HCSSHIM_TEST_CACHE) so reruns are fast; a
build is keyed by a digest of the sources that go into it (hcsshim.boot, init.sh and the guest packages),
so editing any of them rebuilds. A lock file serializes concurrent test processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

import hcsshim

CACHE = Path(os.environ.get("HCSSHIM_TEST_CACHE", "/var/cache/hcsshim-test"))
DEBS = CACHE / "debs"


def _lock(name: str) -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def kernel_tree() -> tuple[Path, str]:
    """Debian's kernel package unpacked: (root, kernel release)."""
    from hcsshim.boot import debs

    fd = _lock("debs")
    try:
        kpkg, _ = debs.resolve()
        deb = debs.fetch([kpkg], DEBS)[kpkg]
        root = debs.extract(deb, DEBS)
    finally:
        os.close(fd)
    (release,) = [p.name for p in (root / "lib/modules").iterdir()]
    return root, release


def _source_digest() -> str:
    src = Path(hcsshim.__file__).parent
    h = hashlib.sha256()
    # Every source of the package: the build follows the guest's imports, so any module may end up in it.
    for f in sorted(src.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".sh"):
            h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def default_bootfiles() -> Path:
    """The default boot files (no BASE), built once per source digest; returns the output directory."""
    from hcsshim.boot.bootfiles import build

    out = CACHE / f"bootfiles-{_source_digest()}"
    fd = _lock("bootfiles")
    try:
        if not (out / ".complete").exists():
            for old in CACHE.glob("bootfiles-*"):
                shutil.rmtree(old, ignore_errors=True)
            tmp = CACHE / f".building-{out.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                build(None, tmp, DEBS)
                (tmp / ".complete").touch()
                os.rename(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    finally:
        os.close(fd)
    return out
