"""The protobuf API under hcsshim.api: generated modules in sync with the .proto files, upstream's schema
(full names, field numbers and types) and byte-exact wire encodings observed from containerd 1.6.20."""

from __future__ import annotations

import datetime
import importlib.util
import pathlib
import subprocess
import sys

import pytest
from google.protobuf import any_pb2, descriptor, timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.api.containerd.cgroups.v1 import metrics_pb2
from hcsshim.api.containerd.events import task_pb2 as events_pb2
from hcsshim.api.containerd.services.events.ttrpc.v1 import events_pb2 as forward_pb2
from hcsshim.api.containerd.task.v2 import shim_pb2
from hcsshim.api.containerd.types import mount_pb2
from hcsshim.api.containerd.types import task_pb2 as types_pb2
from hcsshim.api.runc.options import oci_pb2
from hcsshim.api.runhcs.extendedtask import extendedtask_pb2
from hcsshim.api.runhcs.options import runhcs_pb2
from hcsshim.api.runhcs.shimdiag import shimdiag_pb2
from hcsshim.api.runhcs.stats import stats_pb2
from hcsshim.api.ttrpc import request_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
API = ROOT / "src" / "hcsshim" / "api"
GO_ZERO_TIME_SECONDS = -62135596800  # 0001-01-01T00:00:00Z, Go's time.Time{}


def _load_genproto():
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "tools" / "genproto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _any(message) -> any_pb2.Any:
    """Wraps a message the way containerd's typeurl does: the type URL is the bare full name."""
    return any_pb2.Any(type_url=message.DESCRIPTOR.full_name, value=message.SerializeToString())


# --- generated code -----------------------------------------------------------------------------------


def test_generated_modules_are_up_to_date(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("grpc_tools")
    _load_genproto().generate(tmp_path)
    out = tmp_path / "hcsshim" / "api"
    fresh = {p.relative_to(out) for p in out.rglob("*_pb2.py*")}
    checked_in = {p.relative_to(API) for p in API.rglob("*_pb2.py*")}
    assert fresh, "genproto generated nothing"
    assert checked_in == fresh, "checked-in generated modules differ in name from the .proto files"
    stale = [str(r) for r in sorted(fresh) if (API / r).read_bytes() != (out / r).read_bytes()]
    assert not stale, f"run tools/genproto.py: stale generated modules {stale}"


def test_every_api_package_has_an_init_module() -> None:
    missing = [str(d.relative_to(API)) for d in API.rglob("*") if d.is_dir() and d.name != "__pycache__"
               and not (d / "__init__.py").exists()]
    assert not missing


def test_task_service_module_imports_in_a_fresh_interpreter() -> None:
    code = "import hcsshim.api.containerd.task.v2.shim_pb2 as m; print(m.DESCRIPTOR.package)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "containerd.task.v2"


# --- names: ttrpc service names and Any type URLs -------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "full_name"),
    [
        (events_pb2.TaskExit, "containerd.events.TaskExit"),
        (events_pb2.TaskCreate, "containerd.events.TaskCreate"),
        (events_pb2.TaskOOM, "containerd.events.TaskOOM"),
        (events_pb2.TaskExecStarted, "containerd.events.TaskExecStarted"),
        (runhcs_pb2.Options, "containerd.runhcs.v1.Options"),
        (runhcs_pb2.ProcessDetails, "containerd.runhcs.v1.ProcessDetails"),
        (oci_pb2.ProcessDetails, "containerd.runc.v1.ProcessDetails"),
        (oci_pb2.Options, "containerd.runc.v1.Options"),
        (metrics_pb2.Metrics, "io.containerd.cgroups.v1.Metrics"),
        (stats_pb2.Statistics, "containerd.runhcs.stats.v1.Statistics"),
        (mount_pb2.Mount, "containerd.types.Mount"),
        (types_pb2.ProcessInfo, "containerd.v1.types.ProcessInfo"),
        (forward_pb2.Envelope, "containerd.services.events.ttrpc.v1.Envelope"),
        (extendedtask_pb2.ComputeProcessorInfoRequest, "ComputeProcessorInfoRequest"),
    ],
)
def test_message_full_names_are_upstreams_any_type_urls(message, full_name: str) -> None:
    assert message.DESCRIPTOR.full_name == full_name
    assert _any(message()).type_url == full_name


