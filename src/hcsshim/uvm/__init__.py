"""Linux utility VMs on QEMU: hcsshim's uvm package, with QEMU (KVM when it works, else TCG) as the hypervisor.

`UtilityVM` (vm.py) owns one QEMU process, its QMP and GCS connections and the lifecycle; each kind of device
has one manager that does both halves of a change (QMP and the guest) in upstream's order: `scsi.py`
(``vm.scsi``: disks), `shares.py` (``vm.shares``: Plan9 shares), `nics.py` (``vm.nics``: network adapters).
`qemu.py` maps the options onto QEMU's command line and the guest kernel's; `accel.py` decides between KVM
and TCG; `procfs.py` reads QEMU's statistics and start time; `stale.py` cleans up after an owner that died
(`cleanup_stale`); `template.py` keeps the templates VMs are restored from (`TemplateStore`) and saves and
restores their state; `bootpath.py` says where the default boot files are; `common.py` is what the VM and its
managers share (UVMError, State).
"""

from hcsshim.uvm.common import State, UVMError
from hcsshim.uvm.nics import Nic, NicManager
from hcsshim.uvm.procfs import VMStats
from hcsshim.uvm.qemu import UVMOptions, apply_annotations
from hcsshim.uvm.scsi import ScsiManager, ScsiMount
from hcsshim.uvm.shares import ShareManager, ShareMount
from hcsshim.uvm.stale import cleanup_stale
from hcsshim.uvm.template import Template, TemplateError, TemplateStore
from hcsshim.uvm.vm import UtilityVM

__all__ = ["Nic", "NicManager", "ScsiManager", "ScsiMount", "ShareManager", "ShareMount", "State", "Template",
           "TemplateError", "TemplateStore", "UVMError", "UVMOptions", "UtilityVM", "VMStats", "apply_annotations",
           "cleanup_stale"]
