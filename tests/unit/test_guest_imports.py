"""The guest's import rule: the GCS (hcsshim.guest) reaches, by any import statement (module-level,
function-level, TYPE_CHECKING-only), only the hcsshim units named in hcsshim.boot.bootfiles.GUEST_UNITS, each
of which imports only the standard library and those units; and the boot build ships exactly that set."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hcsshim
from hcsshim.boot import bootfiles
from hcsshim.boot.archive import FILE

SRC = Path(hcsshim.__file__).parent


def module_files() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = ["hcsshim", *p.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = p
    return mods


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement anywhere in the file names (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # "from hcsshim import bridge"
    return names


def closure(start: str) -> tuple[set[str], dict[str, set[str]]]:
    """The hcsshim modules reachable from every module of package `start`, and each one's other imports."""
    mods = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    todo = [m for m in mods if m == start or m.startswith(start + ".")]
    seen: set[str] = set()
    foreign: dict[str, set[str]] = {}
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for name in imported_names(mods[m], m):
            if name.split(".")[0] == "hcsshim":
                target = resolve(name)
                if target is not None:
                    todo.append(target)
            else:
                foreign.setdefault(m, set()).add(name)
    return seen, foreign


def unit(module: str) -> str:
    """hcsshim.guest.server -> guest; hcsshim.mount -> mount; hcsshim -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_guest_reaches_only_its_named_units_of_hcsshim() -> None:
    reached, _ = closure("hcsshim.guest")
    units = {unit(m) for m in reached} - {""}
    outside = sorted(m for m in reached if unit(m) and unit(m) not in bootfiles.GUEST_UNITS)
    assert outside == [], f"the guest imports beyond bootfiles.GUEST_UNITS: {outside}"
    assert units == set(bootfiles.GUEST_UNITS), "GUEST_UNITS names a unit the guest does not use"


def test_every_guest_unit_imports_only_the_standard_library_besides_the_set() -> None:
    for u in bootfiles.GUEST_UNITS:
        reached, foreign = closure(f"hcsshim.{u}")
        assert {unit(m) for m in reached} - {""} <= set(bootfiles.GUEST_UNITS), u
        bad = {m: sorted(n for n in names if n.split(".")[0] not in sys.stdlib_module_names)
               for m, names in foreign.items()}
        assert {m: b for m, b in bad.items() if b} == {}, f"hcsshim.{u} imports beyond the standard library"
    for u in bootfiles.GUEST_GROUND_MODULES:
        assert (SRC / f"{u}.py").is_file(), f"ground module hcsshim.{u} is a single module"
    assert bootfiles.guest_import_violations() == []


def test_the_boot_build_ships_exactly_the_guest_units() -> None:
    tree, shipped = bootfiles.guest_python(lambda _message: None)
    assert shipped == sorted(bootfiles.GUEST_UNITS)
    prefix = f"{bootfiles.GUEST_SITE}/hcsshim/"
    files = {p[len(prefix):] for p in tree.paths() if p.startswith(prefix) and tree.entries[p].kind == FILE}
    expected = {"__init__.py"} | {
        f.relative_to(SRC).as_posix() for u in bootfiles.GUEST_UNITS
        for f in ((SRC / u).rglob("*.py") if (SRC / u).is_dir() else [SRC / f"{u}.py"])}
    assert files == expected