@pytest.mark.parametrize(
    ("module", "service", "full_name"),
    [
        (shim_pb2, "Task", "containerd.task.v2.Task"),
        (forward_pb2, "Events", "containerd.services.events.ttrpc.v1.Events"),
        (shimdiag_pb2, "ShimDiag", "containerd.runhcs.v1.diag.ShimDiag"),
        (extendedtask_pb2, "ExtendedTask", "ExtendedTask"),
    ],
)
def test_services_register_under_upstreams_ttrpc_names(module, service: str, full_name: str) -> None:
    assert module.DESCRIPTOR.services_by_name[service].full_name == full_name


def test_task_service_has_the_seventeen_rpcs_of_containerd_1_6() -> None:
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name)
               for m in shim_pb2.DESCRIPTOR.services_by_name["Task"].methods}
    empty = "google.protobuf.Empty"
    pkg = "containerd.task.v2."
    assert methods == {
        "State": (pkg + "StateRequest", pkg + "StateResponse"),
        "Create": (pkg + "CreateTaskRequest", pkg + "CreateTaskResponse"),
        "Start": (pkg + "StartRequest", pkg + "StartResponse"),
        "Delete": (pkg + "DeleteRequest", pkg + "DeleteResponse"),
        "Pids": (pkg + "PidsRequest", pkg + "PidsResponse"),
        "Pause": (pkg + "PauseRequest", empty),
        "Resume": (pkg + "ResumeRequest", empty),
        "Checkpoint": (pkg + "CheckpointTaskRequest", empty),
        "Kill": (pkg + "KillRequest", empty),
        "Exec": (pkg + "ExecProcessRequest", empty),
        "ResizePty": (pkg + "ResizePtyRequest", empty),
        "CloseIO": (pkg + "CloseIORequest", empty),
        "Update": (pkg + "UpdateTaskRequest", empty),
        "Wait": (pkg + "WaitRequest", pkg + "WaitResponse"),
        "Stats": (pkg + "StatsRequest", pkg + "StatsResponse"),
        "Connect": (pkg + "ConnectRequest", pkg + "ConnectResponse"),
        "Shutdown": (pkg + "ShutdownRequest", empty),
    }


# --- schema: field numbers and types as transcribed from the spec (sections 3.1, 4.1, 4.2, 7.2) --------

_SCALARS = {
    descriptor.FieldDescriptor.TYPE_STRING: "string",
    descriptor.FieldDescriptor.TYPE_BOOL: "bool",
    descriptor.FieldDescriptor.TYPE_UINT32: "uint32",
    descriptor.FieldDescriptor.TYPE_UINT64: "uint64",
    descriptor.FieldDescriptor.TYPE_INT32: "int32",
    descriptor.FieldDescriptor.TYPE_BYTES: "bytes",
}
_TS = "google.protobuf.Timestamp"
_ANY = "google.protobuf.Any"

