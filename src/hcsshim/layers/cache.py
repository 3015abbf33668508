"""The host-wide cache of read-only ext4 layer images: building, cross-process references, garbage collection.

Layout and protocol are described in the package docstring (hcsshim.layers). In short: one flock per key
(`locks/<name>.lock`), shared while a hit records its reference, exclusive while an image is built or
removed; images are built into a temp file, fsynced, made read-only and renamed into place; references are
files `refs/<name>/<holder>`; a holder that names a process (`holder_for`) stops counting once that process
is gone. Every public method is blocking and thread-safe (each call opens its own lock descriptors).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote

from hcsshim import ext4
from hcsshim.layers.errors import LayerError

__all__ = [
    "DEFAULT_MAX_FRACTION",
    "DEFAULT_MAX_UNUSED_AGE",
    "DEFAULT_ROOT",
    "ENV_ROOT",
    "GC_INTERVAL",
    "Layer",
    "LayerCache",
    "default_root",
    "holder_alive",
    "holder_for",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/var/lib/hcsshim/layers"
ENV_ROOT = "HCSSHIM_LAYER_CACHE"
DEFAULT_MAX_UNUSED_AGE = 30 * 24 * 3600.0  # seconds: an image unused for a month goes
DEFAULT_MAX_FRACTION = 0.25  # without max_bytes: the cache keeps at most a quarter of its file system
GC_INTERVAL = 60.0  # maybe_gc runs gc at most this often per cache root (seconds)

_KEY = re.compile(r"([a-z0-9]+):([A-Za-z0-9_-]{1,128})")
_NAME = re.compile(r"([a-z0-9]+)-([A-Za-z0-9_-]{1,128})")
# Our temp file `.<name>.ext4.<pid>.<random>.tmp`, and ext4.convert's own temp next to it (one more dot first).
_TEMP = re.compile(r"\.+([a-z0-9]+-[A-Za-z0-9_-]{1,128})\.ext4\..*\.tmp")
_HOLDER_PREFIX = "h-"
_PROC_HOLDER = re.compile(r"proc:([0-9a-f-]{1,64}):(\d+):(\d+):")


def default_root() -> str:
    """$HCSSHIM_LAYER_CACHE, else /var/lib/hcsshim/layers."""
    return os.environ.get(ENV_ROOT) or DEFAULT_ROOT


def _strerror(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


# -- holders ---------------------------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "0"


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[-1].split()
    if len(fields) < 20:
        return None
    return fields[0].decode(), int(fields[19])


def holder_for(pid: int, name: str) -> str:
    """A holder naming process `pid` and `name` (e.g. the shim's task id): `proc:<boot id>:<pid>:<start>:<name>`.

    Its references stop counting when the process exits (or is a zombie) or the host reboots, even if the
    pid is reused: the process start time from /proc/<pid>/stat is part of it. Pids are those of the
    caller's pid namespace (all shims run in the host's).
    """
    found = _proc_start(pid)
    if found is None:
        raise LayerError(f"holder for pid {pid} ({name}): no such process")
    return f"proc:{_boot_id()}:{pid}:{found[1]}:{name}"


def holder_alive(holder: str) -> bool:
    """Whether a holder's references count: a `holder_for` holder while its process runs; any other always."""
    m = _PROC_HOLDER.match(holder)
    if m is None:
        return True
    if m[1] != _boot_id():
        return False
    found = _proc_start(int(m[2]))
    return found is not None and found[0] not in ("Z", "X") and found[1] == int(m[3])


# -- locks -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def flock_file(path: str, mode: int, *, blocking: bool = True) -> Iterator[bool]:
    """Hold flock `mode` on the file `path` (created if missing); yields False when not blocking and busy.

    A lock file may be unlinked by its exclusive holder (gc removing a key): after locking, the descriptor
    must still be the file at `path`, else the lock is taken again on the new file.
    """
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        held = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield True
    finally:
        os.close(fd)


# -- the cache -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """An acquired layer: its key, the read-only ext4 image's path, and whether this call built the image."""

    key: str
    path: str
    built: bool
    holder: str


