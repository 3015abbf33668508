"""The Linux backend's systems that have not started (no QEMU needed): create, the registry, open from another
handle, enumerate, properties, terminate of a created system, close, and what a dead owner's leftovers do to a
new create."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from hcsshim.bridge.wire import VMCOMPUTE_SYSTEM_ALREADY_EXISTS, HResultError
from hcsshim.hcs import errors
from hcsshim.hcs.backend import EVENT_SYSTEM_EXITED, Event
from hcsshim.hcs.linux import registry
from hcsshim.hcs.linux.backend import LinuxBackend


def doc(tmp_path: Path) -> str:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"")
    return json.dumps({"Owner": "me", "ShouldTerminateOnLastHandleClosed": True, "VirtualMachine": {
        "Chipset": {"LinuxKernelDirect": {"KernelFilePath": str(kernel)}},
        "ComputeTopology": {"Memory": {"SizeInMB": 128}}}})


def test_a_created_system_is_listed_opened_terminated_and_gone_at_close(tmp_path: Path) -> None:
    async def body() -> None:
        backend = LinuxBackend(str(tmp_path / "root"))
        s = await backend.create_system("c1", doc(tmp_path))
        events: list[Event] = []
        s.set_event_sink(events.append)
        directory = tmp_path / "root" / "c1"
        assert sorted(os.listdir(directory)) == ["document.json", "hvsock", "shares", "system.json"]
        props = json.loads(await s.properties(json.dumps({"PropertyTypes": ["TerminateOnLastHandleClosed"]})))
        assert (props["State"], props["Owner"], props["TerminateOnLastHandleClosed"]) == ("Created", "me", True)
        listed = json.loads(await backend.enumerate_systems(""))
        assert [(p["Id"], p["State"], p["Owner"]) for p in listed] == [("c1", "Created", "me")]
        other = await LinuxBackend(str(tmp_path / "root")).open_system("c1")  # as another process would
        with pytest.raises(HResultError, match="only the process that created it starts it"):
            await other.start()
        await other.close()
        assert directory.is_dir()  # an opener's close lets go only
        with pytest.raises(HResultError) as info:
            await s.create_process("{}")
        assert errors.is_not_supported(info.value)
        with pytest.raises(HResultError, match="property type 'ProcessorTopology': not supported"):
            await s.properties(json.dumps({"PropertyTypes": ["ProcessorTopology"]}))
        await s.terminate()
        assert events == [Event(EVENT_SYSTEM_EXITED, json.dumps({"Status": 0, "ExitType": "ForcedExit"}))]
        with pytest.raises(HResultError) as info:
            await s.terminate()
        assert errors.is_already_stopped(info.value)
        await s.close()
        assert not directory.exists()
        with pytest.raises(HResultError) as info:
            await backend.open_system("c1")
        assert errors.is_not_exist(info.value)

    asyncio.run(body())


def test_a_dead_owners_leftovers_give_way_to_a_new_create_a_live_system_does_not(tmp_path: Path) -> None:
    async def body() -> None:
        root = tmp_path / "root"
        backend = LinuxBackend(str(root))
        live = await backend.create_system("live", doc(tmp_path))
        with pytest.raises(HResultError) as info:
            await backend.create_system("live", doc(tmp_path))
        assert errors.is_any(info.value, VMCOMPUTE_SYSTEM_ALREADY_EXISTS)
        dead = root / "dead"  # a record whose owner and QEMU are gone
        dead.mkdir()
        (dead / "leftover").write_text("x")
        registry.SystemRecord("dead", "x", "0", 0.0, 2**22 + 1, 1, True).write(str(dead))
        again = await backend.create_system("dead", doc(tmp_path))
        assert not (dead / "leftover").exists()
        half = root / "half"  # a create in progress elsewhere: no record yet, made just now
        half.mkdir()
        with pytest.raises(HResultError):
            await backend.create_system("half", doc(tmp_path))
        old = time.time() - 60
        os.utime(half, (old, old))  # ... or cut short long ago
        cut = await backend.create_system("half", doc(tmp_path))
        for s in (live, again, cut):
            await s.close()
        assert os.listdir(root) == []

    asyncio.run(body())


def test_bad_ids_and_documents_make_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        backend = LinuxBackend(str(tmp_path / "root"))
        for bad in ("", "a/b", ".."):
            with pytest.raises(HResultError, match="invalid compute system id"):
                await backend.create_system(bad, doc(tmp_path))
        with pytest.raises(HResultError, match="SizeInMB: expected uint64"):
            await backend.create_system("x", doc(tmp_path).replace("128", '"128"'))
        assert not (tmp_path / "root").exists() or os.listdir(tmp_path / "root") == []

    asyncio.run(body())
