"""Scratch disks: sparse raw ext4 files for containers' writable layers, copied from a cached template.

Upstream (spec uvm-boot §4.1) formats `sandbox.vhdx` once inside a throwaway utility VM with
`mkfs.ext4 -q -E lazy_itable_init=0,nodiscard -O ^has_journal,sparse_super2,^resize_inode`, caches it as a
template and copies it for each container. Here the host's mkfs.ext4 formats a sparse file directly, with:

* `-O ^has_journal,sparse_super2,^resize_inode` (upstream's): no journal (a scratch never outlives its
  container, so crash recovery buys nothing, and a journal is 128 MiB of a 20 GiB file system), two backup
  superblocks instead of dozens, no reserved GDT blocks for online growth;
* `-E nodiscard,assume_storage_prezeroed=1` instead of `lazy_itable_init=0,nodiscard`: zeroing the inode
  tables up front writes 320 MiB of zeros into a 20 GiB file (which stops being sparse), while leaving
  them lazily zeroed makes the guest kernel's ext4lazyinit thread write them after the first mount. A fresh
  sparse file already reads as zeros, so e2fsprogs 1.47's assume_storage_prezeroed skips the zeroing and
  marks every group ITABLE_ZEROED: the file keeps ~200 KiB allocated and the guest has nothing to zero.
  (An older mkfs.ext4 without the option gets upstream's options.)

Templates live in `<cache root>/scratch/<size>g-<options digest>.ext4` (read-only), made under the flock
`<cache root>/scratch/<size>g.lock` by one process while others wait. A copy is a reflink (FICLONE) where the
file system supports it, else a sparse copy of the template's data extents (SEEK_DATA/SEEK_HOLE and
copy_file_range), written to a temp file next to the target and renamed onto it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import subprocess

from hcsshim.layers.cache import default_root, flock_file
from hcsshim.layers.errors import LayerError

__all__ = ["MKFS_OPTIONS", "UPSTREAM_MKFS_OPTIONS", "make_scratch", "scratch_template"]

_FEATURES = ("-O", "^has_journal,sparse_super2,^resize_inode")
MKFS_OPTIONS = ("-q", "-F", "-E", "nodiscard,assume_storage_prezeroed=1", *_FEATURES)
UPSTREAM_MKFS_OPTIONS = ("-q", "-F", "-E", "lazy_itable_init=0,nodiscard", *_FEATURES)
FICLONE = 0x40049409
GiB = 1 << 30


def _mkfs(path: str, op: str) -> None:
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if mkfs is None:
        raise LayerError(f"{op}: mkfs.ext4 not found (install e2fsprogs)")
    out = ""
    for opts in (MKFS_OPTIONS, UPSTREAM_MKFS_OPTIONS):
        p = subprocess.run([mkfs, *opts, path], capture_output=True, text=True, errors="replace", check=False,
                           stdin=subprocess.DEVNULL)
        if p.returncode == 0:
            return
        out = (p.stdout + p.stderr).strip()
        if "assume_storage_prezeroed" not in out:
            break
    raise LayerError(f"{op}: mkfs.ext4 failed: {out}")


def scratch_template(size_gb: int, *, cache_root: str | None = None) -> str:
    """The path of the cached template of `size_gb` GiB, formatting it first if there is none."""
    root = os.path.abspath(cache_root) if cache_root is not None else default_root()
    op = f"scratch template {size_gb} GiB in {root}"
    if not isinstance(size_gb, int) or size_gb <= 0:
        raise LayerError(f"{op}: size must be a positive number of GiB")
    tag = hashlib.sha256(" ".join(MKFS_OPTIONS).encode()).hexdigest()[:8]
    d = os.path.join(root, "scratch")
    template = os.path.join(d, f"{size_gb}g-{tag}.ext4")
    if os.path.exists(template):
        return template
    try:
        os.makedirs(d, mode=0o755, exist_ok=True)
        with flock_file(os.path.join(d, f"{size_gb}g.lock"), fcntl.LOCK_EX):
            if os.path.exists(template):
                return template
            for f in os.listdir(d):  # crashed builds of this size (the lock is ours)
                if f.startswith(f".{size_gb}g-") and f.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(d, f))
            tmp = os.path.join(d, f".{size_gb}g-{tag}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    os.ftruncate(fd, size_gb * GiB)
                finally:
                    os.close(fd)
                _mkfs(tmp, op)
                fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.chmod(tmp, 0o444)
                os.rename(tmp, template)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    except OSError as exc:
        raise LayerError(f"{op}: {exc.filename or d}: {exc.strerror}") from None
    return template


def _sparse_copy(src: int, dst: int, size: int) -> None:
    """Copy src's data extents to the same offsets of dst (already `size` bytes long); holes stay holes."""
    off = 0
    while off < size:
        try:
            data = os.lseek(src, off, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after off
                return
            raise
        hole = os.lseek(src, data, os.SEEK_HOLE)
        pos = data
        while pos < hole:
            n = os.copy_file_range(src, dst, hole - pos, pos, pos)
            if n == 0:
                raise OSError(errno.EIO, "template shrank while it was copied")
            pos += n
        off = hole


def make_scratch(path: str | os.PathLike[str], size_gb: int = 20, *, cache_root: str | None = None) -> str:
    """Create `path` as a sparse raw ext4 file system of `size_gb` GiB (replacing any file there); return it.

    The file is a copy of the cached template (see the module docstring), mode 0600. Raises LayerError,
    leaving no temp file behind.
    """
    path = os.path.abspath(os.fspath(path))
    template = scratch_template(size_gb, cache_root=cache_root)
    op = f"make scratch {path} ({size_gb} GiB)"
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        src = os.open(template, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.ioctl(dst, FICLONE, src)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                        raise
                    size = os.fstat(src).st_size
                    os.ftruncate(dst, size)
                    _sparse_copy(src, dst, size)
                os.fsync(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        os.rename(tmp, path)
    except OSError as exc:
        raise LayerError(f"{op}: {exc.filename or path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path
