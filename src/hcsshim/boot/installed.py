"""The installed default boot files: where they live, whether they match this code, and installing them.

`make setup` runs `python -m hcsshim.cmd.bootfiles install`, which builds the default boot files (Debian base,
as `make all` without BASE) into `<prefix>/share/hcsshim/LinuxBootFiles` (prefix: the Python environment the
project is installed in, e.g. `.venv`), the directory the shim uses when no BootFilesRootPath is given.

The directory carries `.source-digest`: a digest of everything the build puts into the guest from this checkout
(the hcsshim.boot package and the hcsshim modules the guest runs). `ensure_installed` rebuilds only when that
digest differs, under a lock, into a staging directory that replaces the old one in one rename, so that a VM
already booting from the old files keeps them (their inodes stay until closed) and nobody sees half a build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import hcsshim
from hcsshim.boot.bootfiles import GUEST_UNITS, build, unit_files
from hcsshim.uvm.bootpath import installed_boot_files_path

DIGEST_FILE = ".source-digest"


def source_digest() -> str:
    """A digest of the sources that end up in the boot files (the boot build and the guest's modules)."""
    src = Path(hcsshim.__file__).parent
    files = [src / "__init__.py", *sorted((src / "boot").glob("*.sh"))]
    for unit in ("boot", *GUEST_UNITS):
        files += unit_files(src, unit)
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def is_current(path: Path) -> bool:
    try:
        return (path / DIGEST_FILE).read_text().strip() == source_digest()
    except OSError:
        return False


def ensure_installed(path: Path | None = None, *, cache: Path | None = None,
                     log: Callable[[str], None] = lambda _m: None) -> Path:
    """The default boot files at `path` (default: installed_boot_files_path()), built when missing or stale."""

    path = path or installed_boot_files_path()
    if is_current(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if is_current(path):  # another process built it while we waited
            return path
        digest = source_digest()
        staging = path.parent / f".{path.name}.building"
        old = path.parent / f".{path.name}.old"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        log(f"building the boot files into {path}")
        try:
            build(None, staging, cache)
            (staging / DIGEST_FILE).write_text(digest + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if path.exists():
            os.rename(path, old)
        os.rename(staging, path)
        shutil.rmtree(old, ignore_errors=True)
        return path
    finally:
        os.close(fd)
