"""The shim's short-lived actions, `start` and `delete`, and the paths every action agrees on.

`start` (containerd runs it with cwd = the bundle) binds the task's ttrpc socket, writes `<bundle>/address`, forks
the long-lived daemon (no re-exec: the child keeps the interpreter already running, which saves a whole Python
start-up on the critical path of `ctr run`), prints `unix://<socket>` and exits. The daemon starts a new session,
puts stdio on /dev/null (containerd waits for every holder of the start process's stdout to close it) and serves
the listening socket. A container that belongs to a pod (the `io.kubernetes.cri.sandbox-id` annotation) shares
its sandbox's shim: the socket address is derived from the sandbox id, and when a shim already answers there
`start` just reports its address.

`delete` cleans up after a shim that died or disconnected: it force-deletes the runc container of `-id` only,
unmounts `<bundle>/rootfs`, removes a dead shim's socket and prints a marshalled DeleteResponse. It must finish
within containerd's 5 s cleanup timeout and succeed when there is nothing left to clean.

Imports stay minimal on the `start` path: protobuf and asyncio are loaded by the daemon after the fork.
"""

from __future__ import annotations

import errno
import os
import sys

from hcsshim.shim.flags import Flags, UsageError
from hcsshim.shim.paths import (
    ANNOTATION_CONTAINER_TYPE,
    ANNOTATION_RUNC_GROUP,
    ANNOTATION_SANDBOX_ID,
    DELETE_RESPONSE_FILE,
    INIT_PID_FILE,
    SOCKET_DIR,
    can_connect,
    runc_root,
    socket_address,
    write_file_atomic,
)

TYPE_CHECKING = False  # not typing's: importing typing costs ~12 ms on the start and delete paths
if TYPE_CHECKING:
    import _socket

class StartError(Exception):
    """`start` cannot proceed; the message is printed and containerd fails the Create with it."""


def read_annotations(bundle: str) -> dict[str, str]:
    """The annotations of `<bundle>/config.json` that group tasks; {} when there are none.

    The JSON is decoded only when a grouping annotation is present at all (json costs start-up time)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}
    if b"io.kubernetes.cri." not in data and ANNOTATION_RUNC_GROUP.encode() not in data:
        return {}
    import json

    try:
        spec = json.loads(data)
    except ValueError as exc:
        raise StartError(f"start: {bundle}/config.json: invalid JSON: {exc}") from None
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def group_id(task_id: str, annotations: dict[str, str]) -> str:
    """The id whose shim serves this task: the sandbox's for pod containers, else the task's own."""
    ctype = annotations.get(ANNOTATION_CONTAINER_TYPE)
    sandbox = annotations.get(ANNOTATION_SANDBOX_ID)
    if (ctype is None) != (sandbox is None):
        raise StartError(f"start {task_id}: annotations {ANNOTATION_CONTAINER_TYPE} and "
                         f"{ANNOTATION_SANDBOX_ID} must be set together")
    if ctype is not None:
        if ctype == "sandbox":
            if sandbox != task_id:
                raise StartError(f"start {task_id}: sandbox id {sandbox!r} does not match the task id")
            return task_id
        if ctype == "container":
            return str(sandbox)
        raise StartError(f"start {task_id}: invalid {ANNOTATION_CONTAINER_TYPE} {ctype!r}")
    return annotations.get(ANNOTATION_RUNC_GROUP) or task_id


def listen(path: str) -> _socket.socket | None:
    """Binds and listens on path; None when a live shim already serves it (a pod member joining).

    The socket is a `_socket.socket` (see can_connect); the daemon wraps its descriptor in a socket.socket."""
    import _socket

    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            if can_connect(path):
                sock.close()
                return None
            os.unlink(path)
            sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_stdin() -> bytes:
    """The runtime options containerd may write to stdin (a marshalled Any), or b""."""
    chunks = []
    try:
        while chunk := os.read(0, 65536):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def start(flags: Flags) -> int:
    flags.require("namespace", "address", "id")
    bundle = os.getcwd()
    gid = group_id(flags.id, read_annotations(bundle))
    address = socket_address(flags.address, flags.namespace, gid)
    path = address[len("unix://"):]
    sock = listen(path)
    write_file_atomic(os.path.join(bundle, "address"), address)
    if sock is not None:
        options = _read_stdin()
        inode = os.stat(path).st_ino
        pid = _from_forkserver(flags, bundle, options, sock, path, inode) or os.fork()
        if pid == 0:  # the daemon, cold: this process's imports are all it has
            import gc

            gc.disable()  # the daemon's imports make no garbage worth collecting; daemon.run re-enables it
            rc = 1
            try:
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.close(null)
                _raise_oom_score()
                import socket  # the cold daemon's imports: after the fork, off the start path

                from hcsshim.shim import daemon, forkserver

                listener = socket.socket(fileno=sock.detach())
                rc = daemon.run(listener, flags, bundle=bundle, socket_path=path, socket_inode=inode,
                                options=options, on_loaded=lambda: forkserver.ensure_running(
                                    bundle, address=flags.address, inherited=[listener]))
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(rc)
        sock.close()
        write_file_atomic(os.path.join(bundle, "shim.pid"), str(pid))
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def _from_forkserver(flags: Flags, bundle: str, options: bytes, sock: _socket.socket, path: str,
                     inode: int) -> int | None:
    """A warm daemon from this containerd's fork server (forkserver.py): its pid, or None to fork one here."""
    if not os.environ.get("TTRPC_ADDRESS"):
        return None
    from hcsshim.shim import forkserver

    fs_path = forkserver.socket_path(bundle)
    if fs_path is None or not os.path.exists(fs_path):
        return None
    return forkserver.delegate(fs_path, argv=flags.to_argv(), bundle=bundle, options=options, listener=sock,
                               listener_path=path, listener_inode=inode)


