"""hcsshim.hcs.schema1: the 24 schema1 types read and written as Go's encoding/json does (golden documents with
every field set round-trip byte for byte), their zero documents, the Go shapes beyond plain fields (a fixed array, a
GUID, int-keyed maps, a nil slice) and errors naming the field's path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim import gojson
from hcsshim.gojson import DecodeError, Struct
from hcsshim.hcs import schema1
from hcsshim.hcs.schema1 import (
    TYPES,
    ContainerConfig,
    ContainerProperties,
    Layer,
    MappedVirtualDisk,
    MappedVirtualDiskController,
    ProcessConfig,
    ResourceModificationRequestResponse,
)

GOLDEN: dict[str, Any] = json.loads((Path(__file__).parent.parent / "golden" / "schema1.json").read_text())
STRUCTS = sorted(name for name, cls in TYPES.items() if issubclass(cls, Struct))
ENUMS = sorted(name for name, cls in TYPES.items() if not issubclass(cls, Struct))


def compact(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def test_the_module_has_the_24_upstream_types_and_a_golden_document_for_each() -> None:
    assert len(TYPES) == 24
    assert sorted(GOLDEN) == sorted(TYPES)
    assert ENUMS == ["PropertyType", "RequestType", "ResourceType"]
    assert all(getattr(schema1, name) is cls for name, cls in TYPES.items())


@pytest.mark.parametrize("name", STRUCTS)
def test_a_golden_document_round_trips_byte_for_byte(name: str) -> None:
    doc = GOLDEN[name]
    assert gojson.dumps(TYPES[name].from_json(doc)) == compact(doc)


@pytest.mark.parametrize("name", STRUCTS)
def test_a_golden_document_sets_every_field(name: str) -> None:
    cls = TYPES[name]
    assert [f.key for f in cls._FIELDS] == list(GOLDEN[name])  # declaration order is the golden order
    obj = cls.from_json(GOLDEN[name])
    assert all(getattr(obj, f.attr) != f.kind.zero() for f in cls._FIELDS)


@pytest.mark.parametrize("name", ENUMS)
def test_an_enum_has_the_upstream_values(name: str) -> None:
    cls = TYPES[name]
    assert [v for k, v in vars(cls).items() if k.isupper()] == GOLDEN[name]


def test_the_enum_constants_are_upstreams_strings() -> None:
    assert (schema1.RequestType.ADD, schema1.RequestType.REMOVE, schema1.ResourceType.NETWORK) == (
        "Add", "Remove", "Network")
    req = ResourceModificationRequestResponse(resource=schema1.ResourceType.NETWORK, data="ep",
                                              request=schema1.RequestType.REMOVE)
    assert gojson.dumps(req) == '{"ResourceType":"Network","Settings":"ep","RequestType":"Remove"}'


@pytest.mark.parametrize(("cls", "text"), [
    (ProcessConfig, '{"ConsoleSize":[0,0]}'),
    (Layer, '{"ID":"","Path":""}'),
    (MappedVirtualDisk, '{"ContainerPath":""}'),
    (ContainerConfig, '{"SystemType":"","Name":"","Layers":null,"HvPartition":false}'),
    (ResourceModificationRequestResponse, '{"ResourceType":"","Settings":null}'),
    (ContainerProperties, '{"Id":"","State":"","Name":"","SystemType":"","Owner":"",'
                          f'"RuntimeId":"{schema1.NIL_GUID}","Statistics":{{"Timestamp":"{gojson.ZERO_TIME}",'
                          f'"ContainerStartTime":"{gojson.ZERO_TIME}","Memory":{{}},"Processor":{{}},"Storage":{{}}}},'
                          '"GuestConnectionInfo":{"GuestDefinedCapabilities":{}}}'),
])
def test_a_zero_document_writes_what_go_writes_for_the_zero_struct(cls: type[Struct], text: str) -> None:
    assert gojson.dumps(cls()) == text
    assert gojson.dumps(gojson.loads(text, cls)) == text


def test_layers_keep_go_s_nil_and_empty_slices_apart() -> None:
    assert '"Layers":null' in gojson.dumps(ContainerConfig())
    assert '"Layers":[]' in gojson.dumps(ContainerConfig(layers=[]))
    assert gojson.loads('{"Layers":[]}', ContainerConfig).layers == []
    assert gojson.loads('{"Layers":null}', ContainerConfig).layers is None
    assert gojson.loads('{"Layers":[null]}', ContainerConfig).layers == [Layer()]  # []Layer: a zero struct


def test_console_size_is_a_fixed_array_as_go_reads_it() -> None:
    assert gojson.loads('{"ConsoleSize":[7]}', ProcessConfig).console_size == [7, 0]
    assert gojson.loads('{"ConsoleSize":[1,2,3]}', ProcessConfig).console_size == [1, 2]
    assert gojson.loads('{"ConsoleSize":[null,2]}', ProcessConfig).console_size == [0, 2]
    with pytest.raises(ValueError, match=r"\[2\]uint64: expected 2 elements, got 3"):
        gojson.dumps(ProcessConfig(console_size=[1, 2, 3]))


def test_the_runtime_id_is_a_guid_written_in_lowercase() -> None:
    props = gojson.loads('{"RuntimeId":"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"}', ContainerProperties)
    assert props.runtime_id == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    with pytest.raises(ValueError, match="invalid GUID"):
        gojson.dumps(ContainerProperties(runtime_id="nope"))


def test_int_keyed_maps_have_int_keys_sorted_as_go_sorts_their_text() -> None:
    ctrl = MappedVirtualDiskController(mapped_virtual_disks={10: MappedVirtualDisk(), 2: MappedVirtualDisk()})
    assert gojson.dumps(ctrl) == '{"MappedVirtualDisks":{"10":{"ContainerPath":""},"2":{"ContainerPath":""}}}'
    read = gojson.loads('{"MappedVirtualDisks":{"+3":null,"-1":{"HostPath":"h"}}}', MappedVirtualDiskController)
    assert read.mapped_virtual_disks == {3: MappedVirtualDisk(), -1: MappedVirtualDisk(host_path="h")}


@pytest.mark.parametrize(("cls", "body", "message"), [
    (ProcessConfig, {"ConsoleSize": [1, -2]}, r"ProcessConfig: field ConsoleSize\[1\]: expected uint64, got -2"),
    (ProcessConfig, {"ConsoleSize": 3}, r"ProcessConfig: field ConsoleSize: expected array of uint64, got 3"),
    (ProcessConfig, {"Environment": {"A": 1}}, r'ProcessConfig: field Environment\["A"\]: expected string, got 1'),
    (ContainerConfig, {"Layers": [{"ID": 5}]}, r"ContainerConfig.Layers\[0\]: field ID: expected string, got 5"),
    (ContainerConfig, {"HvRuntime": {"SkipTemplate": "yes"}},
     "ContainerConfig.HvRuntime: field SkipTemplate: expected bool, got string"),
    (ContainerConfig, {"ProcessorCount": 1 << 32},
     "ContainerConfig: field ProcessorCount: expected uint32, got 4294967296"),
    (ContainerProperties, {"RuntimeId": "0f1e2d3c"}, "ContainerProperties: field RuntimeId: expected GUID string"),
    (ContainerProperties, {"Statistics": {"Timestamp": "now"}},
     "ContainerProperties.Statistics: field Timestamp: expected RFC 3339 time"),
    (ContainerProperties, {"Statistics": {"Network": [{"BytesSent": -1}]}},
     r"ContainerProperties.Statistics.Network\[0\]: field BytesSent: expected uint64, got -1"),
    (ContainerProperties, {"MappedVirtualDiskControllers": {"x": {}}},
     r'ContainerProperties: field MappedVirtualDiskControllers: expected int64 key, got "x"'),
    (ContainerProperties, {"MappedVirtualDiskControllers": {"0": {"MappedVirtualDisks": {"1": {"ReadOnly": 1}}}}},
     r"ContainerProperties.MappedVirtualDiskControllers\[0\].MappedVirtualDisks\[1\]: field ReadOnly: "
     "expected bool, got 1"),
    (ContainerProperties, {"GuestConnectionInfo": {"SupportedSchemaVersions": [{"Major": "2"}]}},
     r"ContainerProperties.GuestConnectionInfo.SupportedSchemaVersions\[0\]: field Major: expected int32"),
])
def test_a_wrong_type_names_the_field_path(cls: type[Struct], body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        cls.from_json(body)


def test_keys_are_matched_case_insensitively_as_go_does() -> None:
    query = schema1.ComputeSystemQuery.from_json({"ids": ["a"], "OWNERS": ["o"]})
    assert (query.ids, query.owners) == (["a"], ["o"])


_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_u64 = st.integers(0, (1 << 64) - 1)


@given(st.lists(_u64, min_size=2, max_size=2), st.dictionaries(st.integers(-(1 << 63), (1 << 63) - 1),
                                                               st.builds(MappedVirtualDisk, host_path=_texts),
                                                               max_size=4),
       st.uuids().map(str), st.one_of(st.none(), st.lists(st.builds(Layer, id=_texts, path=_texts), max_size=2)))
def test_the_added_kinds_read_back_what_they_write(console: list[int], disks: dict[int, MappedVirtualDisk],
                                                   guid: str, layers: list[Layer] | None) -> None:
    docs: list[Struct] = [ProcessConfig(console_size=console),
                          MappedVirtualDiskController(mapped_virtual_disks=disks),
                          ContainerProperties(runtime_id=guid), ContainerConfig(layers=layers)]
    for doc in docs:
        text = gojson.dumps(doc)
        assert gojson.loads(text, type(doc)) == doc
        assert gojson.dumps(gojson.loads(text, type(doc))) == text
