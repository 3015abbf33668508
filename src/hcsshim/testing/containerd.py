"""A private containerd instance for tests, the demo and the benchmark, and the cleanup that follows it.

`Containerd(workdir)` runs the system's containerd (Debian 12's 1.6.20); `Containerd(workdir, build=...)` another
one (hcsshim.testing.containerds fetches 1.7.x and 2.x), with the config version it wants (2 before 2.0, 3 from
2.0 on). It owns everything under `workdir`: its config.toml, root and state directories, its gRPC
and ttrpc sockets (in a short directory under /tmp instead when the path would be too long for a unix
socket), containerd.log (containerd's stdout and stderr, including what shims write to their log FIFO)
and fifo/, where `ctr` creates its stdio FIFOs.
Our shim's directory goes first on containerd's PATH, so runtime io.containerd.runhcs.v1 resolves to it.
The shims' layer image cache is `workdir/layers` ($HCSSHIM_LAYER_CACHE), and their utility VMs keep their run dirs
in `uvm_root` (/run/hcsshim/uvm/<hash of the state dir>, as hcsshim.shim.paths derives it).

Lifecycle: created -> start() -> running -> stop() -> stopped (stop is idempotent; the object is a context
manager). stop() does not trust anything to have cleaned up after itself:

1. SIGTERM containerd, then SIGKILL after a grace period;
2. run each remaining task bundle's shim with the `delete` action, as containerd does for a dead shim;
3. SIGKILL the processes left that belong to this instance: shims whose command line names this instance's
   address (runhcs and runc shims alike) and anything else whose command line names the work directory or the
   VM run root (QEMU);
4. `runc delete --force` containers of this instance (the shared runc root of Debian's runc shim,
   /run/containerd/runc/<ns>, filtered by bundle; our shim's <state>/runhcs/runc/<ns>);
5. unmount everything under the work directory and the VM run root, deepest first (lazily if busy);
6. remove this instance's shim sockets in /run/containerd/s: a shim's socket is
   sha256("<address>/<namespace>/<id>") there, and ids come from bundles, shim command lines and the log;
7. delete the work directory and the VM run root.

leftovers() reports, as human-readable lines, whatever of this instance is still present (also VM run dirs, layer
cache references and unfinished layer builds; the cached images themselves are meant to stay); a clean run of a
container leaves it empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hcsshim.shim.paths import uvm_run_root_of_state

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import TracebackType

__all__ = ["RUNC_SHIM_ROOT", "SHIM_SOCKET_DIR", "Containerd", "ContainerdBinaries", "ContainerdError", "CtrError"]

SHIM_SOCKET_DIR = Path("/run/containerd/s")
RUNC_SHIM_ROOT = Path("/run/containerd/runc")  # Debian's runc shim: runc --root <this>/<ns>
TASK_DIR = "io.containerd.runtime.v2.task"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin


class ContainerdBinaries(Protocol):
    """Which containerd to run (hcsshim.testing.containerds.ContainerdBuild is one)."""

    version: str  # "2.1.9+ds1-5"
    containerd: str  # paths of the binaries
    ctr: str


class ContainerdError(RuntimeError):
    """containerd itself failed: it would not start, or cleanup after it failed."""


class CtrError(RuntimeError):
    """A `ctr` command failed; carries the command, its exit code and output, and containerd's log tail."""

    def __init__(self, cmd: Sequence[str], returncode: int | None, stdout: bytes, stderr: bytes,
                 log_tail: str, *, reason: str = "") -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.log_tail = log_tail
        why = reason or f"exit status {returncode}"
        super().__init__(
            f"{' '.join(self.cmd)}: {why}\n"
            f"--- stdout ---\n{stdout.decode(errors='replace').rstrip()}\n"
            f"--- stderr ---\n{stderr.decode(errors='replace').rstrip()}\n"
            f"--- containerd.log (tail) ---\n{log_tail.rstrip()}"
        )


def _which(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=DEFAULT_PATH)
    if path is None:
        raise ContainerdError(f"{name}: not found on PATH (install Debian's containerd: make setup)")
    return path


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if len(argv) == 1 and " " in argv[0]:
        # A process title set with setproctitle (the shim's forked daemons and its fork server): one string.
        argv = argv[0].split(" ")
    return argv


