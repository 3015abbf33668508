"""hcsshim.testing.containerds: versions.json round trips, find()'s builds and messages (missing series, recorded
binaries gone, the environment overrides good and bad), fetch() doing nothing without network when the record runs,
fetching a package (a local .deb through a stand-in apt) with its record and the removal of the version it replaces,
the messages when offline, when the archive dropped a series and when a binary does not run here, the CLI's output
and exit codes, and the pure parts: apt-cache madison's output, Debian version order (as dpkg orders), series
membership and the choice of a series' newest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hcsshim.testing import containerds
from hcsshim.testing.containerds import ContainerdBuild, ContainerdUnavailable, MadisonRow

MADISON = """\
containerd | 2.1.9+ds1-5 | http://deb.debian.org/debian sid/main amd64 Packages
containerd | 1.7.24~ds1-6+deb13u1 | http://deb.debian.org/debian trixie/main amd64 Packages
containerd | 1.7.24~ds1-6+deb13u1 | http://deb.debian.org/debian trixie/main Sources
W: something apt said
not | a row
"""


def write_bin(d: Path, version: str, *, containerd_exit: int = 0) -> Path:
    """A bin directory whose containerd and ctr are shell scripts printing Debian-style versions."""
    upstream = version.rpartition("-")[0]
    d.mkdir(parents=True, exist_ok=True)
    (d / "containerd").write_text(
        "#!/bin/sh\n"
        + ("echo 'containerd: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.99` not found' >&2\n"
           f"exit {containerd_exit}\n" if containerd_exit else "")
        + f"echo 'containerd github.com/containerd/containerd {upstream} {version}'\n")
    (d / "ctr").write_text(f"#!/bin/sh\necho 'ctr github.com/containerd/containerd {upstream}'\n")
    for name in ("containerd", "ctr"):
        (d / name).chmod(0o755)
    return d


def record(root: Path, series: str, version: str, suite: str) -> Path:
    bindir = write_bin(root / series / version / "usr" / "bin", version)
    records = containerds.read_versions(root)
    records[series] = {"version": version, "suite": suite, "bin": str(bindir)}
    containerds.write_versions(root, records)
    return bindir


def build_deb(tmp: Path, version: str, *, containerd_exit: int = 0) -> Path:
    tree = tmp / f"deb-{version}"
    write_bin(tree / "usr" / "bin", version, containerd_exit=containerd_exit)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        f"Package: containerd\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n")
    deb = tmp / f"containerd_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True)
    return deb


class FakeApt:
    """PrivateApt without the network: an archive of the given rows whose downloads are local .debs."""

    def __init__(self, rows: list[MadisonRow], debs: dict[str, Path]) -> None:
        self.rows, self.debs, self.downloads, self.updates = rows, debs, [], 0

    def __call__(self, home: Path, mirror: str, suites: list[str]) -> FakeApt:
        self.mirror, self.suites = mirror, suites
        return self

    def update(self) -> None:
        self.updates += 1

    def madison(self, package: str) -> list[MadisonRow]:
        return self.rows

    def download(self, package: str, version: str, into: Path) -> Path:
        self.downloads.append(version)
        target = into / self.debs[version].name
        target.write_bytes(self.debs[version].read_bytes())
        return target


def row(version: str, suite: str, package: str = "containerd") -> MadisonRow:
    return MadisonRow(package, version, "http://deb.debian.org/debian", suite, "main", "amd64")


@pytest.fixture
def no_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the private apt was used")
    monkeypatch.setattr(containerds, "PrivateApt", refuse)


# -- versions.json --------------------------------------------------------------------------------------------


def test_versions_json_round_trips_sorted_and_is_empty_when_absent(tmp_path: Path) -> None:
    assert containerds.read_versions(tmp_path) == {}
    records = {"2": {"version": "2.1.9+ds1-5", "suite": "sid", "bin": "/b/2"},
               "1.7": {"version": "1.7.24~ds1-6+deb13u1", "suite": "trixie", "bin": "/b/1.7"}}
    containerds.write_versions(tmp_path / "root", records)
    assert containerds.read_versions(tmp_path / "root") == records
    text = (tmp_path / "root" / "versions.json").read_text()
    assert text.index('"1.7"') < text.index('"2"') and text.endswith("}\n")
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["versions.json"]


def test_a_corrupt_versions_json_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "versions.json").write_text("{not json")
    with pytest.raises(ContainerdUnavailable, match=r"versions.json: unreadable .*delete it and run `make setup`"):
        containerds.read_versions(tmp_path)
    (tmp_path / "versions.json").write_text("[1]")
    with pytest.raises(ContainerdUnavailable, match=r"versions.json: not a mapping .*delete it and run `make setup`"):
        containerds.find("2", root=tmp_path, env={})


# -- find -----------------------------------------------------------------------------------------------------


def test_find_of_a_series_never_fetched_names_it_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ContainerdUnavailable) as exc:
        containerds.find("1.7", root=tmp_path, env={})
    message = str(exc.value)
    assert message.startswith("containerd 1.7: not fetched")
    assert "make setup" in message and "deb.debian.org" in message and "HCSSHIM_CONTAINERD_1_7=" in message


def test_find_of_a_record_whose_binaries_are_gone_says_so(tmp_path: Path) -> None:
    bindir = record(tmp_path, "2", "2.1.9+ds1-5", "sid")
    (bindir / "ctr").unlink()
    with pytest.raises(ContainerdUnavailable, match=r"^containerd 2: .* records 2.1.9\+ds1-5 .*/ctr is missing: run"):
        containerds.find("2", root=tmp_path, env={})


def test_find_gives_the_recorded_build(tmp_path: Path) -> None:
    bindir = record(tmp_path, "1.7", "1.7.24~ds1-6+deb13u1", "trixie")
    build = containerds.find("1.7", root=tmp_path, env={})
    assert build == ContainerdBuild("1.7", "1.7.24~ds1-6+deb13u1", str(bindir / "containerd"), str(bindir / "ctr"),
                                    "trixie")
    assert build.bin == str(bindir)


def test_find_of_an_unknown_series_lists_the_series(tmp_path: Path) -> None:
    with pytest.raises(ContainerdUnavailable, match=r"containerd 3: no such series \(the series are 1.6, 1.7, 2\)"):
        containerds.find("3", root=tmp_path)


def test_the_environment_override_wins_over_the_record(tmp_path: Path) -> None:
    record(tmp_path / "root", "2", "2.1.9+ds1-5", "sid")
    mine = write_bin(tmp_path / "mine", "2.0.0-1")
    build = containerds.find("2", root=tmp_path / "root", env={"HCSSHIM_CONTAINERD_2": str(mine)})
    assert (build.version, build.containerd, build.ctr) == ("2.0.0-1", str(mine / "containerd"), str(mine / "ctr"))
    assert build.source == f"HCSSHIM_CONTAINERD_2={mine}"


def test_an_override_without_the_binaries_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ContainerdUnavailable) as exc:
        containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(tmp_path / "empty")})
    assert str(exc.value).startswith(f"containerd 1.7: HCSSHIM_CONTAINERD_1_7={tmp_path / 'empty'}: "
                                     f"{tmp_path / 'empty' / 'containerd'} is not an executable file: point ")


def test_an_override_of_another_series_is_refused(tmp_path: Path) -> None:
    mine = write_bin(tmp_path / "mine", "2.1.9+ds1-5")
    with pytest.raises(ContainerdUnavailable, match=r"is containerd 2.1.9\+ds1-5, not 1.7.x: point "):
        containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(mine)})


def test_an_override_that_does_not_run_gives_its_error(tmp_path: Path) -> None:
    mine = write_bin(tmp_path / "mine", "1.7.1-1", containerd_exit=1)
    with pytest.raises(ContainerdUnavailable, match=r"--version: exit status 1: .*GLIBC_2.99"):
        containerds.find("1.7", root=tmp_path, env={"HCSSHIM_CONTAINERD_1_7": str(mine)})


# -- fetch ----------------------------------------------------------------------------------------------------


def test_fetch_with_the_recorded_binaries_running_uses_no_network(tmp_path: Path, no_apt: None) -> None:
    record(tmp_path, "1.7", "1.7.24~ds1-6+deb13u1", "trixie")
    record(tmp_path, "2", "2.1.9+ds1-5", "sid")
    before = (tmp_path / "versions.json").read_text()
    got = containerds.fetch(root=tmp_path, mirror="http://127.0.0.1:9/debian")
    assert got == containerds.read_versions(tmp_path)
    assert set(got) == {"1.7", "2"} and (tmp_path / "versions.json").read_text() == before
    assert containerds.fetch(["1.6"], root=tmp_path) == {}  # the system's: nothing to fetch


def test_fetch_downloads_unpacks_and_records_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    record(root, "1.7", "1.7.24~ds1-6+deb13u1", "trixie")
    apt = FakeApt([row("2.1.9+ds1-5", "sid"), row("2.2.0-1", "sid"), row("1.7.99-1", "trixie")],
                  {"2.2.0-1": build_deb(tmp_path, "2.2.0-1")})
    monkeypatch.setattr(containerds, "PrivateApt", apt)
    lines: list[str] = []
    got = containerds.fetch(root=root, progress=lines.append)
    assert apt.suites == ["sid"] and apt.updates == 1 and apt.downloads == ["2.2.0-1"]  # 1.7 was there
    assert lines == ["containerd 2: downloading containerd 2.2.0-1 from sid"]
    bindir = root / "2" / "2.2.0-1" / "usr" / "bin"
    assert got["2"] == {"version": "2.2.0-1", "suite": "sid", "bin": str(bindir)}
    assert got["1.7"]["version"] == "1.7.24~ds1-6+deb13u1"  # pinned: the suite's newer 1.7.99 is not taken
    assert containerds.find("2", root=root, env={}).containerd == str(bindir / "containerd")
    assert sorted(p.name for p in root.iterdir()) == [".lock", "1.7", "2", "versions.json"]  # no download left


def test_fetch_refresh_takes_the_suites_newest_and_removes_the_old_version(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    record(root, "1.7", "1.7.24~ds1-6+deb13u1", "trixie")
    record(root, "2", "2.1.9+ds1-5", "sid")
    apt = FakeApt([row("2.1.9+ds1-5", "sid"), row("1.7.25-1", "trixie")], {"1.7.25-1": build_deb(tmp_path, "1.7.25-1")})
    monkeypatch.setattr(containerds, "PrivateApt", apt)
    got = containerds.fetch(root=root, refresh=True)
    assert apt.downloads == ["1.7.25-1"]  # 2 is still the newest of sid
    assert (got["1.7"]["version"], got["2"]["version"]) == ("1.7.25-1", "2.1.9+ds1-5")
    assert [p.name for p in (root / "1.7").iterdir()] == ["1.7.25-1"]


def test_fetch_offline_names_each_series_and_how_to_get_it(tmp_path: Path) -> None:
    # the real apt-get against a port nothing listens on: what a host without network sees
    with pytest.raises(ContainerdUnavailable) as exc:
        containerds.fetch(root=tmp_path, mirror="http://127.0.0.1:9/debian")
    one_seven, two = str(exc.value).splitlines()
    assert one_seven.startswith("containerd 1.7: reading trixie from http://127.0.0.1:9/debian failed (apt-get ")
    assert two.startswith("containerd 2: reading sid from http://127.0.0.1:9/debian failed (")
    assert "127.0.0.1:9" in two and "make setup" in two and "HCSSHIM_CONTAINERD_2=" in two
    assert containerds.read_versions(tmp_path) == {}


def test_fetch_when_the_archive_dropped_a_series_says_so_and_records_the_other(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt([row("2.1.9+ds1-5", "sid"), row("1.8.0-1", "trixie")],
                  {"2.1.9+ds1-5": build_deb(tmp_path, "2.1.9+ds1-5")})
    monkeypatch.setattr(containerds, "PrivateApt", apt)
    with pytest.raises(ContainerdUnavailable) as exc:
        containerds.fetch(root=tmp_path / "root")
    assert str(exc.value) == (
        "containerd 1.7: the archive no longer offers containerd 1.7.x in trixie (it offers 2.1.9+ds1-5 (sid), "
        "1.8.0-1 (trixie)): set HCSSHIM_CONTAINERD_1_7=<dir with containerd and ctr> to use your own")
    assert list(containerds.read_versions(tmp_path / "root")) == ["2"]


def test_fetch_of_a_binary_that_does_not_run_here_reports_its_error(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt([row("2.1.9+ds1-5", "sid")], {"2.1.9+ds1-5": build_deb(tmp_path, "2.1.9+ds1-5", containerd_exit=1)})
    monkeypatch.setattr(containerds, "PrivateApt", apt)
    with pytest.raises(ContainerdUnavailable, match=r"^containerd 2: 2.1.9\+ds1-5 from sid was unpacked in .* but does "
                       r"not run here \(.*GLIBC_2.99.*\): set HCSSHIM_CONTAINERD_2="):
        containerds.fetch(["2"], root=tmp_path / "root")
    assert containerds.read_versions(tmp_path / "root") == {}


# -- the command line -----------------------------------------------------------------------------------------


def test_list_prints_what_there_is_and_exits_1_with_the_missing_on_stderr(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCSSHIM_CONTAINERD_1_7", raising=False)
    monkeypatch.delenv("HCSSHIM_CONTAINERD_2", raising=False)
    bindir = record(tmp_path, "2", "2.1.9+ds1-5", "sid")
    assert containerds.main(["--root", str(tmp_path), "list"]) == 1
    out, err = capsys.readouterr()
    assert f"containerd 2: 2.1.9+ds1-5 (sid) {bindir}\n" in out
    assert err.startswith("containerd 1.7: not fetched") and "Traceback" not in err


def test_fetch_cli_skips_an_overridden_series_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch, no_apt: None) -> None:
    record(tmp_path / "root", "1.7", "1.7.24~ds1-6+deb13u1", "trixie")
    mine = write_bin(tmp_path / "mine", "2.1.0-1")
    monkeypatch.setenv("HCSSHIM_CONTAINERD_2", str(mine))
    assert containerds.main(["--root", str(tmp_path / "root"), "fetch", "--series", "1.7", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1] == f"containerd 2: 2.1.0-1 (HCSSHIM_CONTAINERD_2={mine}) {mine}" and err == ""


# -- the pure parts -------------------------------------------------------------------------------------------


def test_madison_rows_are_the_binary_package_lines() -> None:
    assert containerds.parse_madison(MADISON) == [row("2.1.9+ds1-5", "sid"), row("1.7.24~ds1-6+deb13u1", "trixie")]


@pytest.mark.parametrize(("a", "b"), [
    ("1.7.24~ds1-6+deb13u1", "1.7.24~ds1-6"), ("1.7.24", "1.7.24~ds1"), ("1.7.24~ds1", "1.7.24~"),
    ("1.7.24-6", "1.7.24~ds1-6"), ("1.10", "1.9"), ("1:1.0", "2.0"), ("2.1.9+ds1-5", "2.1.9+ds1-4.1"),
    ("1.0a", "1.0"), ("1.0+", "1.0a"), ("1.0-1", "1.0"), ("1.01", "1.1~"), ("2.1.10", "2.1.9+ds1"),
    ("1.0-10", "1.0-9"),
])
def test_debian_versions_order_as_dpkg_orders_them(a: str, b: str) -> None:
    assert containerds.compare_versions(a, b) > 0 and containerds.compare_versions(b, a) < 0
    assert subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0
    assert containerds.compare_versions(a, a) == 0 and containerds.compare_versions("1.01", "1.1") == 0


@pytest.mark.parametrize(("version", "series", "member"), [
    ("1.7.24~ds1-6+deb13u1", "1.7", True), ("2.1.9+ds1-5", "2", True), ("20.1-1", "2", False),
    ("1.70.0-1", "1.7", False), ("1.6.20~ds1-1+deb12u3", "1.7", False), ("v2.0.0", "2", True), ("1:2.0-1", "2", True),
])
def test_series_membership_reads_the_upstream_version(version: str, series: str, member: bool) -> None:
    assert containerds.in_series(version, series) is member


def test_the_newest_of_a_series_is_chosen_within_its_suite() -> None:
    rows = [row("1.7.24~ds1-6", "trixie"), row("1.7.24~ds1-6+deb13u1", "trixie"), row("1.7.30-1", "sid"),
            row("1.8.0-1", "trixie"), row("1.7.99-1", "trixie", package="containerd-dev"), row("2.0.0~rc1-1", "sid"),
            row("2.1.9+ds1-5", "sid"), row("2.1.10~rc1-1", "sid"), row("20.0-1", "sid")]
    assert containerds.newest(rows, "1.7", "trixie") == "1.7.24~ds1-6+deb13u1"
    assert containerds.newest(rows, "2", "sid") == "2.1.10~rc1-1"  # 2.1.10~rc1 > 2.1.9: dpkg's order
    assert containerds.newest(rows, "2", "trixie") is None


@pytest.mark.parametrize(("text", "version"), [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", "1.6.20~ds1-1+deb12u3"),
    ("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n", "2.1.9+unknown"),
    ("containerd github.com/containerd/containerd v1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182\n", "1.7.24"),
    ("ctr github.com/containerd/containerd 1.7.24\n", ""), ("", ""),
])
def test_the_version_containerd_reports_is_its_debian_version_when_it_carries_one(text: str, version: str) -> None:
    assert containerds.parse_version_output(text) == version
