"""An async wrapper of the runc command line: one method per runc command, errors as RuncError.

Every call runs ``runc --root <root> --log <pipe> --log-format json [--systemd-cgroup] [--debug] <command>``
through a waiter (a `Reaper` or, by default, a `PidfdWaiter`): the process is spawned and waited through
the waiter, never with asyncio's subprocess machinery.

runc's log goes to a pipe of ours that runc opens by path (``/proc/<our pid>/fd/<n>``): the fd is not
inherited by runc, so neither runc's children nor the container hold it, there is no file to clean up and
nothing touches the disk.  When runc fails, the reason is the message of its last error-level log entry
(else its stderr, else its exit status).  With ``log_dir`` the log lines are also appended to
``<log_dir>/<id>.log.json`` (``runc.log.json`` for commands without a container), and with ``debug`` they
are forwarded to this module's logger.

Container stdio (create, exec): runc hands its own stdio to a non-terminal process, so the given fds become
runc's 0/1/2 (/dev/null when not given) and runc's own error messages on stderr land there too, as with
containerd's runc shim.  With a console socket the process gets a terminal instead; the socket is created
and served by the caller.

The process spec of `exec` is written to a memfd that runc opens by path, like the log pipe.

Construction is cheap: nothing runs until a method is awaited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from hcsshim.runc.reaper import DEVNULL, PidfdWaiter, PipeReader

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hcsshim.runc.reaper import Completed, Reaper

__all__ = ["Runc", "RuncError", "RuncNotFound"]

log = logging.getLogger(__name__)

_NOT_FOUND = "does not exist"


class RuncError(Exception):
    """A runc command failed: "runc <command> <id>: <reason>".

    command: the runc command ("create"); id: the container id ("" for list); status: runc's exit status
    (None when runc exited 0 but its result was unusable); output: what runc wrote to its log and stderr.
    """

    def __init__(
        self, command: str, id: str, reason: str, *, status: int | None = None, output: bytes = b""
    ) -> None:
        self.command = command
        self.id = id
        self.reason = reason
        self.status = status
        self.output = output
        where = f"runc {command} {id}" if id else f"runc {command}"
        super().__init__(f"{where}: {reason}")


class RuncNotFound(RuncError):
    """The container does not exist."""


def _reason(command: str, log_data: bytes, stderr: bytes, status: int) -> str:
    """runc's last error from its JSON log, else the last line of its stderr, else the exit status."""
    reason = ""
    for line in log_data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            reason = str(entry.get("msg", "")).strip()
    if not reason:
        lines = stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1].strip() if lines else ""
    if not reason:
        return f"exit status {status}"
    prefix = f"runc {command} failed: "  # runc's own wrapping of the error, redundant in our message
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _read_pid(command: str, id: str, pid_file: str) -> int:
    try:
        with open(pid_file, "rb") as f:
            return int(f.read().strip())
    except (OSError, ValueError) as e:
        raise RuncError(command, id, f"read pid file {pid_file}: {e}") from e


def _load_json(command: str, id: str, result: Completed) -> Any:
    try:
        return json.loads(result.stdout)
    except ValueError as e:
        raise RuncError(command, id, f"bad JSON output: {e}", output=result.stdout) from e