def _pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _ancestors() -> set[int]:
    """This process and its ancestors: never killed, whatever their command lines say."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _flag(argv: Sequence[str], name: str) -> str | None:
    """The value of Go-style flag `-name value` / `--name value` / `-name=value` in argv."""
    for i, a in enumerate(argv):
        if a in (f"-{name}", f"--{name}") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith((f"-{name}=", f"--{name}=")):
            return a.split("=", 1)[1]
    return None


def _unescape_mountinfo(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1:i + 4]) == 3 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _mounts_under(*dirs: Path) -> list[str]:
    """Mount points at or under any of `dirs`, deepest first."""
    prefixes = [str(d).rstrip("/") for d in dirs]
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        mp = _unescape_mountinfo(fields[4])
        if any(mp == p or mp.startswith(p + "/") for p in prefixes):
            found.append(mp)
    return sorted(set(found), key=lambda m: (-m.count("/"), m))


def _listening_unix_sockets() -> dict[str, str]:
    """inode -> path of every bound unix socket with a path (from /proc/net/unix)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 8:
                    out[parts[6]] = parts[7]
    except (OSError, StopIteration):
        pass
    return out


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


class Containerd:
    """A private containerd: own config, root, state and sockets under `workdir` (see the module doc)."""

    def __init__(self, workdir: Path, *, path_prepend: Sequence[str] = (), debug: bool = False,
                 env: Mapping[str, str] | None = None, build: ContainerdBinaries | None = None) -> None:
        self.workdir = Path(workdir).absolute()
        self.path_prepend = [str(p) for p in path_prepend]
        self.debug = debug
        self.extra_env = dict(env or {})
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        self.log = self.workdir / "containerd.log"
        self.config = self.workdir / "config.toml"
        self.fifo_dir = self.workdir / "fifo"
        self.layer_cache = self.workdir / "layers"  # the shims' layer image cache (HCSSHIM_LAYER_CACHE)
        self.uvm_root = Path(uvm_run_root_of_state(str(self.state)))  # the run dirs of this instance's VMs
        sockdir = self.workdir / "sock"
        self._own_sockdir = len(str(sockdir / "containerd.sock.ttrpc")) > MAX_SOCKET_PATH
        if self._own_sockdir:  # a short, per-workdir directory, created by start() and removed by stop()
            digest = hashlib.sha256(str(self.workdir).encode()).hexdigest()
            sockdir = Path("/tmp") / f"containerd-{digest[:16]}"
        self.sockdir = sockdir
        self.address = str(sockdir / "containerd.sock")
        self.ttrpc_address = self.address + ".ttrpc"
        self._ctr = build.ctr if build is not None else _which("ctr")
        self._containerd = build.containerd if build is not None else _which("containerd")
        self.version = build.version if build is not None else ""  # "" for the system's (1.6)
        self.major = int(self.version.split(".")[0]) if self.version[:1].isdigit() else 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: int | None = None
        self._task_ids: set[tuple[str, str]] = set()  # (namespace, id) of every task seen
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> Containerd:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def env(self) -> dict[str, str]:
        """containerd's environment: ours plus `env`, with `path_prepend` first on PATH."""
        env = dict(os.environ)
        env["HCSSHIM_LAYER_CACHE"] = str(self.layer_cache)
        env.update(self.extra_env)
        path = env.get("PATH") or DEFAULT_PATH
        env["PATH"] = os.pathsep.join([*self.path_prepend, path])
        return env

    def config_toml(self) -> str:
        def q(s: object) -> str:
            return json.dumps(str(s))  # TOML basic strings accept JSON string escapes

        # 2.x: config version 3, and CRI is three plugins (images, runtime, the gRPC service)
        cri = ('"io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"'
               if self.major >= 2 else '"io.containerd.grpc.v1.cri"')
        return "\n".join([
            f"version = {3 if self.major >= 2 else 2}",
            f"root = {q(self.root)}",
            f"state = {q(self.state)}",
            f"disabled_plugins = [{cri}, \"io.containerd.snapshotter.v1.aufs\",",
            '  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",',
            '  "io.containerd.snapshotter.v1.devmapper"]',
            "",
            "[grpc]",
            f"  address = {q(self.address)}",
            "",
            "[ttrpc]",
            f"  address = {q(self.ttrpc_address)}",
            "",
            "[debug]",
            '  address = ""',
            f"  level = {q('debug' if self.debug else 'info')}",
            "",
            "[metrics]",
            '  address = ""',
            "",
            *([] if self.major >= 2 else [  # 2.x has no opt plugin
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {q(self.root / 'opt')}",
                ""]),
        ])

    def start(self, timeout: float = 20) -> None:
        """Write config.toml, start containerd and wait until `ctr version` answers."""
        if self._proc is not None:
            raise ContainerdError(f"containerd {self.workdir}: start: already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        self.state.mkdir(exist_ok=True)
        self.config.write_text(self.config_toml())
        self._log_file = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._stopped = False
        try:
            self._proc = subprocess.Popen(
                [self._containerd, "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
                cwd="/", env=self.env(), start_new_session=True,
            )
        finally:
            os.close(self._log_file)
            self._log_file = None
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self._proc.poll() is not None:
                raise ContainerdError(f"containerd {self.workdir}: start: exited with status "
                                      f"{self._proc.returncode}\n{self.log_tail()}")
            if os.path.exists(self.address):
                r = subprocess.run([self._ctr, "-a", self.address, "version"], capture_output=True,
                                   timeout=max(1.0, deadline - time.monotonic()))
                if r.returncode == 0:
                    return
                last = r.stderr.decode(errors="replace")
            if time.monotonic() > deadline:
                raise ContainerdError(f"containerd {self.workdir}: start: no answer to `ctr version` "
                                      f"after {timeout}s: {last.strip()}\n{self.log_tail()}")
            time.sleep(0.02)

    def restart(self, timeout: float = 20) -> None:
        """Stop containerd alone (SIGTERM; shims and tasks keep running) and start it again on the same dirs."""
        self._stop_daemon()
        self._proc = None
        self.start(timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of containerd.log, without the plugin-loading chatter."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read().decode(errors="replace")
        except OSError:
            return "(no containerd.log)"
        kept = [line for line in data.splitlines() if 'msg="loading plugin' not in line]
        return "\n".join(kept[-lines:])

    # -- ctr ----------------------------------------------------------------------------------------

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 60, check: bool = True,
            namespace: str = "default", tty: bool = False) -> subprocess.CompletedProcess[bytes]:
        """Run `ctr -a <address> -n <namespace> <args>`; raise CtrError if `check` and it fails.

        With `tty`, ctr's stdin, stdout and stderr are a new pseudo-terminal (ctr -t needs one); the
        terminal's output is returned as stdout, and `input` is typed into it.
        """
        cmd = [self._ctr, "-a", self.address, "-n", namespace, *self._with_fifo_dir(args)]
        if tty:
            result = self._ctr_tty(cmd, input, timeout)
        else:
            try:
                result = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                                        stdin=None if input is not None else subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                raise CtrError(cmd, None, _b(e.stdout), _b(e.stderr), self.log_tail(),
                               reason=f"timed out after {timeout}s") from None
        if check and result.returncode != 0:
            raise CtrError(cmd, result.returncode, result.stdout, result.stderr, self.log_tail())
        return result

    def _with_fifo_dir(self, args: Sequence[str]) -> list[str]:
        """Put ctr's stdio FIFOs under the work directory (instead of the shared /run/containerd/fifo)
        for `run`, `task start` and `task exec`: a detached task or a killed ctr leaves them there, and
        stop() removes them with the rest."""
        args = list(args)
        if "--fifo-dir" in args or any(a.startswith("--fifo-dir=") for a in args):
            return args
        if args[:1] == ["run"]:
            at = 1
        elif len(args) >= 2 and args[0] in ("task", "tasks", "t") and args[1] in ("start", "exec"):
            at = 2
        else:
            return args
        self.fifo_dir.mkdir(parents=True, exist_ok=True)
        return [*args[:at], "--fifo-dir", str(self.fifo_dir), *args[at:]]

    def _ctr_tty(self, cmd: list[str], input: bytes | None, timeout: float
                 ) -> subprocess.CompletedProcess[bytes]:
        import fcntl
        import pty
        import select
        import struct
        import termios

        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        try:
            proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        finally:
            os.close(slave)
        out = bytearray()
        deadline = time.monotonic() + timeout
        try:
            if input:
                os.write(master, input)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    raise CtrError(cmd, None, bytes(out), b"", self.log_tail(),
                                   reason=f"timed out after {timeout}s")
                ready, _, _ = select.select([master], [], [], min(left, 0.1))
                if ready:
                    try:
                        data = os.read(master, 65536)
                    except OSError:  # EIO: every holder of the terminal closed it
                        data = b""
                    if not data:
                        break
                    out += data
                elif proc.poll() is not None:
                    # ctr exited; a container may still hold the terminal's other end, so drain briefly.
                    ready, _, _ = select.select([master], [], [], 0.05)
                    if not ready:
                        break
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return subprocess.CompletedProcess(cmd, rc, bytes(out), b"")

    def import_image(self, tar: Path, ref: str) -> str:
        """`ctr images import` an image-layout tar whose index names `ref`; return `ref`."""
        self.ctr("images", "import", str(tar), timeout=120)
        names = self.ctr("images", "ls", "-q").stdout.decode().split()
        if ref not in names:
            raise ContainerdError(f"import image {tar}: {ref} missing after import (have: {names})")
        return ref

    # -- what belongs to this instance --------------------------------------------------------------

    def _bundles(self) -> list[Path]:
        """Task bundle directories: <state>/io.containerd.runtime.v2.task/<ns>/<id>."""
        base = self.state / TASK_DIR
        try:
            return sorted(b for ns in base.iterdir() if ns.is_dir() for b in ns.iterdir())
        except OSError:
            return []

    def _work_dirs(self) -> list[Path]:
        base = self.root / TASK_DIR
        try:
            return sorted(b for ns in base.iterdir() if ns.is_dir() for b in ns.iterdir())
        except OSError:
            return []

    def _refers_to_me(self, argv: Sequence[str]) -> bool:
        if not argv:
            return False
        if _flag(argv, "address") == self.address:
            return True
        prefixes = (str(self.workdir) + "/", str(self.sockdir) + "/", str(self.uvm_root) + "/")
        return any(a == str(self.workdir) or any(p in a for p in prefixes) for a in argv)

    def _my_processes(self) -> dict[int, list[str]]:
        """Processes of this instance other than containerd: shims and whatever names our directories."""
        skip = _ancestors()
        if self._proc is not None:
            skip.add(self._proc.pid)
        found = {}
        for pid in _pids():
            if pid in skip:
                continue
            argv = _cmdline(pid)
            if self._refers_to_me(argv):
                found[pid] = argv
        return found

    def _learn_task_ids(self, procs: Mapping[int, Sequence[str]] | None = None) -> None:
        """Remember (namespace, id) of tasks from bundles, shim command lines and containerd.log."""
        for b in self._bundles():
            self._task_ids.add((b.parent.name, b.name))
        for b in self._work_dirs():
            self._task_ids.add((b.parent.name, b.name))
        for argv in (procs if procs is not None else self._my_processes()).values():
            ns, tid = _flag(argv, "namespace"), _flag(argv, "id")
            if ns and tid:
                self._task_ids.add((ns, tid))
        marker = f"{self.state}/{TASK_DIR}/"
        try:
            with open(self.log, errors="replace") as f:
                for line in f:
                    i = line.find(marker)
                    while i >= 0:
                        rest = line[i + len(marker):].split("/", 2)
                        if len(rest) >= 2:
                            tid = rest[1]
                            for stop in ' "\\,;)':
                                tid = tid.split(stop, 1)[0]
                            if rest[0] and tid:
                                self._task_ids.add((rest[0], tid))
                        i = line.find(marker, i + 1)
        except OSError:
            pass

    def _shim_socket_paths(self, procs: Mapping[int, Sequence[str]]) -> set[Path]:
        """Socket files this instance's shims own or owned in /run/containerd/s (or named in bundles)."""
        paths = set()
        for ns, tid in self._task_ids:
            digest = hashlib.sha256(f"{self.address}/{ns}/{tid}".encode()).hexdigest()
            paths.add(SHIM_SOCKET_DIR / digest)
        for b in self._bundles():
            try:
                addr = (b / "address").read_text().strip()
            except OSError:
                continue
            if addr.startswith("unix://"):
                paths.add(Path(addr[7:]))
        bound = _listening_unix_sockets()
        for pid in procs:
            for inode in _socket_inodes(pid):
                p = bound.get(inode, "")
                if p.startswith("/") and not p.startswith(str(self.workdir) + "/"):
                    paths.add(Path(p))
        return paths

    def _runc_roots(self) -> list[tuple[Path, bool]]:
        """(runc root, shared?) pairs: the runc shim's shared roots and our shim's private ones."""
        roots: list[tuple[Path, bool]] = []
        for base, shared in ((RUNC_SHIM_ROOT, True), (self.state / "runhcs" / "runc", False)):
            try:
                roots += [(p, shared) for p in sorted(base.iterdir()) if p.is_dir()]
            except OSError:
                pass
        return roots

    def _runc_containers(self) -> list[tuple[Path, str, int, str]]:
        """(root, id, pid, status) of runc containers of this instance."""
        runc = shutil.which("runc") or shutil.which("runc", path=DEFAULT_PATH)
        if runc is None:
            return []
        found = []
        mine = str(self.workdir) + "/"
        for root, shared in self._runc_roots():
            try:
                r = subprocess.run([runc, "--root", str(root), "list", "--format", "json"],
                                   capture_output=True, timeout=30)
                items = json.loads(r.stdout or b"null") or []
            except (OSError, subprocess.SubprocessError, ValueError):
                continue
            for c in items:
                if not shared or str(c.get("bundle", "")).startswith(mine):
                    found.append((root, str(c.get("id")), int(c.get("pid") or 0), str(c.get("status"))))
        return found

    def leftovers(self, settle: float = 2.0) -> list[str]:
        """Everything of this instance still present besides containerd itself, one line each.

        containerd finishes some cleanup just after a client returns (in 1.6 it runs the shim's `delete`
        action after every shim disconnect), so a non-empty answer is re-checked for up to `settle` seconds.
        """
        deadline = time.monotonic() + settle
        while True:
            found = self._leftovers_now()
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def forkserver_pids(self) -> list[int]:
        """The shim fork server(s) of this instance (see hcsshim.shim.forkserver): they live as long as
        containerd does, so they are not leftovers while it runs."""
        return sorted(pid for pid, argv in self._my_processes().items() if "forkserver" in argv[1:])

    def stop_forkserver(self, timeout: float = 5.0) -> None:
        """SIGTERM to the shim's fork server (it kills its spare), waiting until it is gone: the next task of
        this containerd gets a cold daemon, which starts a new fork server."""
        pids = self.forkserver_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while self.forkserver_pids() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _leftovers_now(self) -> list[str]:
        procs = self._my_processes()
        if self._proc is not None and self._proc.poll() is None:
            for pid in self.forkserver_pids():
                procs.pop(pid, None)
        self._learn_task_ids(procs)
        out = [f"process {pid}: {' '.join(argv)}" for pid, argv in sorted(procs.items())]
        out += [f"runc container {cid} (root {root}, pid {pid}, {status})"
                for root, cid, pid, status in self._runc_containers()]
        out += [f"mount {m}" for m in _mounts_under(self.workdir, self.sockdir, self.uvm_root)]
        try:
            out += [f"utility VM run dir {d}" for d in sorted(self.uvm_root.iterdir())]
        except OSError:
            pass
        out += [f"layer cache {what}" for what in self._layer_cache_leftovers()]
        for b in self._bundles():
            try:
                names = sorted(os.listdir(b))
            except OSError:
                names = []
            out.append(f"task bundle {b}: {', '.join(names) or '(empty)'}")
        out += [f"task work dir {w}" for w in self._work_dirs()]
        try:
            out += [f"ctr fifo dir {d}: {', '.join(sorted(os.listdir(d)))}"
                    for d in sorted(self.fifo_dir.iterdir())]
        except OSError:
            pass
        out += [f"shim socket {p}" for p in sorted(self._shim_socket_paths(procs))
                if os.path.lexists(p)]
        return out

    def _layer_cache_leftovers(self) -> list[str]:
        """References still held in this instance's layer cache, and temp files of unfinished builds (finished
        images are meant to stay: that is the cache)."""
        found = []
        refs = self.layer_cache / "refs"
        try:
            found += [f"reference {k.name}/{h.name}" for k in sorted(refs.iterdir()) for h in sorted(k.iterdir())]
        except OSError:
            pass
        for sub in ("images", "scratch"):
            try:
                found += [f"temp file {sub}/{f.name}" for f in sorted((self.layer_cache / sub).iterdir())
                          if f.name.endswith(".tmp")]
            except OSError:
                pass
        return found

    # -- stop and cleanup ---------------------------------------------------------------------------

    def stop(self, *, keep: bool = False) -> None:
        """Stop containerd and remove everything of this instance (see the module docstring).

        With `keep`, config.toml and containerd.log stay in the work directory (root and state go).
        Raises ContainerdError if something could not be removed.
        """
        if self._stopped:
            return
        problems: list[str] = []
        procs = self._my_processes()
        self._learn_task_ids(procs)
        sockets = self._shim_socket_paths(procs)
        forkservers = self.forkserver_pids()
        self._stop_daemon()
        # A fork server exits by itself when containerd goes (it holds a connection to containerd).
        deadline = time.monotonic() + 3
        while (alive := [p for p in forkservers if _cmdline(p)]) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive:
            problems.append(f"shim fork server(s) {alive} still running after containerd stopped")
        self._delete_bundles(problems)
        procs = self._my_processes()
        self._learn_task_ids(procs)
        sockets |= self._shim_socket_paths(procs)
        self._kill(procs)
        for root, cid, _pid, _status in self._runc_containers():
            r = subprocess.run(["runc", "--root", str(root), "delete", "--force", cid],
                               capture_output=True, timeout=30)
            if r.returncode != 0:
                problems.append(f"runc --root {root} delete --force {cid}: {r.stderr.decode().strip()}")
        self._kill(self._my_processes())
        self._unmount_all(problems)
        alive = set(_listening_unix_sockets().values())
        for p in sorted(sockets):
            if os.path.lexists(p) and str(p) not in alive:
                try:
                    os.unlink(p)
                except OSError as e:
                    problems.append(f"remove shim socket {p}: {e.strerror}")
        self._remove_files(keep, problems)
        self._stopped = True
        if problems:
            raise ContainerdError(f"containerd {self.workdir}: stop: " + "; ".join(problems))

    def _stop_daemon(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _delete_bundles(self, problems: list[str]) -> None:
        """Run each bundle's shim with `delete`, as containerd does when it cleans up after a dead shim."""
        for b in self._bundles():
            try:
                shim = (b / "shim-binary-path").read_text().strip()
            except OSError:
                continue
            ns, tid = b.parent.name, b.name
            cmd = [shim, "-namespace", ns, "-address", self.address, "-publish-binary", self._containerd,
                   "-id", tid, "-bundle", str(b), "delete"]
            env = self.env()
            env["TTRPC_ADDRESS"] = self.ttrpc_address
            try:
                subprocess.run(cmd, cwd=b, env=env, capture_output=True, timeout=15,
                               stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as e:
                problems.append(f"shim delete {ns}/{tid}: {e}")

    @staticmethod
    def _kill(procs: Iterable[int]) -> None:
        pids = list(procs)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for pid in pids:
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and not _zombie(pid):
                time.sleep(0.01)

    def _unmount_all(self, problems: list[str]) -> None:
        for mp in _mounts_under(self.workdir, self.sockdir, self.uvm_root):
            r = subprocess.run(["umount", mp], capture_output=True)
            if r.returncode != 0:
                r = subprocess.run(["umount", "-l", mp], capture_output=True)
                if r.returncode != 0:
                    problems.append(f"umount {mp}: {r.stderr.decode().strip()}")

    def _remove_files(self, keep: bool, problems: list[str]) -> None:
        if self._own_sockdir or keep:
            shutil.rmtree(self.sockdir, ignore_errors=True)
        targets = [self.root, self.state, self.fifo_dir] if keep else [self.workdir]
        targets.append(self.uvm_root)
        for t in targets:
            try:
                shutil.rmtree(t)
            except FileNotFoundError:
                pass
            except OSError as e:
                problems.append(f"remove {t}: {e}")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _b(x: bytes | str | None) -> bytes:
    if x is None:
        return b""
    return x.encode() if isinstance(x, str) else x
