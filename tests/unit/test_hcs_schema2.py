"""hcsshim.hcs.schema2: upstream's 164 schema2 types (less the 4 swagger leftovers) as gojson documents, checked
against golden documents written from upstream's field tags (tests/golden/schema2/<area>.json: every field of
every type set, so names, nesting and kinds are exercised) and an LCOW ComputeSystem as upstream's uvm builds it."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim import gojson
from hcsshim.gojson import ZERO_TIME, DecodeError, Struct
from hcsshim.hcs import schema2
from hcsshim.hcs.schema2 import (
    TYPES,
    Attachment,
    Chipset,
    ComputeSystem,
    Devices,
    HostedSystem,
    HvSocket2,
    HvSocketServiceConfig,
    HvSocketSystemConfig,
    InterfaceClass,
    IovSettings,
    LinuxKernelDirect,
    ObjectDirectory,
    Plan9,
    Properties,
    Scsi,
    Topology,
    Version,
    VirtualMachine,
    VirtualMachineMemory,
    VirtualMachineProcessor,
    VirtualPciDevice,
    VirtualPciFunction,
    VirtualPMemController,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "schema2"
AREAS = ("documents", "processes", "properties", "topology", "firmware", "devices", "storage", "credguard",
         "migration")
MODULES = ("common", "processes", "topology", "firmware", "storage", "devices", "credguard", "migration",
           "properties", "documents")  # each may import only the ones before it
SWAGGER_LEFTOVERS = {"Configuration", "BasicAuth", "APIKey", "contextKey"}
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                             "\u2029": "\\u2029"})


def go_text(doc: Any) -> str:
    """What Go's json.Marshal writes for a JSON document kept in field order: compact, UTF-8, HTML-escaped."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)


