"""Directory-tree input: build the image from a directory on disk, as `mkfs.ext4 -d DIR` does.

For layers that arrive unpacked (a snapshotter's directory). The tree is walked depth first, each directory's
entries in byte order of their names, and every entry goes through the same writer calls a tar entry would
(so hard links, whiteouts and the layout rules are shared with tar input). What is copied: type, permission
bits, owner, atime/ctime/mtime with nanoseconds (crtime = mtime, as for tars), symlink targets, device numbers,
hard links (by device and inode), all xattrs, and file data (with copy_file_range when the kernel allows).
The root directory takes the source directory's attributes. Sockets are kept (tars cannot carry them).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from hcsshim.ext4 import format as fmt
from hcsshim.ext4.tarconvert import OPAQUE_WHITEOUT, WHITEOUT_PREFIX
from hcsshim.ext4.writer import Ext4Error, File, Writer

_CHUNK = 1 << 20


def _time(ns: int) -> int:
    s, n = divmod(ns, 1_000_000_000)
    return fmt.time_to_fs(s, n)


def _xattrs(path: bytes) -> dict[bytes, bytes] | None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    if not names:
        return None
    out = {}
    for n in names:
        try:
            out[n.encode("utf-8", "surrogateescape")] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
    return out


def _file(st: os.stat_result, path: bytes, size: int = 0, linkname: bytes = b"") -> File:
    mt = _time(st.st_mtime_ns)
    rdev = st.st_rdev
    return File(stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size,
                atime=_time(st.st_atime_ns), ctime=_time(st.st_ctime_ns), mtime=mt, crtime=mt, linkname=linkname,
                devmajor=os.major(rdev) if rdev else 0, devminor=os.minor(rdev) if rdev else 0, xattrs=_xattrs(path))


def _copy(w: Writer, path: bytes, size: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        left = size
        if left >= 256 << 10:
            left -= w.write_from_fd(fd, left)
        while left > 0:
            chunk = os.read(fd, min(left, _CHUNK))
            if not chunk:
                raise Ext4Error(f"{os.fsdecode(path)}: file shrank while it was copied")
            w.write(chunk)
            left -= len(chunk)
        if w.remaining:
            raise Ext4Error(f"{os.fsdecode(path)}: file changed while it was copied")
    finally:
        os.close(fd)


def _list(path: bytes) -> list[bytes]:
    """The names in a directory, in reverse byte order (they are popped from the end)."""
    try:
        return sorted(os.listdir(path), reverse=True)
    except OSError as exc:
        raise Ext4Error(f"{os.fsdecode(path)}: {exc.strerror}") from None


def convert_tree(root: str, w: Writer, *, convert_whiteout: bool = False,
                 progress: Callable[[int], None] | None = None) -> None:
    """Write every file under `root` into the writer, then close it."""
    base = os.fsencode(root)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode):
        raise Ext4Error(f"{root}: not a directory")
    w.create(b"", _file(st, base))
    links: dict[tuple[int, int], bytes] = {}
    done = 0
    # Depth first, pre-order (as tar lists a tree): a stack of (directory path, its name, remaining names).
    stack: list[tuple[bytes, bytes, list[bytes]]] = [(base, b"", _list(base))]
    while stack:
        dpath, dname, names = stack[-1]
        if not names:
            stack.pop()
            continue
        n = names.pop()
        path = dpath + b"/" + n
        name = dname + b"/" + n if dname else n
        st = os.lstat(path)
        mode = st.st_mode
        if convert_whiteout and n.startswith(WHITEOUT_PREFIX):
            if n == OPAQUE_WHITEOUT:
                f = w.stat(dname)
                assert f.xattrs is not None
                f.xattrs[b"trusted.overlay.opaque"] = b"y"
                w.create(dname, f)
            else:
                w.create(name[: -len(n)] + n[len(WHITEOUT_PREFIX) :], File(fmt.S_IFCHR))
            continue
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = links.get(key)
            if first is not None:
                w.link(first, name)
                continue
            links[key] = name
        if stat.S_ISREG(mode):
            w.create(name, _file(st, path, st.st_size))
            _copy(w, path, st.st_size)
            done += st.st_size
        elif stat.S_ISLNK(mode):
            w.create(name, _file(st, path, linkname=os.readlink(path)))
        else:
            w.create(name, _file(st, path))
            if stat.S_ISDIR(mode):
                stack.append((path, name, _list(path)))
        if progress is not None:
            progress(done)
    w.close()
