"""Typed guest resources (hcsshim.bridge.resources): upstream's JSON names and omitempty on the way out, Go's
lenient keys and strict types on the way in, one definition for both ends; checked against golden documents
written by hand from upstream's field tags (tests/golden/guest/resources.json: every field of every resource
class set; requests.json: one ModificationRequest per ResourceType, as upstream's hosts send them)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim import gojson
from hcsshim.bridge import E_FAIL, NULL_GUID, VMCOMPUTE_INVALID_JSON, HResultError
from hcsshim.bridge import resources as resources_module
from hcsshim.bridge.resources import (
    RESOURCES,
    BlockCIMDevice,
    CombinedLayers,
    ConfidentialOptions,
    ContainerConstraints,
    CWCOWBlockCIMMounts,
    CWCOWCombinedLayers,
    FileSystemFilterType,
    HostComputeNamespace,
    HvSocketAddress,
    IPConfig,
    Layer,
    MappedDirectory,
    MappedVirtualDisk,
    ModificationRequest,
    NamespaceResource,
    NamespaceResourceType,
    NamespaceType,
    NetworkAdapter,
    PodCgroupMemoryLimit,
    RequestType,
    Resource,
    Route,
    SchemaVersion,
    SCSIDevice,
    SecurityPolicyFragment,
    VPCIDevice,
    VPMemDevice,
    VPMemMappingInfo,
    WCOWCombinedLayers,
    WCOWMappedVirtualDisk,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "guest"
# upstream's guestresource ResourceType constants, in their order
UPSTREAM_RESOURCE_TYPES = [
    "MappedDirectory", "SCSIDevice", "MappedVirtualDisk", "MappedVirtualDiskForContainerScratch", "WCOWBlockCims",
    "Network", "NetworkNamespace", "CombinedLayers", "CWCOWCombinedLayers", "VPMemDevice", "VPCIDevice",
    "ContainerConstraints", "HvSocket", "SecurityPolicy", "SecurityPolicyFragment", "PodCgroupMemoryLimit"]
NEW_RESOURCE_TYPES = ["MappedVirtualDiskForContainerScratch", "WCOWBlockCims", "NetworkNamespace",
                      "CWCOWCombinedLayers", "HvSocket", "SecurityPolicy", "SecurityPolicyFragment"]


def go_text(doc: Any) -> str:
    """What Go's json.Marshal writes for a JSON document kept in field order and free of the characters Go
    escapes (<, >, &, U+2028, U+2029: none in the golden files): compact UTF-8."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    assert not set(text) & set("<>&\u2028\u2029")
    return text