@dataclass
class _Entry:
    name: str
    mtime: float
    size: int  # bytes allocated on disk


class LayerCache:
    """The layer image cache under `root` (default: $HCSSHIM_LAYER_CACHE or /var/lib/hcsshim/layers).

    `options` are the tar2ext4 options of the images it builds (default: a 128 GiB maximum disk size, as
    upstream's layer tooling uses; no whiteout conversion, since snapshot directories already hold overlay
    whiteouts and opaque xattrs). Creating the object touches nothing on disk.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, options: ext4.Options | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root) if root is not None else default_root())
        self.options = options or ext4.Options(max_disk_size=ext4.ROOT_DIGEST_MAX_DISK_SIZE)
        self.images_dir = os.path.join(self.root, "images")
        self.locks_dir = os.path.join(self.root, "locks")
        self.refs_dir = os.path.join(self.root, "refs")

    def __repr__(self) -> str:
        return f"LayerCache({self.root!r})"

    # -- names and paths

    @staticmethod
    def _name(key: str, op: str) -> str:
        m = _KEY.fullmatch(key)
        if m is None:
            raise LayerError(f"{op}: invalid key {key!r} (want <algorithm>:<id>, e.g. a chain ID)")
        return f"{m[1]}-{m[2]}"

    @staticmethod
    def _key(name: str) -> str:
        alg, _, rest = name.partition("-")
        return f"{alg}:{rest}"

    @staticmethod
    def _holder_file(holder: str, op: str) -> str:
        encoded = _HOLDER_PREFIX + quote(holder, safe="")
        if not holder or len(encoded) > 240:
            raise LayerError(f"{op}: invalid holder {holder!r} (empty or too long)")
        return encoded

    def image_path(self, key: str) -> str:
        """Where the image of `key` is (or would be) in the cache."""
        return os.path.join(self.images_dir, self._name(key, "image path") + ".ext4")

    def _lock_path(self, name: str) -> str:
        return os.path.join(self.locks_dir, name + ".lock")

    def _ensure_dirs(self, op: str) -> None:
        for d in (self.root, self.images_dir, self.locks_dir, self.refs_dir):
            try:
                os.makedirs(d, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise LayerError(f"{op}: layer cache {self.root}: create {d}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise LayerError(f"{op}: layer cache {self.root}: not writable")

    # -- acquire / release

    def acquire(self, layer_dir: str | os.PathLike[str], *, key: str, holder: str) -> Layer:
        """The image of `layer_dir` under `key`, built if the cache has none, with a reference for `holder`.

        Blocks while another process builds the same key, then uses its image (built=False). A holder holds
        a key at most once: acquiring it again is a no-op for references. Raises LayerError.
        """
        layer_dir = os.fspath(layer_dir)
        op = f"acquire layer {layer_dir} (key {key})"
        name = self._name(key, op)
        hfile = self._holder_file(holder, op)
        try:
            st = os.stat(layer_dir)
        except OSError as exc:
            raise LayerError(f"{op}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{op}: not a directory")
        self._ensure_dirs(op)
        image = os.path.join(self.images_dir, name + ".ext4")
        try:
            with flock_file(self._lock_path(name), fcntl.LOCK_SH):
                if os.path.exists(image):
                    self._add_ref(name, hfile)
                    _touch(image)
                    return Layer(key, image, False, holder)
            with flock_file(self._lock_path(name), fcntl.LOCK_EX):
                built = not os.path.exists(image)  # another process may have built it while we waited
                if built:
                    self._build(layer_dir, name, image, op)
                self._add_ref(name, hfile)
                _touch(image)
                return Layer(key, image, built, holder)
        except OSError as exc:
            raise LayerError(f"{op}: layer cache {self.root}: {_strerror(exc)}") from None

    def _build(self, layer_dir: str, name: str, image: str, op: str) -> None:
        tmp = os.path.join(self.images_dir, f".{name}.ext4.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        t0 = time.monotonic()
        try:
            result = ext4.convert(layer_dir, tmp, self.options)
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)  # the data is on disk before the name says the image is finished
            finally:
                os.close(fd)
            os.chmod(tmp, 0o444)
            os.rename(tmp, image)
            _fsync_dir(self.images_dir)
        except ext4.Ext4Error as exc:
            raise LayerError(f"{op}: convert to ext4: {exc}") from None
        except OSError as exc:
            raise LayerError(f"{op}: build image {image}: {_strerror(exc)}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        log.info("layer image built key=%s layer_dir=%s image=%s bytes=%d seconds=%.3f", self._key(name), layer_dir,
                 image, result.size, time.monotonic() - t0)

    def _add_ref(self, name: str, hfile: str) -> None:
        d = os.path.join(self.refs_dir, name)
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.close(os.open(os.path.join(d, hfile), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))

    def release(self, key: str, holder: str) -> bool:
        """Drop `holder`'s reference to `key`; False if it had none. The image stays cached for later use."""
        op = f"release layer {key} ({holder})"
        name = self._name(key, op)
        ref = os.path.join(self.refs_dir, name, self._holder_file(holder, op))
        # Mark the image used before dropping the reference: gc then sees either the reference or a fresh time.
        _touch(os.path.join(self.images_dir, name + ".ext4"))
        try:
            os.unlink(ref)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LayerError(f"{op}: layer cache {self.root}: {_strerror(exc)}") from None
        return True

    def release_holder(self, holder: str) -> list[str]:
        """Drop every reference of `holder` (e.g. of a shim that crashed); return the keys it held."""
        hfile = self._holder_file(holder, f"release holder {holder}")
        released = []
        for name in _listdir(self.refs_dir):
            if _NAME.fullmatch(name) and os.path.exists(os.path.join(self.refs_dir, name, hfile)):
                key = self._key(name)
                if self.release(key, holder):
                    released.append(key)
        return sorted(released)

    def holders(self, key: str) -> list[str]:
        """The holders of `key` whose references count (live processes, or holders not tied to one)."""
        name = self._name(key, "holders")
        return sorted(h for h in self._ref_holders(name) if holder_alive(h))

    def _ref_holders(self, name: str) -> list[str]:
        return [unquote(f[len(_HOLDER_PREFIX):]) for f in _listdir(os.path.join(self.refs_dir, name))
                if f.startswith(_HOLDER_PREFIX)]

    def keys(self) -> list[str]:
        """The keys of the finished images in the cache."""
        return sorted(self._key(n[:-5]) for n in _listdir(self.images_dir)
                      if n.endswith(".ext4") and _NAME.fullmatch(n[:-5]))

    # -- garbage collection

    def gc(self, *, max_unused_age: float = DEFAULT_MAX_UNUSED_AGE, max_bytes: int | None = None) -> list[str]:
        """Remove unreferenced images; return their keys.

        Removed: images no live holder references that were last used (acquired or released) at least
        `max_unused_age` seconds ago, then, while the images take more than `max_bytes` on disk (default: a
        quarter of the cache's file system), the least recently used unreferenced ones. Never removed: a
        referenced image, or one whose key is locked (being built or acquired) at that moment. Also removed:
        stale references (holders whose process is gone), temp files of crashed builds, and the lock and
        reference directories of keys without an image. One gc runs at a time per cache root.
        """
        if not os.path.isdir(self.root):
            return []
        try:
            os.makedirs(self.locks_dir, mode=0o755, exist_ok=True)
            with flock_file(os.path.join(self.root, "gc.lock"), fcntl.LOCK_EX):
                return self._gc(max_unused_age, max_bytes)
        except OSError as exc:
            raise LayerError(f"gc layer cache {self.root}: {_strerror(exc)}") from None

    def maybe_gc(self, *, interval: float = GC_INTERVAL, max_unused_age: float = DEFAULT_MAX_UNUSED_AGE,
                 max_bytes: int | None = None) -> list[str]:
        """Run gc unless one ran (in any process) less than `interval` seconds ago or one is running now.

        Cheap when it does nothing (a stat of `gc.stamp`): meant for the shim to call after each task delete.
        """
        stamp = os.path.join(self.root, "gc.stamp")
        if not os.path.isdir(self.root) or not _stamp_due(stamp, interval):
            return []
        try:
            os.makedirs(self.locks_dir, mode=0o755, exist_ok=True)
            with flock_file(os.path.join(self.root, "gc.lock"), fcntl.LOCK_EX, blocking=False) as locked:
                if not locked or not _stamp_due(stamp, interval):
                    return []
                os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
                os.utime(stamp)
                return self._gc(max_unused_age, max_bytes)
        except OSError as exc:
            raise LayerError(f"gc layer cache {self.root}: {_strerror(exc)}") from None

    def _gc(self, max_unused_age: float, max_bytes: int | None) -> list[str]:
        names: set[str] = set()
        temps: dict[str, list[str]] = {}
        for f in _listdir(self.images_dir):
            m = _TEMP.fullmatch(f)
            if m is not None:
                temps.setdefault(m[1], []).append(f)
                names.add(m[1])
            elif f.endswith(".ext4") and _NAME.fullmatch(f[:-5]):
                names.add(f[:-5])
        names.update(n for n in _listdir(self.refs_dir) if _NAME.fullmatch(n))
        names.update(f[:-5] for f in _listdir(self.locks_dir) if f.endswith(".lock") and _NAME.fullmatch(f[:-5]))

        now = time.time()
        removed: list[str] = []
        unreferenced: list[_Entry] = []
        total = 0
        for name in sorted(names):
            with flock_file(self._lock_path(name), fcntl.LOCK_EX, blocking=False) as locked:
                if not locked:
                    continue  # being built or acquired right now
                for f in temps.get(name, ()):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.images_dir, f))
                live = self._prune_refs(name)
                st = _lstat(os.path.join(self.images_dir, name + ".ext4"))
                if st is None:
                    self._forget(name)
                    continue
                if live:
                    total += st.st_blocks * 512
                elif now - st.st_mtime >= max_unused_age:
                    self._remove(name)
                    removed.append(self._key(name))
                else:
                    total += st.st_blocks * 512
                    unreferenced.append(_Entry(name, st.st_mtime, st.st_blocks * 512))

        if max_bytes is None:
            vfs = os.statvfs(self.root)
            max_bytes = int(vfs.f_blocks * vfs.f_frsize * DEFAULT_MAX_FRACTION)
        unreferenced.sort(key=lambda e: (e.mtime, e.name))  # least recently used first
        for e in unreferenced:
            if total <= max_bytes:
                break
            with flock_file(self._lock_path(e.name), fcntl.LOCK_EX, blocking=False) as locked:
                if not locked or self._prune_refs(e.name):
                    continue
                st = _lstat(os.path.join(self.images_dir, e.name + ".ext4"))
                if st is None or st.st_mtime != e.mtime:
                    continue  # used since the first pass
                self._remove(e.name)
                removed.append(self._key(e.name))
                total -= e.size
        if removed:
            log.info("layer images removed cache=%s keys=%s", self.root, ",".join(removed))
        return removed

    def _prune_refs(self, name: str) -> list[str]:
        """Remove the stale references of `name`; return its live holders. Call with its lock held."""
        d = os.path.join(self.refs_dir, name)
        live = []
        for f in _listdir(d):
            holder = unquote(f[len(_HOLDER_PREFIX):]) if f.startswith(_HOLDER_PREFIX) else ""
            if holder and holder_alive(holder):
                live.append(holder)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(d, f))
        return live

    def _remove(self, name: str) -> None:
        """Remove the image of `name` and its bookkeeping. Call with its lock held exclusively."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.images_dir, name + ".ext4"))
        self._forget(name)

    def _forget(self, name: str) -> None:
        """Remove the (empty) references directory and the lock file of an image-less key, lock held."""
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(os.path.join(self.refs_dir, name))
        if not os.path.exists(os.path.join(self.refs_dir, name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path(name))


def _stamp_due(stamp: str, interval: float) -> bool:
    try:
        mtime = os.stat(stamp).st_mtime
    except FileNotFoundError:
        return True
    now = time.time()
    return not (now - interval < mtime <= now + interval)  # a stamp in the future (clock stepped back) is due


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _touch(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)
