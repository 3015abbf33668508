"""The paths and names every part of the shim agrees on: sockets, containerd's state layout, the runc root, the
files a daemon leaves in the bundle, and the pod annotations that group tasks; plus the two small file and socket
helpers they need.

A ground module of the shim: `start`, `delete`, the fork server and the daemon all use it, so it imports nothing
beyond the interpreter's core (it is on the `start` path of every `ctr run`).
"""

from __future__ import annotations

import os

SOCKET_DIR = "/run/containerd/s"
TASK_DIR_NAME = "io.containerd.runtime.v2.task"
ANNOTATION_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANNOTATION_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
ANNOTATION_RUNC_GROUP = "io.containerd.runc.v2.group"
INIT_PID_FILE = "init.pid"
# Written by the daemon when it deleted a task: the marshalled DeleteResponse, so that containerd's `delete` call
# (which it waits for after every disconnect) can answer without loading protobuf or calling runc.
DELETE_RESPONSE_FILE = "shim-delete-response.pb"
# The holder under which a hypervisor-isolated task references its layer images (hcsshim.layers).
LAYER_HOLDER_FILE = "layer-holder"


def socket_address(containerd_address: str, namespace: str, group_id: str) -> str:
    """The shim socket address, as containerd's shim.SocketAddress computes it."""
    try:
        from _sha256 import sha256  # the builtin module: hashlib would load OpenSSL on the start path
    except ImportError:
        from hashlib import sha256
    path = os.path.normpath(os.path.join(containerd_address, namespace, group_id))
    return "unix://" + os.path.join(SOCKET_DIR, sha256(path.encode()).hexdigest())


def state_dir_of(bundle: str) -> str | None:
    """containerd's state directory, from a bundle path `<state>/io.containerd.runtime.v2.task/<ns>/<id>`."""
    parent = os.path.dirname(os.path.dirname(os.path.abspath(bundle)))
    if os.path.basename(parent) != TASK_DIR_NAME:
        return None
    return os.path.dirname(parent)


def shim_state_dir(bundle: str) -> str:
    """This containerd instance's directory for the shim's own state: `<containerd state>/runhcs`."""
    state = state_dir_of(bundle)
    return os.path.join(state, "runhcs") if state else "/run/containerd/runhcs"


def runc_root(bundle: str, namespace: str) -> str:
    """The runc --root of this containerd instance and namespace: `<state>/runhcs/runc/<ns>`.

    Deriving it from containerd's state dir keeps several containerd instances (tests, demos) apart."""
    return os.path.join(shim_state_dir(bundle), "runc", namespace)


def write_file_atomic(path: str, data: str | bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def can_connect(path: str) -> bool:
    """Whether something accepts connections on the unix socket `path`."""
    import _socket  # the C module: `socket` costs ~11 ms of imports (enum, selectors) on the start path

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


UVM_RUN_BASE = "/run/hcsshim/uvm"


def uvm_id(task_id: str) -> str:
    """The id of the utility VM a standalone task or a pod's sandbox owns (upstream: `<id>@vm`)."""
    return f"{task_id}@vm"


def uvm_run_root(bundle: str) -> str:
    """Where this containerd instance's utility VMs keep their run dirs: `/run/hcsshim/uvm/<8 hex>`."""
    return uvm_run_root_of_state(state_dir_of(bundle) or "/run/containerd")


def uvm_run_root_of_state(containerd_state: str) -> str:
    """`uvm_run_root` from containerd's state directory.

    Short on purpose: the VM's unix sockets live there and sun_path holds 108 bytes (a CRI id is 64 characters);
    the hex is the sha256 of containerd's state directory, so several containerd instances never share VM ids."""
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return os.path.join(UVM_RUN_BASE, sha256(os.path.normpath(containerd_state).encode()).hexdigest()[:8])