def _raise_oom_score() -> None:
    """The daemon is one step more killable than containerd, as containerd's shims are."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            score = int(f.read().strip() or 0)
            if score < 1000:
                f.seek(0)
                f.write(str(score + 1))
    except OSError:
        pass


def delete_fast(flags: Flags) -> bool:
    """Answers `delete` from the response the daemon saved when it deleted the task itself; False if none."""
    bundle = flags.bundle or os.getcwd()
    try:
        with open(os.path.join(bundle, DELETE_RESPONSE_FILE), "rb") as f:
            data = f.read()
    except OSError:
        return False
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return True


def delete(flags: Flags) -> int:
    """containerd's cleanup of a dead or disconnected shim's task."""
    import subprocess
    import time

    flags.require("namespace", "id")
    bundle = flags.bundle or os.getcwd()
    warnings: list[str] = []
    pid = 0
    try:
        with open(os.path.join(bundle, INIT_PID_FILE)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    root = runc_root(bundle, flags.namespace)
    existed = False
    if os.path.isdir(os.path.join(root, flags.id)):
        existed = True
        try:
            out = subprocess.run(["runc", "--root", root, "delete", "--force", flags.id],
                                 capture_output=True, timeout=3.5)
            if out.returncode != 0 and b"does not exist" not in out.stderr:
                warnings.append(f"runc delete {flags.id}: {out.stderr.decode(errors='replace').strip()}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            warnings.append(f"runc delete {flags.id}: {exc}")
    from hcsshim import mount
    from hcsshim.shim import vmcleanup  # uvm and the layer cache: only on this (rare) path

    warnings += vmcleanup.cleanup_after_dead_shim(bundle, flags.id)
    rootfs = os.path.join(bundle, "rootfs")
    try:
        mount.unmount_all(rootfs)
    except OSError as exc:
        warnings.append(str(exc))
    try:
        with open(os.path.join(bundle, "address")) as f:
            address = f.read().strip()
        sock_path = address.removeprefix("unix://")
        if sock_path.startswith(SOCKET_DIR + "/") and os.path.exists(sock_path) and not can_connect(sock_path):
            os.unlink(sock_path)
    except OSError:
        pass
    from google.protobuf.timestamp_pb2 import Timestamp

    from hcsshim.api.containerd.task.v2.shim_pb2 import DeleteResponse

    now = time.time_ns()
    resp = DeleteResponse(pid=pid if existed else 0, exit_status=137 if existed else 255,
                          exited_at=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000))
    for w in warnings:
        sys.stderr.write(w + "\n")
    sys.stdout.buffer.write(resp.SerializeToString())
    sys.stdout.flush()
    return 0


def main_dispatch(flags: Flags) -> int:
    if flags.action == "start":
        return start(flags)
    if flags.action == "delete":
        flags.require("namespace", "id")
        return 0 if delete_fast(flags) else delete(flags)
    if flags.action == "serve":
        flags.require("namespace", "id", "socket")
        from hcsshim.shim import daemon

        sock = listen(flags.socket)
        if sock is None:
            raise StartError(f"serve: {flags.socket}: a shim already listens there")
        import socket

        return daemon.run(socket.socket(fileno=sock.detach()), flags, bundle=flags.bundle or os.getcwd(),
                          socket_path=flags.socket, socket_inode=os.stat(flags.socket).st_ino, options=b"")
    if not flags.action:
        raise UsageError("missing action: start, delete or serve (see -h)")
    raise UsageError(f"unknown action {flags.action!r}: start, delete or serve (see -h)")
