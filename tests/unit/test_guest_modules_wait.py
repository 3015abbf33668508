"""Guest.kernel_modules: a request waits for the kernel modules it names (live in /sys/module), or for init's
all-loaded mark; outside a utility VM (no mark file configured) it never waits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from hcsshim.bridge import HResultError
from hcsshim.guest import containers
from hcsshim.guest.containers import Guest


def _module(sys_module: Path, name: str, state: str) -> None:
    (sys_module / name).mkdir(parents=True, exist_ok=True)
    (sys_module / name / "initstate").write_text(f"{state}\n")


def test_named_modules_are_waited_for_until_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "SYS_MODULE", str(tmp_path / "module"))
    guest = SimpleNamespace(modules_ready=str(tmp_path / "ready"))
    _module(tmp_path / "module", "sd_mod", "live")
    _module(tmp_path / "module", "ext4", "coming")  # its /sys/module entry is there before its init has run

    async def scenario() -> None:
        waiting = asyncio.ensure_future(Guest.kernel_modules(guest, "sd_mod", "ext4"))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert not waiting.done()
        _module(tmp_path / "module", "ext4", "live")
        await asyncio.wait_for(waiting, 2)
        # nothing named: every module, i.e. init's mark
        everything = asyncio.ensure_future(Guest.kernel_modules(guest))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert not everything.done()
        (tmp_path / "ready").touch()
        await asyncio.wait_for(everything, 2)
        await Guest.kernel_modules(guest, "never_loaded")  # type: ignore[arg-type]  # the mark covers all

    asyncio.run(scenario())


def test_a_module_that_never_loads_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "SYS_MODULE", str(tmp_path / "module"))
    guest = SimpleNamespace(modules_ready=str(tmp_path / "ready"))
    with pytest.raises(HResultError, match=r"kernel modules \(9p\): not loaded within 0 s"):
        asyncio.run(Guest.kernel_modules(guest, "9p", timeout=0.05))  # type: ignore[arg-type]


def test_outside_a_utility_vm_nothing_is_waited_for() -> None:
    asyncio.run(Guest.kernel_modules(SimpleNamespace(modules_ready=None), "ext4"))  # type: ignore[arg-type]
