"""Typed guest resources (hcsshim.bridge.resources): upstream's JSON names and omitempty on the way out, Go's
lenient keys and strict types on the way in, one definition for both ends."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.bridge import VMCOMPUTE_INVALID_JSON, HResultError
from hcsshim.bridge.resources import (
    RESOURCES,
    CombinedLayers,
    ContainerConstraints,
    IPConfig,
    Layer,
    MappedDirectory,
    MappedVirtualDisk,
    ModificationRequest,
    NetworkAdapter,
    PodCgroupMemoryLimit,
    Route,
    SCSIDevice,
    VPCIDevice,
    VPMemDevice,
    VPMemMappingInfo,
)


def test_a_mapped_virtual_disk_is_written_as_the_specs_example() -> None:
    disk = MappedVirtualDisk(mount_path="/run/mounts/scsi/m0", lun=1, read_only=True, options=["ro"])
    request = ModificationRequest.of(disk, "Add")
    assert json.dumps(request.to_json(), separators=(",", ":")) == (
        '{"RequestType":"Add","ResourceType":"MappedVirtualDisk","Settings":{"MountPath":"/run/mounts/scsi/m0",'
        '"Lun":1,"ReadOnly":true,"Options":["ro"]}}')


def test_zero_fields_are_left_out_like_gos_omitempty() -> None:
    assert MappedVirtualDisk().to_json() == {}
    assert SCSIDevice(controller=0, lun=0).to_json() == {}
    assert MappedVirtualDisk(controller=1, lun=0, ensure_filesystem=True, filesystem="ext4").to_json() == {
        "Controller": 1, "EnsureFilesystem": True, "Filesystem": "ext4"}
    assert MappedDirectory(mount_path="/m", port=564, share_name="3").to_json() == {
        "MountPath": "/m", "Port": 564, "ShareName": "3"}


def test_combined_layers_use_upstreams_capital_id_and_layer_objects() -> None:
    layers = CombinedLayers(container_id="abcd", container_root_path="/run/gcs/c/abcd/rootfs",
                            layers=[Layer("/run/layers/p0")], scratch_path="/run/gcs/c/abcd/scratch/abcd")
    assert layers.to_json() == {"ContainerID": "abcd", "ContainerRootPath": "/run/gcs/c/abcd/rootfs",
                                "Layers": [{"Path": "/run/layers/p0"}], "ScratchPath": "/run/gcs/c/abcd/scratch/abcd"}


def test_container_constraints_always_carry_windows_and_linux_structs() -> None:
    assert ContainerConstraints().to_json() == {"Windows": {}, "Linux": {}}
    c = ContainerConstraints(linux={"memory": {"limit": 64 << 20}})
    assert c.to_json() == {"Windows": {}, "Linux": {"memory": {"limit": 67108864}}}
    assert ContainerConstraints.from_json({"linux": {"cpu": {"shares": 2}}}).linux == {"cpu": {"shares": 2}}


def test_a_nested_pointer_struct_is_written_when_set_even_if_empty() -> None:
    assert VPMemDevice(device_number=2, mapping_info=VPMemMappingInfo()).to_json() == {
        "DeviceNumber": 2, "MappingInfo": {}}
    assert "MappingInfo" not in VPMemDevice(device_number=2).to_json()


def test_a_network_adapter_has_upstreams_names_for_every_field() -> None:
    nic = NetworkAdapter(namespace_id="ns", id="nic", mac_address="02-00-00-00-00-01", dns_suffix="a,b",
                         dns_server_list="10.0.0.1", encap_overhead=50, vpci_assigned=True,
                         ip_configs=[IPConfig("10.0.0.2", 24)],
                         routes=[Route(next_hop="10.0.0.1", destination_prefix="0.0.0.0/0", metric=5)],
                         policy_based_routing=True, enable_low_metric=True)
    assert list(nic.to_json()) == ["NamespaceID", "ID", "MacAddress", "DNSSuffix", "DNSServerList", "EncapOverhead",
                                   "VPCIAssigned", "IPConfigs", "Routes", "PolicyBasedRouting", "EnableLowMetric"]
    assert nic.to_json()["IPConfigs"] == [{"IPAddress": "10.0.0.2", "PrefixLength": 24}]
    assert nic.to_json()["Routes"] == [{"NextHop": "10.0.0.1", "DestinationPrefix": "0.0.0.0/0", "Metric": 5}]
    assert NetworkAdapter.from_json(nic.to_json()) == nic


def test_parsing_matches_keys_case_insensitively_and_defaults_missing_ones() -> None:
    d = MappedVirtualDisk.from_json({"mountpath": "/x", "LUN": 3, "readOnly": True, "Unknown": 1, "Options": None})
    assert (d.mount_path, d.lun, d.read_only, d.options, d.controller, d.filesystem) == ("/x", 3, True, [], 0, "")
    exact = MappedVirtualDisk.from_json({"lun": 1, "Lun": 2})
    assert exact.lun == 2  # the exact key wins, as in Go
    assert CombinedLayers.from_json({"ContainerId": "c1"}).container_id == "c1"


@pytest.mark.parametrize(("cls", "body", "message"), [
    (MappedVirtualDisk, {"Lun": 300}, "MappedVirtualDisk: field Lun: expected uint8, got 300"),
    (MappedVirtualDisk, {"ReadOnly": "yes"}, "MappedVirtualDisk: field ReadOnly: expected bool, got string"),
    (MappedVirtualDisk, {"Options": ["ro", 1]}, r"MappedVirtualDisk: field Options\[1\]: expected string, got 1"),
    (CombinedLayers, {"ContainerRootPath": 5}, "CombinedLayers: field ContainerRootPath: expected string, got 5"),
    (CombinedLayers, {"Layers": [{"Path": "/a"}, {"Path": 1}]},
     r"CombinedLayers.Layers\[1\]: field Path: expected string, got 1"),
    (CombinedLayers, {"Layers": {"Path": "/a"}}, "CombinedLayers: field Layers: expected array of Layer, got object"),
    (NetworkAdapter, {"Routes": [{"Metric": -1}]}, r"Network.Routes\[0\]: field Metric: expected uint16, got -1"),
    (MappedDirectory, {"Port": 1.5}, "MappedDirectory: field Port: expected int32, got 1.5"),
    (ContainerConstraints, {"Linux": []}, "ContainerConstraints: field Linux: expected object, got array"),
    (SCSIDevice, [1], "SCSIDevice: expected a JSON object, got array"),
])
def test_a_wrong_type_is_invalid_json_naming_the_resource_and_field(cls, body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HResultError, match=message) as e:
        cls.from_json(body)
    assert e.value.hresult == VMCOMPUTE_INVALID_JSON


def test_a_modification_request_parses_known_settings_into_their_class() -> None:
    req = ModificationRequest.from_json({"RequestType": "Remove", "ResourceType": "SCSIDevice",
                                         "Settings": {"Controller": 0, "Lun": 4}})
    assert req == ModificationRequest("SCSIDevice", "Remove", SCSIDevice(lun=4))
    unknown = ModificationRequest.from_json({"ResourceType": "HvSocket", "Settings": {"X": 1}})
    assert (unknown.request_type, unknown.settings) == ("", {"X": 1})
    assert ModificationRequest.from_json({"ResourceType": "MappedDirectory"}).settings == MappedDirectory()
    with pytest.raises(HResultError, match="MappedDirectory: field Settings: expected object"):
        ModificationRequest.from_json({"ResourceType": "MappedDirectory", "Settings": "x"})


def test_a_settings_less_resource_sends_no_settings() -> None:
    assert ModificationRequest.of(PodCgroupMemoryLimit(), "Update").to_json() == {
        "RequestType": "Update", "ResourceType": "PodCgroupMemoryLimit"}
    with pytest.raises(TypeError, match="not a ModifySettings resource"):
        ModificationRequest.of(Layer("/x"))


def test_every_resource_type_is_registered_once() -> None:
    assert set(RESOURCES) == {"MappedVirtualDisk", "SCSIDevice", "MappedDirectory", "VPMemDevice", "CombinedLayers",
                              "Network", "VPCIDevice", "ContainerConstraints", "PodCgroupMemoryLimit"}
    assert VPCIDevice(vmbus_guid="g").to_json() == {"VMBusGUID": "g"}


_text = st.text(max_size=12)
_disks = st.builds(MappedVirtualDisk, mount_path=_text, lun=st.integers(0, 255), controller=st.integers(0, 3),
                   partition=st.integers(0, 2**64 - 1), read_only=st.booleans(), encrypted=st.booleans(),
                   options=st.lists(_text, max_size=3), block_dev=st.booleans(), ensure_filesystem=st.booleans(),
                   filesystem=_text)
_layers = st.builds(CombinedLayers, container_id=_text, container_root_path=_text,
                    layers=st.lists(st.builds(Layer, _text, id=_text), max_size=3), scratch_path=_text)
_nics = st.builds(NetworkAdapter, namespace_id=_text, id=_text, mac_address=_text, encap_overhead=st.integers(0, 65535),
                  ip_configs=st.lists(st.builds(IPConfig, _text, st.integers(0, 255)), max_size=2),
                  routes=st.lists(st.builds(Route, next_hop=_text, metric=st.integers(0, 65535)), max_size=2))


@given(st.one_of(_disks, _layers, _nics), st.sampled_from(["Add", "Remove", "Update"]))
def test_every_resource_survives_the_wire(resource, request_type) -> None:  # type: ignore[no-untyped-def]
    request = ModificationRequest.of(resource, request_type)
    assert ModificationRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
