"""hcsshim.ext4: tar2ext4 — compact read-only ext4 images from tars or directory trees, dm-verity, VHD footer.

The pipeline (upstream `tar2ext4.Convert`, spec §1.1) is: write the ext4 image, then optionally append the
dm-verity superblock and hash tree, then optionally the 512-byte VHD footer: `[ext4][verity]?[vhd]?`.

Modules: `format` (on-disk structures), `xattrs` (their layout; `gosort` is Go's sort.Slice for their order),
`writer` (the compact writer) and `output` (its buffered, threaded writes), `tarin` (the Go-compatible tar
reader), `tarconvert` (tar entries into writer calls), `tree` (a directory as the source), `verity`, `vhd`,
`errors`. This module wires them to files: output goes to a temporary file next to the target, renamed into
place only on success, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from hcsshim.ext4.errors import DiskFullError, Ext4Error
from hcsshim.ext4.writer import File, Writer

__all__ = [
    "ROOT_DIGEST_MAX_DISK_SIZE",
    "DiskFullError",
    "Ext4Error",
    "File",
    "Options",
    "Result",
    "Writer",
    "compute_root_digest",
    "convert",
    "ext4_filesystem_size",
]

ROOT_DIGEST_MAX_DISK_SIZE = 128 * 1024 * 1024 * 1024  # dmverity.RecommendedVHDSizeGB (bytes, despite the name)


@dataclass
class Options:
    """Conversion options: upstream's (overlay, backslash, inline, VHD, verity, max disk size) and ours."""

    convert_whiteout: bool = False
    convert_backslash: bool = False
    inline_data: bool = False
    append_vhd_footer: bool = False
    only_append_vhd_footer: bool = False
    append_dm_verity: bool = False
    max_disk_size: int = 0
    # Upstream leaves the inode-bitmap padding bits clear (e2fsck exit 4); by default we set them.
    upstream_bitmap_padding: bool = False


@dataclass
class Result:
    ext4_size: int = 0  # bytes of the file system (0 with only_append_vhd_footer)
    root_hash: str | None = None  # with append_dm_verity
    size: int = 0  # total bytes written


