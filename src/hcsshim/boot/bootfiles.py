"""hcsshim.boot.bootfiles: `make all` — BASE rootfs + our delta -> out/{delta.tar.gz,initrd.img,rootfs.tar.gz,...}.

Outputs (spec §7, upstream Makefile.bootfiles): `delta.tar.gz` (/init, the busybox init runs on, /bin/gcs,
the hcsshim guest packages byte-compiled, the kernel modules with their load order, /info), `initrd.img`
(BASE with the delta unpacked over it, gzipped newc cpio, owner 0:0) and `initrd.cpio` (the same,
uncompressed: seconds faster to boot under TCG), `rootfs.tar.gz` (the same tree),
`kernel` (Debian's bzImage) and `vmlinux` (its uncompressed ELF, for PVH direct boot), `rootfs.vhd` (the
tree through our tar2ext4 with a VHD footer, when hcsshim.ext4 is present) and `info/` (what went in).

Without BASE the default base comes from Debian packages: busybox-static with its applet links, python3
with the part of the stdlib the GCS uses, runc and mke2fs, plus exactly the shared libraries their ELF
DT_NEEDED entries name. Same inputs give identical files: sorted entries, one mtime, gzip mtime 0,
unchecked-hash .pyc files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import hcsshim
from hcsshim.boot import debs
from hcsshim.boot.archive import FILE, ArchiveError, Entry, Tree, cpio_bytes, gzip_bytes, read_archive, tar_bytes
from hcsshim.boot.elf import ElfError, dynamic
from hcsshim.boot.kernel import KernelError, extract_vmlinux
from hcsshim.boot.modules import GUEST_MODULES, ROOT_MODULES, ModuleError, ModuleIndex, load_order, strip_signature

INIT_SCRIPT = Path(__file__).with_name("init.sh")
BUSYBOX_PATH = "usr/lib/hcsshim/busybox"  # the static busybox /init runs on, whatever BASE provides
# The guest's import rule, defined here once: the GCS (hcsshim.guest) imports only these hcsshim packages and
# single modules besides the standard library, and each of them imports only the standard library and each
# other. The boot files ship exactly this set (guest_python); tests/unit/test_guest_imports.py enforces the rule.
GUEST_PACKAGES = ("guest", "bridge", "transport", "runc")  # hcsshim subpackages the GCS runs on
# stdlib-only single modules of hcsshim those packages import
GUEST_GROUND_MODULES = ("goflag", "gojson", "libc", "mount")
GUEST_UNITS = GUEST_PACKAGES + GUEST_GROUND_MODULES
GUEST_SITE = "usr/lib/python3/dist-packages"  # where the guest code goes (/bin/gcs puts it on sys.path)
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
# Libraries of the default base's programs (runc, mke2fs, python3 and the extension modules kept).
BASE_LIB_PACKAGES = ("libc6", "libexpat1", "zlib1g", "libffi8", "libseccomp2", "libext2fs2", "libcom-err2",
                     "libblkid1", "libuuid1")
# Never candidates for the default base's stdlib (stdlib_closure picks what the guest imports from the rest): not
# copied into modulefinder's scratch tree, and never shipped, whatever a function-level import reaches.
STDLIB_SKIP_DIRS = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data", "distutils",
    "unittest", "sqlite3", "dbm", "curses", "venv", "msilib", "__pycache__", "config-3.11-x86_64-linux-gnu",
    "xmlrpc", "wsgiref", "lib-dynload", "site-packages", "dist-packages",
})
STDLIB_SKIP_FILES = frozenset({"pydoc.py", "turtle.py", "doctest.py", "idle.py", "_pydecimal.py", "mailbox.py",
                               "imaplib.py", "nntplib.py", "smtplib.py", "ftplib.py", "pdb.py", "tabnanny.py"})
DYNLOAD_SKIP = ("_test", "xx", "_ctypes_test", "_curses", "readline", "_tkinter", "ossaudiodev", "audioop", "nis",
                "_dbm", "_gdbm", "_sqlite3")
# /bin/gcs: the BASE's /usr/bin/python3 straight from the shebang (no shell, no runpy), isolated (-I: no
# environment, no user site) and without the site module (-S: the guest code is stdlib-only); the boot path
# of a utility VM pays for every module imported, under TCG ~25x what it costs natively.
GCS_LAUNCHER = f"""#!/usr/bin/python3 -IS
# The hcsshim guest agent: see hcsshim.guest.main for its flags.
import sys

