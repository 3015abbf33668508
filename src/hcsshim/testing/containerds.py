"""The containerd builds of the test matrix: the system's 1.6, and 1.7.x and 2.x fetched as Debian packages.

Series and where each comes from:

* "1.6": the system's /usr/bin/containerd and ctr (Debian 12's package, installed by `make setup`); nothing fetched.
* "1.7": the newest 1.7.x of Debian 13 "trixie"; "2": the newest 2.x of Debian unstable "sid".

`fetch()` (`make setup` runs it: `python -m hcsshim.testing.containerds fetch`) resolves a fetched series with an apt
of its own under `<root>/apt` (private sources.list, lists and cache, an empty dpkg status: nothing is installed and
the system's apt state is not touched), downloads the package (`apt-get download containerd=<version>`), unpacks it
(`dpkg -x`) into `<root>/<series>/<version>/`, checks that its containerd and ctr run here and records it in
`<root>/versions.json`: {"1.7": {"version": "1.7.24~ds1-6+deb13u1", "suite": "trixie", "bin": "<abs>/usr/bin"}}.
The record pins the series: once its binaries are unpacked and run, fetch() does nothing (no network) until asked to
`refresh` (then it takes the suite's newest again and removes the version it replaces). The default root is the
repository's ignored build/containerd.

`find(series)` gives a `ContainerdBuild` (series, version, containerd, ctr paths, where it came from): the system's
for "1.6", else $HCSSHIM_CONTAINERD_1_7 / $HCSSHIM_CONTAINERD_2 (a directory holding containerd and ctr) when set,
else the record. Whatever is missing raises `ContainerdUnavailable` with a message naming the series, what failed
and how to get it; the matrix tests fail with that message rather than skip.

The pure parts, apt-cache madison's output (`parse_madison`), Debian version order (`compare_versions`), series
membership (`in_series`) and the choice of a series' newest (`newest`), are functions of text alone.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "ENV",
    "FETCHED",
    "MIRROR",
    "ROOT",
    "SERIES",
    "SUITES",
    "ContainerdBuild",
    "ContainerdUnavailable",
    "MadisonRow",
    "compare_versions",
    "fetch",
    "find",
    "in_series",
    "main",
    "newest",
    "parse_madison",
    "parse_version_output",
    "read_versions",
    "write_versions",
]

SUITES = {"1.7": "trixie", "2": "sid"}  # the fetched series and the Debian suite each comes from
SERIES = ("1.6", *SUITES)
FETCHED = tuple(SUITES)
ENV = {s: "HCSSHIM_CONTAINERD_" + s.replace(".", "_") for s in SUITES}  # HCSSHIM_CONTAINERD_1_7, _2
MIRROR = "http://deb.debian.org/debian"
PACKAGE = "containerd"
SYSTEM_BIN = Path("/usr/bin")
ROOT = Path(__file__).resolve().parents[3] / "build" / "containerd"  # <repo>/build/containerd (git-ignored)
VERSIONS = "versions.json"
PROBE_TIMEOUT = 30.0
APT_TIMEOUT = 900.0


class ContainerdUnavailable(RuntimeError):
    """A series cannot be had: not fetched, gone from the archive, offline, or its binaries do not run here."""


@dataclass(frozen=True)
class ContainerdBuild:
    """One containerd to run (hcsshim.testing.containerd.Containerd(build=...))."""

    series: str  # "1.6", "1.7", "2"
    version: str  # the Debian package version, "1.7.24~ds1-6+deb13u1" (what `containerd --version` says otherwise)
    containerd: str  # absolute paths of the binaries
    ctr: str
    source: str = ""  # "system", the suite ("trixie"), or "HCSSHIM_CONTAINERD_2=<dir>"

    @property
    def bin(self) -> str:
        """The directory of the binaries (the package's shims, containerd-shim-runc-v2, are there too)."""
        return str(Path(self.containerd).parent)


@dataclass(frozen=True)
class MadisonRow:
    """One line of `apt-cache madison`: a binary package version offered by one suite."""

    package: str
    version: str
    archive: str  # "http://deb.debian.org/debian"
    suite: str  # "sid"
    component: str  # "main"
    arch: str  # "amd64"


# -- pure functions -------------------------------------------------------------------------------------------


def parse_madison(text: str) -> list[MadisonRow]:
    """`apt-cache madison` lines ("containerd | 2.1.9+ds1-5 | http://deb.debian.org/debian sid/main amd64 Packages")
    as rows; source-package lines and anything unparsable are left out."""
    rows = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3:
            continue
        where = fields[2].split()
        if len(where) != 4 or where[3] != "Packages" or "/" not in where[1]:
            continue
        suite, _, component = where[1].partition("/")
        rows.append(MadisonRow(fields[0], fields[1], where[0], suite, component, where[2]))
    return rows


def _order(c: str) -> int:
    # dpkg's order(): end and digits 0, '~' before everything, letters before the other characters
    if c == "" or c.isdigit():
        return 0
    if c == "~":
        return -1
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp: one upstream version or revision against another."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac, bc = _order(a[i] if i < len(a) else ""), _order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            first_diff = first_diff or ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, colon, rest = v.partition(":")
    if not colon:
        epoch, rest = "0", v
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """Debian version order (as `dpkg --compare-versions`): negative, 0 or positive as a <, = or > b."""
    (ea, ua, ra), (eb, ub, rb) = _split_version(a), _split_version(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def in_series(version: str, series: str) -> bool:
    """Whether a (Debian or upstream) version belongs to a series: "1.7.24~ds1-6" to "1.7", "2.1.9+ds1-5" to "2"."""
    upstream = _split_version(version.removeprefix("v"))[1]
    return upstream == series or upstream.startswith(series + ".")


def newest(rows: Iterable[MadisonRow], series: str, suite: str, package: str = PACKAGE) -> str | None:
    """The newest version of `series` that `suite` offers among the rows, or None."""
    versions = [r.version for r in rows if r.package == package and r.suite == suite and in_series(r.version, series)]
    return max(versions, key=functools.cmp_to_key(compare_versions), default=None)


def parse_version_output(text: str) -> str:
    """The version in `containerd --version`: Debian's package version when the build carries it as its revision
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"), else the version field
    without its "v" ("... v1.7.24 88bf19b2..." gives "1.7.24"); "" when the text is not such a line."""
    fields = text.split()
    if len(fields) < 3 or fields[0] != "containerd":
        return ""
    version = fields[2].removeprefix("v")
    if len(fields) > 3 and fields[3].startswith(version):
        return fields[3]
    return version


# -- versions.json --------------------------------------------------------------------------------------------


def read_versions(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """The records of `<root>/versions.json` ({} when there is none)."""
    path = Path(root) / VERSIONS
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ContainerdUnavailable(f"{path}: unreadable ({exc}): delete it and run `make setup`") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ContainerdUnavailable(f"{path}: not a mapping of series to records: delete it and run `make setup`")
    return data


def write_versions(root: Path, records: Mapping[str, Mapping[str, str]]) -> None:
    """Replace `<root>/versions.json` with `records` in one step."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{VERSIONS}.{os.getpid()}"
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / VERSIONS)


# -- the binaries ---------------------------------------------------------------------------------------------


def _how_to_get(series: str) -> str:
    return (f"run `make setup` (or `python -m hcsshim.testing.containerds fetch --series {series}`) with network "
            f"access to deb.debian.org, or set {ENV[series]}=<dir with containerd and ctr> to use your own")


def _probe(bindir: Path) -> str:
    """The version `containerd --version` reports, once containerd and ctr have both answered --version;
    ValueError saying what is wrong otherwise."""
    version = ""
    for name in ("containerd", "ctr"):
        exe = bindir / name
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise ValueError(f"{exe} is not an executable file")
        try:
            r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                               check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError(f"{exe} --version: {exc}") from exc
        if r.returncode != 0:
            why = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or [""]
            raise ValueError(f"{exe} --version: exit status {r.returncode}: {why[0]}")
        if name == "containerd":
            version = parse_version_output(r.stdout)
            if not version:
                raise ValueError(f"{exe} --version: not containerd's answer: {r.stdout.strip()!r}")
    return version


def _build(series: str, bindir: Path, version: str, source: str) -> ContainerdBuild:
    return ContainerdBuild(series, version, str(bindir / "containerd"), str(bindir / "ctr"), source)


def find(series: str, *, root: Path = ROOT, env: Mapping[str, str] | None = None) -> ContainerdBuild:
    """The containerd of a series: the system's for "1.6"; for a fetched series the directory its environment
    variable names, else the one versions.json records. ContainerdUnavailable says what is missing and how to get it."""
    env = os.environ if env is None else env
    if series not in SERIES:
        raise ContainerdUnavailable(f"containerd {series}: no such series (the series are {', '.join(SERIES)})")
    if series == "1.6":
        try:
            version = _probe(SYSTEM_BIN)
        except ValueError as exc:
            raise ContainerdUnavailable(f"containerd 1.6: the system's containerd: {exc}: run `make setup` "
                                        f"(it installs Debian's containerd package)") from exc
        return _check_series(_build(series, SYSTEM_BIN, version, "system"), "the system's containerd",
                             "install Debian 12's containerd package (make setup)")
    override = env.get(ENV[series], "")
    if override:
        where = f"{ENV[series]}={override}"
        fix = f"point {ENV[series]} at a directory holding containerd {series}.x's containerd and ctr, or unset it"
        try:
            version = _probe(Path(override))
        except ValueError as exc:
            raise ContainerdUnavailable(f"containerd {series}: {where}: {exc}: {fix}") from exc
        return _check_series(_build(series, Path(override).absolute(), version, where), where, fix)
    record = read_versions(root).get(series)
    if record is None:
        raise ContainerdUnavailable(f"containerd {series}: not fetched ({Path(root) / VERSIONS} has no {series}): "
                                    + _how_to_get(series))
    bindir = Path(record.get("bin", ""))
    for name in ("containerd", "ctr"):
        if not (bindir / name).is_file():
            raise ContainerdUnavailable(
                f"containerd {series}: {Path(root) / VERSIONS} records {record.get('version')} in {bindir}, but "
                f"{bindir / name} is missing: " + _how_to_get(series))
    return _build(series, bindir, record.get("version", ""), record.get("suite", ""))


def _check_series(build: ContainerdBuild, where: str, fix: str) -> ContainerdBuild:
    if not in_series(build.version, build.series):
        raise ContainerdUnavailable(f"containerd {build.series}: {where}: {build.containerd} is containerd "
                                    f"{build.version}, not {build.series}.x: {fix}")
    return build


def _recorded_runs(record: Mapping[str, str] | None, series: str) -> bool:
    if not record or not in_series(record.get("version", ""), series):
        return False
    try:
        return in_series(_probe(Path(record.get("bin", ""))), series)
    except ValueError:
        return False


# -- the private apt ------------------------------------------------------------------------------------------


class AptError(RuntimeError):
    """An apt or dpkg command of the private apt failed; the message is its command and its last error line."""


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    """Run an apt or dpkg command; its stdout, or AptError with its first error line."""
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    shown = " ".join(a for i, a in enumerate(argv) if a != "-o" and argv[i - 1] != "-o")  # without the -o options
    try:
        r = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT,
                           check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AptError(f"{shown}: {exc}") from exc
    if r.returncode != 0:
        lines = r.stderr.splitlines()
        errors = [ln for ln in lines if ln.startswith("E:")] or [ln for ln in lines if ln.startswith("W:")] or lines
        raise AptError(f"{shown}: exit status {r.returncode}: "
                       + (errors[0].removeprefix("E: ").strip() if errors else "no message"))
    return r.stdout


class PrivateApt:
    """apt-get and apt-cache over a sources.list, lists and cache of their own under `home` and an empty dpkg
    status: they read the archive and download, they never install nor touch the system's apt state."""

    def __init__(self, home: Path, mirror: str, suites: Sequence[str]) -> None:
        self.home = Path(home)
        self.mirror = mirror
        self.suites = list(suites)

    def _options(self) -> list[str]:
        h = self.home
        opts = {
            "Dir::Etc::SourceList": h / "sources.list", "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null", "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": h / "lists", "Dir::Cache": h / "cache", "Dir::State::Status": "/dev/null",
            "Acquire::Languages": "none", "Acquire::Retries": "1",
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled": "false",
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled": "false",
        }
        return [a for k, v in opts.items() for a in ("-o", f"{k}={v}")]

    def update(self) -> None:
        for d in ("lists/partial", "cache/archives/partial"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        (self.home / "sources.list").write_text("".join(f"deb {self.mirror} {s} main\n" for s in self.suites))
        _run(["apt-get", *self._options(), "-q", "--error-on=any", "update"])

    def madison(self, package: str) -> list[MadisonRow]:
        return parse_madison(_run(["apt-cache", *self._options(), "madison", package]))

    def download(self, package: str, version: str, into: Path) -> Path:
        """The .deb of package=version, downloaded into the directory `into`."""
        _run(["apt-get", *self._options(), "-q", "download", f"{package}={version}"], cwd=into)
        debs = sorted(into.glob("*.deb"))
        if len(debs) != 1:
            raise AptError(f"apt-get download {package}={version}: {len(debs)} .deb files in {into}")
        return debs[0]


def _let_apt_write(d: Path) -> None:
    # As root, apt downloads as the user _apt: let it reach and write `d` (else it warns and downloads as root).
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError, OSError):
            d.parent.chmod(0o711)
            os.chown(d, pwd.getpwnam("_apt").pw_uid, -1)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _unpack(apt: PrivateApt, series: str, version: str, root: Path) -> Path:
    """Download and unpack package=version into <root>/<series>/<version>/; its usr/bin."""
    dest = root / series / version.replace(":", "%3a")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        dl, unpacked = Path(tmp) / "deb", Path(tmp) / "tree"
        dl.mkdir()
        _let_apt_write(dl)
        deb = apt.download(PACKAGE, version, dl)
        _run(["dpkg", "-x", str(deb), str(unpacked)])
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(unpacked, dest)
    return dest / "usr" / "bin"


def fetch(series: Iterable[str] = FETCHED, *, root: Path = ROOT, mirror: str = MIRROR, refresh: bool = False,
          progress: Callable[[str], None] | None = None) -> dict[str, dict[str, str]]:
    """Make each fetched series of `series` present in `root` ("1.6" needs nothing) and return their records.

    A recorded series whose binaries run is left as it is, without network (unless `refresh`). The others get one
    private `apt-get update` of their suites, then a download and unpack each, recorded as it succeeds. Any that
    could not be had raise ContainerdUnavailable at the end, one line per series, after the others were recorded.
    """
    wanted = list(dict.fromkeys(series))
    unknown = [s for s in wanted if s not in SERIES]
    if unknown:
        raise ContainerdUnavailable(f"containerd {', '.join(unknown)}: no such series (the series are "
                                    f"{', '.join(SERIES)})")
    wanted = [s for s in wanted if s in SUITES]
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _line: None)
    with _locked(root):
        try:
            records = read_versions(root)
        except ContainerdUnavailable:
            records = {}  # rewritten below
        todo = [s for s in wanted if refresh or not _recorded_runs(records.get(s), s)]
        failures: list[str] = []
        if todo:
            apt = PrivateApt(root / "apt", mirror, sorted({SUITES[s] for s in todo}))
            versions = _resolve(apt, todo, failures)
            for s, version in versions.items():
                message = _fetch_series(apt, s, version, records, root, say)
                if message:
                    failures.append(message)
    if failures:
        raise ContainerdUnavailable("\n".join(failures))
    return {s: records[s] for s in wanted}


def _resolve(apt: PrivateApt, todo: Sequence[str], failures: list[str]) -> dict[str, str]:
    """The version to fetch of each series, after one update of their suites; what cannot be resolved is added to
    `failures`."""
    try:
        apt.update()
        rows = apt.madison(PACKAGE)
    except AptError as exc:
        failures.extend(f"containerd {s}: reading {SUITES[s]} from {apt.mirror} failed ({exc}): " + _how_to_get(s)
                        for s in todo)
        return {}
    versions = {}
    for s in todo:
        version = newest(rows, s, SUITES[s])
        if version is None:
            offered = ", ".join(f"{r.version} ({r.suite})" for r in rows if r.package == PACKAGE) or "nothing"
            failures.append(f"containerd {s}: the archive no longer offers containerd {s}.x in {SUITES[s]} (it "
                            f"offers {offered}): set {ENV[s]}=<dir with containerd and ctr> to use your own")
        else:
            versions[s] = version
    return versions


def _fetch_series(apt: PrivateApt, s: str, version: str, records: dict[str, dict[str, str]], root: Path,
                  say: Callable[[str], None]) -> str:
    """Fetch one series' version, record it and remove the version it replaces; "" or the failure's message."""
    suite, old = SUITES[s], records.get(s, {})
    if old.get("version") == version and _recorded_runs(old, s):
        return ""  # refreshed: still the newest
    say(f"containerd {s}: downloading {PACKAGE} {version} from {suite}")
    try:
        bindir = _unpack(apt, s, version, root)
    except AptError as exc:
        return f"containerd {s}: fetching {version} from {suite} failed ({exc}): " + _how_to_get(s)
    try:
        _probe(bindir)
    except ValueError as exc:
        return (f"containerd {s}: {version} from {suite} was unpacked in {bindir} but does not run here ({exc}): "
                f"set {ENV[s]}=<dir with containerd and ctr> to use your own")
    records[s] = {"version": version, "suite": suite, "bin": str(bindir)}
    write_versions(root, records)
    for stale in (root / s).iterdir():
        if stale.name != bindir.parent.parent.name:
            shutil.rmtree(stale, ignore_errors=True)
    return ""


# -- the command line -----------------------------------------------------------------------------------------


def _line(b: ContainerdBuild) -> str:
    return f"containerd {b.series}: {b.version} ({b.source}) {b.bin}"


def main(argv: Sequence[str] | None = None) -> int:
    """`fetch [--series ...] [--refresh]` and `list`; 0 when every series asked for is there, 1 otherwise."""
    p = argparse.ArgumentParser(prog="python -m hcsshim.testing.containerds", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help=f"where the builds live (default {ROOT})")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch what is missing of the series and print what there is")
    f.add_argument("--series", nargs="+", choices=SERIES, default=list(FETCHED))
    f.add_argument("--refresh", action="store_true", help="take each suite's newest version again")
    sub.add_parser("list", help="print every series: its version and binaries, or why it is unavailable")
    args = p.parse_args(argv)
    progress = (lambda line: print(line, flush=True)) if sys.stdout.isatty() else None
    failed = ""
    if args.command == "fetch":
        # A series its environment variable overrides is not fetched: find() will use that directory.
        todo = [s for s in args.series if not os.environ.get(ENV.get(s, ""), "")]
        try:
            fetch(todo, root=args.root, refresh=args.refresh, progress=progress)
        except ContainerdUnavailable as exc:
            failed = str(exc)
        shown = args.series
    else:
        shown = list(SERIES)
    messages = failed.splitlines()
    for s in shown:
        try:
            print(_line(find(s, root=args.root)))
        except ContainerdUnavailable as exc:
            if not any(m.startswith(f"containerd {s}: ") for m in messages):
                messages.append(str(exc))
    for m in messages:
        print(m, file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
