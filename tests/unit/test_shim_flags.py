"""The shim's Go-style command line and the paths `start` and `delete` agree on."""

from __future__ import annotations

import hashlib

import pytest

from hcsshim.shim import flags as f
from hcsshim.shim import manager, paths


def test_containerd_start_command_line_is_parsed_like_go_flag() -> None:
    fl = f.parse(["-namespace", "default", "-address", "/run/containerd/containerd.sock",
                  "-publish-binary", "/usr/bin/containerd", "-id", "test1", "-debug", "start"])
    assert (fl.namespace, fl.address, fl.publish_binary, fl.id, fl.debug, fl.action) == (
        "default", "/run/containerd/containerd.sock", "/usr/bin/containerd", "test1", True, "start")


def test_double_dash_and_equals_forms_are_accepted() -> None:
    fl = f.parse(["--namespace=ns", "--id", "x", "-bundle=/b", "-debug=false", "delete", "extra"])
    assert (fl.namespace, fl.id, fl.bundle, fl.debug, fl.action, fl.args) == ("ns", "x", "/b", False, "delete",
                                                                             ["extra"])


@pytest.mark.parametrize("argv, message", [
    (["-nope", "start"], "flag provided but not defined: -nope"),
    (["-id"], "flag needs an argument: -id"),
    (["-debug=maybe", "start"], "invalid boolean value"),
])
def test_bad_flags_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(f.UsageError, match=message):
        f.parse(argv)


def test_missing_required_flags_are_named() -> None:
    fl = f.parse(["-id", "x", "start"])
    with pytest.raises(f.UsageError, match="-namespace, -address"):
        fl.require("namespace", "address", "id")


def test_socket_address_is_containerds_hash_of_address_namespace_and_id() -> None:
    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/test1").hexdigest()
    assert paths.socket_address("/run/containerd/containerd.sock", "default", "test1") == \
        f"unix:///run/containerd/s/{want}"


def test_runc_root_follows_containerds_state_dir() -> None:
    bundle = "/tmp/x/state/io.containerd.runtime.v2.task/default/c1"
    assert paths.runc_root(bundle, "default") == "/tmp/x/state/runhcs/runc/default"
    assert paths.runc_root("/elsewhere/c1", "k8s.io") == "/run/containerd/runhcs/runc/k8s.io"


@pytest.mark.parametrize("annotations, group", [
    ({}, "c1"),
    ({"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod"}, "pod"),
    ({"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "c1"}, "c1"),
    ({"io.containerd.runc.v2.group": "g"}, "g"),
])
def test_pod_containers_share_their_sandboxs_shim(annotations: dict[str, str], group: str) -> None:
    assert manager.group_id("c1", annotations) == group


@pytest.mark.parametrize("annotations", [
    {"io.kubernetes.cri.container-type": "container"},
    {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "other"},
    {"io.kubernetes.cri.container-type": "bogus", "io.kubernetes.cri.sandbox-id": "c1"},
])
def test_inconsistent_pod_annotations_are_refused(annotations: dict[str, str]) -> None:
    with pytest.raises(manager.StartError):
        manager.group_id("c1", annotations)


def test_invalid_config_json_is_a_start_error_naming_the_file(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"annotations": {"io.kubernetes.cri.x": ')
    with pytest.raises(manager.StartError, match=r"config\.json: invalid JSON"):
        manager.read_annotations(str(tmp_path))


@pytest.mark.parametrize("argv", [
    ["-namespace", "default", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "t1",
     "-debug", "start"],
    ["-namespace", "k8s.io", "-id", "-odd-id", "-bundle", "/b", "delete"],
    ["-namespace", "n", "-id", "start", "--", "-weird-action", "x"],
])
def test_flags_print_back_to_a_command_line_that_parses_to_the_same_flags(argv: list[str]) -> None:
    """What `start` hands to the fork server must mean the same to the daemon that parses it again."""
    fl = f.parse(argv)
    again = f.parse(fl.to_argv())
    assert {s: getattr(again, s) for s in f.Flags.__slots__} == {s: getattr(fl, s) for s in f.Flags.__slots__}