sys.path.insert(0, "/{GUEST_SITE}")
from hcsshim.guest.main import main

sys.exit(main())
""".encode()


STAGES = ("resolving packages", "downloading packages", "unpacking packages", "kernel", "kernel modules", "base",
          "delta", "byte-compiling", "writing delta.tar.gz", "writing initrd.img", "writing rootfs.tar.gz",
          "writing rootfs.vhd")  # the names `stage` is called with, in order (progress bars)


class BuildError(RuntimeError):
    """The boot files could not be built; the message names the step and the input."""


Log = Callable[[str], None]


@dataclass
class BuildResult:
    out: Path
    kernel_release: str
    files: dict[str, str] = field(default_factory=dict)  # output name -> sha256
    notes: list[str] = field(default_factory=list)  # things skipped, with the reason


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- package trees

def _add_path(tree: Tree, root: Path, rel: str, dest: str | None = None) -> None:
    """Copy one file or symlink of an unpacked package into the tree."""
    p = root / rel
    if p.is_symlink():
        tree.add(dest or rel, Entry.symlink(os.readlink(p)))
    elif p.is_file():
        tree.add(dest or rel, Entry.file(p.read_bytes(), p.stat().st_mode & 0o7777))
    else:
        raise BuildError(f"default base: {rel} missing from the unpacked package at {root}")


def _find_lib(roots: Iterable[Path], soname: str) -> tuple[Path, str] | None:
    for r in roots:
        for d in LIB_DIRS:
            if (r / d / soname).exists() or (r / d / soname).is_symlink():
                return r, f"{d}/{soname}"
    return None


def _add_lib_chain(tree: Tree, root: Path, rel: str) -> bytes:
    """Add a library path and, when it is a symlink, what it points to; returns the final file's bytes."""
    for _ in range(10):
        _add_path(tree, root, rel)
        p = root / rel
        if not p.is_symlink():
            return p.read_bytes()
        target = os.readlink(p)
        rel = os.path.normpath(os.path.join(os.path.dirname(rel), target)).lstrip("/") \
            if not target.startswith("/") else target.lstrip("/")
    raise BuildError(f"default base: symlink loop at {rel}")


def _needed_closure(tree: Tree, roots: list[Path], elves: list[bytes], what: list[str]) -> list[str]:
    """Add the shared libraries (and the ELF interpreter) the given programs need, transitively."""
    missing = []
    queue = list(zip(elves, what, strict=True))
    seen: set[str] = set()
    while queue:
        data, name = queue.pop()
        try:
            dyn = dynamic(data, name)
        except ElfError as e:
            raise BuildError(f"default base: {e}") from None
        wants = list(dyn.needed)
        if dyn.interp and dyn.interp not in seen:
            seen.add(dyn.interp)
            found = next((r for r in roots if (r / dyn.interp.lstrip("/")).is_symlink()
                          or (r / dyn.interp.lstrip("/")).exists()), None)
            if found is None:
                missing.append(f"{name}: interpreter {dyn.interp}")
            else:
                queue.append((_add_lib_chain(tree, found, dyn.interp.lstrip("/")), dyn.interp))
        for so in wants:
            if so in seen:
                continue
            seen.add(so)
            hit = _find_lib(roots, so)
            if hit is None:
                missing.append(f"{name}: {so}")
                continue
            queue.append((_add_lib_chain(tree, *hit), so))
    return missing


