"""ModifySettings in a real agent: the kinds this host can run (overlay rootfs from CombinedLayers with a
scratch dir, MappedDirectory as a bind from the share root, Network adapters moved into a container's
namespace with iproute2) and an error result for one it cannot (a VPMem device that is not there)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hcsshim.bridge import VMCOMPUTE_INVALID_JSON, HResultError, Requests, Rpc
from hcsshim.bridge.resources import (
    CombinedLayers,
    IPConfig,
    Layer,
    MappedDirectory,
    MappedVirtualDisk,
    ModificationRequest,
    NetworkAdapter,
    Route,
    SCSIDevice,
    VPCIDevice,
    VPMemDevice,
)
from hcsshim.gcs import GuestConnection
from hcsshim.testing.gcsagent import GcsAgent, running_agent
from hcsshim.testing.rootfs import oci_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def shares(tmp_path: Path) -> Path:
    d = tmp_path / "shares"
    (d / "s1").mkdir(parents=True)
    (d / "s1" / "file").write_text("shared text\n")
    return d


@pytest.fixture
def agent(tmp_path: Path, shares: Path) -> Iterator[GcsAgent]:
    with running_agent(tmp_path / "agent", extra_args=("-share-root", str(shares))) as a:
        yield a


def run(agent: GcsAgent, scenario) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        gc = await GuestConnection.connect(agent.host_transport(), timeout=10, guest_root=str(agent.root))
        try:
            await asyncio.wait_for(scenario(gc), 60)
            await gc.shutdown()
            await gc.wait_closed(10)
        finally:
            await gc.close()

    agent.run_until_powered_off(main)


def test_combined_layers_make_an_overlay_rootfs_whose_writes_land_in_the_scratch(agent: GcsAgent, rootfs: str,
                                                                                 tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    (top / "hello.txt").write_text("from the top layer\n")
    bundle = agent.root / "c" / "ov"
    target, scratch = bundle / "rootfs", bundle / "scratch" / "ov"

    async def scenario(gc: GuestConnection) -> None:
        combined = CombinedLayers(container_id="ov", container_root_path=str(target),
                                  layers=[Layer(str(top)), Layer(rootfs)], scratch_path=str(scratch))
        await gc.modify(combined, "Add")
        c = await gc.create_container("ov", oci_spec(str(target), ["sh", "-c", "cat /hello.txt; echo new > /written"],
                                                     readonly=False), scratch=str(scratch))
        p = await c.start_init()
        assert await p.communicate() == (b"from the top layer\n", b"")
        assert await p.wait(10) == 0
        await c.wait(10)
        assert (scratch / "upper" / "written").read_text() == "new\n"
        assert not (Path(rootfs) / "written").exists()
        await gc.modify(CombinedLayers(container_root_path=str(target)), "Remove")
        await c.delete_state()
        assert not bundle.exists()

    run(agent, scenario)


def test_a_mapped_directory_is_bound_from_the_share_root_read_only(agent: GcsAgent, rootfs: str) -> None:
    mount_path = agent.root / "mounts" / "m0"

    async def scenario(gc: GuestConnection) -> None:
        await gc.modify(MappedDirectory(mount_path=str(mount_path), share_name="s1", port=564, read_only=True),
                        "Add")
        spec = oci_spec(rootfs, ["sh", "-c", "cat /data/file; touch /data/x 2>/dev/null || echo read-only"])
        spec["mounts"].append({"destination": "/data", "type": "bind", "source": str(mount_path),
                               "options": ["rbind", "ro"]})
        c = await gc.create_container("dir", spec)
        p = await c.start_init()
        assert await p.communicate() == (b"shared text\nread-only\n", b"")
        await p.wait(10)
        await c.wait(10)
        await c.delete_state()
        await gc.modify(MappedDirectory(mount_path=str(mount_path)), "Remove")
        assert not mount_path.exists()
        with pytest.raises(HResultError, match="invalid share name"):
            await gc.modify(MappedDirectory(mount_path=str(mount_path), share_name="../.."), "Add")

    run(agent, scenario)


def test_a_mapped_single_file_is_bound_onto_a_file_at_the_mount_path(agent: GcsAgent, shares: Path) -> None:
    (shares / "one.conf").write_text("a single shared file\n")
    mount_path = agent.root / "mounts" / "m1" / "one.conf"

    async def scenario(gc: GuestConnection) -> None:
        await gc.modify(MappedDirectory(mount_path=str(mount_path), share_name="one.conf", read_only=True), "Add")
        assert mount_path.is_file() and mount_path.read_text() == "a single shared file\n"
        with pytest.raises(OSError):
            mount_path.write_text("x")
        await gc.modify(MappedDirectory(mount_path=str(mount_path)), "Remove")
        assert not mount_path.exists()

    run(agent, scenario)


def test_a_network_adapter_is_moved_into_the_containers_namespace_and_configured(agent: GcsAgent,
                                                                                  rootfs: str) -> None:
    name = f"hcs{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b"], check=True)
    try:
        mac = Path(f"/sys/class/net/{name}a/address").read_text().strip()
        namespace = "5F0B4E3C-1111-4222-8333-944455556666"

        async def scenario(gc: GuestConnection) -> None:
            await gc.modify(NetworkAdapter(
                namespace_id=namespace, id="0f1e2d3c-0000-4000-8000-000000000001",
                mac_address=mac.upper().replace(":", "-"), dns_suffix="example.test,corp.test",
                dns_server_list="10.123.0.1", ip_configs=[IPConfig("10.123.0.2", 24)],
                routes=[Route(next_hop="10.123.0.1", destination_prefix="0.0.0.0/0", metric=5)]), "Add")
            spec = oci_spec(rootfs, ["sh", "-c", "ip -4 addr show; ip route; cat /etc/resolv.conf"],
                            network_namespace=namespace.lower())
            c = await gc.create_container("net", spec)
            p = await c.start_init()
            out, err = await p.communicate()
            assert await p.wait(10) == 0, err
            text = out.decode()
            assert f"{name}a" in text and "10.123.0.2/24" in text
            assert "default via 10.123.0.1" in text
            assert "search example.test corp.test" in text and "nameserver 10.123.0.1" in text
            assert not Path(f"/sys/class/net/{name}a").exists()  # moved out of the agent's namespace
            await c.wait(10)
            await c.delete_state()
            await gc.modify(NetworkAdapter(namespace_id=namespace, id="0f1e2d3c-0000-4000-8000-000000000001"),
                            "Remove")
            await gc.modify(NetworkAdapter(namespace_id="unknown-namespace"), "Remove")  # a no-op

        run(agent, scenario)
    finally:
        subprocess.run(["ip", "link", "del", f"{name}b"], capture_output=True)


def test_resources_that_are_not_there_get_error_results_and_the_agent_keeps_serving(agent: GcsAgent) -> None:
    async def scenario(gc: GuestConnection) -> None:
        with pytest.raises(HResultError, match="pmem7"):
            await gc.modify(VPMemDevice(device_number=7, mount_path=str(agent.root / "p7")), "Add")
        with pytest.raises(HResultError, match="SCSI controller 0"):
            await gc.modify(MappedVirtualDisk(mount_path=str(agent.root / "m0"), lun=1), "Add")
        with pytest.raises(HResultError, match="not supported"):
            await gc.modify(VPCIDevice(vmbus_guid="x"), "Add")
        malformed = {"RequestType": "Add", "ResourceType": "CombinedLayers", "Settings": {"ContainerRootPath": 5}}
        with pytest.raises(HResultError, match="CombinedLayers: field ContainerRootPath: expected string") as e:
            await gc.request(Rpc.MODIFY_SETTINGS, Requests.modify(malformed), "modify with a malformed resource")
        assert e.value.hresult == VMCOMPUTE_INVALID_JSON
        assert await gc.properties([]) == {}

    run(agent, scenario)


def test_a_scsi_disk_is_found_by_controller_and_lun_formatted_and_mounted(tmp_path: Path) -> None:
    """The SCSI part of sysfs does not exist on this host, so that tree is laid out by hand; the disk (a loop
    device), mkfs and the mounts are real."""
    from hcsshim.guest.storage import Storage, is_mountpoint
    from hcsshim.runc import PidfdWaiter

    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.fail(f"losetup failed: {loop.stderr.strip()}", pytrace=False)
    device = loop.stdout.strip()
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    (sysfs / "class/scsi_host/host0").mkdir(parents=True)
    (sysfs / "class/scsi_host/host0/proc_name").write_text("ata_piix\n")
    (sysfs / "class/scsi_host/host2").mkdir(parents=True)
    (sysfs / "class/scsi_host/host2/proc_name").write_text("virtio_scsi\n")
    (sysfs / "bus/scsi/devices/2:0:0:3/block/sdz").mkdir(parents=True)
    (sysfs / "bus/scsi/devices/2:0:0:3/block/sdz/size").write_text("65536\n")  # sectors: the disk is read in
    dev.mkdir()
    (dev / "sdz").symlink_to(device)
    storage = Storage(PidfdWaiter(), None, sysfs=str(sysfs), dev=str(dev))
    rw, ro = tmp_path / "mnt" / "rw", tmp_path / "mnt" / "ro"

    async def scenario() -> None:
        assert storage.scsi_host(0) == 2
        def disk(request: str, **kw: Any) -> ModificationRequest:
            return ModificationRequest.of(MappedVirtualDisk(lun=3, **kw), request)

        await storage.modify(disk("Add", mount_path=str(rw), ensure_filesystem=True, filesystem="ext4"))
        (rw / "f").write_text("on the disk\n")
        await storage.modify(disk("Remove", mount_path=str(rw)))
        assert not rw.exists()
        await storage.modify(disk("Add", mount_path=str(ro), read_only=True, options=["ro"]))
        assert (ro / "f").read_text() == "on the disk\n"
        with pytest.raises(OSError):
            (ro / "g").write_text("x")
        (sysfs / "bus/scsi/devices/2:0:0:3/delete").write_text("")
        await storage.modify(ModificationRequest.of(SCSIDevice(lun=3), "Remove"))  # hot-unplug request
        assert (sysfs / "bus/scsi/devices/2:0:0:3/delete").read_text() == "1"
        await storage.modify(ModificationRequest.of(SCSIDevice(lun=9), "Remove"))  # never seen: nothing to do
        await storage.close()  # power-off path: unmounts what is left
        assert not is_mountpoint(str(ro))

    try:
        asyncio.run(scenario())
    finally:
        for target in (rw, ro):
            subprocess.run(["umount", str(target)], capture_output=True)
        subprocess.run(["losetup", "-d", device], capture_output=True)
