"""Utility VM templates on real QEMU (TCG here): building, restoring clones that are machines of their own,
falling back to a cold boot from damaged templates, one build for concurrent VMs, and what a dead clone leaves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hcsshim.bridge.resources import CombinedLayers
from hcsshim.testing.images import busybox_layer_tar
from hcsshim.testing.rootfs import oci_spec
from hcsshim.uvm import UtilityVM, UVMOptions
from hcsshim.uvm.template import TemplateStore

RUN_ROOT = "/run/hcsshim/uvm-test"


def options(boot_files: Path, name: str, **kw) -> UVMOptions:
    return UVMOptions(id=f"{name}-{os.getpid()}", boot_files_path=str(boot_files), memory_mb=512, cpus=1,
                      run_root=RUN_ROOT, **kw)


def ours() -> list[str]:
    return [d for d in os.listdir(RUN_ROOT) if d.endswith(f"-{os.getpid()}")] if os.path.isdir(RUN_ROOT) else []


def our_qemus() -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{RUN_ROOT}/[^ ]*-{os.getpid()}/"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.fixture
def store(tmp_path: Path):
    """A private template store; at the end no VM of ours runs and no run dir is left."""
    yield TemplateStore(str(tmp_path / "templates"))
    assert our_qemus() == [], "a QEMU of ours is still running"
    assert ours() == [], f"run dirs left behind: {ours()}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 600))


async def new_vm(boot_files: Path, name: str, store: TemplateStore, **kw) -> UtilityVM:
    vm = await UtilityVM.create(options(boot_files, name, **kw))
    vm.templates = store
    return vm


async def sh(vm: UtilityVM, script: str) -> str:
    assert vm.gcs is not None
    p = await vm.gcs.exec_in_uvm(["sh", "-c", script])
    out, err = await p.communicate()
    assert await p.wait() == 0, err
    return out.decode()


def store_files(store: TemplateStore) -> list[str]:
    root = Path(store.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_clones_negotiate_run_containers_and_are_machines_of_their_own(boot_files: Path, store: TemplateStore,
                                                                       tmp_path: Path) -> None:
    layer = tmp_path / "busybox.vhd"
    (tmp_path / "busybox.tar").write_bytes(busybox_layer_tar())
    subprocess.run([sys.executable, "-m", "hcsshim.cmd.tar2ext4", "-overlay", "-vhd", "-i",
                    str(tmp_path / "busybox.tar"), "-o", str(layer)], check=True)

    async def body() -> None:
        first = await new_vm(boot_files, "first", store)
        async with first:
            await first.start()  # builds the template, then is restored from it
            assert first.template is not None, first.cold_boot_reason
        built = time.monotonic()
        a, b = await new_vm(boot_files, "clone-a", store), await new_vm(boot_files, "clone-b", store)
        async with a, b:
            t = time.perf_counter()
            await asyncio.gather(a.start(), b.start())
            assert a.template is not None and b.template is not None, (a.cold_boot_reason, b.cold_boot_reason)
            assert time.perf_counter() - t < 30
            probe = "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1; uname -n"
            out_a, out_b = await asyncio.gather(sh(a, probe), sh(b, probe))
            lines_a, lines_b = out_a.splitlines(), out_b.splitlines()
            assert lines_a[0] != lines_b[0] and lines_a[1] != lines_b[1], (out_a, out_b)
            assert (lines_a[2], lines_b[2]) == (f"clone-a-{os.getpid()}", f"clone-b-{os.getpid()}")
            # a container on a SCSI layer, a scratch disk and a share, as in a cold-booted VM
            scratch = tmp_path / "scratch.img"
            with open(scratch, "wb") as f:
                f.truncate(256 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(scratch)], check=True)
            share = tmp_path / "share"
            share.mkdir()
            (share / "note").write_text("shared\n")
            lm = await a.scsi.add(str(layer), read_only=True)
            await a.scsi.add(str(scratch), read_only=False, guest_path="/run/gcs/c/t1")
            await a.shares.add(str(share), "/run/gcs/c/t1/share", read_only=True)
            assert lm.guest_path is not None
            await a.gcs.modify(CombinedLayers(container_id="t1", container_root_path="/run/gcs/c/t1/rootfs",
                                              layers=[lm.guest_path], scratch_path="/run/gcs/c/t1/scratch/t1"))
            c = await a.gcs.create_container("t1", oci_spec("/run/gcs/c/t1/rootfs", ["sh", "-c", "echo in a clone"]))
            init = await c.start_init()
            out, _ = await init.communicate()
            assert out == b"in a clone\n" and await init.wait() == 0
            assert (await sh(a, "cat /run/gcs/c/t1/share/note")) == "shared\n"
            await c.wait(30)
            await c.delete_state()
        # a minute later, a clone's wall clock is the host's, not the template's
        await asyncio.sleep(max(0.0, 60 - (time.monotonic() - built)))
        late = await new_vm(boot_files, "late", store)
        async with late:
            await late.start()
            assert late.template is not None
            guest = int((await sh(late, "date +%s")).strip())
            assert abs(guest - time.time()) <= 2, guest

    run(body())


def test_two_processes_that_need_the_same_missing_template_build_it_once(boot_files: Path,
                                                                         store: TemplateStore) -> None:
    """Two uvmboot processes (as two shims would) start at once on an empty store: one builds, both restore."""
    env = {**os.environ, "HCSSHIM_TEMPLATE_CACHE": store.root}
    procs = [subprocess.Popen([sys.executable, "-m", "hcsshim.cmd.uvmboot", "--memory", "512", "--cpus", "1",
                               "--debug", "--measure", "lcow", "--boot-files-path", str(boot_files), "--exec", "true"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert all("restored from template" in e for e in errs), errs
    builds = sum(e.count("built template") for e in errs)
    assert builds == 1, errs
    templates = [n for n in os.listdir(store.root) if len(n) == 64]
    assert len(templates) == 1 and not [n for n in os.listdir(store.root) if n.startswith(".build-")]


@pytest.mark.parametrize("damage", ["truncated memory", "wrong version"])
def test_a_damaged_template_gives_a_cold_boot_and_is_rebuilt(boot_files: Path, store: TemplateStore,
                                                             damage: str) -> None:
    async def body() -> None:
        vm = await new_vm(boot_files, "maker", store)
        async with vm:
            await vm.start()
            assert vm.template is not None
            tpl = vm.template
        if damage == "truncated memory":
            os.truncate(tpl.memory, 4096)
        else:
            meta_path = Path(tpl.path) / "meta.json"
            meta = json.loads(meta_path.read_text())
            meta["parts"]["format"] = -1
            meta_path.write_text(json.dumps(meta))
        vm = await new_vm(boot_files, "fallback", store)
        async with vm:
            await vm.start()
            assert vm.template is None and vm.gcs is not None
            assert "rebuilding" in vm.cold_boot_reason, vm.cold_boot_reason
            assert (await sh(vm, "echo cold")) == "cold\n"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the rebuild runs while this VM does
                try:
                    if store.load(tpl.key) is not None:
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.5)
            assert store.load(tpl.key) is not None
        vm = await new_vm(boot_files, "again", store)
        async with vm:
            await vm.start()
            assert vm.template is not None

    run(body())


def test_a_state_that_does_not_restore_gives_a_cold_boot_not_a_hang(boot_files: Path, store: TemplateStore) -> None:
    async def body() -> None:
        vm = await new_vm(boot_files, "good", store)
        async with vm:
            await vm.start()
            tpl = vm.template
        assert tpl is not None
        junk = os.urandom(4096)
        Path(tpl.state).write_bytes(junk)
        meta_path = Path(tpl.path) / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["state_sha256"] = hashlib.sha256(junk).hexdigest()  # it verifies, but QEMU cannot load it
        meta_path.write_text(json.dumps(meta))
        vm = await new_vm(boot_files, "junk", store)
        async with vm:
            t = time.perf_counter()
            await vm.start()
            assert vm.template is None and "restore from template" in vm.cold_boot_reason, vm.cold_boot_reason
            assert time.perf_counter() - t < 120
            assert (await sh(vm, "echo cold")) == "cold\n"
        # That VM closed before its rebuild finished: the bad template is gone all the same, so the next VM
        # builds a good one instead of booting cold from the same damage again.
        assert not os.path.exists(tpl.path) or store.load(tpl.key).built != tpl.built
        vm = await new_vm(boot_files, "after", store)
        async with vm:
            await vm.start()
            assert vm.template is not None, vm.cold_boot_reason
            assert (await sh(vm, "echo warm")) == "warm\n"

    run(body())


def test_kill_9_of_a_clones_qemu_leaves_nothing_but_the_template(boot_files: Path, store: TemplateStore) -> None:
    async def body() -> None:
        vm = await new_vm(boot_files, "base", store)
        async with vm:
            await vm.start()
        before = store_files(store)
        vm = await new_vm(boot_files, "victim", store)
        async with vm:
            await vm.start()
            assert vm.template is not None and vm.qemu_pid is not None
            os.kill(vm.qemu_pid, signal.SIGKILL)
            await vm.wait()
            assert vm.unexpected
        assert store_files(store) == before

    run(body())