def _elf_needs_resolvable(data: bytes, roots: list[Path]) -> bool:
    try:
        return all(_find_lib(roots, so) for so in dynamic(data).needed)
    except ElfError:
        return False


def default_base(pk: dict[str, Path], pyver: str, log: Log, guest: Tree, *, compile_pyc: bool = True) -> Tree:
    """The default BASE from unpacked Debian packages (package name -> unpacked directory), for the delta's
    guest code `guest` (the tree guest_python makes): its Python has the stdlib modules that code needs."""
    tree = Tree()
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "etc", "var/log", "var/lib", "lib/modules", "mnt"):
        tree.add(d, Entry.dir(0o1777 if d == "tmp" else 0o700 if d == "root" else 0o755))
    tree.add("var/run", Entry.symlink("../run"))
    tree.add("etc/passwd", Entry.file(b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
    tree.add("etc/group", Entry.file(b"root:x:0:\nnogroup:x:65534:\n"))
    tree.add("etc/hostname", Entry.file(b"uvm\n"))
    tree.add("etc/hosts", Entry.file(b"127.0.0.1\tlocalhost\n::1\tlocalhost\n"))

    # busybox and its applets (the binary lists its own links); one copy, where the delta puts its own
    bb = pk["busybox-static"]
    _add_path(tree, bb, "bin/busybox", BUSYBOX_PATH)
    tree.add("bin/busybox", Entry.symlink(f"/{BUSYBOX_PATH}"))
    try:
        applets = subprocess.run([str(bb / "bin/busybox"), "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"default base: busybox --list-full: {e}") from None
    for a in applets:
        if a != "bin/busybox":
            tree.add(a, Entry.symlink("/bin/busybox"))

    # python3: the interpreter and the part of the stdlib the guest's code imports (stdlib_closure), as
    # sourceless .pyc files when this build runs the guest's Python version (less to unpack, no stat of a
    # source per import), else as sources
    py = pk[f"python{pyver}-minimal"]
    _add_path(tree, py, f"usr/bin/python{pyver}")
    tree.add("usr/bin/python3", Entry.symlink(f"python{pyver}"))
    lib_roots = [pk[n] for n in BASE_LIB_PACKAGES if n in pk]
    elves: list[bytes] = [(py / f"usr/bin/python{pyver}").read_bytes()]
    names = [f"python{pyver}"]
    stdlib = f"usr/lib/python{pyver}"
    sources: dict[str, Path] = {}  # path under the stdlib dir -> file in an unpacked package
    for pkg in (f"libpython{pyver}-minimal", f"libpython{pyver}-stdlib"):
        base = pk[pkg] / stdlib
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP_DIRS)
            for f in sorted(files):
                if f.endswith(".py") and f not in STDLIB_SKIP_FILES and (Path(dirpath) / f).exists():
                    sources[(Path(dirpath) / f).relative_to(base).as_posix()] = Path(dirpath) / f  # symlinks too
        dyn = base / "lib-dynload"
        if dyn.is_dir():
            for so in sorted(dyn.iterdir()):
                if not so.name.startswith(DYNLOAD_SKIP):
                    sources[f"lib-dynload/{so.name}"] = so
    needed = stdlib_closure({k: v for k, v in sources.items() if k.endswith(".py")},
                            [k.removeprefix("lib-dynload/") for k in sources if k.startswith("lib-dynload/")],
                            guest, log)
    tree.add(f"{stdlib}/lib-dynload", Entry.dir())  # sys.exec_prefix's landmark
    for rel in sorted(needed):
        src = sources[rel]
        data = src.read_bytes()
        if rel.startswith("lib-dynload/"):
            if not _elf_needs_resolvable(data, lib_roots):
                log(f"default base: leaving out {src.name} (its shared libraries are not in the base)")
                continue
            tree.add(f"{stdlib}/{rel}", Entry.file(data, src.stat().st_mode & 0o7777))
            elves.append(data)
            names.append(src.name)
        elif compile_pyc:
            try:
                tree.add(f"{stdlib}/{rel}c", Entry.file(_pyc(data, f"/{stdlib}/{rel}")))
            except (SyntaxError, ValueError) as err:
                log(f"byte-compile /{stdlib}/{rel}: {err}; left as source")
                tree.add(f"{stdlib}/{rel}", Entry.file(data))
        else:
            tree.add(f"{stdlib}/{rel}", Entry.file(data))

    # runc and mke2fs
    _add_path(tree, pk["runc"], "usr/sbin/runc")
    elves.append((pk["runc"] / "usr/sbin/runc").read_bytes())
    names.append("runc")
    e2 = pk["e2fsprogs"]
    _add_path(tree, e2, "sbin/mke2fs")
    for alias in ("mkfs.ext4", "mkfs.ext3", "mkfs.ext2"):
        tree.add(f"sbin/{alias}", Entry.symlink("mke2fs"))
    if (e2 / "etc/mke2fs.conf").exists():
        _add_path(tree, e2, "etc/mke2fs.conf")
    elves.append((e2 / "sbin/mke2fs").read_bytes())
    names.append("mke2fs")

    missing = _needed_closure(tree, lib_roots, elves, names)
    if missing:
        raise BuildError("default base: shared libraries not found in the base packages: " + ", ".join(missing))
    return tree


# Modules the interpreter itself imports from files at start-up (the rest of what it needs is frozen), the
# codecs the guest may meet, and site for whoever runs python3 in the VM. The guest's own modules are added.
STDLIB_ROOTS = ("encodings", "encodings.aliases", "encodings.utf_8", "encodings.utf_8_sig", "encodings.ascii",
                "encodings.latin_1", "encodings.idna", "encodings.unicode_escape", "encodings.raw_unicode_escape",
                "site")
# Imported only on paths the guest never takes (ssl: the GCS blocks it; the rest from `main()`s, optional
# features and other imports inside functions of the modules it does use).
STDLIB_EXCLUDES = ("ssl", "_ssl", "multiprocessing", "email", "urllib", "http", "xml", "tarfile", "zipfile",
                   "lzma", "bz2", "gzip", "decimal", "_decimal", "argparse", "pydoc", "doctest", "unittest", "pdb",
                   "statistics", "fractions", "csv", "pprint", "tracemalloc", "rlcompleter", "readline",
                   "sitecustomize", "_osx_support", "_aix_support", "_bootsubprocess")


def stdlib_closure(sources: dict[str, Path], extensions: list[str], guest: Tree, log: Log) -> set[str]:
    """The stdlib files the guest code in `guest` needs, as paths under the stdlib directory (extension
    modules as lib-dynload/NAME): modulefinder from every hcsshim module under GUEST_SITE plus STDLIB_ROOTS,
    following every import statement, function-level ones included, but not into STDLIB_EXCLUDES. `sources`
    maps the stdlib's .py paths to their files, `extensions` names the lib-dynload files."""
    import modulefinder

    with tempfile.TemporaryDirectory(prefix="hcsshim-stdlib-") as tmp:
        lib, site = Path(tmp, "lib"), Path(tmp, "site")
        for rel, src in sources.items():
            (lib / rel).parent.mkdir(parents=True, exist_ok=True)
            (lib / rel).write_bytes(src.read_bytes())
        (lib / "lib-dynload").mkdir(parents=True, exist_ok=True)
        for name in extensions:
            (lib / "lib-dynload" / name).write_bytes(b"")  # modulefinder only needs the names
        roots = list(STDLIB_ROOTS)
        for p in guest.paths():
            e = guest.entries[p]
            if p.startswith(f"{GUEST_SITE}/") and p.endswith(".py") and e.kind == FILE:
                rel = p[len(GUEST_SITE) + 1:]
                (site / rel).parent.mkdir(parents=True, exist_ok=True)
                (site / rel).write_bytes(e.data)
                roots.append(rel[:-3].removesuffix("/__init__").replace("/", "."))
        script = Path(tmp, "roots.py")
        script.write_text("".join(f"import {m}\n" for m in roots))
        finder = modulefinder.ModuleFinder(path=[str(site), str(lib), str(lib / "lib-dynload")],
                                           excludes=list(STDLIB_EXCLUDES))
        try:
            finder.run_script(str(script))
        except (SyntaxError, ImportError) as e:
            raise BuildError(f"default base: finding the stdlib modules the guest imports: {e}") from None
        missing = sorted(m for m in finder.badmodules if m.split(".")[0] == "hcsshim")
        if missing:
            log(f"default base: guest imports not found: {', '.join(missing)}")
        needed = set()
        for mod in finder.modules.values():
            f = getattr(mod, "__file__", None)
            if f and Path(f).is_relative_to(lib):
                needed.add(Path(f).relative_to(lib).as_posix())
    return needed


# ---------------------------------------------------------------- python byte code

def _pyc(source: bytes, guest_path: str) -> bytes:
    """An unchecked-hash .pyc (valid whatever the file's mtime; reproducible)."""
    from importlib import _bootstrap_external  # type: ignore[attr-defined]

    code = compile(source, guest_path, "exec", dont_inherit=True)
    return bytes(_bootstrap_external._code_to_hash_pyc(code, importlib.util.source_hash(source), False))


def byte_compile(tree: Tree, prefix: str, log: Log) -> int:
    """Add `__pycache__/<name>.<tag>.pyc` next to every .py under `prefix` (host interpreter's tag)."""
    tag = sys.implementation.cache_tag
    n = 0
    for p in tree.paths():
        e = tree.entries[p]
        if not (p.startswith(prefix + "/") and p.endswith(".py") and e.kind == FILE):
            continue
        d, _, f = p.rpartition("/")
        try:
            pyc = _pyc(e.data, "/" + p)
        except (SyntaxError, ValueError) as err:
            log(f"byte-compile /{p}: {err}; left as source only")
            continue
        tree.add(f"{d}/__pycache__/{f[:-3]}.{tag}.pyc", Entry.file(pyc))
        n += 1
    return n


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports are inside its own package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # "from hcsshim import bridge"
    return found


def unit_files(src: Path, unit: str) -> list[Path]:
    """The files of hcsshim.<unit>: a package's .py files or a single module."""
    if (src / unit / "__init__.py").exists():
        return sorted((src / unit).rglob("*.py"))
    return [src / f"{unit}.py"] if (src / f"{unit}.py").exists() else []


def guest_import_violations(src: Path | None = None) -> list[str]:
    """Where hcsshim's GUEST_UNITS break the guest's import rule (every import statement of every file, also
    function-level and TYPE_CHECKING ones): an hcsshim module outside the set, or a module outside the
    standard library. Empty when the rule holds."""
    src = src or Path(hcsshim.__file__).parent
    problems = []
    for unit in GUEST_UNITS:
        files = unit_files(src, unit)
        if not files:
            problems.append(f"hcsshim.{unit}: not present")
        for f in files:
            for m in sorted(_imports(f)):
                parts = m.split(".")
                if parts[0] == "hcsshim":
                    if len(parts) > 1 and unit_files(src, parts[1]) and parts[1] not in GUEST_UNITS:
                        problems.append(f"{f.relative_to(src)} imports {m}, outside the guest's set")
                elif parts[0] not in sys.stdlib_module_names:
                    problems.append(f"{f.relative_to(src)} imports {m}, not in the standard library")
    return problems


def guest_python(log: Log) -> tuple[Tree, list[str]]:
    """The hcsshim code the GCS runs on, under GUEST_SITE: exactly GUEST_UNITS (BuildError when one of them
    imports beyond the set or the standard library). Returns the tree and the units shipped."""
    src = Path(hcsshim.__file__).parent
    problems = guest_import_violations(src)
    if problems:
        raise BuildError("guest code: the guest's import rule is broken: " + "; ".join(problems))
    tree = Tree()
    tree.add(f"{GUEST_SITE}/hcsshim/__init__.py", Entry.file((src / "__init__.py").read_bytes()))
    for unit in GUEST_UNITS:
        for f in unit_files(src, unit):
            tree.add(f"{GUEST_SITE}/hcsshim/{f.relative_to(src).as_posix()}", Entry.file(f.read_bytes()))
    log(f"guest code: hcsshim.{', hcsshim.'.join(GUEST_UNITS)}")
    return tree, sorted(GUEST_UNITS)


# ---------------------------------------------------------------- the build

@functools.lru_cache(maxsize=2)
def _module_index(moddir: Path) -> ModuleIndex:
    """Reading 4000 modules' .modinfo takes seconds; unpacked package directories never change."""
    return ModuleIndex.scan(moddir)


def _write(out: Path, name: str, data: bytes, result: BuildResult, mode: int = 0o644) -> None:
    target = out / name
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result.files[name] = _sha256(data)


def _make_vhd(out: Path, rootfs_tar: bytes, result: BuildResult, log: Log) -> None:
    """rootfs.vhd: our tar2ext4 (upstream `tar2ext4 -vhd`), with the footer's unique ID derived from the
    image so that the same tree gives the same file (tar2ext4's own footer uses a random ID)."""
    try:
        from hcsshim import ext4  # another part of the project; optional for the boot build
        from hcsshim.ext4 import vhd as vhd_footer
        convert, options = ext4.convert, ext4.Options
    except (ImportError, AttributeError) as e:
        result.notes.append(f"rootfs.vhd skipped: hcsshim.ext4 is not available ({e})")
        log(result.notes[-1])
        return
    tmp_tar, tmp_img = out / ".rootfs.tar.tmp", out / ".rootfs.vhd.tmp"
    try:
        tmp_tar.write_bytes(rootfs_tar)
        convert(str(tmp_tar), str(tmp_img), options())
        digest = hashlib.sha256()
        with open(tmp_img, "rb+") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
            size = f.tell()
            f.write(vhd_footer.footer(size, digest.digest()[:16]))
        os.replace(tmp_img, out / "rootfs.vhd")
    except Exception as e:
        raise BuildError(f"make rootfs.vhd with tar2ext4: {e}") from e
    finally:
        tmp_tar.unlink(missing_ok=True)
        tmp_img.unlink(missing_ok=True)
    result.files["rootfs.vhd"] = debs.sha256_file(out / "rootfs.vhd")


def build(base: Path | None, out: Path, cache: Path | None = None, *, vhd: bool = True,
          modules: Iterable[str] = GUEST_MODULES, strip_module_signatures: bool = True, raw_initrd: bool = True,
          mtime: int | None = None,
          log: Log = lambda _m: None, stage: Log = lambda _m: None) -> BuildResult:
    """Build the boot files into `out`; BASE None means the default base from Debian packages.

    `cache` holds downloaded and unpacked .debs (default ~/.cache/hcsshim/debs). Module signatures are
    stripped unless `strip_module_signatures` is false (1.7 s less boot under TCG). `raw_initrd` also
    writes `initrd.cpio`, the same archive uncompressed: the guest then skips ~3 s of gunzip under TCG
    (the kernel takes either; initrd.img stays gzipped as upstream's). `mtime` is the one
    timestamp every archive entry gets (default $SOURCE_DATE_EPOCH, else 0). `stage` is called with the
    name of each step as it starts (progress), `log` with details and skipped items.

    Everything is written into a staging directory inside `out` and moved into place only when all
    outputs exist, so a failed build leaves `out` as it was (and removes it if it created it).
    """
    if mtime is None:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    cache = cache or Path.home() / ".cache/hcsshim/debs"
    base_bytes = base_tree = None
    if base is not None:  # parsed first: a bad BASE fails before any download
        try:
            base_bytes = base.read_bytes()
            base_tree = read_archive(base_bytes, f"BASE {base}")
        except OSError as e:
            raise BuildError(f"read BASE {base}: {e.strerror}") from None
        except ArchiveError as e:
            raise BuildError(str(e)) from None
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    except OSError as e:
        raise BuildError(f"create output directory {out}: {e.strerror}") from None
    try:
        result = _build_staged(base, base_bytes, base_tree, staging, cache, vhd=vhd, modules=tuple(modules),
                               strip_module_signatures=strip_module_signatures, raw_initrd=raw_initrd,
                               mtime=mtime, log=log, stage=stage)
        (out / "info").mkdir(exist_ok=True)
        for name in result.files:
            os.replace(staging / name, out / name)
        result.out = out
        return result
    except (ArchiveError, ModuleError, KernelError, ElfError) as e:
        raise BuildError(str(e)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()


def _build_staged(base: Path | None, base_bytes: bytes | None, base_tree: Tree | None, out: Path, cache: Path, *,
                  vhd: bool,
                  modules: tuple[str, ...], strip_module_signatures: bool, raw_initrd: bool, mtime: int,
                  log: Log, stage: Log) -> BuildResult:
    stage("resolving packages")
    try:
        kpkg, pyver = debs.resolve()
        names = [kpkg, "busybox-static"]
        if base is None:
            names += [f"python{pyver}-minimal", f"libpython{pyver}-minimal", f"libpython{pyver}-stdlib", "runc",
                      "e2fsprogs", *BASE_LIB_PACKAGES]
        stage("downloading packages")
        got = debs.fetch(names, cache, log)
        stage("unpacking packages")
        unpacked = {n: debs.extract(d, cache) for n, d in got.items()}
    except debs.DebError as e:
        raise BuildError(str(e)) from None

    result = BuildResult(out, "")
    stage("kernel")
    kroot = unpacked[kpkg]
    vmlinuz = sorted((kroot / "boot").glob("vmlinuz-*"))
    if len(vmlinuz) != 1:
        raise BuildError(f"kernel package {kpkg}: expected one boot/vmlinuz-*, found {len(vmlinuz)}")
    kver = vmlinuz[0].name.removeprefix("vmlinuz-")
    result.kernel_release = kver
    kernel = vmlinuz[0].read_bytes()
    _write(out, "kernel", kernel, result)
    # Decompressing takes seconds: keep the result next to the unpacked package (keyed by its digest).
    cached = kroot / ".hcsshim-vmlinux"
    if not cached.exists():
        tmp = kroot / f".hcsshim-vmlinux.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(extract_vmlinux(kernel, str(vmlinuz[0])))
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
    _write(out, "vmlinux", cached.read_bytes(), result)
    del kernel

    stage("kernel modules")
    moddir = kroot / "lib/modules" / kver
    index = _module_index(moddir)
    early, later = load_order(index, modules)
    chosen = early + later
    delta = Tree()
    for m in chosen:
        ko = (moddir / m.path).read_bytes()
        delta.add(f"lib/modules/{kver}/{m.path}", Entry.file(strip_signature(ko) if strip_module_signatures else ko))
    # init loads hcsshim.load before starting the child and hcsshim.load.later in the background after
    for name, mods in (("hcsshim.load", early), ("hcsshim.load.later", later)):
        delta.add(f"lib/modules/{kver}/{name}", Entry.file("".join(f"{m.path}\n" for m in mods).encode()))

    py_tree, shipped = guest_python(log)
    result.notes += [f"guest packages shipped: hcsshim.{', hcsshim.'.join(shipped)}"]
    same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == pyver

    stage("base")
    if base_tree is not None and base_bytes is not None:
        base_desc = f"sha256:{_sha256(base_bytes)} {base.name}" if base else ""
    else:
        base_tree = default_base(unpacked, pyver, log, py_tree, compile_pyc=same_python)
        base_desc = "default (Debian packages: see packages)"

    stage("delta")
    delta.add("init", Entry.file(INIT_SCRIPT.read_bytes(), 0o755))
    _add_path(delta, unpacked["busybox-static"], "bin/busybox", BUSYBOX_PATH)
    delta.add("bin/gcs", Entry.file(GCS_LAUNCHER, 0o755))
    delta.merge(py_tree)
    stage("byte-compiling")
    if same_python:
        byte_compile(delta, GUEST_SITE, log)
    else:
        result.notes.append(f"no .pyc files: the build runs Python {sys.version_info[0]}.{sys.version_info[1]}, "
                            f"the guest {pyver}")

    info = {
        "packages": "".join(f"{d.name} {d.version} sha256:{d.sha256} {d.path.name}\n"
                            for d in sorted(got.values(), key=lambda d: d.name)),
        "kernel.version": kver + "\n",
        "base": base_desc + "\n",
        "modules": "".join(f"{m.name}\n" for m in chosen),
        "build.json": json.dumps({
            "hcsshim": hcsshim.__version__, "kernel": kver, "kernel_package": kpkg, "base": base_desc,
            "python": pyver, "modules_requested": list(modules), "guest_packages": shipped,
            "mtime": mtime, "vhd": vhd, "raw_initrd": raw_initrd, "strip_module_signatures": strip_module_signatures,
        }, indent=2, sort_keys=True) + "\n",
    }
    for k, v in info.items():
        delta.add(f"info/{k}", Entry.file(v.encode()))

    stage("writing delta.tar.gz")
    _write(out, "delta.tar.gz", gzip_bytes(tar_bytes(delta, mtime), 6), result)
    root = base_tree
    root.merge(delta)
    stage("writing initrd.img")
    cpio = cpio_bytes(root, mtime)
    _write(out, "initrd.img", gzip_bytes(cpio, 6), result)
    if raw_initrd:
        _write(out, "initrd.cpio", cpio, result)
    del cpio
    stage("writing rootfs.tar.gz")
    rootfs_tar = tar_bytes(root, mtime)
    _write(out, "rootfs.tar.gz", gzip_bytes(rootfs_tar, 6), result)
    if vhd:
        stage("writing rootfs.vhd")
        _make_vhd(out, rootfs_tar, result, log)
        # The initramfs that boots rootfs.vhd: init and the storage drivers only; init mounts root=/dev/sdX
        # read-only and hands over to the /init in it (the kernel's drivers are modules, unlike upstream's).
        mini = Tree()
        for d in ("dev", "proc", "sys", "newroot"):
            mini.add(d, Entry.dir(0o755))
        mini.add("init", Entry.file(INIT_SCRIPT.read_bytes(), 0o755))
        _add_path(mini, unpacked["busybox-static"], "bin/busybox", BUSYBOX_PATH)
        root_mods = index.closure(list(ROOT_MODULES))
        for m in root_mods:
            ko = (moddir / m.path).read_bytes()
            mini.add(f"lib/modules/{kver}/{m.path}",
                     Entry.file(strip_signature(ko) if strip_module_signatures else ko))
        mini.add(f"lib/modules/{kver}/hcsshim.load.root",
                 Entry.file("".join(f"{m.path}\n" for m in root_mods).encode()))
        _write(out, "initrd-vhd.cpio", cpio_bytes(mini, mtime), result)
    del rootfs_tar

    (out / "info").mkdir(exist_ok=True)
    for k, v in info.items():
        _write(out, f"info/{k}", v.encode(), result)
    return result


__all__ = ["BuildError", "BuildResult", "build", "default_base", "guest_python"]
