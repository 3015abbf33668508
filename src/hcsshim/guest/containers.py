"""The guest's containers: what the GCS runs for the host with runc, and the requests that act on them.

Owns the lifecycle objects and the requests that act on them (Create, Start, ExecuteProcess, WaitForProcess,
SignalProcess, ResizeConsole, Shutdown*, GetProperties, DeleteContainerState); `guest.server` decodes the
requests and calls `Guest`. Storage and network resources live in `guest.storage` and `guest.network`,
which get what they need of the agent (its reaper, transport, module wait) handed in.

Container state machine (a request that needs another state fails with an HRESULT naming the container)::

    creating --runc create--> created --ExecuteProcess(init): runc start--> running
        |                        |                                              |
        +-- failure: forgotten   +---------- init exits ------------------------+--> terminated
                                                                                        |
                                              DeleteContainerState: runc delete, rm bundle --> removed

Lookups of a container that is still "creating" fail with VMCOMPUTE_INVALID_STATE, of an unknown one with
VMCOMPUTE_SYSTEM_NOT_FOUND.

Processes (`guest.process.Process`): an exec'd or UVM process is forgotten after its first successful wait;
a container's init stays waitable until DeleteContainerState.

Exit notification: exactly one per created container, once its init has exited *and* a WaitForProcess on
the init has returned the exit code (like the Go GCS), through the `notify` callback.

One `Reaper` (subreaper) collects every exit of the agent's children and of the container processes that
runc leaves behind; nothing else in the agent may wait for children.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from hcsshim.bridge import (
    E_FAIL,
    E_INVALIDARG,
    ERROR_NOT_FOUND,
    EXIT_FORCED,
    EXIT_GRACEFUL,
    EXIT_UNEXPECTED,
    INFINITE,
    NULL_GUID,
    VMCOMPUTE_INVALID_JSON,
    VMCOMPUTE_INVALID_STATE,
    VMCOMPUTE_SYSTEM_ALREADY_EXISTS,
    VMCOMPUTE_SYSTEM_NOT_FOUND,
    VMCOMPUTE_TIMEOUT,
    HResultError,
    field,
    inner_json,
    json_string,
    uint32,
)
from hcsshim.guest import pod, runcinfo, stdio
from hcsshim.guest.network import Networks
from hcsshim.guest.process import Process, TaskSet
from hcsshim.guest.runcinfo import runc_errors
from hcsshim.guest.storage import Storage
from hcsshim.mount import mounted_under
from hcsshim.runc import DEVNULL, Reaper, Runc, RuncError
from hcsshim.runc.console import ConsoleSocket
from hcsshim.transport.base import Conn, Transport

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[\w+\-.]+$")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_STACKS = 60000  # DumpStacks text, so the whole response stays under the host's 64 KiB limit


class Container:
    """One container (see the module docstring for its states)."""

    def __init__(self, id: str, activity_id: str) -> None:
        self.id = id
        self.activity_id = activity_id
        self.state = "creating"
        self.bundle = ""
        self.scratch = ""
        self.spec: dict[str, Any] = {}
        self.init: Process | None = None
        self.processes: dict[int, Process] = {}
        self.exit_type = EXIT_UNEXPECTED
        self.init_waited = False
        self.notified = False
        self.made_bundle = False
        self.state_dir = ""
        self.exec_count = 0
        self.pod = pod.PodRole()  # its place in a CRI pod (hcsshim.guest.pod)

    def __repr__(self) -> str:
        return f"Container({self.id}, {self.state})"

    @property
    def own_pid_namespace(self) -> bool:
        namespaces = (self.spec.get("linux") or {}).get("namespaces") or []
        return any(ns.get("type") == "pid" and not ns.get("path") for ns in namespaces if isinstance(ns, dict))


SYS_MODULE = "/sys/module"


def _module_live(name: str) -> bool:
    """The module is loaded and its init has run (a module's /sys/module entry appears before its init)."""
    try:
        with open(f"{SYS_MODULE}/{name}/initstate") as f:
            return f.read().strip() == "live"
    except OSError:
        return False


class Guest:
    """The agent's state and the operations behind the bridge requests.

    root: the agent's state directory (bundles default to <root>/c/<id>, runc's root is <root>/runc, per
    container records in <root>/gcsrunc/<id>); transport: dials the host's stdio ports; notify: called with
    (container id, exit type, activity id) for each container-exit notification.
    """

    def __init__(self, root: str, transport: Transport, *, runc_binary: str = "runc",
                 cgroup_parent: str = "/pods", notify: Callable[[str, str, str], None] | None = None) -> None:
        self.root = os.path.abspath(root)
        self.transport = transport
        self.cgroup_parent = cgroup_parent
        self.notify = notify or (lambda cid, kind, activity: None)
        self.reaper = Reaper()
        self.runc = Runc(os.path.join(self.root, "runc"), binary=runc_binary, reaper=self.reaper)
        self.containers: dict[str, Container] = {}
        self.uvm_processes: dict[int, Process] = {}
        self.tasks = TaskSet()
        self.no_pivot = runcinfo.root_is_ramfs()
        self.modules_ready: str | None = None  # see kernel_modules()
        self.sync_host_state = False  # apply the host's NegotiateProtocol HostState (hcsshim.guest.hoststate)
        self.storage = Storage(self.reaper, transport, kernel_modules=self.kernel_modules)
        self.networks = Networks(self.reaper, kernel_modules=self.kernel_modules)

    async def kernel_modules(self, *names: str, timeout: float = 120.0) -> None:
        """Waits until init has loaded what a request needs of the kernel modules it loads in the background
        (-modules-ready FILE: it exists once they are all in): the named modules, each live in /sys/module,
        or all of them when none is named. A no-op when no such file was named (not in a utility VM)."""
        marker = self.modules_ready
        if not marker:
            return

        def ready() -> bool:
            return os.path.exists(marker) or (bool(names) and all(_module_live(n) for n in names))

        if ready():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            if loop.time() > deadline:
                what = ", ".join(names) or "all"
                raise HResultError(E_FAIL, f"kernel modules ({what}): not loaded within {timeout:.0f} s "
                                           f"({marker} did not appear)")
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        for d in ("", "c", "runc", "gcsrunc"):
            os.makedirs(os.path.join(self.root, d), mode=0o700, exist_ok=True)
        self.reaper.start(subreaper=True)

    async def close(self) -> None:
        """Power-off path: kill and delete every container and UVM process, undo mounts, stop the reaper."""
        for c in list(self.containers.values()):
            await self._destroy(c)
        for p in list(self.uvm_processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.drop_host()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(p.exited.wait(), 2)
        self.uvm_processes.clear()
        await self.networks.close()
        await self.storage.close()
        await self.tasks.close()
        self.reaper.close()
        runcinfo.remove_cgroup_parent(self.cgroup_parent)

    async def _destroy(self, c: Container) -> None:
        with contextlib.suppress(RuncError):
            await self.runc.delete(c.id, force=True)
        procs = [p for p in c.processes.values() if p.state != "exited"]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.drop_host()
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.exited.wait()) for p in procs], timeout=5)
        self._remove_files(c)
        self.containers.pop(c.id, None)

    # --- lookups -----------------------------------------------------------------------------------------

    def container(self, cid: str, operation: str) -> Container:
        c = self.containers.get(cid)
        if c is None:
            raise HResultError(VMCOMPUTE_SYSTEM_NOT_FOUND, f"{operation}: container {cid} not found")
        if c.state == "creating":
            raise HResultError(VMCOMPUTE_INVALID_STATE, f"{operation}: container {cid} is still being created")
        return c

    def process(self, cid: str, pid: int, operation: str) -> Process:
        if cid == NULL_GUID:
            p = self.uvm_processes.get(pid)
            if p is None:
                raise HResultError(ERROR_NOT_FOUND, f"{operation}: process {pid} not found in the UVM")
            return p
        c = self.container(cid, operation)
        p = c.processes.get(pid)
        if p is None:
            raise HResultError(ERROR_NOT_FOUND, f"{operation}: process {pid} not found in container {cid}")
        return p

    # --- Create / Start ---------------------------------------------------------------------------------

    async def create(self, cid: str, activity_id: str, body: dict[str, Any]) -> dict[str, Any]:
        op = f"create container {cid}"
        config = inner_json(field(body, "ContainerConfig"), "ContainerConfig")
        if not isinstance(config, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, f"{op}: ContainerConfig is not a JSON object")
        version = field(config, "SchemaVersion", dict) or {}
        if (field(version, "Major", "uint32"), field(version, "Minor", "uint32")) < (2, 1):
            raise HResultError(VMCOMPUTE_INVALID_JSON, f"{op}: schema version below 2.1 is not supported")
        spec = field(config, "OciSpecification", dict)
        if spec is None or not all(isinstance(spec.get(k), dict) for k in ("process", "root", "linux")):
            raise HResultError(E_INVALIDARG, f"{op}: OciSpecification must have process, root and linux")
        if not cid or cid in (".", "..") or not _ID_RE.match(cid):
            raise HResultError(E_INVALIDARG, f"{op}: invalid container id")
        if cid in self.containers:
            raise HResultError(VMCOMPUTE_SYSTEM_ALREADY_EXISTS, f"{op}: container {cid} already exists")
        c = Container(cid, activity_id)
        self.containers[cid] = c
        try:
            await self._create(c, config, spec, op)
        except BaseException:
            self.containers.pop(cid, None)
            if c.init is not None and c.init.state != "exited":
                with contextlib.suppress(RuncError):
                    await self.runc.delete(cid, force=True)
            self._remove_files(c, failed_create=True)
            raise
        c.state = "created"
        return {"SelectedProtocolVersion": 0}

    async def _create(self, c: Container, config: dict[str, Any], spec: dict[str, Any], op: str) -> None:
        bundle = field(config, "OciBundlePath") or os.path.join(self.root, "c", c.id)
        c.bundle = os.path.abspath(bundle)
        c.scratch = field(config, "ScratchDirPath")
        c.made_bundle = not os.path.exists(c.bundle)
        os.makedirs(c.bundle, mode=0o755, exist_ok=True)
        c.state_dir = os.path.join(self.root, "gcsrunc", c.id)
        os.makedirs(c.state_dir, mode=0o700, exist_ok=True)
        root = spec["root"]
        rootfs = root.get("path") or "rootfs"
        rootfs = rootfs if os.path.isabs(rootfs) else os.path.join(c.bundle, rootfs)
        if not os.path.isdir(rootfs):
            raise HResultError(E_FAIL, f"{op}: rootfs {rootfs}: no such directory")
        netns_id = str(((spec.get("windows") or {}).get("network") or {}).get("networkNamespace") or "").lower()
        sandboxes = {cid: s.pod for cid, s in self.containers.items() if s.pod.is_sandbox and s.state != "creating"}
        c.pod = pod.pod_role(spec, c.bundle, sandboxes, op)
        pod.resolve_sandbox_mounts(spec, c.pod, op)
        pod.add_etc_files(spec, c.bundle, c.pod, self.networks.resolv_conf(netns_id))
        spec.setdefault("linux", {})["cgroupsPath"] = f"{self.cgroup_parent.rstrip('/')}/{c.id}"
        spec.pop("windows", None)
        process = spec["process"]
        cwd = process.get("cwd") or "/"
        if cwd != "/":
            os.makedirs(os.path.join(rootfs, cwd.lstrip("/")), exist_ok=True)
        c.spec = spec
        with open(os.path.join(c.bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        terminal = bool(process.get("terminal"))
        pipes = None if terminal else stdio.Pipes(True, True, True)
        console = ConsoleSocket() if terminal else None
        loop = asyncio.get_running_loop()
        since = loop.time()
        try:
            master_task = asyncio.ensure_future(console.receive_master()) if console else None
            try:
                with runc_errors(op):
                    pid = await self.runc.create(
                        c.id, c.bundle, pid_file=os.path.join(c.state_dir, "initpid"),
                        console_socket=console.path if console else None, no_pivot=self.no_pivot,
                        stdin=pipes.child[0] if pipes else None, stdout=pipes.child[1] if pipes else None,
                        stderr=pipes.child[2] if pipes else None)
            except HResultError:
                if master_task is not None:
                    master_task.cancel()
                raise
            if pipes is not None:
                pipes.close_child()
            init = Process(pid, self.reaper.watch(pid, since=since), "init", c.id)
            init.pipes = pipes
            pipes = None
            if master_task is not None:
                init.master = await asyncio.wait_for(master_task, 10)
        finally:
            if pipes is not None:
                pipes.close()
            if console is not None:
                console.close()
        init.on_exit = functools.partial(self._init_exited, c)
        c.init = init
        c.processes[pid] = init
        self.tasks.spawn(init.supervise(), f"supervise-init-{c.id}")
        if netns_id:
            await self.networks.attach(netns_id, pid)

    async def _init_exited(self, c: Container, init: Process) -> None:
        c.state = "terminated"
        if not c.own_pid_namespace:  # its other processes would keep the stdio pipes open
            with contextlib.suppress(RuncError):
                await self.runc.kill(c.id, signal.SIGKILL, all=True)

    def _maybe_notify(self, c: Container) -> None:
        if c.notified or not c.init_waited or c.init is None or c.init.state != "exited":
            return
        c.notified = True
        self.notify(c.id, c.exit_type, c.activity_id)

    async def start_container(self, cid: str) -> dict[str, Any]:
        return {}  # the container really starts when its init is executed (like the Go GCS)

    # --- ExecuteProcess ---------------------------------------------------------------------------------

    async def execute(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        settings = field(body, "Settings", dict) or {}
        params = inner_json(field(settings, "ProcessParameters"), "ProcessParameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, "execute process: ProcessParameters is not a JSON object")
        ports = field(settings, "VsockStdioRelaySettings", dict) or {}
        if cid == NULL_GUID or field(params, "CreateInUtilityVM", bool):
            pid = await self._execute_uvm(params, ports)
        else:
            oci = field(params, "OciProcess", dict)
            c = self.container(cid, "execute process")
            pid = await (self._execute_init(c, params, ports) if oci is None
                         else self._execute_exec(c, oci, params, ports))
        return {"ProcessId": uint32(pid)}

    async def _dial_stdio(self, params: dict[str, Any], ports: dict[str, Any], op: str
                          ) -> list[Conn | None]:
        conns: list[Conn | None] = []
        try:
            for flag, key in (("CreateStdInPipe", "StdIn"), ("CreateStdOutPipe", "StdOut"),
                              ("CreateStdErrPipe", "StdErr")):
                port = field(ports, key, "uint32")
                if field(params, flag, bool) and port:
                    try:
                        conns.append(await self.transport.dial(port))
                    except OSError as e:
                        raise HResultError(E_FAIL, f"{op}: {key.lower()}: {e}") from e
                else:
                    conns.append(None)
        except BaseException:
            for c in conns:
                if c is not None:
                    c.close()
            raise
        return conns

    async def _execute_init(self, c: Container, params: dict[str, Any], ports: dict[str, Any]) -> int:
        op = f"start container {c.id}"
        if c.state != "created" or c.init is None:
            raise HResultError(VMCOMPUTE_INVALID_STATE, f"{op}: container is {c.state}, not created")
        conns = await self._dial_stdio(params, ports, op)
        init = c.init
        init.attach(self.tasks, *conns)
        with runc_errors(op):
            await self.runc.start(c.id)
        if c.state == "created":
            c.state = "running"
        return init.pid

    async def _execute_exec(self, c: Container, oci: dict[str, Any], params: dict[str, Any],
                            ports: dict[str, Any]) -> int:
        op = f"exec in container {c.id}"
        if c.state != "running":
            raise HResultError(VMCOMPUTE_INVALID_STATE, f"{op}: container is {c.state}, not running")
        process = dict(oci)
        base = c.spec.get("process") or {}
        if "rlimits" not in process and base.get("rlimits"):
            process["rlimits"] = base["rlimits"]
        process["user"] = self._resolve_user(c, process.get("user") or base.get("user") or {"uid": 0, "gid": 0})
        process.setdefault("cwd", "/")
        if not process.get("args"):
            raise HResultError(E_INVALIDARG, f"{op}: OciProcess has no args")
        terminal = bool(process.get("terminal"))
        conns = await self._dial_stdio(params, ports, op)
        c.exec_count += 1
        pid_file = os.path.join(c.state_dir, f"exec-{c.exec_count}.pid")
        pipes = console = master_task = None
        try:
            if terminal:
                console = ConsoleSocket()
                master_task = asyncio.ensure_future(console.receive_master())
            else:
                pipes = stdio.Pipes(conns[0] is not None, conns[1] is not None, conns[2] is not None)
            since = asyncio.get_running_loop().time()
            try:
                with runc_errors(op):
                    pid = await self.runc.exec(
                        c.id, process, pid_file=pid_file, console_socket=console.path if console else None,
                        stdin=pipes.child[0] if pipes else None, stdout=pipes.child[1] if pipes else None,
                        stderr=pipes.child[2] if pipes else None)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pid_file)
            p = Process(pid, self.reaper.watch(pid, since=since), "exec", c.id)
            if pipes is not None:
                pipes.close_child()
                p.pipes, pipes = pipes, None
            if master_task is not None:
                p.master = await asyncio.wait_for(master_task, 10)
                master_task = None
        except BaseException:
            for conn in conns:
                if conn is not None:
                    conn.close()
            raise
        finally:
            if master_task is not None:
                master_task.cancel()
            if pipes is not None:
                pipes.close()
            if console is not None:
                console.close()
        c.processes[pid] = p
        p.attach(self.tasks, *conns)
        self.tasks.spawn(p.supervise(), f"supervise-exec-{pid}")
        return pid

    def _resolve_user(self, c: Container, user: dict[str, Any]) -> dict[str, Any]:
        name = user.get("username")
        if not name:
            return {k: v for k, v in user.items() if k != "username"} or {"uid": 0, "gid": 0}
        rootfs = c.spec["root"].get("path") or "rootfs"
        rootfs = rootfs if os.path.isabs(rootfs) else os.path.join(c.bundle, rootfs)
        try:
            with open(os.path.join(rootfs, "etc/passwd")) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) >= 4 and parts[0] == name:
                        return {"uid": int(parts[2]), "gid": int(parts[3])}
        except (OSError, ValueError):
            pass
        raise HResultError(E_INVALIDARG, f"exec in container {c.id}: user {name!r} not found in /etc/passwd")

    async def _execute_uvm(self, params: dict[str, Any], ports: dict[str, Any]) -> int:
        op = "execute process in the UVM"
        argv = field(params, "CommandArgs", list) or []
        if not argv:
            line = field(params, "CommandLine")
            try:
                argv = shlex.split(line)
            except ValueError as e:
                raise HResultError(E_INVALIDARG, f"{op}: CommandLine: {e}") from e
        if not argv or not all(isinstance(a, str) for a in argv):
            raise HResultError(E_INVALIDARG, f"{op}: no command")
        env_map = field(params, "Environment", dict) or {}
        env = {str(k): str(v) for k, v in env_map.items()}
        cwd = field(params, "WorkingDirectory") or "/"
        terminal = field(params, "EmulateConsole", bool)
        conns = await self._dial_stdio(params, ports, op)
        master = slave = None
        pipes = None
        try:
            if terminal:
                master, slave = stdio.open_pty()
                child = (slave, slave, slave)
            else:
                pipes = stdio.Pipes(conns[0] is not None, conns[1] is not None, conns[2] is not None)
                child = tuple(pipes.child)  # type: ignore[assignment]
            try:
                spawned = await self.reaper.spawn(
                    argv, stdin=_or_devnull(child[0]), stdout=_or_devnull(child[1]), stderr=_or_devnull(child[2]),
                    env=env, cwd=cwd, start_new_session=True)
            except OSError as e:
                raise HResultError(E_FAIL, f"{op}: {argv[0]}: {e.strerror or e}") from e
        except BaseException:
            for conn in conns:
                if conn is not None:
                    conn.close()
            if master is not None:
                os.close(master)
            if pipes is not None:
                pipes.close()
            raise
        finally:
            if slave is not None:
                os.close(slave)
        p = Process(spawned.pid, spawned._exit, "uvm", None)
        if pipes is not None:
            pipes.close_child()
            p.pipes = pipes
        p.master = master
        self.uvm_processes[p.pid] = p
        p.attach(self.tasks, *conns)
        self.tasks.spawn(p.supervise(), f"supervise-uvm-{p.pid}")
        return p.pid

    # --- WaitForProcess / SignalProcess / ResizeConsole -------------------------------------------------

    async def wait(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        pid = field(body, "ProcessId", "uint32")
        timeout_ms = field(body, "TimeoutInMs", "uint32")
        p = self.process(cid, pid, "wait for process")
        timeout = None if timeout_ms == INFINITE else timeout_ms / 1000
        try:
            await asyncio.wait_for(p.exited.wait(), timeout)
        except TimeoutError:
            raise HResultError(VMCOMPUTE_TIMEOUT, f"wait for process {pid}: timed out after {timeout_ms} ms"
                               ) from None
        code = p.exit_code if p.exit_code is not None else 255
        c = self.containers.get(p.container_id) if p.container_id else None
        if p.kind == "init" and c is not None:
            c.init_waited = True
            self._maybe_notify(c)
        elif c is not None:
            c.processes.pop(pid, None)
        elif p.container_id is None:
            self.uvm_processes.pop(pid, None)
        return {"ExitCode": uint32(code)}

    async def signal(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        pid = field(body, "ProcessId", "uint32")
        options = field(body, "Options", dict) or {}
        sig = field(options, "Signal", "int32") or signal.SIGKILL
        p = self.process(cid, pid, "signal process")
        if p.state != "running":
            raise HResultError(ERROR_NOT_FOUND, f"signal process {pid}: the process has exited")
        c = self.containers.get(p.container_id) if p.container_id else None
        if p.kind == "init" and c is not None and sig in (signal.SIGTERM, signal.SIGKILL):
            c.exit_type = EXIT_GRACEFUL if sig == signal.SIGTERM else EXIT_FORCED
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            raise HResultError(ERROR_NOT_FOUND, f"signal process {pid}: no such process") from None
        except (OSError, ValueError) as e:
            raise HResultError(E_INVALIDARG, f"signal process {pid}: signal {sig}: {e}") from e
        return {}

    async def resize(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        pid = field(body, "ProcessId", "uint32")
        p = self.process(cid, pid, "resize console")
        if p.master is None:
            raise HResultError(E_FAIL, f"resize console of process {pid}: the process has no terminal")
        stdio.set_window_size(p.master, field(body, "Height", "uint16"), field(body, "Width", "uint16"))
        return {}

    # --- Shutdown / properties / delete / stacks --------------------------------------------------------

    async def shutdown_container(self, cid: str, forced: bool) -> dict[str, Any]:
        op = f"{'forced' if forced else 'graceful'} shutdown of container {cid}"
        c = self.container(cid, op)
        if c.init is None or c.init.state != "running":
            return {}  # already gone: nothing to do, the notification follows the init's wait
        c.exit_type = EXIT_FORCED if forced else EXIT_GRACEFUL
        try:
            with runc_errors(op):
                await self.runc.kill(cid, signal.SIGKILL if forced else signal.SIGTERM)
        except HResultError:
            if c.init.state == "running":  # else it exited meanwhile: the shutdown is done
                raise
        return {}

    async def properties(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        query = inner_json(field(body, "Query"), "Query") or {}
        if not isinstance(query, dict):
            raise HResultError(VMCOMPUTE_INVALID_JSON, "get properties: Query is not a JSON object")
        types = field(query, "PropertyTypes", list) or []
        props: dict[str, Any] = {}
        if cid == NULL_GUID:  # an extension: the Go GCS refuses the UVM; we list its processes
            if "ProcessList" in types:
                props["ProcessList"] = [{"ProcessId": pid} for pid in sorted(self.uvm_processes)]
            return {"Properties": json_string(props)}
        c = self.container(cid, "get properties")
        with runc_errors(f"get properties of container {cid}"):
            if "ProcessList" in types:
                pids = await self.runc.ps(cid) if c.state in ("created", "running") else []
                props["ProcessList"] = [{"ProcessId": uint32(p)} for p in pids]
            if "Statistics" in types:
                props["LCOWMetrics"] = runcinfo.metrics(await self.runc.stats(cid))
        return {"Properties": json_string(props)}

    async def delete_state(self, cid: str) -> dict[str, Any]:
        c = self.container(cid, "delete container state")
        error = None
        if c.init is not None and c.init.state != "exited":
            error = HResultError(VMCOMPUTE_INVALID_STATE, f"delete container state {cid}: the container is running")
            raise error
        try:
            with runc_errors(f"delete container state {cid}"):
                await self.runc.delete(cid, force=True)
        except HResultError as e:
            error = e  # the state is removed anyway, as the Go GCS does
        self._remove_files(c)
        self.containers.pop(cid, None)
        c.state = "removed"
        if error is not None:
            raise error
        return {}

    def _remove_files(self, c: Container, *, failed_create: bool = False) -> None:
        """Remove the container's records, scratch dir and bundle. A bundle with a mount under it, and after a
        failed Create a bundle the host made, keep everything but the files we wrote."""
        import shutil  # only here: the agent's start-up is on a utility VM's boot path

        pod.release(c.pod)
        if c.state_dir:
            shutil.rmtree(c.state_dir, ignore_errors=True)
        if c.scratch and os.path.isdir(c.scratch) and not failed_create and not mounted_under(c.scratch):
            shutil.rmtree(c.scratch, ignore_errors=True)
        if not c.bundle:
            return
        if (c.made_bundle or not failed_create) and not mounted_under(c.bundle):
            shutil.rmtree(c.bundle, ignore_errors=True)  # like the Go GCS: the host released the storage first
        else:
            for name in ("config.json", *pod.ETC_FILES):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(c.bundle, name))

    def dump_stacks(self) -> dict[str, Any]:
        parts = []
        for task in asyncio.all_tasks():
            frames = task.get_stack(limit=20)
            text = "".join(traceback.format_list(traceback.extract_stack(frames[-1]) if frames else []))
            parts.append(f"task {task.get_name()}:\n{text}")
        for tid, frame in sys._current_frames().items():
            parts.append(f"thread {tid}:\n" + "".join(traceback.format_stack(frame)))
        text = "\n".join(parts)
        if len(text) > MAX_STACKS:
            text = text[:MAX_STACKS] + "\n... (truncated)"
        return {"GuestStacks": text}


def _or_devnull(fd: int | None) -> int:
    return DEVNULL if fd is None else fd


