"""Choosing where a shim's containers run: the one place that knows the backends (hcsshim.shim.backend).

The first Create of a shim opens its sandbox: a utility VM (hcsshim.shim.pod) when the task is hypervisor
isolated (`SandboxIsolation = HYPERVISOR`, or `windows.hyperv` in the spec), else the host with runc
(hcsshim.shim.runcbackend). Every later Create of the shim goes to that sandbox, which decides whether it takes
the container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hcsshim.shim import options
from hcsshim.shim.paths import uvm_run_root
from hcsshim.shim.pod import UvmSandbox
from hcsshim.shim.runcbackend import RuncSandbox

if TYPE_CHECKING:
    from hcsshim.api.containerd.task.v2 import shim_pb2 as api
    from hcsshim.api.runhcs.options.runhcs_pb2 import Options
    from hcsshim.runc import Reaper, Runc
    from hcsshim.shim.backend import Sandbox
    from hcsshim.shim.task import Host


async def open_sandbox(host: Host, req: api.CreateTaskRequest, spec: dict, opts: Options, *, runc: Runc,
                       reaper: Reaper, debug: bool) -> Sandbox:
    if options.is_hypervisor_isolated(spec, opts):
        level = "debug" if debug else (opts.log_level or "info")
        return await UvmSandbox.boot(host, req, spec, opts, reaper=reaper, run_root=uvm_run_root(req.bundle),
                                     log_level=level)
    return RuncSandbox(host, runc, reaper)
