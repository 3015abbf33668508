"""The shim's runtime options and the OCI annotations that tune a utility VM: parsing, checking, applying.

Where the options come from (the Create request's `options` Any, which containerd also writes to `start`'s stdin):

* `containerd.runhcs.v1.Options`: the CRI plugin marshals the runtime's options table into it
  (`SandboxIsolation = 1`, `BootFilesRootPath`, `VmProcessorCount`, `VmMemorySizeInMb`,
  `DefaultContainerScratchSizeInGb`, ...);
* `runtimeoptions.v1.Options{ConfigPath}`: what `ctr run --runtime-config-path FILE` sends; the shim reads FILE
  as TOML with the same keys as the CRI options table (Go field names, matched case-insensitively as
  containerd's TOML decoder does; enums as numbers or names);
* nothing: the defaults (process isolation).

Then, as upstream's oci.UpdateSpecFromOptions does, BootFilesRootPath, VmProcessorCount and VmMemorySizeInMb become
the spec's VM annotations unless the spec sets them, and DefaultContainerAnnotations are merged in without
overriding. The VM annotations (`io.microsoft.virtualmachine.*`) then make the `UVMOptions` of the task's utility
VM; a value that does not parse is an InvalidArgument naming the annotation.

Hypervisor isolation is chosen by `SandboxIsolation = HYPERVISOR` or by a spec with `windows.hyperv` set (as
upstream forces it from the option). The default boot files are `<shim dir>/LinuxBootFiles` when that exists
(upstream's rule), else `<prefix>/share/hcsshim/LinuxBootFiles`, which `make setup` fills
(`python -m hcsshim.cmd.bootfiles install`); a missing directory is a FailedPrecondition naming the path and
that command.
"""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from hcsshim.api.containerd.runtimeoptions.v1.api_pb2 import Options as RuntimeOptions
from hcsshim.api.runhcs.options.runhcs_pb2 import Options
from hcsshim.ttrpc import errors
from hcsshim.uvm.bootpath import INSTALL_COMMAND, default_boot_files
from hcsshim.uvm.options import (
    ANNOTATION_BOOT_FILES,
    ANNOTATION_MEMORY,
    ANNOTATION_PROCESSORS,
    UVMOptions,
    apply_annotations,
    find_boot_files,
)

if TYPE_CHECKING:
    from google.protobuf.any_pb2 import Any

OPTIONS_TYPE = Options.DESCRIPTOR.full_name  # containerd.runhcs.v1.Options
RUNTIME_OPTIONS_TYPE = RuntimeOptions.DESCRIPTOR.full_name  # runtimeoptions.v1.Options
DEFAULT_SCRATCH_SIZE_GB = 20  # upstream's sandbox.vhdx

# TOML keys of the CRI options table (Go field names of the generated struct), lower-cased -> proto field.
_TOML_KEYS = {f.camelcase_name.lower(): f.name for f in Options.DESCRIPTOR.fields}
_TOML_KEYS.update({"gpuvhdpath": "GPUVHDPath", "ncproxyaddr": "NCProxyAddr"})


def _type_name(any_: Any) -> str:
    return any_.type_url.rsplit("/", 1)[-1]


def parse(task_id: str, any_: Any) -> Options:
    """The runtime options of a Create (see the module docstring); InvalidArgument for anything else."""
    opts = Options()
    if not any_.type_url and not any_.value:
        return opts
    kind = _type_name(any_)
    try:
        if kind == OPTIONS_TYPE:
            opts.ParseFromString(any_.value)
        elif kind == RUNTIME_OPTIONS_TYPE:
            wrapper = RuntimeOptions.FromString(any_.value)
            if wrapper.config_path:
                opts = from_toml_file(task_id, wrapper.config_path)
        else:
            raise errors.invalid_argument(f"create task {task_id}: runtime options of type {any_.type_url!r}: "
                                          f"expected {OPTIONS_TYPE} or {RUNTIME_OPTIONS_TYPE}")
    except DecodeError as exc:
        raise errors.invalid_argument(f"create task {task_id}: runtime options {kind}: {exc}") from None
    if opts.sandbox_platform and not opts.sandbox_platform.startswith("linux/"):
        raise errors.failed_precondition(f"create task {task_id}: sandbox platform {opts.sandbox_platform!r} "
                                         "is not supported on Linux")
    for name in ("vm_processor_count", "vm_memory_size_in_mb", "default_container_scratch_size_in_gb",
                 "default_vm_scratch_size_in_gb"):
        if getattr(opts, name) < 0:
            raise errors.invalid_argument(f"create task {task_id}: runtime option {name} = {getattr(opts, name)}: "
                                          "must not be negative")
    return opts


