"""hcsshim.gojson, the project's one JSON convention: Go's encoding/json rules for writing (order, omitempty,
pointers, struct values, sorted maps, HTML escapes, float text) and reading (case-insensitive keys, unknown keys,
null, strict types with the field's path in the error), and the kinds for Go's fixed arrays, GUIDs, nil slices
and maps, integer-keyed maps and types that contain themselves."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.gojson import (
    ANY,
    BOOL,
    BYTES,
    F64,
    GUID,
    I8,
    I32,
    I64,
    NIL_GUID,
    OBJECT,
    STR,
    TIME,
    U8,
    U16,
    U64,
    ZERO_TIME,
    DecodeError,
    Struct,
    array_of,
    dumps,
    field,
    list_of,
    loads,
    map_of,
    opt,
    ref,
    value,
)


class Inner(Struct):
    name: str = field("Name", STR)
    lun: int = field("Lun", U8)


class Doc(Struct):
    id: str = field("Id", STR)
    count: int = field("Count", U64)
    ratio: float = field("Ratio", F64)
    enabled: bool = field("Enabled", BOOL)
    always: str = field("Always", STR, omitempty=False)
    inner: Inner | None = field("Inner", Inner)
    fixed: Inner = field("Fixed", value(Inner))
    maybe: bool | None = field("Maybe", opt(BOOL))
    tags: list[str] = field("Tags", list_of(STR))
    items: list[Inner] = field("Items", list_of(Inner))
    table: dict[str, Inner] = field("Table", map_of(Inner))
    raw: Any = field("Raw", ANY)
    blob: bytes = field("Blob", BYTES)
    when: str = field("When", TIME)
    oci: dict[str, Any] = field("Oci", OBJECT)
    delta: int = field("Delta", I32)


def test_zero_values_are_left_out_but_structs_times_and_non_omitempty_fields_are_written() -> None:
    assert dumps(Doc()) == f'{{"Always":"","Fixed":{{}},"When":"{ZERO_TIME}"}}'


def test_fields_are_written_in_declaration_order_and_maps_sorted() -> None:
    d = Doc(id="a", count=1 << 63, inner=Inner(name="x"), maybe=False, tags=["t"],
            table={"b": Inner(lun=2), "a": Inner(lun=1)}, raw={"z": 1, "a": [1, None]}, blob=b"\x00\xff",
            delta=-5, oci={"memory": {"limit": 1}})
    text = dumps(d)
    assert text == ('{"Id":"a","Count":9223372036854775808,"Always":"","Inner":{"Name":"x"},"Fixed":{},'
                    '"Maybe":false,"Tags":["t"],"Table":{"a":{"Lun":1},"b":{"Lun":2}},"Raw":{"z":1,"a":[1,null]},'
                    f'"Blob":"AP8=","When":"{ZERO_TIME}","Oci":{{"memory":{{"limit":1}}}},"Delta":-5}}')
    assert loads(text, Doc) == d


def test_html_characters_are_escaped_as_go_does_and_non_ascii_is_kept() -> None:
    assert dumps(Inner(name="<a&b> é \u2028")) == '{"Name":"\\u003ca\\u0026b\\u003e é \\u2028"}'


@pytest.mark.parametrize(("number", "text"), [(1.0, "1"), (0.5, "0.5"), (1e20, "100000000000000000000"),
                                              (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e-6, "0.0000015")])
def test_floats_are_written_as_strconv_writes_them(number: float, text: str) -> None:
    assert dumps(Doc(ratio=number)).startswith(f'{{"Ratio":{text},')


def test_keys_match_case_insensitively_unknown_keys_and_nulls_are_ignored() -> None:
    d = Doc.from_json({"id": "x", "COUNT": 3, "Unknown": {"deep": 1}, "Inner": None, "Tags": None,
                       "Items": [None, {"name": "n"}]})
    assert (d.id, d.count, d.inner, d.tags) == ("x", 3, None, [])
    assert d.items == [None, Inner(name="n")]  # []*Inner: a null element is a nil pointer


@pytest.mark.parametrize(("body", "message"), [
    ({"Count": -1}, "Doc: field Count: expected uint64, got -1"),
    ({"Count": 1.5}, "Doc: field Count: expected uint64, got 1.5"),
    ({"Enabled": 1}, "Doc: field Enabled: expected bool, got 1"),
    ({"Id": True}, "Doc: field Id: expected string, got true"),
    ({"Delta": 1 << 31}, "Doc: field Delta: expected int32, got 2147483648"),
    ({"Tags": ["a", 2]}, r"Doc: field Tags\[1\]: expected string, got 2"),
    ({"Inner": "x"}, "Doc: field Inner: expected a JSON object, got string"),
    ({"Items": [{}, {"Lun": 256}]}, r"Doc.Items\[1\]: field Lun: expected uint8, got 256"),
    ({"Table": {"k": {"Name": 3}}}, r'Doc.Table\["k"\]: field Name: expected string, got 3'),
    ({"Blob": "***"}, "Doc: field Blob: expected base64 string"),
    ({"When": "yesterday"}, "Doc: field When: expected RFC 3339 time"),
    ({"Oci": []}, "Doc: field Oci: expected object, got array"),
])
def test_a_wrong_type_names_the_field_path(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Doc.from_json(body)


def test_bad_text_is_a_decode_error_naming_the_document() -> None:
    with pytest.raises(DecodeError, match="Doc: invalid JSON"):
        loads("{", Doc)
    with pytest.raises(DecodeError, match="Doc: expected a JSON object, got array"):
        loads("[]", Doc)


def test_the_constructor_takes_fields_by_name_only_and_copies_no_shared_defaults() -> None:
    a, b = Doc(), Doc()
    a.tags.append("x")
    assert b.tags == [] and a.fixed is not b.fixed
    with pytest.raises(TypeError, match="no field bogus"):
        Doc(bogus=1)
    assert repr(Inner(name="n")) == "Inner(name='n')"


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@given(st.builds(Inner, name=names, lun=st.integers(0, 255)), st.lists(names, max_size=3),
       st.dictionaries(names, st.builds(Inner, name=names), max_size=3), st.integers(0, (1 << 64) - 1),
       st.one_of(st.none(), st.booleans()))
def test_what_is_written_reads_back_the_same(inner: Inner, tags: list[str], table: dict[str, Inner], count: int,
                                             maybe: bool | None) -> None:
    d = Doc(inner=inner, tags=tags, table=table, count=count, maybe=maybe, items=[inner])
    text = dumps(d)
    assert loads(text, Doc) == d
    assert json.loads(text) == json.loads(json.dumps(d.to_json()))  # dumps and to_json agree


# -- arrays, GUIDs, nil slices and maps, integer keys, forward references ---------------------------------------


class Shapes(Struct):
    size: list[int] = field("Size", array_of(U64, 2))
    nothing: list[int] = field("Nothing", array_of(U8, 0))
    id: str = field("Id", GUID)
    ids: list[str] = field("Ids", list_of(GUID))
    layers: list[str] | None = field("Layers", list_of(STR, nil=True), omitempty=False)
    maybe: list[str] | None = field("Maybe", list_of(STR, nil=True))
    table: dict[str, int] | None = field("Table", map_of(U8, nil=True), omitempty=False)
    disks: dict[int, Inner] = field("Disks", map_of(value(Inner), key=I64))
    ports: dict[int, str] = field("Ports", map_of(STR, key=U16))
    small: dict[int, bool] = field("Small", map_of(BOOL, key=I8))


class Node(Struct):
    name: str = field("Name", STR)
    children: list[Node] = field("Children", list_of(ref("Node", lambda: value(Node))))
    parent: Node | None = field("Parent", ref("Node", lambda: Node))


def test_the_zero_of_the_added_kinds_is_what_go_writes_for_the_zero_struct() -> None:
    # [2]uint64 and guid.GUID are never omitted, [0]uint8 always is; a nil slice and a nil map are null
    assert dumps(Shapes()) == f'{{"Size":[0,0],"Id":"{NIL_GUID}","Layers":null,"Table":null}}'
    assert Shapes().layers is None and Shapes().table is None and Shapes().maybe is None


def test_the_added_kinds_write_go_s_exact_text_and_read_it_back() -> None:
    d = Shapes(size=[3, 1 << 63], id="0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0", ids=[NIL_GUID], layers=[], maybe=["m"],
               table={}, disks={10: Inner(lun=1), 2: Inner(), -1: Inner(name="n")},
               ports={8080: "c", 443: "a", 80: "b"}, small={-128: True, 127: False})
    text = dumps(d)
    assert text == ('{"Size":[3,9223372036854775808],"Id":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",'
                    f'"Ids":["{NIL_GUID}"],"Layers":[],"Maybe":["m"],"Table":{{}},'
                    '"Disks":{"-1":{"Name":"n"},"10":{"Lun":1},"2":{}},"Ports":{"443":"a","80":"b","8080":"c"},'
                    '"Small":{"-128":true,"127":false}}')  # int keys sorted by their text, as Go sorts them
    back = loads(text, Shapes)
    assert back.id == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # a GUID reads in either case, kept lowercase
    assert (back.disks, back.ports, back.layers, back.table) == (d.disks, d.ports, [], {})
    assert dumps(back) == text


def test_an_array_is_read_as_go_reads_one() -> None:
    assert Shapes.from_json({"Size": [7]}).size == [7, 0]  # missing elements are zero
    assert Shapes.from_json({"Size": [1, 2, "extra", None]}).size == [1, 2]  # extra ones are dropped unread
    assert Shapes.from_json({"Size": [None, 2]}).size == [0, 2]
    assert Shapes.from_json({"Size": None}).size == [0, 0]
    with pytest.raises(ValueError, match=r"\[2\]uint64: expected 2 elements, got 3"):
        dumps(Shapes(size=[1, 2, 3]))


def test_a_nil_slice_or_map_and_an_empty_one_stay_apart() -> None:
    assert loads('{"Layers":null,"Table":null}', Shapes).layers is None
    assert loads('{"Layers":[],"Table":{}}', Shapes).layers == []
    assert loads('{"Table":{}}', Shapes).table == {}
    assert '"Maybe"' not in dumps(Shapes(maybe=[]))  # omitempty drops an empty slice and a nil one alike
    assert list_of(STR).zero() == [] and map_of(STR).zero() == {}  # without nil=True the zero is empty


@pytest.mark.parametrize(("key", "number"), [
    ("+3", 3), ("-3", -3), ("0", 0), ("-0", 0), ("007", 7), ("0" * 30 + "1", 1),
    ("9223372036854775807", (1 << 63) - 1), ("-9223372036854775808", -(1 << 63)),
])
def test_an_int_key_is_read_by_parse_int_s_rules(key: str, number: int) -> None:
    assert Shapes.from_json({"Disks": {key: {}}}).disks == {number: Inner()}


@pytest.mark.parametrize(("field_name", "key", "kind"), [
    ("Disks", "x", "int64"), ("Disks", "", "int64"), ("Disks", " 1", "int64"), ("Disks", "1_0", "int64"),
    ("Disks", "0x1", "int64"), ("Disks", "1.0", "int64"), ("Disks", "--1", "int64"), ("Disks", "\u0661", "int64"),
    ("Disks", "9223372036854775808", "int64"), ("Disks", "1" * 30, "int64"), ("Ports", "65536", "uint16"),
    ("Ports", "-1", "uint16"), ("Ports", "+1", "uint16"), ("Ports", "-0", "uint16"), ("Small", "128", "int8"),
    ("Small", "-129", "int8"),
])
def test_a_bad_int_key_is_a_decode_error_naming_the_field(field_name: str, key: str, kind: str) -> None:
    message = f"Shapes: field {field_name}: expected {kind} key, got {json.dumps(key)}"
    with pytest.raises(DecodeError, match=re.escape(message)):
        Shapes.from_json({field_name: {key: None}})


@pytest.mark.parametrize(("body", "message"), [
    ({"Size": [1, -2]}, r"Shapes: field Size\[1\]: expected uint64, got -2"),
    ({"Size": 3}, "Shapes: field Size: expected array of uint64, got 3"),
    ({"Size": {}}, "Shapes: field Size: expected array of uint64, got object"),
    ({"Id": 5}, "Shapes: field Id: expected GUID string, got 5"),
    ({"Id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f"}, "Shapes: field Id: expected GUID string, got string"),
    ({"Id": "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}"}, "Shapes: field Id: expected GUID string"),
    ({"Id": "0f1e2d3c04b5a-6978-8796-a5b4c3d2e1f0"}, "Shapes: field Id: expected GUID string"),
    ({"Id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg"}, "Shapes: field Id: expected GUID string"),
    ({"Id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n"}, "Shapes: field Id: expected GUID string"),
    ({"Ids": [NIL_GUID, "x"]}, r"Shapes: field Ids\[1\]: expected GUID string, got string"),
    ({"Layers": "x"}, "Shapes: field Layers: expected array of string, got string"),
    ({"Layers": ["a", 1]}, r"Shapes: field Layers\[1\]: expected string, got 1"),
    ({"Table": {"k": 256}}, r'Shapes: field Table\["k"\]: expected uint8, got 256'),
    ({"Disks": []}, "Shapes: field Disks: expected object of Inner, got array"),
    ({"Disks": {"-1": {"Lun": -1}}}, r"Shapes.Disks\[-1\]: field Lun: expected uint8, got -1"),
    ({"Ports": {"+0": 1}}, "Shapes: field Ports: expected uint16 key"),
    ({"Ports": {"80": 1}}, r"Shapes: field Ports\[80\]: expected string, got 1"),
    ({"Small": {"-5": "yes"}}, r"Shapes: field Small\[-5\]: expected bool, got string"),
])
def test_a_wrong_value_of_an_added_kind_names_the_field_path(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Shapes.from_json(body)


def test_a_guid_that_is_not_one_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="invalid GUID 'nope'"):
        dumps(Shapes(id="nope"))
    with pytest.raises(ValueError, match="invalid GUID"):
        dumps(Shapes(ids=["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 "]))


def test_a_map_key_is_a_string_or_an_integer_kind() -> None:
    for bad in (BOOL, F64, GUID, list_of(STR)):
        with pytest.raises(TypeError, match="map_of: a key is STR or an integer kind"):
            map_of(STR, key=bad)
    assert repr(map_of(Inner, key=I64)) == "map[int64]Inner" and repr(array_of(U8, 4)) == "[4]uint8"


def test_a_type_that_contains_itself_is_declared_with_ref() -> None:
    tree = Node(name="root", children=[Node(name="a", children=[Node(name="b")])], parent=Node(name="up"))
    text = dumps(tree)
    assert text == '{"Name":"root","Children":[{"Name":"a","Children":[{"Name":"b"}]}],"Parent":{"Name":"up"}}'
    assert loads(text, Node) == tree
    assert dumps(Node()) == "{}" and Node().parent is None and Node().children == []
    assert repr(Node._BY_KEY["Children"].kind) == "[]Node"  # the name is known before the class is


@pytest.mark.parametrize(("body", "message"), [
    ({"Children": [{}, {"Children": [{"Name": 1}]}]}, r"Node.Children\[1\].Children\[0\]: field Name: expected string"),
    ({"Children": {}}, "Node: field Children: expected array of Node, got object"),
    ({"Parent": {"Parent": 3}}, "Node.Parent: field Parent: expected a JSON object, got 3"),
])
def test_a_wrong_value_under_a_ref_names_the_field_path(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Node.from_json(body)


def test_a_value_ref_is_written_as_a_struct_value_even_when_omitempty() -> None:
    class Holder(Struct):
        inner: Inner = field("Inner", ref("Inner", lambda: value(Inner)))

    assert dumps(Holder()) == '{"Inner":{}}'
    assert Holder.from_json({"Inner": None}).inner == Inner()


_u64 = st.integers(0, (1 << 64) - 1)


@given(st.lists(_u64, min_size=2, max_size=2), st.uuids().map(str), st.booleans(),
       st.one_of(st.none(), st.lists(names, max_size=2)),
       st.one_of(st.none(), st.dictionaries(names, st.integers(0, 255), max_size=2)),
       st.dictionaries(st.integers(-(1 << 63), (1 << 63) - 1), st.builds(Inner, name=names), max_size=4),
       st.dictionaries(st.integers(0, 65535), names, max_size=4))
def test_the_added_kinds_read_back_what_they_write(size: list[int], guid: str, upper: bool, layers: list[str] | None,
                                                   table: dict[str, int] | None, disks: dict[int, Inner],
                                                   ports: dict[int, str]) -> None:
    d = Shapes(size=size, id=guid.upper() if upper else guid, ids=[guid], layers=layers, table=table, disks=disks,
               ports=ports)
    text = dumps(d)
    back = loads(text, Shapes)
    assert dumps(back) == text
    assert back == Shapes(size=size, id=guid, ids=[guid], layers=layers, table=table, disks=disks, ports=ports)
    assert list(json.loads(text).get("Disks", {})) == sorted(str(k) for k in disks)  # Go's order: by the text