# "name=number:type"; a leading * marks a repeated field.
_SCHEMA = {
    shim_pb2.CreateTaskRequest: "id=1:string bundle=2:string rootfs=3:*containerd.types.Mount "
    "terminal=4:bool stdin=5:string stdout=6:string stderr=7:string checkpoint=8:string "
    f"parent_checkpoint=9:string options=10:{_ANY}",
    shim_pb2.CreateTaskResponse: "pid=1:uint32",
    shim_pb2.StartRequest: "id=1:string exec_id=2:string",
    shim_pb2.StartResponse: "pid=1:uint32",
    shim_pb2.DeleteRequest: "id=1:string exec_id=2:string",
    shim_pb2.DeleteResponse: f"pid=1:uint32 exit_status=2:uint32 exited_at=3:{_TS}",
    shim_pb2.ExecProcessRequest: "id=1:string exec_id=2:string terminal=3:bool stdin=4:string "
    f"stdout=5:string stderr=6:string spec=7:{_ANY}",
    shim_pb2.ExecProcessResponse: "",
    shim_pb2.ResizePtyRequest: "id=1:string exec_id=2:string width=3:uint32 height=4:uint32",
    shim_pb2.StateRequest: "id=1:string exec_id=2:string",
    shim_pb2.StateResponse: "id=1:string bundle=2:string pid=3:uint32 status=4:containerd.v1.types.Status "
    "stdin=5:string stdout=6:string stderr=7:string terminal=8:bool exit_status=9:uint32 "
    f"exited_at=10:{_TS} exec_id=11:string",
    shim_pb2.KillRequest: "id=1:string exec_id=2:string signal=3:uint32 all=4:bool",
    shim_pb2.CloseIORequest: "id=1:string exec_id=2:string stdin=3:bool",
    shim_pb2.PidsRequest: "id=1:string",
    shim_pb2.PidsResponse: "processes=1:*containerd.v1.types.ProcessInfo",
    shim_pb2.CheckpointTaskRequest: f"id=1:string path=2:string options=3:{_ANY}",
    shim_pb2.UpdateTaskRequest: f"id=1:string resources=2:{_ANY} "
    "annotations=3:*containerd.task.v2.UpdateTaskRequest.AnnotationsEntry",
    shim_pb2.WaitRequest: "id=1:string exec_id=2:string",
    shim_pb2.WaitResponse: f"exit_status=1:uint32 exited_at=2:{_TS}",
    shim_pb2.StatsRequest: "id=1:string",
    shim_pb2.StatsResponse: f"stats=1:{_ANY}",
    shim_pb2.ConnectRequest: "id=1:string",
    shim_pb2.ConnectResponse: "shim_pid=1:uint32 task_pid=2:uint32 version=3:string",
    shim_pb2.ShutdownRequest: "id=1:string now=2:bool",
    shim_pb2.PauseRequest: "id=1:string",
    shim_pb2.ResumeRequest: "id=1:string",
    mount_pb2.Mount: "type=1:string source=2:string target=3:string options=4:*string",
    types_pb2.ProcessInfo: f"pid=1:uint32 info=2:{_ANY}",
    events_pb2.TaskCreate: "container_id=1:string bundle=2:string rootfs=3:*containerd.types.Mount "
    "io=4:containerd.events.TaskIO checkpoint=5:string pid=6:uint32",
    events_pb2.TaskStart: "container_id=1:string pid=2:uint32",
    events_pb2.TaskDelete: "container_id=1:string pid=2:uint32 exit_status=3:uint32 "
    f"exited_at=4:{_TS} id=5:string",
    events_pb2.TaskIO: "stdin=1:string stdout=2:string stderr=3:string terminal=4:bool",
    events_pb2.TaskExit: "container_id=1:string id=2:string pid=3:uint32 exit_status=4:uint32 "
    f"exited_at=5:{_TS}",
    events_pb2.TaskOOM: "container_id=1:string",
    events_pb2.TaskExecAdded: "container_id=1:string exec_id=2:string",
    events_pb2.TaskExecStarted: "container_id=1:string exec_id=2:string pid=3:uint32",
    events_pb2.TaskPaused: "container_id=1:string",
    events_pb2.TaskResumed: "container_id=1:string",
    events_pb2.TaskCheckpointed: "container_id=1:string checkpoint=2:string",
    forward_pb2.ForwardRequest: "envelope=1:containerd.services.events.ttrpc.v1.Envelope",
    forward_pb2.Envelope: f"timestamp=1:{_TS} namespace=2:string topic=3:string event=4:{_ANY}",
    runhcs_pb2.Options: "debug=1:bool debug_type=2:containerd.runhcs.v1.Options.DebugType "
    "registry_root=3:string sandbox_image=4:string sandbox_platform=5:string "
    "sandbox_isolation=6:containerd.runhcs.v1.Options.SandboxIsolation boot_files_root_path=7:string "
    "vm_processor_count=8:int32 vm_memory_size_in_mb=9:int32 GPUVHDPath=10:string "
    "scale_cpu_limits_to_sandbox=11:bool default_container_scratch_size_in_gb=12:int32 "
    "default_vm_scratch_size_in_gb=13:int32 share_scratch=14:bool NCProxyAddr=15:string log_level=16:string "
    "io_retry_timeout_in_sec=17:int32 "
    "default_container_annotations=18:*containerd.runhcs.v1.Options.DefaultContainerAnnotationsEntry "
    "no_inherit_host_timezone=19:bool scrub_logs=20:bool",
    runhcs_pb2.ProcessDetails: f"image_name=1:string created_at=2:{_TS} kernel_time_100_ns=3:uint64 "
    "memory_commit_bytes=4:uint64 memory_working_set_private_bytes=5:uint64 "
    "memory_working_set_shared_bytes=6:uint64 process_id=7:uint32 user_time_100_ns=8:uint64 exec_id=9:string",
    oci_pb2.ProcessDetails: "exec_id=1:string",
    stats_pb2.Statistics: "windows=1:containerd.runhcs.stats.v1.WindowsContainerStatistics "
    "linux=2:io.containerd.cgroups.v1.Metrics vm=3:containerd.runhcs.stats.v1.VirtualMachineStatistics",
    metrics_pb2.Metrics: "hugetlb=1:*io.containerd.cgroups.v1.HugetlbStat "
    "pids=2:io.containerd.cgroups.v1.PidsStat cpu=3:io.containerd.cgroups.v1.CPUStat "
    "memory=4:io.containerd.cgroups.v1.MemoryStat "
    "blkio=5:io.containerd.cgroups.v1.BlkIOStat rdma=6:io.containerd.cgroups.v1.RdmaStat "
    "network=7:*io.containerd.cgroups.v1.NetworkStat cgroup_stats=8:io.containerd.cgroups.v1.CgroupStats "
    "memory_oom_control=9:io.containerd.cgroups.v1.MemoryOomControl",
    shimdiag_pb2.ExecProcessRequest: "args=1:*string workdir=2:string terminal=3:bool stdin=4:string "
    "stdout=5:string stderr=6:string",
    shimdiag_pb2.ExecProcessResponse: "exit_code=1:int32",
    shimdiag_pb2.StacksResponse: "stacks=1:string guest_stacks=2:string",
    shimdiag_pb2.TasksRequest: "execs=1:bool",
    shimdiag_pb2.TasksResponse: "tasks=1:*containerd.runhcs.v1.diag.Task",
    shimdiag_pb2.Task: "id=1:string execs=2:*containerd.runhcs.v1.diag.Exec",
    shimdiag_pb2.Exec: "id=1:string state=2:string",
    shimdiag_pb2.ShareRequest: "host_path=1:string uvm_path=2:string read_only=3:bool",
    shimdiag_pb2.PidResponse: "pid=1:int32",
    extendedtask_pb2.ComputeProcessorInfoRequest: "id=1:string",
    extendedtask_pb2.ComputeProcessorInfoResponse: "count=1:int32",
}


