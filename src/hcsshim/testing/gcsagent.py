"""The guest agent as a local subprocess for tests and benchmarks: a private state root, a private `unix:`
socket directory (or a pipe pair for the `mux:` transport) and a private cgroup parent, and a check that
nothing is left behind once it stopped (runc containers, mounts, sockets, cgroups, processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["GcsAgent"]


T = TypeVar("T")


class GcsAgent:
    """`gcs` started with -root <base>/root and -transport unix:<base>/sock (or mux over a pipe pair).

    start() launches it; stop() sends SIGTERM (then SIGKILL after `timeout`); leftovers() lists what it
    left behind. The host side connects with `GuestConnection.connect(agent.host_transport())`.
    """

    def __init__(self, base: Path, *, mux: bool = False, extra_args: tuple[str, ...] = (),
                 loglevel: str = "debug") -> None:
        self.base = Path(base)
        self.root = self.base / "root"
        self.sockets = self.base / "sock"
        self.logfile = self.base / "gcs.log"
        self.cgroup_parent = f"/hcsshim-gcs-test-{secrets.token_hex(4)}"
        self.mux = mux
        self.extra_args = extra_args
        self.loglevel = loglevel
        self.proc: subprocess.Popen[bytes] | None = None
        self._host_fds: tuple[int, int] | None = None  # (read, write) of the host's end of the mux pipes

    def argv(self, transport: str) -> list[str]:
        return [sys.executable, "-m", "hcsshim.guest.main", "-v4", "-loglevel", self.loglevel,
                "-logfile", str(self.logfile), "-transport", transport, "-root", str(self.root),
                "-cgroup-parent", self.cgroup_parent, *self.extra_args]

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self.mux:
            g_r, h_w = os.pipe()
            h_r, g_w = os.pipe()
            try:
                self.proc = subprocess.Popen(self.argv(f"mux:fd={g_r},{g_w}"), pass_fds=(g_r, g_w))
            finally:
                os.close(g_r)
                os.close(g_w)
            self._host_fds = (h_r, h_w)
        else:
            self.proc = subprocess.Popen(self.argv(f"unix:{self.sockets}"))

    def host_transport(self):  # -> Transport (imported lazily: hcsshim.transport is stdlib-only anyway)
        if self.mux:
            from hcsshim.transport.mux import MuxTransport

            assert self._host_fds is not None
            r, w = self._host_fds
            self._host_fds = None
            return MuxTransport(r, w, role="host")
        from hcsshim.transport import UnixTransport

        return UnixTransport(str(self.sockets))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait (the agent removes its containers and mounts), SIGKILL if it does not exit."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._host_fds is not None:
            for fd in self._host_fds:
                os.close(fd)
            self._host_fds = None
        return proc.returncode

    def run_until_powered_off(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """asyncio.run(main()) (a scenario that ends by powering the agent off), then the agent must exit 0;
        on failure the agent's log is printed to help the reader."""
        import asyncio

        try:
            result = asyncio.run(main())
        except BaseException:
            print(self.log()[-6000:])
            raise
        assert self.wait() == 0
        return result

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def leftovers(self) -> list[str]:
        """What the stopped agent left behind under its root, socket dir and cgroup parent."""
        found: list[str] = []
        runc_root = self.root / "runc"
        if runc_root.is_dir():
            out = subprocess.run(["runc", "--root", str(runc_root), "list", "--format", "json"],
                                 capture_output=True, text=True)
            for c in json.loads(out.stdout or "null") or []:
                found.append(f"runc container {c.get('id')} ({c.get('status')})")
        base = str(self.base.resolve())
        with open("/proc/self/mounts") as f:
            for line in f:
                target = line.split()[1]
                if target == base or target.startswith(base + "/"):
                    found.append(f"mount {target}")
        if self.sockets.is_dir():
            found += [f"socket {p}" for p in self.sockets.iterdir()]
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            with contextlib.suppress(OSError), open(f"/proc/{name}/cgroup") as f:
                if self.cgroup_parent + "/" in f.read():
                    found.append(f"process {name} in cgroup {self.cgroup_parent}")
        for ctrl in ("memory", "pids", "cpu", "freezer", "devices", "unified", "systemd"):
            p = Path("/sys/fs/cgroup") / ctrl / self.cgroup_parent.lstrip("/")
            if p.exists():
                found.append(f"cgroup {p}")
        return found

    def cleanup(self) -> None:
        """Last resort after a failed test: kill runc containers of the root, unmount, remove cgroups."""
        self.stop()
        runc_root = self.root / "runc"
        if runc_root.is_dir():
            out = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"], capture_output=True, text=True)
            for cid in out.stdout.split():
                subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True)
        base = str(self.base.resolve())
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1] for line in f]
        for target in reversed(targets):
            if target == base or target.startswith(base + "/"):
                subprocess.run(["umount", "-l", target], capture_output=True)
        for ctrl in os.listdir("/sys/fs/cgroup"):
            p = Path("/sys/fs/cgroup") / ctrl / self.cgroup_parent.lstrip("/")
            if p.is_dir():
                for child in sorted(p.glob("**/"), key=lambda x: -len(str(x))):
                    with contextlib.suppress(OSError):
                        child.rmdir()


@contextlib.contextmanager
def running_agent(base: Path, **kw: object) -> Iterator[GcsAgent]:
    """A started agent; on a clean exit of the block it is stopped and must have left nothing behind, and in
    every case its files are removed."""
    agent = GcsAgent(base, **kw)  # type: ignore[arg-type]
    agent.start()
    try:
        yield agent
        agent.stop()
        leftovers = agent.leftovers()
        assert not leftovers, f"the agent left these behind: {leftovers}\n{agent.log()[-4000:]}"
    finally:
        agent.cleanup()
