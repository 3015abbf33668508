"""The containerd matrix's builds (hcsshim.testing.containerds) without the network: apt-cache's answers read,
the newest of a series chosen by Debian's version order, versions.json, the overrides, and the messages that name
what is missing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hcsshim.testing import containerds
from hcsshim.testing.containerds import ContainerdUnavailable

MADISON = """\
containerd | 2.1.9+ds1-5 | http://deb.debian.org/debian sid/main amd64 Packages
containerd | 2.1.10~rc1-1 | http://deb.debian.org/debian sid/main amd64 Packages
containerd | 1.7.24~ds1-6+deb13u1 | http://deb.debian.org/debian trixie/main amd64 Packages
containerd | 1.7.24~ds1-6 | http://deb.debian.org/debian trixie/main amd64 Packages
containerd | 1.7.24~ds1-6 | http://deb.debian.org/debian trixie/main Sources
garbage line
"""


def test_madison_rows_and_the_newest_of_each_series_in_debians_order() -> None:
    rows = containerds.parse_madison(MADISON)
    assert [(r.version, r.suite) for r in rows] == [
        ("2.1.9+ds1-5", "sid"), ("2.1.10~rc1-1", "sid"), ("1.7.24~ds1-6+deb13u1", "trixie"),
        ("1.7.24~ds1-6", "trixie")]
    assert containerds.newest(rows, "2", "sid") == "2.1.10~rc1-1"  # 2.1.10~rc1 > 2.1.9: dpkg's order
    assert containerds.newest(rows, "1.7", "trixie") == "1.7.24~ds1-6+deb13u1"
    assert containerds.newest(rows, "1.7", "sid") is None
    assert containerds.compare_versions("1.7.24~ds1-6", "1.7.24-6") < 0  # '~' sorts before anything
    assert containerds.in_series("1.7.24~ds1-6", "1.7") and not containerds.in_series("1.70.1", "1.7")


def test_the_version_line_of_containerd_is_read_as_debian_or_upstream_writes_it() -> None:
    assert containerds.parse_version_output(
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n") == "1.6.20~ds1-1+deb12u3"
    assert containerds.parse_version_output("containerd github.com/containerd/containerd v1.7.24 88bf19b\n") == "1.7.24"
    assert containerds.parse_version_output("ctr version 1\n") == ""


def fake_bin(d: Path, version: str) -> Path:
    d.mkdir(parents=True)
    for name in ("containerd", "ctr"):
        exe = d / name
        exe.write_text(f"#!/bin/sh\necho '{name} github.com/containerd/containerd/v2 {version} x'\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return d


def test_a_recorded_build_is_found_without_the_network_and_a_missing_one_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ContainerdUnavailable, match=r"containerd 2: not fetched .*make setup.*HCSSHIM_CONTAINERD_2"):
        containerds.find("2", root=tmp_path, env={})
    bindir = fake_bin(tmp_path / "2" / "2.1.9" / "usr" / "bin", "2.1.9")
    containerds.write_versions(tmp_path, {"2": {"version": "2.1.9+ds1-5", "suite": "sid", "bin": str(bindir)}})
    assert json.loads((tmp_path / "versions.json").read_text())["2"]["suite"] == "sid"
    build = containerds.find("2", root=tmp_path, env={})
    assert (build.version, build.containerd, build.bin) == ("2.1.9+ds1-5", str(bindir / "containerd"), str(bindir))
    assert containerds.fetch(["2"], root=tmp_path)["2"]["version"] == "2.1.9+ds1-5"  # runs: nothing fetched
    (bindir / "ctr").unlink()
    with pytest.raises(ContainerdUnavailable, match=r"records 2\.1\.9\+ds1-5 in .*ctr is missing"):
        containerds.find("2", root=tmp_path, env={})


def test_an_override_must_name_containerd_of_its_series(tmp_path: Path) -> None:
    good = fake_bin(tmp_path / "good", "1.7.3")
    assert containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(good)}).version == "1.7.3"
    wrong = fake_bin(tmp_path / "wrong", "2.0.0")
    with pytest.raises(ContainerdUnavailable, match=r"HCSSHIM_CONTAINERD_1_7=.*is containerd 2\.0\.0, not 1\.7\.x"):
        containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(wrong)})
    with pytest.raises(ContainerdUnavailable, match=r"is not an executable file"):
        containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(tmp_path / "none")})
    with pytest.raises(ContainerdUnavailable, match="no such series"):
        containerds.find("3", root=tmp_path)
    (tmp_path / "versions.json").write_text("[1]")
    with pytest.raises(ContainerdUnavailable, match="not a mapping"):
        containerds.find("2", root=tmp_path, env={})