def _describe(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None:
        kind = field.message_type.full_name
    elif field.enum_type is not None:
        kind = field.enum_type.full_name
    else:
        kind = _SCALARS[field.type]
    star = "*" if field.is_repeated else ""
    return f"{field.name}={field.number}:{star}{kind}"


@pytest.mark.parametrize("message", list(_SCHEMA), ids=lambda m: m.DESCRIPTOR.full_name)
def test_message_fields_match_upstream_numbers_and_types(message) -> None:
    assert " ".join(_describe(f) for f in message.DESCRIPTOR.fields) == _SCHEMA[message]


def test_task_status_enum_values_match_containerd() -> None:
    assert dict(types_pb2.Status.items()) == {
        "UNKNOWN": 0, "CREATED": 1, "RUNNING": 2, "STOPPED": 3, "PAUSED": 4, "PAUSING": 5}


def test_runhcs_option_enums_are_nested_in_options_as_upstream() -> None:
    assert dict(runhcs_pb2.Options.DebugType.items()) == {"NPIPE": 0, "FILE": 1, "ETW": 2}
    assert dict(runhcs_pb2.Options.SandboxIsolation.items()) == {"PROCESS": 0, "HYPERVISOR": 1}


# --- wire: bytes observed from containerd 1.6.20 (spec section 2.1) -------------------------------------


def test_connect_request_encodes_as_observed() -> None:
    assert shim_pb2.ConnectRequest(id="test1").SerializeToString() == b"\x0a\x05test1"


def test_connect_response_encodes_as_observed() -> None:
    wire = shim_pb2.ConnectResponse(shim_pid=19433, task_pid=19458).SerializeToString()
    assert wire == bytes.fromhex("08 e9 97 01 10 82 98 01")


def test_connect_call_envelope_is_the_observed_43_bytes() -> None:
    payload = shim_pb2.ConnectRequest(id="test1").SerializeToString()
    body = request_pb2.Request(service="containerd.task.v2.Task", method="Connect", payload=payload)
    wire = body.SerializeToString()
    assert len(wire) == 0x2B
    assert wire == b"\x0a\x17containerd.task.v2.Task\x12\x07Connect\x1a\x07\x0a\x05test1"


def test_go_zero_time_round_trips_as_a_negative_varint() -> None:
    ts = timestamp_pb2.Timestamp(seconds=GO_ZERO_TIME_SECONDS)
    wire = ts.SerializeToString()
    # int64 -62135596800 is the 10-byte varint of 18446744011573954816
    assert wire == bytes.fromhex("08 80 92 b8 c3 98 fe ff ff ff 01")
    assert timestamp_pb2.Timestamp.FromString(wire) == ts
    assert ts.ToDatetime(tzinfo=datetime.UTC) == datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)


def test_state_response_of_a_running_task_carries_the_go_zero_exit_time() -> None:
    state = shim_pb2.StateResponse(id="c1", pid=42, status=types_pb2.RUNNING)
    state.exited_at.seconds = GO_ZERO_TIME_SECONDS
    decoded = shim_pb2.StateResponse.FromString(state.SerializeToString())
    assert decoded.HasField("exited_at")
    assert decoded.exited_at.seconds == GO_ZERO_TIME_SECONDS
    assert decoded.status == types_pb2.RUNNING


