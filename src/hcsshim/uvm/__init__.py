"""Linux utility VMs: hcsshim's uvm package, over hcsshim.hcs (whose Linux backend runs them on QEMU).

`UtilityVM` (vm.py) owns one compute system, its GCS connection and the lifecycle; each kind of device has one
manager that does both halves of a change (a modify request to the compute system, then the guest's) in
upstream's order: `scsi.py` (``vm.scsi``: disks), `shares.py` (``vm.shares``: Plan9 shares), `nics.py`
(``vm.nics``: network adapters). `options.py` holds the options, upstream's annotations and the guest kernel
command line; `lcow.py` builds the schema2 document from them (upstream's MakeLCOWDoc); `template.py` keeps the
templates VMs are restored from (`TemplateStore`); `bootpath.py` says where the default boot files are;
`common.py` is what the VM and its managers share (UVMError, State). Cleaning up after an owner that died is the
backend's (hcsshim.hcs.linux.registry.cleanup_stale).
"""

from hcsshim.uvm.common import State, UVMError
from hcsshim.uvm.nics import Nic, NicManager
from hcsshim.uvm.options import UVMOptions, apply_annotations
from hcsshim.uvm.scsi import ScsiManager, ScsiMount
from hcsshim.uvm.shares import ShareManager, ShareMount
from hcsshim.uvm.template import Template, TemplateError, TemplateStore
from hcsshim.uvm.vm import UtilityVM

__all__ = ["Nic", "NicManager", "ScsiManager", "ScsiMount", "ShareManager", "ShareMount", "State", "Template",
           "TemplateError", "TemplateStore", "UVMError", "UVMOptions", "UtilityVM", "apply_annotations"]
