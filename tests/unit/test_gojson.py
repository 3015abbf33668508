"""hcsshim.gojson, the project's one JSON convention: Go's encoding/json rules for writing (order, omitempty,
pointers, struct values, sorted maps, HTML escapes, float text) and reading (case-insensitive keys, unknown keys,
null, strict types with the field's path in the error)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.gojson import (
    ANY,
    BOOL,
    BYTES,
    F64,
    I32,
    OBJECT,
    STR,
    TIME,
    U8,
    U64,
    ZERO_TIME,
    DecodeError,
    Struct,
    dumps,
    field,
    list_of,
    loads,
    map_of,
    opt,
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
