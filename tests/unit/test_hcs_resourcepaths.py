"""hcsshim.hcs.resourcepaths: upstream's exact modify resource paths, the builders, and parse mapping every path
back to its template and arguments (and refusing anything else by name)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.hcs import resourcepaths as rp

UPSTREAM = {
    "SILO_DEVICE_RESOURCE_PATH": "Container/Devices/Generic",
    "SILO_MAPPED_DIRECTORY_RESOURCE_PATH": "Container/MappedDirectories",
    "SILO_MAPPED_PIPE_RESOURCE_PATH": "Container/MappedPipes",
    "SILO_MEMORY_RESOURCE_PATH": "Container/Memory/SizeInMB",
    "SILO_REGISTRY_FLUSH_STATE_PATH": "Container/RegistryFlushState",
    "SILO_PROCESSOR_RESOURCE_PATH": "Container/Processor",
    "GPU_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Gpu",
    "MEMORY_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Memory/SizeInMB",
    "CPU_GROUP_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Processor/CpuGroup",
    "IDLED_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Processor/IdledProcessors",
    "CPU_FREQUENCY_POWER_CAP_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Processor/CpuFrequencyPowerCap",
    "CPU_LIMITS_RESOURCE_PATH": "VirtualMachine/ComputeTopology/Processor/Limits",
    "SERIAL_RESOURCE_FORMAT": "VirtualMachine/Devices/ComPorts/%d",
    "FLEXIBLE_IOV_RESOURCE_FORMAT": "VirtualMachine/Devices/FlexibleIov/%s",
    "LICENSING_RESOURCE_PATH": "VirtualMachine/Devices/Licensing",
    "MAPPED_PIPE_RESOURCE_FORMAT": "VirtualMachine/Devices/MappedPipes/%s",
    "NETWORK_RESOURCE_FORMAT": "VirtualMachine/Devices/NetworkAdapters/%s",
    "PLAN9_SHARE_RESOURCE_PATH": "VirtualMachine/Devices/Plan9/Shares",
    "SCSI_RESOURCE_FORMAT": "VirtualMachine/Devices/Scsi/%s/Attachments/%d",
    "SHARED_MEMORY_REGION_RESOURCE_PATH": "VirtualMachine/Devices/SharedMemory/Regions",
    "VIRTUAL_PCI_RESOURCE_FORMAT": "VirtualMachine/Devices/VirtualPci/%s",
    "VPMEM_CONTROLLER_RESOURCE_FORMAT": "VirtualMachine/Devices/VirtualPMem/Devices/%d",
    "VPMEM_DEVICE_RESOURCE_FORMAT": "VirtualMachine/Devices/VirtualPMem/Devices/%d/Mappings/%d",
    "VSMB_SHARE_RESOURCE_PATH": "VirtualMachine/Devices/VirtualSmb/Shares",
    "HV_SOCKET_CONFIG_RESOURCE_FORMAT": "VirtualMachine/Devices/HvSocket/HvSocketConfig/ServiceTable/%s",
}

GUID = "df6d0690-79e5-55b6-a5ec-c1e2f77f580a"


def test_every_constant_is_upstreams_string() -> None:
    assert {name: getattr(rp, name) for name in UPSTREAM} == UPSTREAM
    assert rp.TEMPLATES == UPSTREAM
    assert rp.LIVE_MIGRATION_SOCKET_URI == "hcs:/VirtualMachine/LiveMigrationSocket"


@pytest.mark.parametrize("name", sorted(n for n, t in UPSTREAM.items() if "%" not in t))
def test_a_fixed_path_parses_to_its_name(name: str) -> None:
    assert rp.parse(UPSTREAM[name]) == (name, ())
    assert rp.build(name) == UPSTREAM[name]


@pytest.mark.parametrize(("path", "name", "args"), [
    (rp.scsi_attachment(GUID, 0), "SCSI_RESOURCE_FORMAT", (GUID, 0)),
    (rp.scsi_attachment("0", 63), "SCSI_RESOURCE_FORMAT", ("0", 63)),
    (rp.com_port(1), "SERIAL_RESOURCE_FORMAT", (1,)),
    (rp.flexible_iov("iov0"), "FLEXIBLE_IOV_RESOURCE_FORMAT", ("iov0",)),
    (rp.mapped_pipe(r"\\.\pipe\docker_engine"), "MAPPED_PIPE_RESOURCE_FORMAT", (r"\\.\pipe\docker_engine",)),
    (rp.mapped_pipe(r"\\.\pipe\a/b"), "MAPPED_PIPE_RESOURCE_FORMAT", (r"\\.\pipe\a/b",)),
    (rp.network_adapter(GUID), "NETWORK_RESOURCE_FORMAT", (GUID,)),
    (rp.virtual_pci(GUID), "VIRTUAL_PCI_RESOURCE_FORMAT", (GUID,)),
    (rp.vpmem_controller(0), "VPMEM_CONTROLLER_RESOURCE_FORMAT", (0,)),
    (rp.vpmem_mapping(3, 1 << 40), "VPMEM_DEVICE_RESOURCE_FORMAT", (3, 1 << 40)),
    (rp.hv_socket_service(GUID), "HV_SOCKET_CONFIG_RESOURCE_FORMAT", (GUID,)),
])
def test_a_built_path_parses_back_to_its_template_and_arguments(path: str, name: str,
                                                                 args: tuple[str | int, ...]) -> None:
    parsed = rp.parse(path)
    assert parsed == (name, args)
    assert (parsed.template, parsed.args) == (name, args)
    assert rp.build(*((parsed.template, *parsed.args))) == path


def test_builders_fill_upstreams_templates() -> None:
    assert rp.scsi_attachment(GUID, 2) == f"VirtualMachine/Devices/Scsi/{GUID}/Attachments/2"
    assert rp.vpmem_mapping(1, 4096) == "VirtualMachine/Devices/VirtualPMem/Devices/1/Mappings/4096"
    assert rp.com_port(0) == "VirtualMachine/Devices/ComPorts/0"


@pytest.mark.parametrize("path", [
    "", "Container", "Container/Memory", "container/memory/sizeinmb", "Container/Memory/SizeInMB/",
    "/Container/Memory/SizeInMB", "VirtualMachine/Devices/Scsi/x/Attachments/",
    "VirtualMachine/Devices/Scsi//Attachments/1",
    "VirtualMachine/Devices/Scsi/x/Attachments/01", "VirtualMachine/Devices/Scsi/x/Attachments/-1",
    "VirtualMachine/Devices/Scsi/x/Attachments/a", "VirtualMachine/Devices/Scsi/a/b/Attachments/1",
    "VirtualMachine/Devices/NetworkAdapters/", "VirtualMachine/Devices/NetworkAdapters/a/b",
    "VirtualMachine/Devices/VirtualPMem/Devices/1/Mappings", "VirtualMachine/Devices/ComPorts/1 ",
    "VirtualMachine/Devices/MappedPipes/", rp.LIVE_MIGRATION_SOCKET_URI,
])
def test_a_path_that_is_no_template_is_a_value_error_naming_it(path: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"resource path {path!r}: not a known HCS modify resource path")):
        rp.parse(path)


def test_parse_refuses_a_non_string() -> None:
    with pytest.raises(ValueError, match="resource path 3: not a string"):
        rp.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rp.scsi_attachment("", 0), "argument 1 must be a non-empty string"),
    (lambda: rp.scsi_attachment("a/b", 0), "argument 1 must be a non-empty string without '/'"),
    (lambda: rp.scsi_attachment(GUID, -1), "argument 2 must be a non-negative int, got -1"),
    (lambda: rp.scsi_attachment(GUID, True), "argument 2 must be a non-negative int, got True"),
    (lambda: rp.network_adapter(5), "argument 1 must be a non-empty string"),  # type: ignore[arg-type]
    (lambda: rp.build("SERIAL_RESOURCE_FORMAT"), "expected 1 arguments, got 0"),
    (lambda: rp.build("NOPE"), "unknown resource path template 'NOPE'"),
])
def test_builders_refuse_what_parse_could_not_give_back(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


_TEMPLATE_ARGS = {name: re.findall(r"%[sd]", t) for name, t in UPSTREAM.items() if "%" in t}
_component = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="/"), min_size=1)


@st.composite
def template_and_args(draw: st.DrawFn) -> tuple[str, tuple[str | int, ...]]:
    name = draw(st.sampled_from(sorted(_TEMPLATE_ARGS)))
    args = tuple(draw(st.integers(0, (1 << 64) - 1)) if v == "%d" else draw(_component)
                 for v in _TEMPLATE_ARGS[name])
    return name, args


@given(template_and_args())
def test_every_built_path_parses_back(case: tuple[str, tuple[str | int, ...]]) -> None:
    name, args = case
    assert rp.parse(rp.build(name, *args)) == (name, args)
