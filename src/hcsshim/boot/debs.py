"""hcsshim.boot.debs: Debian packages for the default base and the kernel, fetched once and cached.

`apt-cache` (local package lists, works offline) names the version, file name and SHA256 of each package;
`apt-get download` fetches only what the cache lacks or what fails its checksum, so rebuilds are fast and
work without network once the cache is warm. `dpkg-deb -x` unpacks each .deb once into
`<cache>/extracted/<file>/`, published by rename so an interrupted extraction is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class DebError(RuntimeError):
    """A package could not be resolved, downloaded or unpacked."""


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    path: Path  # the .deb in the cache
    sha256: str


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DebError(f"{what}: {argv[0]} not found (this needs a Debian host with apt and dpkg)") from None
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        raise DebError(f"{what}: {' '.join(argv)} failed: {err[-1] if err else f'exit {p.returncode}'}")
    return p.stdout


def depends(packages: list[str]) -> dict[str, list[str]]:
    """What each package depends or pre-depends on (first alternative of each), from one apt-cache call."""
    out = _run(["apt-cache", "depends", *packages], f"resolve {' '.join(packages)}")
    deps: dict[str, list[str]] = {}
    cur: list[str] = []
    for line in out.splitlines():
        if line and not line[0].isspace():
            cur = deps.setdefault(line.strip(), [])
            continue
        s = line.strip().lstrip("|")
        for key in ("Depends:", "PreDepends:"):
            if s.startswith(key):
                cur.append(s[len(key):].strip().strip("<>"))
    return deps


@functools.lru_cache(maxsize=4)  # apt-cache takes seconds; the answer cannot change within one process
def resolve(kernel_meta: str = "linux-image-amd64") -> tuple[str, str]:
    """The versioned kernel package (linux-image-amd64 -> linux-image-6.1.0-57-amd64) and the python3
    minor version ("3.11") the distribution ships, from the meta packages' dependencies."""
    deps = depends([kernel_meta, "python3-minimal"])
    kernel = next((d for d in deps.get(kernel_meta, []) if d.startswith("linux-image-")), None)
    if kernel is None:
        raise DebError(f"resolve {kernel_meta}: no linux-image-* dependency")
    py = next((d for d in deps.get("python3-minimal", []) if d.startswith("python3.") and d.endswith("-minimal")),
              None)
    if py is None:
        raise DebError("resolve python3-minimal: no python3.X-minimal dependency")
    return kernel, py.removeprefix("python").removesuffix("-minimal")


def show(packages: list[str]) -> dict[str, dict[str, str]]:
    """The candidate version's control fields of each package, from one apt-cache call (it is slow)."""
    return {k: dict(v) for k, v in _show(tuple(packages)).items()}


@functools.lru_cache(maxsize=16)
def _show(packages: tuple[str, ...]) -> dict[str, dict[str, str]]:
    out = _run(["apt-cache", "show", "--no-all-versions", *packages], f"look up {' '.join(packages)}")
    found: dict[str, dict[str, str]] = {}
    for stanza in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, _, v = line.partition(":")
                fields.setdefault(k, v.strip())
        if "Package" in fields:
            found.setdefault(fields["Package"], fields)
    for name in packages:
        if "Filename" not in found.get(name, {}):
            raise DebError(f"look up {name}: apt-cache shows no candidate (run apt-get update?)")
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(packages: list[str], cache: Path, log: Callable[[str], None] = lambda _m: None) -> dict[str, Deb]:
    """Each package's .deb in `cache`, downloading (one apt-get call) only those missing or corrupt."""
    cache.mkdir(parents=True, exist_ok=True)
    want: dict[str, tuple[dict[str, str], Path]] = {}
    infos = show(packages)
    for name in packages:
        info = infos[name]
        # apt-get download's file name: the epoch's colon is URL-encoded, unlike the pool's Filename.
        fname = f"{name}_{info.get('Version', '').replace(':', '%3a')}_{info.get('Architecture', 'amd64')}.deb"
        want[name] = (info, cache / fname)
    digests = {n: sha256_file(p) for n, (_, p) in want.items() if p.exists()}
    missing = [n for n, (info, _) in want.items()
               if n not in digests or digests[n] != info.get("SHA256", digests[n])]
    if missing:
        log(f"downloading {len(missing)} package(s): {' '.join(missing)}")
        # apt-get download writes into the current directory; a private temp dir keeps half-written
        # files out of the cache. (Root without the _apt user's write access: apt warns, harmlessly.)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
            _run(["apt-get", "download", "-q", *missing], "download packages", cwd=Path(tmp))
            for n in missing:
                got = Path(tmp) / want[n][1].name
                if not got.exists():
                    raise DebError(f"download {n}: apt-get did not produce {got.name}")
                os.replace(got, want[n][1])
                digests[n] = sha256_file(want[n][1])
    out = {}
    for n, (info, p) in want.items():
        digest = digests[n]
        if "SHA256" in info and digest != info["SHA256"]:
            raise DebError(f"download {n}: {p.name} has sha256 {digest}, the archive says {info['SHA256']}")
        out[n] = Deb(n, info.get("Version", ""), p, digest)
    return out


def extract(deb: Deb, cache: Path) -> Path:
    """The package's files, unpacked once under `<cache>/extracted/` (reused while the .deb is unchanged)."""
    dest = cache / "extracted" / f"{deb.path.stem}-{deb.sha256[:12]}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".x-", dir=dest.parent))
    try:
        _run(["dpkg-deb", "-x", str(deb.path), str(tmp)], f"unpack {deb.path.name}")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
