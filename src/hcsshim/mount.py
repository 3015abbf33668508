"""mount(2)/umount2(2) through libc, with fstab-style options, and finding what is mounted.

Standard library only: the shim mounts containerd's rootfs mounts with it, the utility VM its share bind mounts,
and the guest agent layers and scratch disks. containerd 1.6 hands the shim the snapshot as
`containerd.types.Mount` values (typically one overlay mount) to be mounted at `<bundle>/rootfs`. Overlay option
strings longer than a page are shortened the way containerd does it: the mount runs from the lowerdirs' common
parent with relative paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from hcsshim.libc import errno as _errno
from hcsshim.libc import libc as _lib

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

_FLAGS = {
    "ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False),
    "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False),
    "strictatime": (MS_STRICTATIME, True),
    "bind": (MS_BIND, True), "rbind": (MS_BIND | MS_REC, True),
    "remount": (MS_REMOUNT, True),
}
_PROPAGATION = {"private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "slave": MS_SLAVE,
                "rslave": MS_SLAVE | MS_REC, "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC}
_PAGE = os.sysconf("SC_PAGE_SIZE")


class MountError(OSError):
    """mount(2) or umount2(2) failed; the message names the mount and the target."""


def mount_raw(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    """mount(2) as it is: MS_* flags and the file system's data string; MountError names all of it."""
    import ctypes

    rc = _lib().mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        err = _errno()
        raise MountError(err, f"mount {source} on {target} ({fstype or 'bind'}, {data or '-'}): "
                              f"{os.strerror(err)}")


def umount_raw(target: str, flags: int = 0) -> None:
    """umount2(2) as it is (MNT_DETACH etc.); MountError on any failure."""
    if _lib().umount2(target.encode(), flags) != 0:
        err = _errno()
        raise MountError(err, f"unmount {target}: {os.strerror(err)}")


_mount = mount_raw


def parse_options(options: Iterable[str]) -> tuple[int, int, str]:
    """Splits mount options into (flags, propagation flags, data string), as containerd's mount_linux does."""
    flags = propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            bit, on = _FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _compact_overlay(data: str) -> tuple[str, str | None]:
    """Shortens an overlay data string over a page by making lowerdirs relative to their common parent."""
    if len(data) < _PAGE - 512:
        return data, None
    parts = data.split(",")
    lower = next((p for p in parts if p.startswith("lowerdir=")), None)
    if lower is None:
        return data, None
    dirs = lower[len("lowerdir="):].split(":")
    common = os.path.commonpath(dirs)
    if common in ("", "/"):
        return data, None
    rel = ":".join(os.path.relpath(d, common) for d in dirs)
    parts = [f"lowerdir={rel}" if p is lower else p for p in parts]
    return ",".join(parts), common


def mount(fstype: str, source: str, options: Sequence[str], target: str) -> None:
    """Mounts one containerd Mount at target."""
    flags, propagation, data = parse_options(options)
    chdir = None
    if fstype == "overlay":
        data, chdir = _compact_overlay(data)
    if chdir is not None:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(chdir)
            _mount(source, target, fstype, flags, data)
        finally:
            os.fchdir(cwd)
            os.close(cwd)
    else:
        _mount(source, target, "" if flags & MS_BIND else fstype, flags, data)
    if flags & MS_BIND and flags & MS_RDONLY:
        _mount("", target, "", flags | MS_REMOUNT, "")
    if propagation:
        _mount("", target, "", propagation, "")


def mount_all(mounts: Iterable[tuple[str, str, Sequence[str]]], target: str) -> int:
    """Mounts (type, source, options) triples at target in order; on failure unmounts what it mounted.

    Returns the number of mounts made."""
    done = 0
    try:
        for fstype, source, options in mounts:
            mount(fstype, source, options, target)
            done += 1
    except BaseException:
        for _ in range(done):
            unmount(target)
        raise
    return done


def unmount(target: str, *, detach: bool = False) -> bool:
    """Unmounts target once. Returns False when nothing was mounted there."""
    rc = _lib().umount2(target.encode(), MNT_DETACH if detach else 0)
    if rc == 0:
        return True
    err = _errno()
    if err in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
        return False
    raise MountError(err, f"unmount {target}: {os.strerror(err)}")


def mounted_under(path: str) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            point = line.split(b" ", 5)[4].decode("unicode_escape")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    found.sort(key=len, reverse=True)
    return found


def unmount_all(target: str) -> None:
    """Unmounts everything at and below target (a lazy detach when busy), as containerd's UnmountAll."""
    for point in mounted_under(target):
        try:
            while unmount(point):
                pass
        except MountError as exc:
            if exc.errno != 16:  # EBUSY
                raise
            unmount(point, detach=True)
