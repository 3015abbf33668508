"""The guest side of CRI pods (upstream hcsv2's sandbox and workload containers) and every container's /etc files.

A pod's sandbox container (annotation `io.kubernetes.cri.container-type=sandbox`) is the pod's *sandbox root*: its
bundle. The pod's workload containers (`container-type=container`, `io.kubernetes.cri.sandbox-id=<sandbox>`) join
it: they may not set a hostname, they bind its /etc/hostname, hosts and resolv.conf (unless their spec mounts its
own), and their mount sources `sandbox://P` and `sandbox-tmp://P` name directories under the sandbox root
(`sandboxMounts/P`, and `sandboxTmpfsMounts/P` on a tmpfs the sandbox container owns), which is how a pod's
containers share a directory. Any other container writes its own /etc files into its bundle.

`PodRole` is what a container is to its pod; the Guest keeps one per container and calls `release` when the
container goes (the sandbox's tmpfs is unmounted then).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from hcsshim.bridge import E_FAIL, E_INVALIDARG, VMCOMPUTE_SYSTEM_NOT_FOUND, HResultError
from hcsshim.mount import MS_NODEV, MS_NOSUID, mount_raw, umount_raw

ANNOTATION_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
ANNOTATION_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_MOUNT_PREFIX = "sandbox://"  # -> <sandbox root>/sandboxMounts/<path>
SANDBOX_TMPFS_PREFIX = "sandbox-tmp://"  # -> <sandbox root>/sandboxTmpfsMounts/<path>, a tmpfs
ETC_FILES = ("hostname", "hosts", "resolv.conf")
_MNT_DETACH = 2


class PodRole:
    """A container's place in its pod: none (root ""), the sandbox (root = its bundle), or a workload."""

    __slots__ = ("is_sandbox", "root", "sandbox", "tmpfs")

    def __init__(self, *, is_sandbox: bool = False, root: str = "", sandbox: PodRole | None = None) -> None:
        self.is_sandbox = is_sandbox
        self.root = root  # the pod's sandbox root
        self.sandbox = sandbox if sandbox is not None else (self if is_sandbox else None)
        self.tmpfs = ""  # the sandbox's sandboxTmpfsMounts, once mounted

    @property
    def is_workload(self) -> bool:
        return bool(self.root) and not self.is_sandbox


def pod_role(spec: dict[str, Any], bundle: str, sandboxes: Mapping[str, PodRole], op: str) -> PodRole:
    """The role of a container being created; `sandboxes` are the created sandbox containers by id."""
    annotations = spec.get("annotations") or {}
    kind = annotations.get(ANNOTATION_CONTAINER_TYPE)
    if kind == "sandbox":
        return PodRole(is_sandbox=True, root=bundle)
    if kind != "container":
        return PodRole()
    sid = annotations.get(ANNOTATION_SANDBOX_ID, "")
    sandbox = sandboxes.get(sid)
    if sandbox is None:
        raise HResultError(VMCOMPUTE_SYSTEM_NOT_FOUND, f"{op}: pod sandbox {sid!r} not found")
    if spec.get("hostname"):
        raise HResultError(E_INVALIDARG, f"{op}: a pod's workload container cannot set a hostname "
                                         f"({spec['hostname']!r}): it has its sandbox's")
    return PodRole(root=sandbox.root, sandbox=sandbox)


def resolve_sandbox_mounts(spec: dict[str, Any], role: PodRole, op: str) -> None:
    """Turns sandbox:// and sandbox-tmp:// mount sources into directories of the sandbox root (made if missing)."""
    for m in spec.get("mounts") or []:
        source = m.get("source") if isinstance(m, dict) else None
        if not isinstance(source, str) or not source.startswith((SANDBOX_MOUNT_PREFIX, SANDBOX_TMPFS_PREFIX)):
            continue
        if not role.root or role.sandbox is None:
            raise HResultError(E_INVALIDARG, f"{op}: mount {source}: only a pod's containers have a sandbox")
        tmpfs = source.startswith(SANDBOX_TMPFS_PREFIX)
        base = os.path.join(role.root, "sandboxTmpfsMounts" if tmpfs else "sandboxMounts")
        rel = source.split("://", 1)[1].strip("/")
        path = os.path.normpath(os.path.join(base, rel))
        if not rel or not path.startswith(base + "/"):
            raise HResultError(E_INVALIDARG, f"{op}: mount {source}: not a path inside the sandbox")
        if tmpfs and not role.sandbox.tmpfs:
            os.makedirs(base, mode=0o755, exist_ok=True)
            try:
                mount_raw("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
            except OSError as e:
                raise HResultError(E_FAIL, f"{op}: sandbox tmpfs {base}: {e}") from e
            role.sandbox.tmpfs = base
        os.makedirs(path, mode=0o755, exist_ok=True)
        m["source"] = path


def add_etc_files(spec: dict[str, Any], bundle: str, role: PodRole, resolv_conf: str) -> None:
    """/etc/hostname, hosts and resolv.conf as bind mounts, unless the spec mounts its own: a workload's come from
    its sandbox; any other container's are written into its bundle (a sandbox's always: its workloads use them)."""
    mounts = spec.setdefault("mounts", [])
    taken = {m.get("destination") for m in mounts if isinstance(m, dict)}
    options = ["bind", "ro" if (spec.get("root") or {}).get("readonly") else "rw"]
    if role.is_workload:
        sources = {name: os.path.join(role.root, name) for name in ETC_FILES}
    else:
        hostname = spec.get("hostname") or os.uname().nodename
        texts = {
            "hostname": hostname + "\n",
            "hosts": f"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 {hostname}\n",
            "resolv.conf": resolv_conf,
        }
        sources = {}
        for name, text in texts.items():
            sources[name] = os.path.join(bundle, name)
            with open(sources[name], "w") as f:
                f.write(text)
    for name, source in sources.items():
        if f"/etc/{name}" not in taken:
            mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": source, "options": options})


def release(role: PodRole) -> None:
    """The container goes: a sandbox's tmpfs is unmounted (lazily: a workload may still hold it as it goes)."""
    if role.tmpfs:
        with contextlib.suppress(OSError):
            umount_raw(role.tmpfs, _MNT_DETACH)
        role.tmpfs = ""
