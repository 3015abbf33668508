"""One QEMU machine of the Linux backend, as its owner (the process that started it) or as an opener (another
process that opened the system by id) drives it: the process, its QMP connection, its exit, and saving and
restoring its state.

`Machine` states::

    CREATED --start()--> RUNNING          the owner listens on qmp.sock, spawns QEMU (setpriv: a parent-death
                                          signal when the document asks ShouldTerminateOnLastHandleClosed),
                                          records its pid and start time (procfs.PidRecord) and waits for QMP;
                                          a machine with a saved state to start from loads it first (-incoming
                                          defer, migrate-incoming) and then runs (cont)
    (opened) --attach()--> RUNNING        an opener connects to control.sock (QEMU's second monitor) and
                                          watches QEMU's exit through a pidfd
    RUNNING --pause()--> PAUSED --resume()--> RUNNING     QMP stop / cont
    RUNNING | PAUSED --save(path)--> PAUSED               QMP stop, then the state written to path
    RUNNING | PAUSED --QEMU exits--> STOPPED              `exit_type`: ForcedExit after terminate(),
                                                          GracefulExit after shutdown(), else UnexpectedExit
    any --close()--> CLOSED               the QMP connection and the exit watch go; QEMU is not touched

Who asked for the exit is recorded in ``<system dir>/stopping`` before the request is sent, so every process
watching the machine gives the same ExitType. The owner's exit watch is its waiter's (QEMU is its child);
an opener's is a pidfd of the recorded pid, checked against the recorded start time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import signal
import socket
from collections.abc import Callable

from qemu.qmp import QMPClient

from hcsshim.hcs.linux import procfs
from hcsshim.hcs.linux.document import MachineConfig
from hcsshim.hcs.linux.hvsock import HVSOCK_DIR
from hcsshim.hcs.linux.qemu import CONTROL_QMP, OWNER_QMP, argv
from hcsshim.runc.reaper import DEVNULL, Child, PidfdWaiter, Reaper

__all__ = ["Machine", "MachineError", "MachineState", "restore_state", "save_state"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # seconds for QEMU to start and dial its monitor
QMP_TIMEOUT = 10.0
OPEN_TIMEOUT = 5.0  # seconds for the control monitor to greet an opener (it serves one process at a time)
TERMINATE_GRACE = 5.0  # seconds between QMP quit and SIGKILL
MIGRATION_TIMEOUT = 60.0
STOPPING = "stopping"  # <system dir>/stopping: the ExitType a requested stop gives

GRACEFUL_EXIT = "GracefulExit"
FORCED_EXIT = "ForcedExit"
UNEXPECTED_EXIT = "UnexpectedExit"


class MachineError(Exception):
    """A machine operation failed; the message names the system and the operation."""


class MachineState(enum.Enum):
    CREATED = "Created"
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    CLOSED = "Closed"


class Machine:
    """One QEMU machine (module docstring). `on_exit(status, exit_type)` is called once, when QEMU has exited."""

    def __init__(self, cfg: MachineConfig, system_dir: str, *, waiter: Reaper | PidfdWaiter | None = None,
                 on_exit: Callable[[int, str], None] | None = None) -> None:
        self.cfg = cfg
        self.dir = system_dir
        self.waiter = waiter
        self.on_exit = on_exit
        self.state = MachineState.CREATED
        self.accel: str | None = None
        self.pid: int | None = None
        self.child: Child | None = None
        self.qmp: QMPClient | None = None
        self.exit_status: int | None = None
        self.exit_type = ""
        self.exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        self._unanswered: list[socket.socket] = []  # host ends of services nobody listens on (see start)

    def __repr__(self) -> str:
        return f"Machine({self.cfg.id!r}, {self.state.value}, pid {self.pid})"

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _err(self, op: str, exc: BaseException | str) -> MachineError:
        text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
        return MachineError(f"{op}: {text}")

    def client(self, op: str) -> QMPClient:
        if self.qmp is None or self.state in (MachineState.STOPPED, MachineState.CLOSED):
            raise self._err(op, f"the machine is {self.state.value.lower()}")
        return self.qmp

    # -- starting -------------------------------------------------------------------------------------------

    async def start(self, qemu: str, accel: str) -> None:
        """Spawns QEMU and waits for its monitor; restores the saved state first when there is one."""
        if self.state is not MachineState.CREATED:
            raise self._err("start", f"the machine is {self.state.value.lower()}")
        assert self.waiter is not None
        self.accel = accel
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(OWNER_QMP))
            listener.bind(self.path(OWNER_QMP))
            listener.listen(1)
            listener.setblocking(False)
            self._listen_unanswered()
            cmd = argv(qemu, self.cfg, self.dir, accel)
            if self.cfg.terminate_on_last_handle_closed:
                cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
            with open(self.path("qemu.log"), "wb") as qlog:
                self.child = await self.waiter.spawn(cmd, stdin=DEVNULL, stdout=qlog.fileno(), stderr=qlog.fileno(),
                                                     start_new_session=not self.cfg.terminate_on_last_handle_closed)
            self.pid = self.child.pid
            started = procfs.start_time(self.pid)  # setpriv execs QEMU: the same pid and start time
            if started is not None:
                procfs.PidRecord(self.pid, started).write(self.dir)
            self.state = MachineState.RUNNING
            self._watch = asyncio.get_running_loop().create_task(self._watch_child(),
                                                                 name=f"machine {self.cfg.id} exit")
            conn = await self._accept(listener)
        except BaseException as exc:
            listener.close()
            await self.kill()
            if isinstance(exc, (OSError, TimeoutError, MachineError)):
                raise self._err("start", self._why(exc)) from None
            raise
        listener.close()
        try:
            self.qmp = QMPClient(f"hcs-{self.cfg.id}")
            await asyncio.wait_for(self.qmp.connect(conn), CONNECT_TIMEOUT)
            if self.cfg.restore_from:
                await restore_state(self.qmp, self.cfg.restore_from, ignore_shared=self.cfg.memory_file is not None)
                await self.qmp.execute("cont")
        except BaseException as exc:
            await self.kill()
            if isinstance(exc, Exception):
                raise self._err("start", self._why(exc)) from None
            raise
        log.debug("machine %s: qemu pid %d (%s)", self.cfg.id, self.pid, accel)

    def _listen_unanswered(self) -> None:
        """A service nobody listens on gets a host end that never accepts, so QEMU can connect its port (it
        fails to start otherwise) and the guest's port is one whose peer never answers, as with hvsock."""
        for name in self.cfg.ports.values():
            path = os.path.join(self.dir, HVSOCK_DIR, name + ".sock")
            if os.path.exists(path):
                continue
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.bind(path)
            s.listen(1)
            self._unanswered.append(s)

    def _close_unanswered(self) -> None:
        for s in self._unanswered:
            s.close()
        self._unanswered.clear()

    async def _accept(self, listener: socket.socket) -> socket.socket:
        loop = asyncio.get_running_loop()
        accept = loop.create_task(loop.sock_accept(listener))
        died = loop.create_task(self.exited.wait())
        try:
            done, _ = await asyncio.wait([accept, died], timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if accept in done:
                conn, _ = accept.result()
                conn.setblocking(False)
                return conn
            if died in done:
                raise MachineError("QEMU exited while starting")
            raise TimeoutError(f"QEMU did not dial its monitor within {CONNECT_TIMEOUT:.0f} s")
        finally:
            accept.cancel()
            died.cancel()

    def _why(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        if self.exit_status is not None:
            tail = self.log_tail()
            text = f"QEMU exited with status {self.exit_status}" + (f": {tail}" if tail else "")
        return text

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.path("qemu.log"), errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
        except OSError:
            return ""

    async def _watch_child(self) -> None:
        assert self.child is not None
        self.mark_stopped(await self.child.wait())

    # -- opening from another process -----------------------------------------------------------------------

    async def attach(self, record: procfs.PidRecord) -> None:
        """Drives a machine another process started: its control monitor and a pidfd on its QEMU."""
        if not procfs.alive(record.pid, record.start_time):
            raise self._err("open", "QEMU is not running")
        self.pid = record.pid
        loop = asyncio.get_running_loop()
        try:
            self._pidfd = os.pidfd_open(record.pid)
        except OSError as exc:
            raise self._err("open", f"pidfd of QEMU (pid {record.pid}): {exc.strerror}") from None
        if not procfs.alive(record.pid, record.start_time):  # the pid was recycled before the pidfd was taken
            self._close_pidfd()
            raise self._err("open", "QEMU is not running")
        loop.add_reader(self._pidfd, self._pidfd_ready)
        self.state = MachineState.RUNNING
        self.qmp = QMPClient(f"hcs-open-{self.cfg.id}")
        try:
            await asyncio.wait_for(self.qmp.connect(self.path(CONTROL_QMP)), OPEN_TIMEOUT)
            status = await self.status()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                raise self._err("open", f"control monitor: {exc} (is another process driving it?)") from None
            raise
        if status == MachineState.PAUSED:
            self.state = MachineState.PAUSED

    def _pidfd_ready(self) -> None:
        self._close_pidfd()
        self.mark_stopped(-1)  # not our child: its status is its owner's to read

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def mark_stopped(self, status: int) -> None:
        """Records that QEMU has exited with `status` (-1: not ours to read) and tells on_exit, once."""
        if self.exited.is_set():
            return
        self._close_unanswered()
        self.exit_status = status
        self.exit_type = read_stopping(self.dir) or UNEXPECTED_EXIT
        if self.exit_type == UNEXPECTED_EXIT:
            tail = self.log_tail(2)
            log.warning("machine %s: QEMU exited unexpectedly with status %d%s", self.cfg.id, status,
                        f" ({tail})" if tail else "")
        if self.state is not MachineState.CLOSED:
            self.state = MachineState.STOPPED
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit(status, self.exit_type)

    # -- operations -----------------------------------------------------------------------------------------

    async def status(self) -> MachineState:
        """The machine's state as QEMU tells it (query-status)."""
        if self.exited.is_set():
            return MachineState.STOPPED
        info = await asyncio.wait_for(self.client("query status").execute("query-status"), QMP_TIMEOUT)
        running = isinstance(info, dict) and info.get("running")
        return MachineState.RUNNING if running else MachineState.PAUSED

    async def execute(self, op: str, command: str, arguments: dict | None = None,
                      timeout: float = QMP_TIMEOUT) -> object:
        """One QMP command; MachineError naming the operation (and QEMU's reason)."""
        qmp = self.client(op)
        try:
            return await asyncio.wait_for(qmp.execute(command, arguments), timeout)
        except Exception as exc:
            raise self._err(op, f"{command}: {exc}") from None

    async def pause(self) -> None:
        await self.execute("pause", "stop")
        if self.state is MachineState.RUNNING:
            self.state = MachineState.PAUSED

    async def resume(self) -> None:
        await self.execute("resume", "cont")
        if self.state is MachineState.PAUSED:
            self.state = MachineState.RUNNING

    async def shutdown(self) -> None:
        """Asks the guest to power off (ACPI); the machine stops when the guest has."""
        write_stopping(self.dir, GRACEFUL_EXIT)
        await self.execute("shutdown", "system_powerdown")

    async def save(self, path: str) -> None:
        """Pauses the machine and writes its state to `path` (its file-backed shared RAM left out)."""
        qmp = self.client("save")
        try:
            await save_state(qmp, path, ignore_shared=self.cfg.memory_file is not None and not self.cfg.memory_private)
        except MachineError:
            raise
        except Exception as exc:
            raise self._err("save", exc) from None
        if self.state is MachineState.RUNNING:
            self.state = MachineState.PAUSED

    async def terminate(self, grace: float = TERMINATE_GRACE) -> None:
        """Stops the machine: QMP quit, then SIGKILL after `grace` seconds; returns when QEMU has exited."""
        if self.pid is None or self.exited.is_set():
            return
        write_stopping(self.dir, FORCED_EXIT)
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp.execute("quit"), 2.0)
        try:
            await asyncio.wait_for(self._exit_or_close(), grace)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL and wait (no-op when QEMU never started or has exited)."""
        if self.pid is None or self.exited.is_set():
            return
        if not read_stopping(self.dir):
            write_stopping(self.dir, FORCED_EXIT)
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:  # an opener's: the pidfd cannot name a recycled pid
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        await self._exit_or_close()

    async def _exit_or_close(self) -> None:
        """Until QEMU has exited, or the machine is closed (an opener's close stops watching the exit)."""
        waits = [asyncio.ensure_future(self.exited.wait()), asyncio.ensure_future(self._closed.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def stats(self) -> procfs.VMStats:
        if self.pid is None or self.exited.is_set():
            raise self._err("statistics", f"the machine is {self.state.value.lower()}")
        try:
            return procfs.stats(self.pid)
        except OSError as exc:
            raise self._err("statistics", exc) from None

    async def close(self) -> None:
        """Lets go of QEMU (the monitor connection and the exit watch); QEMU itself runs on."""
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await self.qmp.disconnect()
            self.qmp = None
        self._close_pidfd()
        if self._watch is not None and not self.exited.is_set():
            self._watch.cancel()
        self._close_unanswered()
        self._closed.set()
        self.state = MachineState.CLOSED


def write_stopping(system_dir: str, exit_type: str) -> None:
    with contextlib.suppress(OSError), open(os.path.join(system_dir, STOPPING), "w") as f:
        f.write(exit_type)


def read_stopping(system_dir: str) -> str:
    try:
        with open(os.path.join(system_dir, STOPPING)) as f:
            return f.read().strip()
    except OSError:
        return ""


# -- saving and restoring (QMP migration to and from a file) ----------------------------------------------------


async def _migration_done(qmp: QMPClient, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MIGRATION_TIMEOUT
    while True:
        info = await qmp.execute("query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise MachineError(f"{what}: migration {status}: {info.get('error-desc', '')}".rstrip(": "))
        if loop.time() > deadline:
            raise MachineError(f"{what}: not done within {MIGRATION_TIMEOUT:.0f} s (status {status})")
        await asyncio.sleep(0.005)


async def _give_fd(qmp: QMPClient, path: str, flags: int) -> None:
    """Opens `path` and hands the descriptor to QEMU as `saved-state` (QEMU keeps its own copy)."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        qmp.send_fd_scm(fd)
        await qmp.execute("getfd", {"fdname": "saved-state"})
    finally:
        os.close(fd)


def _capabilities(ignore_shared: bool) -> dict:
    return {"capabilities": [{"capability": "x-ignore-shared", "state": ignore_shared}]}


async def save_state(qmp: QMPClient, path: str, *, ignore_shared: bool = True) -> str:
    """Pauses the VM and writes its state to `path`, its shared RAM left out (ignore_shared; else all of its RAM
    is in the stream); returns the file's sha256."""
    await qmp.execute("stop")
    await qmp.execute("migrate-set-capabilities", _capabilities(ignore_shared))
    await _give_fd(qmp, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    await qmp.execute("migrate", {"uri": "fd:saved-state"})
    await _migration_done(qmp, f"save {path}")
    return file_sha256(path)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def restore_state(qmp: QMPClient, path: str, *, ignore_shared: bool = True) -> None:
    """Loads the state saved at `path` into a QEMU started with `-incoming defer` (it stays paused)."""
    await qmp.execute("migrate-set-capabilities", _capabilities(ignore_shared))
    await _give_fd(qmp, path, os.O_RDONLY)
    await qmp.execute("migrate-incoming", {"uri": "fd:saved-state"})
    await _migration_done(qmp, f"restore {path}")