def load(area: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{area}.json").read_text(encoding="utf-8"))


GOLDEN_DOCS = {(area, name): doc for area in AREAS for name, doc in load(area).items()}
STRUCTS = {n: c for n, c in TYPES.items() if issubclass(c, Struct)}
ENUMS = {n: c for n, c in TYPES.items() if not issubclass(c, Struct)}


def constants(cls: type) -> list[Any]:
    return [v for k, v in vars(cls).items() if k.isupper()]


# -- coverage ---------------------------------------------------------------------------------------------------


def test_every_upstream_type_but_the_swagger_leftovers_is_written() -> None:
    assert len(TYPES) == 164 - len(SWAGGER_LEFTOVERS) == 160
    assert (len(STRUCTS), len(ENUMS)) == (141, 19)
    assert not SWAGGER_LEFTOVERS & set(TYPES)
    assert all(cls.__name__ == name for name, cls in TYPES.items())
    assert all(getattr(schema2, name) is cls for name, cls in TYPES.items())


def test_every_type_has_exactly_one_golden_document() -> None:
    names = [name for _, name in GOLDEN_DOCS]
    assert len(names) == len(set(names)) == 160
    assert set(names) == set(TYPES)


@pytest.mark.parametrize(("area", "name"), [k for k in GOLDEN_DOCS if k[1] in STRUCTS])
def test_a_golden_document_sets_every_field_of_its_type_in_declaration_order(area: str, name: str) -> None:
    assert list(GOLDEN_DOCS[area, name]) == [f.key for f in STRUCTS[name]._FIELDS]


# -- golden round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("area", "name"), [k for k in GOLDEN_DOCS if k[1] in STRUCTS])
def test_a_golden_document_reads_and_writes_back_byte_for_byte(area: str, name: str) -> None:
    doc = GOLDEN_DOCS[area, name]
    text = go_text(doc)
    parsed = gojson.loads(text, STRUCTS[name])
    assert gojson.dumps(parsed) == text
    assert STRUCTS[name].from_json(json.loads(text)) == parsed


@pytest.mark.parametrize(("area", "name"), [k for k in GOLDEN_DOCS if k[1] in ENUMS])
def test_an_enum_has_upstreams_values_in_upstreams_order(area: str, name: str) -> None:
    assert constants(ENUMS[name]) == GOLDEN_DOCS[area, name]


# -- zero values and wire quirks --------------------------------------------------------------------------------

ALWAYS_WRITTEN = {  # struct values and time.Time are written even when omitempty (Go does not omit structs)
    "NumaProcessors": '{"count_per_node":{}}',
    "Statistics": f'{{"Timestamp":"{ZERO_TIME}","ContainerStartTime":"{ZERO_TIME}"}}',
    "ProcessDetails": f'{{"CreateTimestamp":"{ZERO_TIME}"}}',
    "BlackoutExitedEventDetails": f'{{"BlackoutStopTimestamp":"{ZERO_TIME}"}}',
}


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_a_zero_document_is_empty_but_for_struct_values_and_times(name: str) -> None:
    cls = STRUCTS[name]
    assert gojson.dumps(cls()) == ALWAYS_WRITTEN.get(name, "{}")
    assert cls.from_json({}) == cls()


def test_upstreams_renamed_keys_are_kept() -> None:
    assert gojson.dumps(Attachment(type="VirtualDisk")) == '{"Type":"VirtualDisk"}'
    assert gojson.dumps(InterfaceClass(type="DeviceInterface")) == '{"type":"DeviceInterface"}'
    memory = VirtualMachineMemory(low_mmio_gap_in_mb=1, high_mmio_base_in_mb=2, high_mmio_gap_in_mb=3)
    assert gojson.dumps(memory) == '{"LowMmioGapInMB":1,"HighMmioBaseInMB":2,"HighMmioGapInMB":3}'
    assert gojson.dumps(Properties(metrics={"pids": {"current": 1}})) == '{"LCOWMetrics":{"pids":{"current":1}}}'


def test_fields_whose_tag_has_no_name_use_the_go_field_name() -> None:
    pci = VirtualPciDevice(functions=[VirtualPciFunction(device_instance_path="PCI\\X", virtual_function=1)])
    text = gojson.dumps(Devices(virtual_pci={"g": pci}))
    assert text == '{"VirtualPci":{"g":{"Functions":[{"DeviceInstancePath":"PCI\\\\X","VirtualFunction":1}]}}}'


def test_a_pointer_to_a_zero_scalar_is_written_and_none_is_left_out() -> None:
    assert gojson.dumps(IovSettings(offload_weight=0)) == '{"OffloadWeight":0}'
    assert gojson.dumps(VirtualPciDevice(propagate_numa_affinity=False)) == '{"PropagateNumaAffinity":false}'
    assert IovSettings.from_json({}).offload_weight is None


def test_an_object_directory_nests_object_directories() -> None:
    d = ObjectDirectory.from_json({"name": "a", "objdir": [{"name": "b", "objdir": [{"name": "c"}]}]})
    assert d.objdir[0].objdir[0] == ObjectDirectory(name="c")
    assert gojson.dumps(d) == '{"name":"a","objdir":[{"name":"b","objdir":[{"name":"c"}]}]}'
    assert ObjectDirectory().objdir == []


def test_a_hosted_system_set_as_a_document_is_written_as_its_json() -> None:
    cs = ComputeSystem(hosting_system_id="uvm", hosted_system=HostedSystem(schema_version=Version(major=2, minor=1)))
    text = gojson.dumps(cs)
    assert text == '{"HostingSystemId":"uvm","HostedSystem":{"SchemaVersion":{"Major":2,"Minor":1}}}'
    assert ComputeSystem.from_json(json.loads(text)).hosted_system == {"SchemaVersion": {"Major": 2, "Minor": 1}}


# -- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "body", "message"), [
    (VirtualMachine, {"Devices": {"Scsi": {"0": {"Attachments": {"0": {"Path": 5}}}}}},
     'VirtualMachine.Devices.Scsi["0"].Attachments["0"]: field Path: expected string, got 5'),
    (ComputeSystem, {"SchemaVersion": {"Major": "2"}},
     "ComputeSystem.SchemaVersion: field Major: expected int32, got string"),
    (schema2.ProcessParameters, {"ConsoleSize": [30, "x"]},
     "ProcessParameters: field ConsoleSize[1]: expected int32, got string"),
    (schema2.ProcessStatus, {"ExitCode": -1}, "ProcessStatus: field ExitCode: expected uint32, got -1"),
    (schema2.Plan9Share, {"Port": 1 << 31}, "Plan9Share: field Port: expected int32, got 2147483648"),
    (VirtualPciFunction, {"VirtualFunction": 65536},
     "VirtualPciFunction: field VirtualFunction: expected uint16, got 65536"),
    (schema2.Statistics, {"Timestamp": "yesterday"}, "Statistics: field Timestamp: expected RFC 3339 time, got string"),
    (schema2.FirmwareFile, {"Parameters": "***"}, "FirmwareFile: field Parameters: expected base64 string, got string"),
    (IovSettings, {"InterruptModeration": 3}, "IovSettings: field InterruptModeration: expected string, got 3"),
    (schema2.MemoryMigrationTransferThrottleParams, {"ThrottlingScale": "fast"},
     "MemoryMigrationTransferThrottleParams: field ThrottlingScale: expected float64, got string"),
    (ObjectDirectory, {"objdir": [{"objdir": [{"name": 1}]}]},
     "ObjectDirectory.objdir[0].objdir[0]: field name: expected string, got 1"),
    (Devices, {"Scsi": []}, "Devices: field Scsi: expected object of Scsi, got array"),
])
def test_a_wrong_type_raises_decode_error_naming_the_field_path(cls: type[Struct], body: dict[str, Any],
                                                                 message: str) -> None:
    with pytest.raises(DecodeError) as raised:
        cls.from_json(body)
    assert str(raised.value) == message


