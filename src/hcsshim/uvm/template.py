"""Utility VM templates: the key that says which VMs may be restored from which saved state, and the store.

A template is a utility VM cold-booted to "GCS up, negotiated, every background kernel module loaded, nothing
attached, no share mounted", then paused and saved (hcsshim.uvm.vm.UtilityVM builds and restores them). In HCS
terms (hcsshim.uvm.lcow): the template VM's document puts its RAM in the file `memory` (GuestState.
RuntimeStateFilePath), and saving it (System.save, SaveOptions.SaveStateFilePath) writes `state`, a few hundred
KB of device state: the RAM is the file itself. A clone's document maps `memory` copy-on-write
(ForceTransientState, so idle clones share the template's pages through the page cache) and restores `state`
(RestoreState.SaveStateFilePath) before it runs. On Linux the backend does this with a memory-backend-file and
QEMU's x-ignore-shared migration (hcsshim.hcs.linux.machine).

The key covers everything a clone must have in common with its template: the boot files' contents (kernel,
initrd, rootfs.vhd), the VM's document (shape, kernel command line with the GCS's flags, devices) with the
per-VM paths taken out, the machine the Linux backend makes of it (its QEMU command line), the accelerator,
QEMU's version and ours. Any change gives a new key, hence a new template.

Layout of the store, `$HCSSHIM_TEMPLATE_CACHE` or /var/lib/hcsshim/templates (beside the layer cache):

    <key>/memory, <key>/state, <key>/meta.json  a template; meta.json has the key's parts, the state's sha256 and
                                                the memory file's size, checked on every load
    <key>.lock                                  flock: held exclusively while the key's template is built
    .build-<key>-<pid>-<rand>/                  a build in progress (renamed to <key> when complete)
    digests.json                                memo of file digests by (path, device, inode, size, mtime)

A template is written into its build directory and renamed into place whole, so no reader ever sees a partial
one; two shims that want the same missing template build it once (the second waits on the lock, then loads).
A template that does not verify is a TemplateError: the caller cold-boots and rebuilds. Beyond KEEP templates the
least recently used (by the directory's mtime, touched on every load) are removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, replace

import hcsshim
from hcsshim import gojson
from hcsshim.hcs.linux.document import parse
from hcsshim.hcs.linux.qemu import argv
from hcsshim.uvm.lcow import lcow_document
from hcsshim.uvm.options import BootFiles, UVMOptions

log = logging.getLogger(__name__)

FORMAT = 2  # of the saved template; part of the key
DEFAULT_ROOT = "/var/lib/hcsshim/templates"
ENV_ROOT = "HCSSHIM_TEMPLATE_CACHE"
KEEP = 8  # templates kept per store
_RUN = "/RUN"  # what the per-VM run dir becomes in the key's document and device layout


class TemplateError(Exception):
    """A template cannot be used (missing parts, a mismatch, damage); the message names the template and why."""


def default_root() -> str:
    return os.environ.get(ENV_ROOT) or DEFAULT_ROOT


@dataclass(frozen=True)
class TemplateKey:
    digest: str  # sha256 of the parts: the template's name
    parts: dict


@dataclass(frozen=True)
class Template:
    key: TemplateKey
    path: str
    built: float = 0.0  # when it was built (meta.json): tells one build of a key from another

    @property
    def memory(self) -> str:
        return os.path.join(self.path, "memory")

    @property
    def state(self) -> str:
        return os.path.join(self.path, "state")


class TemplateStore:
    """The templates of one root directory (see the module docstring); every method is synchronous and safe to
    call from several processes at once."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or default_root()

    def __repr__(self) -> str:
        return f"TemplateStore({self.root!r})"

    def path_of(self, key: TemplateKey) -> str:
        return os.path.join(self.root, key.digest)

    # -- keys -------------------------------------------------------------------------------------------------
    def key(self, opts: UVMOptions, boot: BootFiles, qemu: str, accel: str) -> TemplateKey:
        """The key of the template a VM with these options would be restored from."""
        document = gojson.dumps(lcow_document(replace(opts, id="template", run_root="/"), boot, _RUN))
        devices = argv(qemu, parse("template", document, check_files=False), _RUN, accel)
        parts = {
            "format": FORMAT,
            "hcsshim": hcsshim.__version__,
            "qemu": self._qemu_identity(qemu),
            "accel": accel,
            "memory_mb": opts.memory_mb,
            "document": document,
            "devices": [a for a in devices if a != qemu],
            "kernel": self._digest(boot.kernel),
            "initrd": self._digest(boot.initrd) if boot.initrd else None,
            "rootfs_vhd": self._digest(boot.rootfs_vhd) if boot.rootfs_vhd else None,
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return TemplateKey(digest, parts)

    def _memo(self) -> dict[str, str]:
        try:
            with open(os.path.join(self.root, "digests.json")) as f:
                memo = json.load(f)
            return memo if isinstance(memo, dict) else {}
        except (OSError, ValueError):
            return {}

    def _remember(self, key: str, value: str) -> None:
        memo = self._memo()
        memo[key] = value
        if len(memo) > 256:  # boot files come and go: keep the newest entries
            memo = dict(list(memo.items())[-128:])
        with contextlib.suppress(OSError):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            tmp = os.path.join(self.root, f".digests.{os.getpid()}.{secrets.token_hex(4)}")
            with open(tmp, "w") as f:
                json.dump(memo, f)
            os.replace(tmp, os.path.join(self.root, "digests.json"))

    @staticmethod
    def _identity(path: str) -> str:
        st = os.stat(path)
        return f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"

    def _digest(self, path: str) -> str:
        """sha256 of a file's contents, memoized by its identity (hashing an initrd on every start costs ~50 ms)."""
        ident = self._identity(path)
        found = self._memo().get(ident)
        if found:
            return found
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        self._remember(ident, digest)
        return digest

    def _qemu_identity(self, qemu: str) -> str:
        ident = "qemu:" + self._identity(qemu)
        found = self._memo().get(ident)
        if found:
            return found
        try:
            out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise TemplateError(f"template key: {qemu} --version: {exc}") from None
        version = out.splitlines()[0].strip() if out else "unknown"
        self._remember(ident, version)
        return version

    # -- loading ------------------------------------------------------------------------------------------------
    def load(self, key: TemplateKey) -> Template | None:
        """The template of `key`, verified; None when there is none; TemplateError when it is damaged."""
        path = self.path_of(key)
        if not os.path.isdir(path):
            return None
        tpl = Template(key, path, 0.0)
        where = f"template {key.digest[:12]} ({path})"
        try:
            with open(os.path.join(path, "meta.json")) as f:
                meta = json.load(f)
            if not isinstance(meta, dict) or meta.get("parts") != json.loads(json.dumps(key.parts)):
                raise TemplateError(f"{where}: made for something else (its meta.json does not match the key)")
            with open(tpl.state, "rb") as f:
                state_digest = hashlib.sha256(f.read()).hexdigest()
            if state_digest != meta.get("state_sha256"):
                raise TemplateError(f"{where}: the saved state is damaged (sha256 mismatch)")
            size = os.stat(tpl.memory).st_size
            if size != meta.get("memory_bytes") or size != key.parts["memory_mb"] << 20:
                raise TemplateError(f"{where}: the memory file has {size} bytes, not {meta.get('memory_bytes')}")
        except FileNotFoundError as exc:
            raise TemplateError(f"{where}: {os.path.basename(exc.filename or '?')} is missing") from None
        except (OSError, ValueError) as exc:
            raise TemplateError(f"{where}: {exc}") from None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: gc keeps it
        built = meta.get("built")
        return replace(tpl, built=float(built) if isinstance(built, (int, float)) else 0.0)

    # -- building -------------------------------------------------------------------------------------------
    def lock(self, key: TemplateKey) -> int:
        """Takes the key's build lock (blocking: call it in a thread from async code); `unlock` the result."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, f"{key.digest}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        # Whoever builds this key holds the lock: any build directory of it still here is a dead builder's.
        for name in os.listdir(self.root):
            if name.startswith(f".build-{key.digest}-"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        os.close(fd)

    def staging(self, key: TemplateKey) -> str:
        """A fresh build directory for `key` (the caller holds the key's lock)."""
        path = os.path.join(self.root, f".build-{key.digest}-{os.getpid()}-{secrets.token_hex(4)}")
        os.makedirs(path, mode=0o700)
        return path

    def commit(self, key: TemplateKey, staging: str, state_sha256: str) -> Template:
        """Writes meta.json into a complete build and renames it into place (replacing a damaged template)."""
        memory = os.path.join(staging, "memory")
        meta = {"parts": key.parts, "state_sha256": state_sha256, "memory_bytes": os.stat(memory).st_size,
                "built": time.time()}
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        for name in ("memory", "state"):
            fd = os.open(os.path.join(staging, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        final = self.path_of(key)
        if os.path.exists(final):
            old = f"{staging}.old"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staging, final)
        self.gc()
        return Template(key, final, meta["built"])

    def discard(self, staging: str) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def remove(self, key: TemplateKey) -> None:
        """Removes the key's template (the caller holds the key's lock): a damaged one goes before its rebuild,
        so that a rebuild cut short (its VM closed first) leaves the next VM to build it rather than to boot cold
        from the same damage again."""
        final = self.path_of(key)
        if os.path.exists(final):
            old = os.path.join(self.root, f".build-{key.digest}-removed-{secrets.token_hex(4)}")
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)

    def gc(self, keep: int = KEEP) -> list[str]:
        """Removes the least recently used templates beyond `keep` (never one being built: its lock is tried)."""
        try:
            names = [n for n in os.listdir(self.root) if len(n) == 64 and os.path.isdir(os.path.join(self.root, n))]
        except OSError:
            return []
        names.sort(key=lambda n: os.stat(os.path.join(self.root, n)).st_mtime, reverse=True)
        removed = []
        for name in names[keep:]:
            fd = os.open(os.path.join(self.root, f"{name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            try:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
                removed.append(name)
            finally:
                os.close(fd)
        return removed