def test_update_task_annotations_serialize_as_repeated_map_entries() -> None:
    one = shim_pb2.UpdateTaskRequest(annotations={"a": "b"}).SerializeToString()
    assert one == bytes.fromhex("1a 06 0a 01 61 12 01 62")
    two = bytes.fromhex("1a 06 0a 01 61 12 01 62") + bytes.fromhex("1a 06 0a 01 63 12 01 64")
    assert dict(shim_pb2.UpdateTaskRequest.FromString(two).annotations) == {"a": "b", "c": "d"}


def test_unset_scrub_logs_is_distinguishable_from_explicit_false() -> None:
    assert not runhcs_pb2.Options().HasField("scrub_logs")
    assert runhcs_pb2.Options().SerializeToString() == b""
    explicit = runhcs_pb2.Options(scrub_logs=False)
    assert explicit.SerializeToString() == bytes.fromhex("a0 01 00")
    assert runhcs_pb2.Options.FromString(explicit.SerializeToString()).HasField("scrub_logs")


def test_runhcs_statistics_carries_cgroup_metrics_as_its_linux_case() -> None:
    metrics = metrics_pb2.Metrics(pids=metrics_pb2.PidsStat(current=3, limit=10))
    stats = stats_pb2.Statistics(linux=metrics)
    decoded = stats_pb2.Statistics.FromString(stats.SerializeToString())
    assert decoded.WhichOneof("container") == "linux"
    assert decoded.linux.pids.current == 3
    assert stats.SerializeToString() == bytes.fromhex("12 06 12 04 08 03 10 0a")


def test_pids_info_wraps_runc_process_details_under_its_bare_name() -> None:
    info = types_pb2.ProcessInfo(pid=7, info=_any(oci_pb2.ProcessDetails(exec_id="e1")))
    decoded = types_pb2.ProcessInfo.FromString(info.SerializeToString())
    assert decoded.info.type_url == "containerd.runc.v1.ProcessDetails"
    assert oci_pb2.ProcessDetails.FromString(decoded.info.value).exec_id == "e1"


# --- properties -----------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_uint32 = st.integers(min_value=0, max_value=2**32 - 1)
_timestamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.integers(min_value=GO_ZERO_TIME_SECONDS, max_value=253402300799),  # years 1..9999
    nanos=st.integers(min_value=0, max_value=999_999_999),
)
_mounts = st.builds(
    mount_pb2.Mount, type=_text, source=_text, target=_text, options=st.lists(_text, max_size=5))
_options = st.builds(
    runhcs_pb2.Options, log_level=_text, scrub_logs=st.booleans(),
    vm_processor_count=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    default_container_annotations=st.dictionaries(_text, _text, max_size=3))
_create_requests = st.builds(
    shim_pb2.CreateTaskRequest,
    id=_text, bundle=_text, rootfs=st.lists(_mounts, max_size=4), terminal=st.booleans(),
    stdin=_text, stdout=_text, stderr=_text, checkpoint=_text, parent_checkpoint=_text,
    options=st.builds(_any, _options),
)
_task_exits = st.builds(
    events_pb2.TaskExit,
    container_id=_text, id=_text, pid=_uint32, exit_status=_uint32, exited_at=_timestamps)
_envelopes = st.builds(
    forward_pb2.Envelope, timestamp=_timestamps, namespace=_text, topic=_text,
    event=st.builds(_any, _task_exits))


@given(_create_requests)
def test_create_task_request_round_trips(request: shim_pb2.CreateTaskRequest) -> None:
    wire = request.SerializeToString(deterministic=True)
    decoded = shim_pb2.CreateTaskRequest.FromString(wire)
    assert decoded == request
    assert decoded.SerializeToString(deterministic=True) == wire
    assert runhcs_pb2.Options.FromString(decoded.options.value) == runhcs_pb2.Options.FromString(
        request.options.value)


@given(_task_exits)
def test_task_exit_round_trips(event: events_pb2.TaskExit) -> None:
    wire = event.SerializeToString()
    assert events_pb2.TaskExit.FromString(wire) == event


@given(_envelopes)
def test_forwarded_envelope_round_trips_with_its_event(envelope: forward_pb2.Envelope) -> None:
    request = forward_pb2.ForwardRequest(envelope=envelope)
    decoded = forward_pb2.ForwardRequest.FromString(request.SerializeToString())
    assert decoded == request
    assert decoded.envelope.event.type_url == "containerd.events.TaskExit"
    assert events_pb2.TaskExit.FromString(decoded.envelope.event.value) == events_pb2.TaskExit.FromString(
        envelope.event.value)