def load(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


GOLDEN_RESOURCES = load("resources.json")
GOLDEN_REQUESTS = load("requests.json")
RESOURCE_CLASSES = {name: c for name, c in vars(resources_module).items()
                    if isinstance(c, type) and issubclass(c, Resource) and c is not Resource}


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
    unknown = ModificationRequest.from_json({"ResourceType": "NoSuchType", "Settings": {"X": 1}})
    assert (unknown.request_type, unknown.settings) == ("", {"X": 1})
    assert ModificationRequest.from_json({"ResourceType": "MappedDirectory"}).settings == MappedDirectory()
    with pytest.raises(HResultError, match="MappedDirectory: field Settings: expected object"):
        ModificationRequest.from_json({"ResourceType": "MappedDirectory", "Settings": "x"})


def test_a_settings_less_resource_sends_no_settings() -> None:
    assert ModificationRequest.of(PodCgroupMemoryLimit(), "Update").to_json() == {
        "RequestType": "Update", "ResourceType": "PodCgroupMemoryLimit"}
    with pytest.raises(TypeError, match="not a ModifySettings resource"):
        ModificationRequest.of(Layer("/x"))


def test_every_upstream_resource_type_is_registered_once_in_upstreams_order() -> None:
    assert list(RESOURCES) == UPSTREAM_RESOURCE_TYPES
    assert all(name == cls.RESOURCE_TYPE == cls.NAME for name, cls in RESOURCES.items())
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

_i32 = st.integers(-(1 << 31), (1 << 31) - 1)
_scratch = st.builds(WCOWMappedVirtualDisk, container_path=_text, lun=_i32)
_cims = st.builds(CWCOWBlockCIMMounts, block_cims=st.lists(st.builds(BlockCIMDevice, cim_name=_text, lun=_i32),
                                                             max_size=3),
                  volume_guid=st.uuids().map(str), mount_flags=st.integers(0, 2**32 - 1), container_id=_text)
_cwcow = st.builds(CWCOWCombinedLayers, container_id=_text, combined_layers=st.builds(
    WCOWCombinedLayers, container_root_path=_text, layers=st.lists(_text, max_size=2), scratch_path=_text,
    filter_type=st.sampled_from(["", FileSystemFilterType.UNION_FS, FileSystemFilterType.WCIFS])))
_namespaces = st.builds(HostComputeNamespace, id=_text, namespace_id=st.integers(0, 2**32 - 1), type=_text,
                        resources=st.lists(st.builds(NamespaceResource, type=_text, data=st.none() | st.dictionaries(
                            _text, _text, max_size=2)), max_size=2),
                        schema_version=st.builds(SchemaVersion, major=st.integers(-9, 9), minor=st.integers(0, 9)))
_policy = st.one_of(
    st.builds(HvSocketAddress, local_address=_text, parent_address=_text),
    st.builds(ConfidentialOptions, enforcer_type=_text, encoded_security_policy=_text, encoded_uvm_reference=_text,
              encoded_uvm_hash_envelope_reference=_text),
    st.builds(SecurityPolicyFragment, fragment=_text, media_type=_text))


@given(st.one_of(_disks, _layers, _nics, _scratch, _cims, _cwcow, _namespaces, _policy),
       st.sampled_from(["Add", "Remove", "Update", ""]))
def test_every_resource_survives_the_wire(resource, request_type) -> None:  # type: ignore[no-untyped-def]
    request = ModificationRequest.of(resource, request_type)
    assert ModificationRequest.from_json(json.loads(gojson.dumps(request))) == request


# -- golden documents -------------------------------------------------------------------------------------------


def test_every_resource_class_has_exactly_one_golden_document() -> None:
    assert set(GOLDEN_RESOURCES) == set(RESOURCE_CLASSES)
    assert set(RESOURCES.values()) <= set(RESOURCE_CLASSES.values())


@pytest.mark.parametrize("name", sorted(GOLDEN_RESOURCES))
def test_a_golden_document_sets_every_field_of_its_class_in_declaration_order(name: str) -> None:
    assert list(GOLDEN_RESOURCES[name]) == [f.key for f in RESOURCE_CLASSES[name]._FIELDS]


@pytest.mark.parametrize("name", sorted(GOLDEN_RESOURCES))
def test_a_golden_document_reads_and_writes_back_byte_for_byte(name: str) -> None:
    text = go_text(GOLDEN_RESOURCES[name])
    parsed = RESOURCE_CLASSES[name].from_json(json.loads(text))
    assert gojson.dumps(parsed) == text
    assert type(parsed).from_json(json.loads(gojson.dumps(parsed))) == parsed


@pytest.mark.parametrize("resource_type", UPSTREAM_RESOURCE_TYPES)
def test_a_golden_request_reads_into_its_class_and_writes_back_byte_for_byte(resource_type: str) -> None:
    text = go_text(GOLDEN_REQUESTS[resource_type])
    request = ModificationRequest.from_json(json.loads(text))
    assert request.resource_type == resource_type
    assert type(request.settings) is RESOURCES[resource_type]
    assert gojson.dumps(request) == text
    assert isinstance(request.settings, Resource)
    assert gojson.dumps(ModificationRequest.of(request.settings, request.request_type)) == text


def test_the_golden_requests_are_one_per_upstream_resource_type() -> None:
    assert list(GOLDEN_REQUESTS) == UPSTREAM_RESOURCE_TYPES
    assert all(doc["ResourceType"] == name for name, doc in GOLDEN_REQUESTS.items())


ALWAYS_WRITTEN = {  # Go structs (not pointers), GUIDs and fields without omitempty are written even when zero
    "ContainerConstraints": '{"Windows":{},"Linux":{}}',
    "CWCOWCombinedLayers": '{"CombinedLayers":{}}',
    "BlockCIMDevice": '{"CimName":"","Lun":0}',
    "CWCOWBlockCIMMounts": f'{{"VolumeGUID":"{NULL_GUID}"}}',
    "NamespaceResource": '{"Type":"","Data":null}',
    "SchemaVersion": '{"Major":0,"Minor":0}',
    "HostComputeNamespace": '{"SchemaVersion":{"Major":0,"Minor":0}}',
}


@pytest.mark.parametrize("name", sorted(RESOURCE_CLASSES))
def test_a_zero_resource_is_empty_but_for_struct_values_guids_and_fields_without_omitempty(name: str) -> None:
    cls = RESOURCE_CLASSES[name]
    assert gojson.dumps(cls()) == ALWAYS_WRITTEN.get(name, "{}")
    assert cls.from_json({}) == cls()


# -- the Windows-only and security-policy resources ---------------------------------------------------------------


def test_a_container_scratch_disk_has_a_container_path_and_an_int32_lun() -> None:
    disk = WCOWMappedVirtualDisk(container_path="C:\\c\\abcd", lun=1)
    assert ModificationRequest.of(disk).to_json() == {
        "RequestType": "Add", "ResourceType": "MappedVirtualDiskForContainerScratch",
        "Settings": {"ContainerPath": "C:\\c\\abcd", "Lun": 1}}
    assert WCOWMappedVirtualDisk.from_json({"lun": -1}).lun == -1


def test_block_cim_mounts_always_write_the_volume_guid_and_each_cims_name_and_lun() -> None:
    mounts = CWCOWBlockCIMMounts(block_cims=[BlockCIMDevice(cim_name="merged.bcim", lun=0)],
                                 volume_guid="6A0C2BD1-0CDE-4B5C-9D2F-1F1F2A6C0E4A", container_id="abcd")
    assert gojson.dumps(mounts) == ('{"BlockCIMs":[{"CimName":"merged.bcim","Lun":0}],'
                                    '"VolumeGUID":"6a0c2bd1-0cde-4b5c-9d2f-1f1f2a6c0e4a","ContainerID":"abcd"}')
    parsed = CWCOWBlockCIMMounts.from_json({"VolumeGUID": "6A0C2BD1-0CDE-4B5C-9D2F-1F1F2A6C0E4A"})
    assert parsed.volume_guid == "6a0c2bd1-0cde-4b5c-9d2f-1f1f2a6c0e4a"


def test_cwcow_combined_layers_wrap_windows_combined_layers_with_the_container_id() -> None:
    layers = CWCOWCombinedLayers(container_id="abcd", combined_layers=WCOWCombinedLayers(
        container_root_path="C:\\c\\abcd", layers=["C:\\layers\\1"], filter_type=FileSystemFilterType.UNION_FS))
    assert layers.to_json() == {"ContainerID": "abcd", "CombinedLayers": {
        "ContainerRootPath": "C:\\c\\abcd", "Layers": [{"Path": "C:\\layers\\1"}], "FilterType": "UnionFS"}}
    assert FileSystemFilterType.WCIFS == "WCIFS"


def test_a_network_namespace_is_upstreams_hcn_namespace_with_raw_resource_data() -> None:
    ns = HostComputeNamespace(id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", type=NamespaceType.GUEST_DEFAULT,
                              resources=[NamespaceResource.endpoint("e1"), NamespaceResource.container("c1")],
                              schema_version=SchemaVersion(major=2))
    assert gojson.dumps(ns) == (
        '{"ID":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","Type":"GuestDefault","Resources":['
        '{"Type":"Endpoint","Data":{"ID":"e1"}},{"Type":"Container","Data":{"ID":"c1"}}],'
        '"SchemaVersion":{"Major":2,"Minor":0}}')
    assert (NamespaceResourceType.ENDPOINT, NamespaceResourceType.CONTAINER) == ("Endpoint", "Container")
    assert [NamespaceType.HOST, NamespaceType.HOST_DEFAULT, NamespaceType.GUEST] == ["Host", "HostDefault", "Guest"]
    assert HostComputeNamespace.from_json({"resources": [{"type": "Endpoint", "data": [1, "x"]}]}).resources == [
        NamespaceResource(type="Endpoint", data=[1, "x"])]


def test_an_hv_socket_request_is_an_update_with_the_two_addresses() -> None:
    address = HvSocketAddress(local_address="3c1d9a5e-7b2f-4e60-9a8d-1f2e3d4c5b6a", parent_address="a42e")
    assert ModificationRequest.of(address, RequestType.UPDATE).to_json() == {
        "RequestType": "Update", "ResourceType": "HvSocket",
        "Settings": {"LocalAddress": "3c1d9a5e-7b2f-4e60-9a8d-1f2e3d4c5b6a", "ParentAddress": "a42e"}}


def test_security_policy_and_fragments_carry_upstreams_names() -> None:
    options = ConfidentialOptions(enforcer_type="rego", encoded_security_policy="cA==",
                                  encoded_uvm_reference="dQ==", encoded_uvm_hash_envelope_reference="aA==")
    assert list(options.to_json()) == ["EnforcerType", "EncodedSecurityPolicy", "EncodedUVMReference",
                                       "EncodedUVMHashEnvelopeReference"]
    assert ModificationRequest.of(options).resource_type == "SecurityPolicy"
    fragment = SecurityPolicyFragment(fragment="0oQ=")
    assert ModificationRequest.of(fragment).to_json() == {
        "RequestType": "Add", "ResourceType": "SecurityPolicyFragment", "Settings": {"Fragment": "0oQ="}}
    assert SecurityPolicyFragment.DEFAULT_MEDIA_TYPE == "application/cose-x509+rego"


@pytest.mark.parametrize(("cls", "body", "message"), [
    (WCOWMappedVirtualDisk, {"Lun": 1 << 31},
     "MappedVirtualDiskForContainerScratch: field Lun: expected int32, got 2147483648"),
    (WCOWMappedVirtualDisk, {"ContainerPath": ["C:\\"]},
     "MappedVirtualDiskForContainerScratch: field ContainerPath: expected string, got array"),
    (CWCOWBlockCIMMounts, {"VolumeGUID": "{6a0c2bd1-0cde-4b5c-9d2f-1f1f2a6c0e4a}"},
     "WCOWBlockCims: field VolumeGUID: expected GUID string, got string"),
    (CWCOWBlockCIMMounts, {"BlockCIMs": [{"CimName": "m", "Lun": 1}, {"Lun": "1"}]},
     r"WCOWBlockCims.BlockCIMs\[1\]: field Lun: expected int32, got string"),
    (CWCOWBlockCIMMounts, {"MountFlags": -1}, "WCOWBlockCims: field MountFlags: expected uint32, got -1"),
    (HostComputeNamespace, {"NamespaceId": 1 << 32},
     "NetworkNamespace: field NamespaceId: expected uint32, got 4294967296"),
    (HostComputeNamespace, {"SchemaVersion": {"Major": "2"}},
     "NetworkNamespace.SchemaVersion: field Major: expected int64, got string"),
    (HostComputeNamespace, {"Resources": [{"Type": 1}]},
     r"NetworkNamespace.Resources\[0\]: field Type: expected string, got 1"),
    (CWCOWCombinedLayers, {"CombinedLayers": {"Layers": [{"Path": 1}]}},
     r"CWCOWCombinedLayers.CombinedLayers.Layers\[0\]: field Path: expected string, got 1"),
    (CWCOWCombinedLayers, {"CombinedLayers": []},
     "CWCOWCombinedLayers: field CombinedLayers: expected a JSON object, got array"),
    (CWCOWCombinedLayers, {"CombinedLayers": {"FilterType": True}},
     "CWCOWCombinedLayers.CombinedLayers: field FilterType: expected string, got true"),
    (HvSocketAddress, {"LocalAddress": 1}, "HvSocket: field LocalAddress: expected string, got 1"),
    (ConfidentialOptions, {"EncodedSecurityPolicy": False},
     "SecurityPolicy: field EncodedSecurityPolicy: expected string, got false"),
    (SecurityPolicyFragment, {"MediaType": {}}, "SecurityPolicyFragment: field MediaType: expected string, got object"),
])
def test_a_malformed_new_resource_is_invalid_json_naming_the_field_path(cls, body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HResultError, match=message) as e:
        cls.from_json(body)
    assert e.value.hresult == VMCOMPUTE_INVALID_JSON
    with pytest.raises(HResultError, match=message):  # the same through the envelope
        ModificationRequest.from_json({"ResourceType": cls.RESOURCE_TYPE, "Settings": body})


# -- the envelope -----------------------------------------------------------------------------------------------


def test_request_types_are_upstreams_strings() -> None:
    assert (RequestType.ADD, RequestType.REMOVE, RequestType.PRE_ADD, RequestType.UPDATE) == (
        "Add", "Remove", "PreAdd", "Update")
    assert ModificationRequest("HvSocket").request_type == "Add"


def test_an_envelope_reads_its_keys_as_go_does_and_leaves_a_missing_request_type_empty() -> None:
    req = ModificationRequest.from_json({"resourcetype": "HvSocket", "SETTINGS": {"localaddress": "a"}, "X": 1})
    assert req == ModificationRequest("HvSocket", "", HvSocketAddress(local_address="a"))
    assert req.to_json() == {"ResourceType": "HvSocket", "Settings": {"LocalAddress": "a"}}
    assert ModificationRequest.from_json({"ResourceType": "SecurityPolicy", "Settings": None}).settings == (
        ConfidentialOptions())


def test_a_settings_less_resource_is_parsed_as_its_class_and_written_without_settings() -> None:
    req = ModificationRequest.from_json({"RequestType": "Update", "ResourceType": "PodCgroupMemoryLimit",
                                         "Settings": {"Ignored": 1}})
    assert isinstance(req.settings, PodCgroupMemoryLimit)
    assert gojson.dumps(req) == '{"RequestType":"Update","ResourceType":"PodCgroupMemoryLimit"}'


@pytest.mark.parametrize(("body", "message"), [
    ([], "modify settings: Request is not a JSON object"),
    ({"ResourceType": 5}, "ModificationRequest: field ResourceType: expected string, got 5"),
    ({"RequestType": True, "ResourceType": "HvSocket"}, "ModificationRequest: field RequestType: expected string"),
    ({"ResourceType": "WCOWBlockCims", "Settings": [1]}, "WCOWBlockCims: field Settings: expected object, got list"),
])
def test_a_malformed_envelope_is_invalid_json_naming_the_field(body: Any, message: str) -> None:
    with pytest.raises(HResultError, match=message) as e:
        ModificationRequest.from_json(body)
    assert e.value.hresult == VMCOMPUTE_INVALID_JSON


# -- what the guest does with them ------------------------------------------------------------------------------


def guest_modify(request: dict[str, Any], container_id: str = NULL_GUID) -> None:
    """The guest's ModifySettings handler, on a connection with neither a socket nor containers (a refused
    resource reaches neither)."""
    from hcsshim.guest.server import Connection, Notifier

    conn = Connection(None, None, Notifier())  # type: ignore[arg-type]
    asyncio.run(conn._modify(container_id, NULL_GUID, {"Request": request}))


@pytest.mark.parametrize("resource_type", NEW_RESOURCE_TYPES)
def test_the_linux_guest_still_refuses_the_new_resource_types_by_name(resource_type: str) -> None:
    with pytest.raises(HResultError, match=f"modify settings: resource type '{resource_type}' is not supported") as e:
        guest_modify(GOLDEN_REQUESTS[resource_type])
    assert e.value.hresult == E_FAIL
    with pytest.raises(HResultError, match=f"modify container c1: resource '{resource_type}' is not supported"):
        guest_modify(GOLDEN_REQUESTS[resource_type], "c1")


def test_the_linux_guest_refuses_an_unknown_resource_type_by_name() -> None:
    with pytest.raises(HResultError, match="resource type 'NoSuchType' is not supported") as e:
        guest_modify({"RequestType": "Add", "ResourceType": "NoSuchType", "Settings": {"X": 1}})
    assert e.value.hresult == E_FAIL