class Runc:
    """runc commands against one state root (``--root``); see the module docstring."""

    __slots__ = ("_global", "binary", "debug", "log_dir", "reaper", "root", "systemd_cgroup")

    def __init__(
        self,
        root: str,
        *,
        binary: str = "runc",
        reaper: Reaper | PidfdWaiter | None = None,
        log_dir: str | None = None,
        systemd_cgroup: bool = False,
        debug: bool = False,
    ) -> None:
        self.root = root
        self.binary = binary
        self.reaper = reaper if reaper is not None else PidfdWaiter()
        self.log_dir = log_dir
        self.systemd_cgroup = systemd_cgroup
        self.debug = debug
        flags = [binary, "--root", root]
        if systemd_cgroup:
            flags.append("--systemd-cgroup")
        if debug:
            flags.append("--debug")
        self._global = flags

    def __repr__(self) -> str:
        return f"Runc(root={self.root!r}, binary={self.binary!r})"

    async def _call(
        self,
        command: str,
        id: str,
        args: Sequence[str],
        *,
        input: bytes | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> Completed:
        """Run `runc <command> <args>`; RuncError (RuncNotFound for a missing container) unless it exits 0."""
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        try:
            logs = PipeReader(loop, r)
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        try:
            argv = [*self._global[:3], "--log", f"/proc/{os.getpid()}/fd/{w}", "--log-format", "json",
                    *self._global[3:], command, *args]
            result = await self.reaper.run(argv, input=input, stdin=stdin, stdout=stdout, stderr=stderr)
        finally:
            os.close(w)
            log_data = logs.finish()
        if log_data:
            self._keep_log(id, log_data)
        if result.status != 0:
            reason = _reason(command, log_data, result.stderr, result.status)
            cls = RuncNotFound if _NOT_FOUND in reason else RuncError
            raise cls(command, id, reason, status=result.status, output=log_data + result.stderr)
        return result

    def _keep_log(self, id: str, data: bytes) -> None:
        if self.debug:
            for line in data.splitlines():
                log.debug("runc: %s", line.decode(errors="replace"), extra={"container": id})
        if self.log_dir is not None:
            path = os.path.join(self.log_dir, f"{id or 'runc'}.log.json")
            with open(path, "ab") as f:
                f.write(data if data.endswith(b"\n") else data + b"\n")

    async def create(
        self,
        id: str,
        bundle: str,
        *,
        pid_file: str,
        console_socket: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        no_pivot: bool = False,
        no_new_keyring: bool = False,
    ) -> int:
        """`runc create`: returns the container init's pid (read from pid_file once runc exited 0).

        The init's stdio are the given fds (/dev/null when not given) unless the bundle asks for a terminal,
        which runc then sends to console_socket.  The init may exit before this returns; with a Reaper,
        take ``t = loop.time()`` before the call and watch with ``reaper.watch(pid, since=t)`` to get
        that early exit and never a stale one of an earlier process with the same pid.
        """
        args = ["--bundle", bundle, "--pid-file", pid_file]
        if console_socket is not None:
            args += ["--console-socket", console_socket]
        if no_pivot:
            args.append("--no-pivot")
        if no_new_keyring:
            args.append("--no-new-keyring")
        args.append(id)
        await self._call("create", id, args, **_stdio(stdin, stdout, stderr))
        return _read_pid("create", id, pid_file)

    async def start(self, id: str) -> None:
        """`runc start`: run the user process of a created container."""
        await self._call("start", id, [id])

    async def exec(
        self,
        id: str,
        process: dict[str, Any],
        *,
        pid_file: str,
        console_socket: str | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        detach: bool = True,
    ) -> int:
        """`runc exec --process <spec>`: start an OCI process spec in a running container; returns its pid.

        With detach=False runc stays the process's parent and this call returns only once the process has
        exited: the result is then the process's exit status (runc relays it), not its pid.
        """
        spec = os.memfd_create("runc-process", os.MFD_CLOEXEC)
        try:
            os.write(spec, json.dumps(process).encode())
            args = ["--process", f"/proc/{os.getpid()}/fd/{spec}", "--pid-file", pid_file]
            if detach:
                args.append("--detach")
            if console_socket is not None:
                args += ["--console-socket", console_socket]
            args.append(id)
            if detach:
                await self._call("exec", id, args, **_stdio(stdin, stdout, stderr))
                return _read_pid("exec", id, pid_file)
            try:
                await self._call("exec", id, args, **_stdio(stdin, stdout, stderr))
            except RuncError as e:
                if e.status is None or _has_error(e.output):
                    raise
                return e.status
            return 0
        finally:
            os.close(spec)

    async def kill(self, id: str, signal: int, *, all: bool = False) -> None:
        """`runc kill`: send signal to the init (or, with all, to every process of the container)."""
        args = ["--all"] if all else []
        await self._call("kill", id, [*args, id, str(int(signal))])

    async def delete(self, id: str, *, force: bool = False) -> None:
        """`runc delete`: with force, kill a running container first and accept one that does not exist."""
        try:
            await self._call("delete", id, ["--force", id] if force else [id])
        except RuncNotFound:
            if not force:
                raise

    async def state(self, id: str) -> dict[str, Any]:
        """`runc state`: the container's state document; RuncNotFound when it does not exist."""
        return _load_json("state", id, await self._call("state", id, [id]))

    async def list(self) -> list[dict[str, Any]]:
        """`runc list --format json`: the state of every container in the root."""
        return _load_json("list", "", await self._call("list", "", ["--format", "json"])) or []

    async def ps(self, id: str) -> list[int]:
        """`runc ps --format json`: the pids of the container's processes."""
        pids = _load_json("ps", id, await self._call("ps", id, ["--format", "json", id]))
        return [int(p) for p in pids or ()]

    async def pause(self, id: str) -> None:
        """`runc pause`: freeze every process of the container."""
        await self._call("pause", id, [id])

    async def resume(self, id: str) -> None:
        """`runc resume`: thaw a paused container."""
        await self._call("resume", id, [id])

    async def update(self, id: str, resources: dict[str, Any]) -> None:
        """`runc update --resources -`: apply OCI LinuxResources (e.g. {"memory": {"limit": N}})."""
        await self._call("update", id, ["--resources", "-", id], input=json.dumps(resources).encode())

    async def stats(self, id: str) -> dict[str, Any]:
        """`runc events --stats`: the "data" object of the stats event (cpu, memory, pids, blkio, ...)."""
        event = _load_json("events", id, await self._call("events", id, ["--stats", id]))
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            raise RuncError("events", id, f"unexpected stats event: {event!r}")
        return event["data"]


def _stdio(stdin: int | None, stdout: int | None, stderr: int | None) -> dict[str, int]:
    """runc's own stdio for create/exec: the given fds, else /dev/null."""
    return {
        "stdin": DEVNULL if stdin is None else stdin,
        "stdout": DEVNULL if stdout is None else stdout,
        "stderr": DEVNULL if stderr is None else stderr,
    }


def _has_error(output: bytes) -> bool:
    """Whether runc logged an error of its own (as opposed to relaying a process's exit status)."""
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal", "panic"):
            return True
    return False
