"""The bridge codec: framing, type codes, JSON conventions and HRESULT errors (specs/gcs-bridge.md 1.4-3, 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim import bridge
from hcsshim.bridge import Decoder, HResultError, Message, ProtocolError, Requests, Rpc

ZERO = "00000000-0000-0000-0000-000000000000"


def test_negotiate_request_matches_the_go_hosts_bytes() -> None:
    data = bridge.encode(bridge.request_type(Rpc.NEGOTIATE_PROTOCOL), 0, bridge.dumps_host(Requests.negotiate()))
    assert data[:16].hex() == "010b10107d0000000000000000000000"
    assert data[16:] == (b'{"ContainerId":"","ActivityId":"' + ZERO.encode() +
                         b'","MinimumVersion":4,"MaximumVersion":4}\n')


def test_start_request_and_its_response_match_the_spec_examples() -> None:
    req = bridge.encode(bridge.request_type(Rpc.START), 2, bridge.dumps_host(Requests.base("abcd")))
    assert req[:16].hex() == "010210105b0000000200000000000000"
    resp = bridge.encode(bridge.response_type(req_type := bridge.request_type(Rpc.START)), 2,
                         bridge.dumps_guest(bridge.response()))
    assert req_type == 0x10100201
    assert resp[:16].hex() == "01021020500000000200000000000000"


def test_wait_request_is_132_bytes() -> None:
    data = bridge.encode(bridge.request_type(Rpc.WAIT_FOR_PROCESS), 5,
                         bridge.dumps_host(Requests.wait("abcd", 123)))
    assert data[:16].hex() == "01061010840000000500000000000000"


def test_type_codes_follow_the_bit_layout() -> None:
    assert bridge.request_type(Rpc.MODIFY_SETTINGS) == 0x10100A01
    assert bridge.request_type(Rpc.MODIFY_SERVICE_SETTINGS) == 0x10200101
    assert bridge.NOTIFY_CONTAINER == 0x30100101
    assert bridge.response_type(0x10100F01) == 0x20100F01
    assert bridge.response_type(0x1234ABCD) == 0x2234ABCD  # even for unknown types
    assert bridge.type_name(0x20100901) == "GetProperties response"


def test_error_body_matches_the_go_guest() -> None:
    body = bridge.dumps_guest(bridge.error_body(0xC037010E, "HRESULT: 0xc037010e"))
    assert body == (b'{"Result":-1070137074,"ActivityId":"' + ZERO.encode() + b'","ErrorMessage":"HRESULT: '
                    b'0xc037010e","ErrorRecords":[{"Result":-1070137074,"Message":"HRESULT: 0xc037010e",'
                    b'"ModuleName":"gcs","FileName":"","Line":4294967295}]}')


def test_guest_json_escapes_html_characters_and_host_json_does_not() -> None:
    obj = {"a": "<x & y>"}
    assert bridge.dumps_guest(obj) == b'{"a":"\\u003cx \\u0026 y\\u003e"}'
    assert bridge.dumps_host(obj) == b'{"a":"<x & y>"}\n'
    assert json.loads(bridge.dumps_guest(obj)) == obj


def test_fields_match_case_insensitively_and_default_when_missing() -> None:
    obj = {"ContainerID": "c1", "lun": 3}
    assert bridge.field(obj, "ContainerId") == "c1"
    assert bridge.field(obj, "Lun", "uint8") == 3
    assert bridge.field(obj, "Controller", "uint8") == 0
    assert bridge.field(obj, "ReadOnly", bool) is False
    assert bridge.field(obj, "Options", list) is None


@pytest.mark.parametrize(("value", "kind"), [(-1, "uint32"), (1 << 32, "uint32"), ("5", "uint32"), (True, "int32"),
                                             (5, str), (1, bool), (256, "uint8")])
def test_a_field_of_the_wrong_type_or_range_is_an_invalid_json_error(value: object, kind: object) -> None:
    with pytest.raises(HResultError) as e:
        bridge.field({"X": value}, "X", kind)
    assert e.value.hresult == bridge.VMCOMPUTE_INVALID_JSON
    assert "field X" in str(e.value)


def test_json_in_a_string_round_trips_and_rejects_garbage() -> None:
    inner = {"CommandArgs": ["ls", "-l"], "Environment": {"PATH": "/bin"}}
    outer = json.loads(bridge.dumps_host({"ProcessParameters": bridge.json_string(inner)}))
    assert bridge.inner_json(outer["ProcessParameters"], "ProcessParameters") == inner
    assert bridge.inner_json("", "Query") is None
    with pytest.raises(HResultError):
        bridge.inner_json("{not json", "Query")
    with pytest.raises(HResultError):
        bridge.inner_json({"a": 1}, "Query")


def test_results_are_signed_and_exit_codes_unsigned() -> None:
    assert bridge.int32(0xC037010E) == -1070137074
    assert bridge.int32(-1070137074) == -1070137074
    assert bridge.uint32(-1) == 4294967295


def test_an_error_result_raises_with_the_operation_and_records() -> None:
    body = json.loads(bridge.dumps_guest(bridge.error_body(0xC037010E, "container c1 not found")))
    with pytest.raises(HResultError) as e:
        bridge.raise_for_result(body, "start container c1")
    assert e.value.hresult == 0xC037010E
    assert "start container c1: container c1 not found" in str(e.value)
    assert e.value.records[0]["ModuleName"] == "gcs"
    assert bridge.raise_for_result({"Result": 0}, "x") == {"Result": 0}


def test_decoder_rejects_a_size_below_the_header() -> None:
    d = Decoder()
    d.feed(b"\x01\x0b\x10\x10" + (15).to_bytes(4, "little") + bytes(8))
    with pytest.raises(ProtocolError, match="invalid size 15"):
        d.next_message()
    with pytest.raises(ProtocolError):  # stays broken
        d.next_message()


def test_decoder_enforces_its_limit_inclusively() -> None:
    d = Decoder(max_size=0x10000)
    d.feed(bridge.encode(0x20100101, 1, b" " * (0x10000 - 16)))
    assert d.next_message() is not None
    d.feed(bridge.encode(0x20100101, 2, b" " * (0x10000 - 15)))
    with pytest.raises(ProtocolError, match="limit 65536"):
        d.next_message()
    unlimited = Decoder(max_size=None)
    unlimited.feed(bridge.encode(0x10100101, 3, b" " * 100000))
    assert len(unlimited.next_message().body) == 100000  # type: ignore[union-attr]


def test_encode_refuses_a_message_over_the_limit() -> None:
    with pytest.raises(ValueError, match="exceeds the limit"):
        bridge.encode(0x20100C01, 1, b"x" * 0x10000, max_size=bridge.MAX_MESSAGE_SIZE)


messages = st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1),
                              st.binary(max_size=300)), max_size=20)


@given(msgs=messages, cuts=st.lists(st.integers(1, 64), max_size=50))
def test_decoding_any_split_of_encoded_messages_gives_them_back(msgs: list[tuple[int, int, bytes]],
                                                                 cuts: list[int]) -> None:
    stream = b"".join(bridge.encode(t, i, b) for t, i, b in msgs)
    d = Decoder(max_size=None)
    out: list[Message] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        d.feed(stream[pos:pos + cut])
        pos += cut
        while (m := d.next_message()) is not None:
            out.append(m)
    d.feed(stream[pos:])
    while (m := d.next_message()) is not None:
        out.append(m)
    assert out == [Message(t, i, b) for t, i, b in msgs]
    assert d.buffered == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 53), 1 << 53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@given(obj=json_values)
def test_both_json_styles_decode_to_the_same_value(obj: object) -> None:
    assert bridge.loads(bridge.dumps_host(obj)) == obj
    assert bridge.loads(bridge.dumps_guest(obj)) == obj
    assert not bridge.dumps_guest(obj).endswith(b"\n")
    assert b"<" not in bridge.dumps_guest(obj)


@given(obj=json_values)
def test_json_in_a_string_survives_both_encodings(obj: object) -> None:
    outer = bridge.loads(bridge.dumps_guest({"Properties": bridge.json_string(obj)}))
    if obj is None:
        assert outer["Properties"] == "null"
    else:
        assert bridge.inner_json(outer["Properties"], "Properties") == obj


@given(hr=st.integers(0, 0xFFFFFFFF))
def test_hresults_round_trip_through_int32(hr: int) -> None:
    assert -(1 << 31) <= bridge.int32(hr) < (1 << 31)
    assert bridge.uint32(bridge.int32(hr)) == hr


@given(garbage=st.binary(max_size=200))
def test_the_decoder_never_fails_other_than_with_a_protocol_error(garbage: bytes) -> None:
    d = Decoder()
    d.feed(garbage)
    try:
        while d.next_message() is not None:
            pass
    except ProtocolError:
        pass


def test_importing_the_guest_loads_only_the_standard_library() -> None:
    code = ("import sys, hcsshim.guest.main, hcsshim.guest.server, hcsshim.guest.containers, hcsshim.guest.process\n"
            "import hcsshim.guest.stdio, hcsshim.guest.storage, hcsshim.guest.network, hcsshim.bridge\n"
            "import hcsshim.transport.base, hcsshim.transport.mux\n"
            "std = set(sys.stdlib_module_names)\n"
            "std |= {'hcsshim', '__main__'}\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] not in std)\n"
            "print(','.join(bad))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {_src()!r})\n" + code],
                         capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == ""


def _src() -> str:
    import hcsshim
    return os.path.dirname(os.path.dirname(hcsshim.__file__))
