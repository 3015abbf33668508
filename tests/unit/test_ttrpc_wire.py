"""The ttrpc codec (sans I/O): frame layout, incremental decoding, limits, envelopes; property-based checks."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.api.containerd.task.v2.shim_pb2 import ConnectRequest, ConnectResponse
from hcsshim.ttrpc import (
    MAX_MESSAGE_SIZE,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Code,
    Frame,
    FrameDecoder,
    ProtocolError,
    TtrpcError,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
    errors,
)

CONNECT_REQUEST = bytes.fromhex("0000002b0000000301000a17") + b"containerd.task.v2.Task" + \
    b"\x12\x07Connect\x1a\x07\x0a\x05test1"
CONNECT_RESPONSE = bytes.fromhex("0000000a0000000302001208" "08e99701108298 01".replace(" ", ""))
NOT_FOUND_RESPONSE = bytes.fromhex("000000260000000502000a24080512 20") + b"container not created: not found"


def test_a_connect_request_is_framed_exactly_as_containerd_frames_it() -> None:
    payload = ConnectRequest(id="test1").SerializeToString()
    assert encode_request(3, "containerd.task.v2.Task", "Connect", payload) == CONNECT_REQUEST


def test_an_ok_response_omits_the_status_as_the_go_server_does() -> None:
    payload = ConnectResponse(shim_pid=19433, task_pid=19458).SerializeToString()
    assert encode_response(3, payload) == CONNECT_RESPONSE


def test_an_error_response_carries_code_and_message() -> None:
    err = TtrpcError(Code.NOT_FOUND, "container not created: not found")
    assert encode_response(5, status=err.to_status()) == NOT_FOUND_RESPONSE
    frame = _decode_all(NOT_FOUND_RESPONSE)[0]
    resp = decode_response(frame)
    assert TtrpcError.from_status(resp.status).code == Code.NOT_FOUND


def test_frames_arriving_byte_by_byte_decode_whole() -> None:
    dec = FrameDecoder()
    out = []
    for b in CONNECT_REQUEST + CONNECT_RESPONSE:
        dec.receive_data(bytes([b]))
        while (f := dec.next_frame()) is not None:
            out.append(f)
    assert [f.type for f in out] == [TYPE_REQUEST, TYPE_RESPONSE]
    req = decode_request(out[0])
    assert (req.service, req.method, ConnectRequest.FromString(req.payload).id) == (
        "containerd.task.v2.Task", "Connect", "test1")


def test_zero_length_data_is_a_valid_frame() -> None:
    assert _decode_all(encode_frame(7, TYPE_RESPONSE, b"")) == [Frame(7, TYPE_RESPONSE, 0, b"")]


def test_the_largest_message_is_accepted_and_one_byte_more_is_refused_before_its_body_arrives() -> None:
    assert _decode_all(encode_frame(1, TYPE_REQUEST, b"x" * MAX_MESSAGE_SIZE))[0].data == b"x" * MAX_MESSAGE_SIZE
    with pytest.raises(ProtocolError):
        encode_frame(1, TYPE_REQUEST, b"x" * (MAX_MESSAGE_SIZE + 1))
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">IIBB", MAX_MESSAGE_SIZE + 1, 1, TYPE_REQUEST, 0))
    with pytest.raises(ProtocolError, match="exceeds"):
        dec.next_frame()
    with pytest.raises(ProtocolError):  # the decoder stays broken
        dec.receive_data(b"more")


def test_end_of_stream_inside_a_frame_is_a_protocol_error() -> None:
    dec = FrameDecoder()
    dec.receive_data(CONNECT_REQUEST[:15])
    assert dec.next_frame() is None
    dec.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a frame"):
        dec.next_frame()


def test_end_of_stream_between_frames_is_a_clean_close() -> None:
    dec = FrameDecoder()
    dec.receive_data(CONNECT_REQUEST)
    dec.receive_data(b"")
    assert dec.next_frame() is not None
    assert dec.next_frame() is None
    assert dec.closed


def test_a_garbage_envelope_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="invalid request envelope"):
        decode_request(Frame(1, TYPE_REQUEST, 0, b"\xff\xff\xff\xff"))


def test_errdefs_helpers_append_the_class_text_once() -> None:
    assert errors.not_found("task x").message == "task x: not found"
    assert errors.not_found("task x: not found").message == "task x: not found"
    assert errors.failed_precondition("p").code == Code.FAILED_PRECONDITION


def _decode_all(data: bytes) -> list[Frame]:
    dec = FrameDecoder()
    dec.receive_data(data)
    out = []
    while (f := dec.next_frame()) is not None:
        out.append(f)
    return out


frames = st.lists(st.builds(Frame, st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
                            st.binary(max_size=300)), max_size=8)


@given(frames, st.lists(st.integers(1, 50), max_size=20))
def test_any_frames_chopped_anywhere_decode_to_the_same_frames(fs: list[Frame], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f.stream_id, f.type, f.data, f.flags) for f in fs)
    dec = FrameDecoder()
    out: list[Frame] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        dec.receive_data(data[pos:pos + cut])
        pos += cut
        while (f := dec.next_frame()) is not None:
            out.append(f)
        if pos >= len(data):
            break
    assert out == fs


@given(st.text(max_size=40), st.text(max_size=20), st.binary(max_size=200), st.integers(0, 2**62),
       st.dictionaries(st.text(alphabet="abcdefghij-", min_size=1, max_size=8), st.text(max_size=10), max_size=4))
def test_requests_round_trip_with_any_service_payload_and_metadata(service: str, method: str, payload: bytes,
                                                                    timeout: int, md: dict[str, str]) -> None:
    (frame,) = _decode_all(encode_request(1, service, method, payload, timeout_nano=timeout, metadata=md))
    req = decode_request(frame)
    assert (req.service, req.method, req.payload, req.timeout_nano) == (service, method, payload, timeout)
    assert {kv.key: kv.value for kv in req.metadata} == md


@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    dec = FrameDecoder()
    try:
        dec.receive_data(data)
        while dec.next_frame() is not None:
            pass
        dec.receive_data(b"")
        dec.next_frame()
    except ProtocolError:
        pass