class _Target:
    """An output path opened for writing: a temp file renamed into place on commit, removed on abort.

    Existing non-regular targets (block devices, /dev/stdout) are written in place.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp: str | None = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            self.fd = os.open(path, os.O_RDWR)
            return
        d = os.path.dirname(os.path.abspath(path))
        try:
            self.fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
        except OSError as exc:
            raise OSError(exc.errno, f"create output {path}: {exc.strerror}") from None
        if st is not None:
            self.mode = stat.S_IMODE(st.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            self.mode = 0o666 & ~umask

    def commit(self) -> None:
        if self.tmp is not None:
            os.fchmod(self.fd, self.mode)
        os.close(self.fd)
        self.fd = -1
        if self.tmp is not None:
            os.replace(self.tmp, self.path)
            self.tmp = None

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None


def _pwrite_all(fd: int, data: bytes, off: int) -> None:
    mv = memoryview(data)
    while mv:
        k = os.pwrite(fd, mv, off)
        mv = mv[k:]
        off += k


def _finish(fd: int, ext4_size: int, opts: Options) -> Result:
    from hcsshim.ext4 import vhd

    res = Result(ext4_size=ext4_size, size=ext4_size)
    if opts.append_dm_verity:
        from hcsshim.ext4 import verity  # hashlib: imported only when needed

        res.root_hash = verity.append_verity(fd, ext4_size)
        res.size = ext4_size + _verity_size(ext4_size)
    if opts.append_vhd_footer:
        _pwrite_all(fd, vhd.footer(res.size), res.size)
        res.size += vhd.FOOTER_SIZE
    return res


def _verity_size(data_size: int) -> int:
    blocks = data_size // 4096
    total = 1  # superblock
    n = blocks
    while True:
        n = (n * 32 + 4095) // 4096
        total += n
        if n == 1:
            break
    return total * 4096


def convert_fd(in_fd: int, out_fd: int, opts: Options, progress: Callable[[int], None] | None = None) -> Result:
    """Convert a tar read from in_fd into out_fd (a fresh, seekable descriptor). Raises Ext4Error on bad input."""
    from hcsshim.ext4 import tarconvert, tarin, vhd

    if opts.only_append_vhd_footer:
        size = 0
        while True:
            chunk = os.read(in_fd, 1 << 20)
            if not chunk:
                break
            _pwrite_all(out_fd, chunk, size)
            size += len(chunk)
            if progress is not None:
                progress(size)
        _pwrite_all(out_fd, vhd.footer(size), size)
        return Result(size=size + vhd.FOOTER_SIZE)
    w = Writer(out_fd, inline_data=opts.inline_data, max_disk_size=opts.max_disk_size,
               upstream_bitmap_padding=opts.upstream_bitmap_padding)
    reader = tarin.TarReader(in_fd)
    try:
        tarconvert.convert_tar(reader, w, convert_whiteout=opts.convert_whiteout,
                          convert_backslash=opts.convert_backslash, progress=progress)
    except BaseException:
        w.abort()
        raise
    reader.drain()
    return _finish(out_fd, w.disk_size, opts)


def convert_tree_fd(root: str, out_fd: int, opts: Options, progress: Callable[[int], None] | None = None) -> Result:
    """Build the image from a directory tree (like `mkfs.ext4 -d`), then verity / footer as for a tar."""
    from hcsshim.ext4 import tree

    w = Writer(out_fd, inline_data=opts.inline_data, max_disk_size=opts.max_disk_size,
               upstream_bitmap_padding=opts.upstream_bitmap_padding)
    try:
        tree.convert_tree(root, w, convert_whiteout=opts.convert_whiteout, progress=progress)
    except BaseException:
        w.abort()
        raise
    return _finish(out_fd, w.disk_size, opts)


def convert(source: str | int, output: str, opts: Options | None = None,
            progress: Callable[[int], None] | None = None) -> Result:
    """Convert a tar (a path, or an open descriptor such as 0 for stdin) or a directory into the file `output`.

    On any failure the output file is not created (or an existing one is left untouched) and the error is
    raised: Ext4Error for bad input or a full disk, OSError for I/O problems.
    """
    opts = opts or Options()
    target = _Target(output)
    try:
        if isinstance(source, str) and os.path.isdir(source):
            res = convert_tree_fd(source, target.fd, opts, progress)
        elif isinstance(source, str):
            in_fd = os.open(source, os.O_RDONLY)
            try:
                res = convert_fd(in_fd, target.fd, opts, progress)
            finally:
                os.close(in_fd)
        else:
            res = convert_fd(source, target.fd, opts, progress)
        target.commit()
        return res
    except BaseException:
        target.abort()
        raise


def compute_root_digest(source: str | int, progress: Callable[[int], None] | None = None) -> str:
    """Upstream ConvertAndComputeRootDigest: overlay conversion with a 128 GiB maximum size, then the
    dm-verity root hash of the ext4 bytes (used for confidential-container layer hashes)."""
    from hcsshim.ext4 import verity

    opts = Options(convert_whiteout=True, max_disk_size=ROOT_DIGEST_MAX_DISK_SIZE, upstream_bitmap_padding=True)
    with tempfile.TemporaryFile() as tmp:
        fd = tmp.fileno()
        if isinstance(source, str) and os.path.isdir(source):
            res = convert_tree_fd(source, fd, opts, progress)
        elif isinstance(source, str):
            in_fd = os.open(source, os.O_RDONLY)
            try:
                res = convert_fd(in_fd, fd, opts, progress)
            finally:
                os.close(in_fd)
        else:
            res = convert_fd(source, fd, opts, progress)
        return verity.root_hash(verity.hash_levels(fd, res.ext4_size))


def ext4_filesystem_size(fd: int) -> int:
    """Ext4FileSystemSize: (1024 << s_log_block_size) * s_blocks_count_lo, read from the superblock."""
    import struct

    sb = os.pread(fd, 1024, 1024)
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 56)[0] != 0xEF53:
        raise Ext4Error("not an ext4 file system")
    blocks, log = struct.unpack_from("<I", sb, 4)[0], struct.unpack_from("<I", sb, 24)[0]
    return (1024 << log) * blocks
