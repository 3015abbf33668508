"""What `delete` frees of a hypervisor-isolated task after its shim died: the task's utility VM (its compute system:
QEMU, share mounts and directory, when the task owned the VM: a standalone task or a pod's sandbox; also the VM
that was building its template) and its references in the host's layer cache. Synchronous and quick, for
containerd's 5 s cleanup timeout; idempotent, and a no-op for a process-isolated task (nothing of the kind exists)."""

from __future__ import annotations

import os

from hcsshim.hcs.linux.registry import cleanup_stale
from hcsshim.layers import LayerCache, LayerError
from hcsshim.shim.paths import LAYER_HOLDER_FILE, uvm_id, uvm_run_root
from hcsshim.uvm.vm import template_vm_id


def cleanup_after_dead_shim(bundle: str, task_id: str) -> list[str]:
    """Frees the task's VM and layer references; returns warnings (what could not be freed)."""
    root, vm_id = uvm_run_root(bundle), uvm_id(task_id)
    warnings = [*cleanup_stale(root, vm_id), *cleanup_stale(root, template_vm_id(vm_id))]
    try:
        with open(os.path.join(bundle, LAYER_HOLDER_FILE)) as f:
            holder = f.read().strip()
    except OSError:
        holder = ""
    if holder:
        try:
            LayerCache().release_holder(holder)
        except LayerError as exc:
            warnings.append(f"delete {task_id}: layer references: {exc}")
    return warnings