def from_toml_file(task_id: str, path: str) -> Options:
    """Options from a runtime config file (the CRI options table's keys)."""
    where = f"create task {task_id}: runtime config {path}"
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise errors.invalid_argument(f"{where}: no such file") from None
    except OSError as exc:
        raise errors.invalid_argument(f"{where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.invalid_argument(f"{where}: invalid TOML: {exc}") from None
    return from_table(where, table)


def from_table(where: str, table: dict) -> Options:
    opts = Options()
    for key, value in table.items():
        name = _TOML_KEYS.get(key.lower())
        if name is None:
            raise errors.invalid_argument(f"{where}: unknown option {key!r}")
        field = Options.DESCRIPTOR.fields_by_name[name]
        try:
            if field.message_type is not None:  # default_container_annotations
                if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                    raise TypeError("a table of strings")
                getattr(opts, name).update(value)
            elif field.enum_type is not None:
                values = field.enum_type.values_by_name
                if isinstance(value, str) and value.upper() in values:
                    value = values[value.upper()].number
                numbers = field.enum_type.values_by_number
                if isinstance(value, bool) or not isinstance(value, int) or value not in numbers:
                    raise TypeError(" or ".join(f"{v.number} ({v.name})" for v in field.enum_type.values))
                setattr(opts, name, value)
            elif field.type == field.TYPE_BOOL:
                if not isinstance(value, bool):
                    raise TypeError("true or false")
                setattr(opts, name, value)
            elif field.type == field.TYPE_STRING:
                if not isinstance(value, str):
                    raise TypeError("a string")
                setattr(opts, name, value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError("a number")
                setattr(opts, name, value)
        except (TypeError, ValueError) as exc:
            raise errors.invalid_argument(f"{where}: option {key} = {value!r}: expected {exc}") from None
    return opts


def apply_to_spec(spec: dict, opts: Options) -> None:
    """Upstream's UpdateSpecFromOptions: the VM options as annotations unless set, default annotations merged."""
    annotations = spec.setdefault("annotations", {})
    for key, value in ((ANNOTATION_BOOT_FILES, opts.boot_files_root_path),
                       (ANNOTATION_PROCESSORS, opts.vm_processor_count),
                       (ANNOTATION_MEMORY, opts.vm_memory_size_in_mb)):
        if value and key not in annotations:
            annotations[key] = str(value)
    for key, value in opts.default_container_annotations.items():
        annotations.setdefault(key, value)


def is_hypervisor_isolated(spec: dict, opts: Options) -> bool:
    windows = spec.get("windows")
    return opts.sandbox_isolation == Options.HYPERVISOR or (isinstance(windows, dict) and "hyperv" in windows)


def uvm_options(task_id: str, vm_id: str, spec: dict, opts: Options, *, run_root: str, log_level: str) -> UVMOptions:
    """The utility VM of a task: defaults, then the spec's VM annotations (options were applied to them)."""
    boot = default_boot_files()
    uvm = UVMOptions(id=vm_id, boot_files_path=boot, run_root=run_root, gcs_log_level=log_level)
    try:
        apply_annotations(uvm, spec.get("annotations") or {})
    except ValueError as exc:
        raise errors.invalid_argument(f"create task {task_id}: {exc}") from None
    try:
        find_boot_files(uvm)
    except FileNotFoundError as exc:
        hint = f"; build them with {INSTALL_COMMAND}" if uvm.boot_files_path == boot else ""
        raise errors.failed_precondition(f"create task {task_id}: {exc}{hint}") from None
    return uvm


def scratch_size_gb(opts: Options) -> int:
    return opts.default_container_scratch_size_in_gb or DEFAULT_SCRATCH_SIZE_GB
