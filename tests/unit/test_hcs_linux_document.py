"""The Linux backend's reading of schema2 documents (hcsshim.hcs.linux.document) and its HvSocket naming
(hcsshim.hcs.linux.hvsock), without starting anything: what upstream's LCOW document becomes, and the refusal,
by field path, of what has no QEMU counterpart."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hcsshim.bridge.wire import HResultError
from hcsshim.hcs import errors
from hcsshim.hcs.linux import hvsock
from hcsshim.hcs.linux.document import SCSI_CONTROLLER_GUIDS, controller_index, parse

GOLDEN = json.loads((Path(__file__).resolve().parent.parent / "golden" / "schema2" /
                     "lcow_compute_system.json").read_text())


def test_upstreams_lcow_document_is_read_whole() -> None:
    cfg = parse("c1", json.dumps(GOLDEN), check_files=False)
    assert (cfg.owner, cfg.memory_mb, cfg.cpus, cfg.stop_on_reset) == ("containerd-shim-runhcs-v1.exe", 1024, 2, True)
    assert cfg.kernel.endswith("vmlinux") and cfg.initrd.endswith("initrd.img") and cfg.cmdline.startswith("initcall")
    assert cfg.scsi_controllers == 1 and cfg.scsi_keys == {0: SCSI_CONTROLLER_GUIDS[0]} and cfg.disks == []
    assert cfg.ports == {"00000050-facb-11e6-bd58-64006a7986d3": "vsock.80"}
    assert cfg.terminate_on_last_handle_closed and cfg.memory_file is None and cfg.restore_from is None


def refused(doc: dict) -> HResultError:
    with pytest.raises(HResultError) as info:
        parse("c1", json.dumps(doc), check_files=False)
    return info.value


@pytest.mark.parametrize("path, value, shown", [
    (("VirtualMachine", "Devices", "Battery"), {}, "VirtualMachine.Devices.Battery"),
    (("VirtualMachine", "Devices", "Keyboard"), {}, "VirtualMachine.Devices.Keyboard"),
    (("VirtualMachine", "Devices", "ComPorts"), {"1": {"NamedPipe": "/x"}}, 'VirtualMachine.Devices.ComPorts["1"]'),
    (("VirtualMachine", "Devices", "Scsi"), {SCSI_CONTROLLER_GUIDS[0]: {"Attachments": {"0": {
        "Type": "VirtualDisk", "Path": "/x", "CachingMode": "Uncached"}}}},
     f'VirtualMachine.Devices.Scsi["{SCSI_CONTROLLER_GUIDS[0]}"].Attachments["0"].CachingMode'),
    (("VirtualMachine", "ComputeTopology", "Numa"), {"VirtualNodeCount": 2}, "VirtualMachine.ComputeTopology.Numa"),
    (("VirtualMachine", "SecuritySettings"), {"EnableTpm": True}, "VirtualMachine.SecuritySettings"),
    (("Container",), {}, "Container"),
])
def test_a_field_without_a_qemu_counterpart_is_refused_by_its_path(path: tuple[str, ...], value: object,
                                                                   shown: str) -> None:
    doc = copy.deepcopy(GOLDEN)
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    err = refused(doc)
    assert str(err).startswith(shown) and errors.is_any(err, errors.ErrNotSupported), err


@pytest.mark.parametrize("change, message", [
    (lambda d: d["VirtualMachine"]["ComputeTopology"]["Processor"].update(Count="2"),
     "VirtualMachine.ComputeTopology.Processor: field Count: expected uint32"),
    (lambda d: d["VirtualMachine"]["ComputeTopology"]["Memory"].update(SizeInMB=32),
     "VirtualMachine.ComputeTopology.Memory.SizeInMB: 32 MB is too little"),
    (lambda d: d["VirtualMachine"]["Chipset"].pop("LinuxKernelDirect"),
     "VirtualMachine.Chipset.LinuxKernelDirect.KernelFilePath: required"),
    (lambda d: d["VirtualMachine"]["Devices"]["Scsi"].update({"nine": {}}), "SCSI controller 'nine'"),
    (lambda d: d["VirtualMachine"]["Devices"]["HvSocket"]["HvSocketConfig"]["ServiceTable"].update({"port-1": {}}),
     "service id 'port-1' is not a GUID"),
    (lambda d: d.pop("VirtualMachine"), "VirtualMachine: required"),
    (lambda d: d["VirtualMachine"].update(GuestState={"ForceTransientState": True}),
     "VirtualMachine.GuestState.ForceTransientState: needs RuntimeStateFilePath"),
])
def test_a_malformed_document_is_invalid_json_naming_the_field(change, message: str) -> None:
    doc = copy.deepcopy(GOLDEN)
    change(doc)
    err = refused(doc)
    assert message in str(err) and errors.is_any(err, errors.ErrVmcomputeInvalidJSON), err


def test_files_the_document_names_must_exist_unless_it_was_accepted_before() -> None:
    with pytest.raises(HResultError, match=r"KernelFilePath: C:.*vmlinux: no such file"):
        parse("c1", json.dumps(GOLDEN))
    assert parse("c1", json.dumps(GOLDEN), check_files=False).kernel.endswith("vmlinux")


def test_scsi_controllers_are_upstreams_guids_or_their_numbers() -> None:
    assert [controller_index(g) for g in SCSI_CONTROLLER_GUIDS] == [0, 1, 2, 3]
    assert controller_index("2") == 2 and controller_index(SCSI_CONTROLLER_GUIDS[1].upper()) == 1
    for bad in ("4", "-1", "x"):
        with pytest.raises(ValueError, match="SCSI controller"):
            controller_index(bad)


def test_vsock_services_are_ports_and_other_services_keep_their_guid() -> None:
    assert hvsock.vsock_service_id(0x40000000) == "40000000-facb-11e6-bd58-64006a7986d3"
    assert hvsock.port_name("40000000-FACB-11E6-BD58-64006A7986D3") == "vsock.1073741824"
    assert hvsock.port_name("{0000006d-facb-11e6-bd58-64006a7986d3}") == "vsock.109"
    g = "e0e16197-dd56-4a10-9195-5ee7a155a838"
    assert hvsock.port_name(g) == f"hvsock.{g}"
    assert hvsock.socket_path("/run/x", g) == f"/run/x/hvsock/hvsock.{g}.sock"
    with pytest.raises(ValueError):
        hvsock.vsock_service_id(-1)