# -- the LCOW utility VM document -------------------------------------------------------------------------------

LCOW = GOLDEN / "lcow_compute_system.json"
SD = "D:P(A;;FA;;;SY)(A;;FA;;;BA)"


def test_the_lcow_compute_system_reads_and_writes_back_byte_for_byte() -> None:
    text = go_text(json.loads(LCOW.read_text(encoding="utf-8")))
    doc = gojson.loads(text, ComputeSystem)
    assert gojson.dumps(doc) == text
    vm = doc.virtual_machine
    assert doc.schema_version == Version(major=2, minor=1) and doc.should_terminate_on_last_handle_closed
    assert vm.stop_on_reset and vm.chipset.linux_kernel_direct.kernel_file_path.endswith("\\vmlinux")
    assert vm.compute_topology.memory.size_in_mb == 1024 and vm.compute_topology.processor.count == 2
    assert vm.devices.scsi == {"df6d0690-79e5-55b6-a5ec-c1e2f77f580a": Scsi()}
    assert vm.devices.plan9 == Plan9()


def test_the_lcow_compute_system_is_what_the_typed_documents_write() -> None:
    boot = "C:\\Program Files\\Linux Containers"
    cmdline = (" initcall_blacklist=virtio_vsock_init 8250_core.nr_uarts=0 panic=-1 quiet pci=off nr_cpus=2"
               " brd.rd_nr=0 pmtmr=0 -- -e 1 /bin/vsockexec -e 109 /bin/gcs -v4 -log-format json -loglevel info")
    doc = ComputeSystem(
        owner="containerd-shim-runhcs-v1.exe",
        schema_version=Version(major=2, minor=1),
        should_terminate_on_last_handle_closed=True,
        virtual_machine=VirtualMachine(
            stop_on_reset=True,
            chipset=Chipset(linux_kernel_direct=LinuxKernelDirect(
                kernel_file_path=f"{boot}\\vmlinux", init_rd_path=f"{boot}\\initrd.img", kernel_cmd_line=cmdline)),
            compute_topology=Topology(
                memory=VirtualMachineMemory(size_in_mb=1024, allow_overcommit=True, enable_deferred_commit=True),
                processor=VirtualMachineProcessor(count=2)),
            devices=Devices(
                scsi={"df6d0690-79e5-55b6-a5ec-c1e2f77f580a": Scsi()},
                virtual_pmem=VirtualPMemController(maximum_count=64, maximum_size_bytes=4 << 30),
                hv_socket=HvSocket2(hv_socket_config=HvSocketSystemConfig(
                    default_bind_security_descriptor=SD,
                    service_table={"00000050-facb-11e6-bd58-64006a7986d3": HvSocketServiceConfig(
                        bind_security_descriptor=SD, connect_security_descriptor=SD, allow_wildcard_binds=True)})),
                plan9=Plan9())))
    assert gojson.dumps(doc) == go_text(json.loads(LCOW.read_text(encoding="utf-8")))


# -- properties and package hygiene -----------------------------------------------------------------------------


@given(st.builds(VirtualMachineMemory, size_in_mb=st.integers(0, (1 << 64) - 1),
                 backing=st.none() | st.sampled_from(constants(schema2.MemoryBackingType)),
                 allow_overcommit=st.booleans(), low_mmio_gap_in_mb=st.integers(0, (1 << 64) - 1),
                 slit_type=st.none() | st.sampled_from(constants(schema2.VirtualSlitType))),
       st.dictionaries(st.text(max_size=4), st.builds(Attachment, type=st.text(), read_only=st.booleans()),
                       max_size=3))
def test_what_is_written_reads_back_the_same(memory: VirtualMachineMemory, attachments: dict[str, Attachment]) -> None:
    vm = VirtualMachine(compute_topology=Topology(memory=memory), devices=Devices(scsi={"0": Scsi(
        attachments=attachments)}))
    assert gojson.loads(gojson.dumps(vm), VirtualMachine) == vm


def test_the_package_needs_only_the_standard_library_and_gojson_and_imports_in_module_order() -> None:
    package = Path(schema2.__file__).parent
    for i, module in enumerate(MODULES):
        source = (package / f"{module}.py").read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 600
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if name.startswith("hcsshim.hcs.schema2."):
                    assert name.rsplit(".", 1)[1] in MODULES[:i], f"{module} imports {name}"
                else:
                    assert name in {"__future__", "typing", "collections.abc", "hcsshim.gojson"}, name
            elif isinstance(node, ast.Import):
                pytest.fail(f"{module}: import {node.names[0].name}")
