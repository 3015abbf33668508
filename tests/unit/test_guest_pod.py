"""The guest's pod rules (hcsshim.guest.pod): sandbox and workload roles, sandbox:// mounts, the /etc files."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcsshim.bridge import E_INVALIDARG, VMCOMPUTE_SYSTEM_NOT_FOUND, HResultError
from hcsshim.guest import pod

SANDBOX = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "p1"}
WORKLOAD = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "p1"}


def spec(annotations: dict[str, str] | None = None, **kw: object) -> dict:
    return {"root": {"path": "rootfs"}, "process": {"args": ["sh"]}, "annotations": annotations or {}, **kw}


def test_a_workload_uses_its_sandboxs_etc_files_and_directories(tmp_path: Path) -> None:
    sb_bundle, wl_bundle = tmp_path / "p1", tmp_path / "c1"
    sb_bundle.mkdir()
    wl_bundle.mkdir()
    sb_spec = spec(SANDBOX, hostname="pod-host")
    sandbox = pod.pod_role(sb_spec, str(sb_bundle), {}, "create p1")
    pod.add_etc_files(sb_spec, str(sb_bundle), sandbox, "nameserver 10.0.0.1\n")
    assert (sb_bundle / "hostname").read_text() == "pod-host\n"
    wl_spec = spec(WORKLOAD, mounts=[{"destination": "/shared", "type": "bind", "source": "sandbox://data/x",
                                      "options": ["rbind"]}])
    workload = pod.pod_role(wl_spec, str(wl_bundle), {"p1": sandbox}, "create c1")
    assert workload.is_workload and workload.sandbox is sandbox
    pod.resolve_sandbox_mounts(wl_spec, workload, "create c1")
    pod.add_etc_files(wl_spec, str(wl_bundle), workload, "")
    mounts = {m["destination"]: m["source"] for m in wl_spec["mounts"]}
    shared = sb_bundle / "sandboxMounts/data/x"
    assert mounts["/shared"] == str(shared) and shared.is_dir()
    assert mounts["/etc/hostname"] == str(sb_bundle / "hostname")
    assert mounts["/etc/resolv.conf"] == str(sb_bundle / "resolv.conf")
    assert not (wl_bundle / "hostname").exists()  # nothing of its own


def test_a_spec_mount_of_an_etc_file_wins_and_a_plain_container_writes_its_own(tmp_path: Path) -> None:
    s = spec(mounts=[{"destination": "/etc/hosts", "type": "bind", "source": "/host/hosts", "options": ["rbind"]}])
    role = pod.pod_role(s, str(tmp_path), {}, "create c")
    pod.add_etc_files(s, str(tmp_path), role, "")
    assert [m["source"] for m in s["mounts"] if m["destination"] == "/etc/hosts"] == ["/host/hosts"]
    assert "localhost" in (tmp_path / "hosts").read_text()


@pytest.mark.parametrize(("annotations", "extra", "sandboxes", "hresult", "message"), [
    (WORKLOAD, {}, {}, VMCOMPUTE_SYSTEM_NOT_FOUND, "pod sandbox 'p1' not found"),
    (WORKLOAD, {"hostname": "mine"}, {"p1": pod.PodRole(is_sandbox=True, root="/r")}, E_INVALIDARG,
     "cannot set a hostname"),
])
def test_a_workload_without_its_sandbox_or_with_a_hostname_is_refused(tmp_path: Path, annotations: dict,
                                                                      extra: dict, sandboxes: dict, hresult: int,
                                                                      message: str) -> None:
    with pytest.raises(HResultError) as err:
        pod.pod_role(spec(annotations, **extra), str(tmp_path), sandboxes, "create c1")
    assert err.value.hresult == hresult and message in err.value.message


@pytest.mark.parametrize("source", ["sandbox://../escape", "sandbox://", "sandbox-tmp://x"])
def test_sandbox_sources_outside_the_sandbox_or_outside_a_pod_are_refused(tmp_path: Path, source: str) -> None:
    s = spec(mounts=[{"destination": "/x", "type": "bind", "source": source, "options": ["rbind"]}])
    role = pod.PodRole() if source.startswith("sandbox-tmp") else pod.PodRole(is_sandbox=True, root=str(tmp_path))
    with pytest.raises(HResultError) as err:
        pod.resolve_sandbox_mounts(s, role, "create c1")
    assert err.value.hresult == E_INVALIDARG
