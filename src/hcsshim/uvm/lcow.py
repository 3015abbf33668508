"""The utility VM's schema2 ComputeSystem document, as upstream's uvm builds it (create_lcow.go, MakeLCOWDoc), and
the two variants templates need: the template VM's (its RAM in a file it shares) and a clone's (that RAM mapped
copy-on-write, the template's saved state restored).

The document is what the VM *is*: hcsshim.hcs creates the compute system from it, and on Linux the backend reads
it into a QEMU machine (hcsshim.hcs.linux.document says what each field becomes). As upstream:

* Owner, SchemaVersion 2.1, ShouldTerminateOnLastHandleClosed (the VM dies with the process that made it);
* StopOnReset, and the kernel booted directly (Chipset.LinuxKernelDirect: kernel, initrd, command line);
* ComputeTopology: memory (AllowOvercommit, EnableDeferredCommit) and processors;
* Devices: SCSI controller 0 (upstream's first controller GUID), with the read-only rootfs.vhd at LUN 0 when the
  VM boots from it; an empty Plan9 (shares are added by modify requests); the HvSocket services of the GCS
  bridge and its log (upstream's vsock ports 0x40000000 and 109), with upstream's security descriptors; COM1
  to `console.log` in the VM's directory when the console is on. Upstream's VirtualPMem controller is left out:
  layers travel as SCSI disks here.
"""

from __future__ import annotations

import os

from hcsshim.hcs.linux.document import SCSI_CONTROLLER_GUIDS
from hcsshim.hcs.schema2 import (
    Attachment,
    Chipset,
    ComPort,
    ComputeSystem,
    Devices,
    GuestState,
    HvSocket2,
    HvSocketServiceConfig,
    HvSocketSystemConfig,
    LinuxKernelDirect,
    Plan9,
    RestoreState,
    Scsi,
    Topology,
    Version,
    VirtualMachine,
    VirtualMachineMemory,
    VirtualMachineProcessor,
)
from hcsshim.uvm.options import BRIDGE_SERVICE, LOG_SERVICE, BootFiles, UVMOptions, kernel_cmdline

__all__ = ["OWNER", "SCSI_CONTROLLER", "clone_document", "lcow_document", "template_document"]

OWNER = "containerd-shim-runhcs-v1"  # upstream's default owner of a utility VM
SCSI_CONTROLLER = SCSI_CONTROLLER_GUIDS[0]  # the VM's one SCSI controller, as resource paths name it
SECURITY_DESCRIPTOR = "D:P(A;;FA;;;SY)(A;;FA;;;BA)"  # upstream's: SYSTEM and Administrators only
CONSOLE = "console.log"


def lcow_document(opts: UVMOptions, boot: BootFiles, run_dir: str, *, owner: str = OWNER) -> ComputeSystem:
    """The document of a utility VM with these options and boot files, its console in `run_dir`."""
    scsi = Scsi()
    if boot.rootfs_vhd is not None:
        scsi.attachments["0"] = Attachment(type="VirtualDisk", path=boot.rootfs_vhd, read_only=True)
    services = {s: HvSocketServiceConfig(bind_security_descriptor=SECURITY_DESCRIPTOR,
                                         connect_security_descriptor=SECURITY_DESCRIPTOR, allow_wildcard_binds=True)
                for s in (BRIDGE_SERVICE, LOG_SERVICE)}
    devices = Devices(scsi={SCSI_CONTROLLER: scsi}, plan9=Plan9(),
                      hv_socket=HvSocket2(hv_socket_config=HvSocketSystemConfig(
                          default_bind_security_descriptor=SECURITY_DESCRIPTOR, service_table=services)))
    if opts.console:
        devices.com_ports["0"] = ComPort(named_pipe=os.path.join(run_dir, CONSOLE))
    vm = VirtualMachine(
        stop_on_reset=True,
        chipset=Chipset(linux_kernel_direct=LinuxKernelDirect(kernel_file_path=boot.kernel,
                                                              init_rd_path=boot.initrd or "",
                                                              kernel_cmd_line=kernel_cmdline(opts, boot))),
        compute_topology=Topology(memory=VirtualMachineMemory(size_in_mb=opts.memory_mb, allow_overcommit=True,
                                                              enable_deferred_commit=True),
                                  processor=VirtualMachineProcessor(count=opts.cpus)),
        devices=devices)
    return ComputeSystem(owner=owner, schema_version=Version(major=2, minor=1), virtual_machine=vm,
                         should_terminate_on_last_handle_closed=True)


def template_document(doc: ComputeSystem, memory: str) -> ComputeSystem:
    """The template VM's document: `doc` with its RAM in the file `memory`, which it writes (shared)."""
    out = ComputeSystem.from_json(doc.to_json())
    assert out.virtual_machine is not None
    out.virtual_machine.guest_state = GuestState(runtime_state_file_path=memory)
    return out


def clone_document(doc: ComputeSystem, state: str, *, memory: str | None = None,
                   template_id: str = "") -> ComputeSystem:
    """A clone's document: `doc` restored from the saved `state` (of template `template_id`), whose RAM file
    `memory` it maps copy-on-write (ForceTransientState: nothing is written back); without `memory` the RAM is
    in the saved state too."""
    out = ComputeSystem.from_json(doc.to_json())
    assert out.virtual_machine is not None
    if memory is not None:
        out.virtual_machine.guest_state = GuestState(runtime_state_file_path=memory, force_transient_state=True)
    out.virtual_machine.restore_state = RestoreState(save_state_file_path=state, template_system_id=template_id)
    return out
