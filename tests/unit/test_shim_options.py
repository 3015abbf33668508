"""The shim's runtime options (runhcs Options, runtimeoptions with a TOML config file), the spec's VM annotations
and the guest spec made from a container's spec and rootfs mounts."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.any_pb2 import Any

from hcsshim.api.containerd.runtimeoptions.v1.api_pb2 import Options as RuntimeOptions
from hcsshim.api.containerd.types.mount_pb2 import Mount
from hcsshim.api.runc.options.oci_pb2 import Options as RuncOptions
from hcsshim.api.runhcs.options.runhcs_pb2 import Options
from hcsshim.shim import guestspec, options
from hcsshim.shim.events import pack_any
from hcsshim.ttrpc import Code, TtrpcError
from hcsshim.uvm.options import ANNOTATION_BOOT_FILES, ANNOTATION_MEMORY, ANNOTATION_PROCESSORS


def test_no_options_mean_process_isolation() -> None:
    opts = options.parse("t", Any())
    assert opts.sandbox_isolation == Options.PROCESS and not options.is_hypervisor_isolated({}, opts)


def test_runhcs_options_from_the_cri_are_read_as_they_are() -> None:
    opts = options.parse("t", pack_any(Options(sandbox_isolation=Options.HYPERVISOR, vm_processor_count=3)))
    assert opts.sandbox_isolation == Options.HYPERVISOR and opts.vm_processor_count == 3


def test_a_runtime_config_file_has_the_cri_tables_keys_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "runhcs.toml"
    path.write_text('SandboxIsolation = 1\nbootfilesrootpath = "/boot/files"\nVmProcessorCount = 2\n'
                    'VmMemorySizeInMb = 768\nDefaultContainerScratchSizeInGb = 5\nSandboxPlatform = "linux/amd64"\n'
                    '[DefaultContainerAnnotations]\n"a.b" = "c"\n')
    opts = options.parse("t", pack_any(RuntimeOptions(config_path=str(path))))
    assert opts.sandbox_isolation == Options.HYPERVISOR
    assert opts.boot_files_root_path == "/boot/files"
    assert (opts.vm_processor_count, opts.vm_memory_size_in_mb) == (2, 768)
    assert options.scratch_size_gb(opts) == 5
    assert dict(opts.default_container_annotations) == {"a.b": "c"}


def test_an_enum_option_takes_its_name_too(tmp_path: Path) -> None:
    path = tmp_path / "runhcs.toml"
    path.write_text('SandboxIsolation = "hypervisor"\n')
    assert options.from_toml_file("t", str(path)).sandbox_isolation == Options.HYPERVISOR


@pytest.mark.parametrize(("text", "message"), [
    ("SandboxIsolation = 7\n", "SandboxIsolation = 7: expected 0 (PROCESS) or 1 (HYPERVISOR)"),
    ('VmMemorySizeInMb = "big"\n', "VmMemorySizeInMb = 'big': expected a number"),
    ("Debug = 1\n", "Debug = 1: expected true or false"),
    ("NoSuchOption = 1\n", "unknown option 'NoSuchOption'"),
    ("SandboxIsolation =\n", "invalid TOML"),
    ("VmProcessorCount = -2\n", "vm_processor_count = -2: must not be negative"),
])
def test_a_bad_runtime_config_is_an_invalid_argument_naming_the_file_and_option(tmp_path: Path, text: str,
                                                                               message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TtrpcError) as err:
        options.parse("t", pack_any(RuntimeOptions(config_path=str(path))))
    assert err.value.code == Code.INVALID_ARGUMENT
    assert message in err.value.message
    assert "create task t" in err.value.message


def test_a_missing_runtime_config_file_is_named() -> None:
    with pytest.raises(TtrpcError) as err:
        options.parse("t", pack_any(RuntimeOptions(config_path="/no/such/runhcs.toml")))
    assert err.value.code == Code.INVALID_ARGUMENT and "/no/such/runhcs.toml: no such file" in err.value.message


def test_options_of_another_type_and_windows_platforms_are_refused() -> None:
    with pytest.raises(TtrpcError) as err:
        options.parse("t", pack_any(RuncOptions()))
    assert err.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(TtrpcError) as err:
        options.parse("t", pack_any(Options(sandbox_platform="windows/amd64")))
    assert err.value.code == Code.FAILED_PRECONDITION


def test_vm_options_become_annotations_unless_the_spec_sets_them() -> None:
    spec = {"annotations": {ANNOTATION_MEMORY: "2048", "keep": "mine"}}
    opts = Options(boot_files_root_path="/b", vm_processor_count=3, vm_memory_size_in_mb=512,
                   default_container_annotations={"keep": "default", "new": "x"})
    options.apply_to_spec(spec, opts)
    assert spec["annotations"] == {ANNOTATION_MEMORY: "2048", "keep": "mine", ANNOTATION_BOOT_FILES: "/b",
                                   ANNOTATION_PROCESSORS: "3", "new": "x"}


def test_hypervisor_isolation_comes_from_the_option_or_windows_hyperv() -> None:
    assert options.is_hypervisor_isolated({}, Options(sandbox_isolation=Options.HYPERVISOR))
    assert options.is_hypervisor_isolated({"windows": {"hyperv": {}}}, Options())
    assert not options.is_hypervisor_isolated({}, Options())


def test_uvm_options_follow_the_annotations_and_name_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "vmlinux").write_bytes(b"k")
    (tmp_path / "initrd.img").write_bytes(b"i")
    spec = {"annotations": {ANNOTATION_BOOT_FILES: str(tmp_path), ANNOTATION_PROCESSORS: "1",
                            ANNOTATION_MEMORY: "511"}}
    uvm = options.uvm_options("t", "t@vm", spec, Options(), run_root="/run/x", log_level="debug")
    assert (uvm.id, uvm.cpus, uvm.memory_mb, uvm.boot_files_path) == ("t@vm", 1, 512, str(tmp_path))
    spec["annotations"][ANNOTATION_MEMORY] = "lots"
    with pytest.raises(TtrpcError) as err:
        options.uvm_options("t", "t@vm", spec, Options(), run_root="/run/x", log_level="info")
    assert err.value.code == Code.INVALID_ARGUMENT and ANNOTATION_MEMORY in err.value.message


def test_missing_boot_files_are_a_failed_precondition_naming_the_path(tmp_path: Path) -> None:
    spec = {"annotations": {ANNOTATION_BOOT_FILES: str(tmp_path / "none")}}
    with pytest.raises(TtrpcError) as err:
        options.uvm_options("t", "t@vm", spec, Options(), run_root="/run/x", log_level="info")
    assert err.value.code == Code.FAILED_PRECONDITION and str(tmp_path / "none") in err.value.message


def test_missing_default_boot_files_name_the_command_that_installs_them(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(options, "default_boot_files", lambda: str(tmp_path / "LinuxBootFiles"))
    with pytest.raises(TtrpcError) as err:
        options.uvm_options("t", "t@vm", {}, Options(), run_root="/run/x", log_level="info")
    assert err.value.code == Code.FAILED_PRECONDITION
    assert str(tmp_path / "LinuxBootFiles") in err.value.message and "make setup" in err.value.message


# -- the guest spec ---------------------------------------------------------------------------------------

def test_an_overlay_rootfs_gives_its_lower_layers_top_most_first(tmp_path: Path) -> None:
    a, b = tmp_path / "2" / "fs", tmp_path / "1" / "fs"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    m = Mount(type="overlay", source="overlay", options=["index=off", f"lowerdir={a}:{b}",
                                                         f"upperdir={tmp_path}/u", f"workdir={tmp_path}/w"])
    src = guestspec.rootfs_source("t", [m], {"root": {"path": "rootfs"}}, str(tmp_path))
    assert src.layers == [str(a), str(b)] and src.directory is None


def test_a_read_only_bind_is_one_layer_and_a_writable_one_or_a_root_path_is_shared(tmp_path: Path) -> None:
    ro = Mount(type="bind", source=str(tmp_path), options=["ro", "rbind"])
    assert guestspec.rootfs_source("t", [ro], {"root": {"path": "rootfs"}}, "/b").layers == [str(tmp_path)]
    rw = Mount(type="bind", source=str(tmp_path), options=["rbind"])
    assert guestspec.rootfs_source("t", [rw], {"root": {"path": "rootfs"}}, "/b").directory == str(tmp_path)
    direct = guestspec.rootfs_source("t", [], {"root": {"path": str(tmp_path), "readonly": True}}, "/b")
    assert direct.directory == str(tmp_path) and direct.read_only


def test_a_rootfs_that_cannot_be_is_an_invalid_argument(tmp_path: Path) -> None:
    for mounts, spec in (([], {"root": {"path": str(tmp_path / "missing")}}),
                         ([Mount(type="overlay", options=[f"lowerdir={tmp_path}/gone"])], {"root": {"path": "r"}}),
                         ([Mount(type="tmpfs", source="x")], {"root": {"path": "r"}})):
        with pytest.raises(TtrpcError) as err:
            guestspec.rootfs_source("t", mounts, spec, str(tmp_path))
        assert err.value.code == Code.INVALID_ARGUMENT and "create task t" in err.value.message


def test_the_guest_spec_is_cleaned_as_upstream_and_binds_become_shares(tmp_path: Path) -> None:
    host_dir = tmp_path / "data"
    host_dir.mkdir()
    host_file = tmp_path / "conf"
    host_file.write_text("x")
    shm = tmp_path / "shm"
    shm.mkdir()
    spec = {
        "root": {"path": "rootfs"}, "process": {"args": ["true"]},
        "hooks": {"prestart": [{"path": "/bin/true"}]},
        "linux": {"cgroupsPath": "/x", "resources": {"devices": [{"allow": False}], "pids": {"limit": 5},
                                                     "cpu": {"period": 0, "quota": 0, "shares": 2}}},
        "windows": {"network": {"networkNamespace": "ns1"}, "layerFolders": ["a"]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/data", "type": "bind", "source": str(host_dir), "options": ["rbind", "ro"]},
                   {"destination": "/etc/app.conf", "type": "bind", "source": str(host_file),
                    "options": ["rbind"]},
                   {"destination": "/dev/shm", "type": "bind", "source": str(shm), "options": ["rbind"]},
                   {"destination": "/s", "type": "bind", "source": "sandbox://dir", "options": ["rbind"]}],
    }
    out, shares = guestspec.guest_spec("c1", spec)
    assert out["root"] == {"path": "/run/gcs/c/c1/rootfs"}
    assert "hooks" not in out and "cgroupsPath" not in out["linux"]
    assert out["linux"]["resources"] == {"cpu": {"period": 100000, "quota": -1, "shares": 2}}
    assert out["windows"] == {"network": {"networkNamespace": "ns1"}}
    dests = {m["destination"]: m for m in out["mounts"]}
    assert dests["/proc"]["source"] == "proc"
    assert dests["/data"]["source"] == "/run/gcs/c/c1/mounts/m1"
    assert dests["/etc/app.conf"]["source"] == "/run/gcs/c/c1/mounts/m2"
    assert dests["/dev/shm"]["type"] == "tmpfs"
    assert dests["/s"]["source"] == "sandbox://dir"
    assert [(s.host_path, s.guest_path, s.read_only) for s in shares] == [
        (str(host_dir), "/run/gcs/c/c1/mounts/m1", True), (str(host_file), "/run/gcs/c/c1/mounts/m2", False)]
    assert spec["root"] == {"path": "rootfs"}  # the host's spec is left as it was


def test_a_bind_of_a_missing_host_path_is_an_invalid_argument_naming_it(tmp_path: Path) -> None:
    spec = {"root": {"path": "r"}, "mounts": [{"destination": "/x", "type": "bind",
                                               "source": str(tmp_path / "gone"), "options": ["rbind"]}]}
    with pytest.raises(TtrpcError) as err:
        guestspec.guest_spec("c1", spec)
    assert err.value.code == Code.INVALID_ARGUMENT and "gone" in err.value.message
