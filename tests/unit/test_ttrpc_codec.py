"""The ttrpc codec and error model, sans I/O: exact frame bytes, incremental decoding, limits, envelopes."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcsshim.api.containerd.task.v2.shim_pb2 import ConnectRequest, ConnectResponse
from hcsshim.api.google.rpc.status_pb2 import Status
from hcsshim.ttrpc import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    Code,
    ConnectionClosed,
    Frame,
    FrameDecoder,
    ProtocolError,
    TtrpcError,
    already_exists,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
    failed_precondition,
    internal,
    invalid_argument,
    not_found,
    unimplemented,
)

# shim-v2.md §2.1 worked example, byte for byte.
CONNECT_REQUEST = (bytes.fromhex("0000002b 00000003 01 00".replace(" ", ""))
                   + b"\x0a\x17containerd.task.v2.Task" + b"\x12\x07Connect" + b"\x1a\x07\x0a\x05test1")
CONNECT_RESPONSE = bytes.fromhex("0000000a 00000003 02 00 1208 08e99701 10829801".replace(" ", ""))
NOT_FOUND_RESPONSE = (bytes.fromhex("00000026 00000005 02 00".replace(" ", ""))
                      + b"\x0a\x24\x08\x05\x12\x20container not created: not found")


def decode_all(*chunks: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames


# --- exact bytes ----------------------------------------------------------------------------------

def test_a_connect_request_encodes_to_the_bytes_of_the_worked_example() -> None:
    payload = ConnectRequest(id="test1").SerializeToString()
    assert encode_request(3, "containerd.task.v2.Task", "Connect", payload) == CONNECT_REQUEST
    assert len(CONNECT_REQUEST) == HEADER_SIZE + 0x2B


def test_an_ok_response_omits_the_status_and_matches_the_worked_example() -> None:
    payload = ConnectResponse(shim_pid=19433, task_pid=19458).SerializeToString()
    assert encode_response(3, payload) == CONNECT_RESPONSE
    assert encode_response(3, payload, Status(code=0, message="ignored")) == CONNECT_RESPONSE


def test_a_not_found_error_response_matches_the_worked_example() -> None:
    err = not_found("container not created")
    assert encode_response(5, status=err.to_status()) == NOT_FOUND_RESPONSE


def test_the_worked_example_decodes_to_its_envelopes() -> None:
    req_frame, ok_frame, err_frame = decode_all(CONNECT_REQUEST + CONNECT_RESPONSE + NOT_FOUND_RESPONSE)
    assert (req_frame.stream_id, req_frame.type, req_frame.flags) == (3, TYPE_REQUEST, 0)
    req = decode_request(req_frame)
    assert (req.service, req.method, req.timeout_nano, list(req.metadata)) == (
        "containerd.task.v2.Task", "Connect", 0, [])
    assert ConnectRequest.FromString(req.payload).id == "test1"
    ok = decode_response(ok_frame)
    assert (ok_frame.stream_id, ok_frame.type) == (3, TYPE_RESPONSE)
    assert not ok.HasField("status")
    assert ConnectResponse.FromString(ok.payload).task_pid == 19458
    err = TtrpcError.from_status(decode_response(err_frame).status)
    assert (err.code, str(err)) == (Code.NOT_FOUND, "container not created: not found")


def test_the_header_is_big_endian_length_stream_type_flags() -> None:
    frame = encode_frame(0x01020304, 0x7F, b"xyz", flags=0x05)
    assert frame == b"\x00\x00\x00\x03\x01\x02\x03\x04\x7f\x05xyz"
    assert struct.unpack(">IIBB", frame[:HEADER_SIZE]) == (3, 0x01020304, 0x7F, 5)


# --- incremental decoding -------------------------------------------------------------------------

def test_a_frame_delivered_byte_by_byte_decodes_once_complete() -> None:
    decoder = FrameDecoder()
    for i, byte in enumerate(CONNECT_REQUEST):
        decoder.receive_data(bytes([byte]))
        frame = decoder.next_frame()
        if i < len(CONNECT_REQUEST) - 1:
            assert frame is None
    assert frame == Frame(3, TYPE_REQUEST, 0, CONNECT_REQUEST[HEADER_SIZE:])
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    frames = [Frame(i * 2 + 1, TYPE_REQUEST, 0, bytes([i]) * i) for i in range(5)]
    assert decode_all(b"".join(f.encode() for f in frames)) == frames


def test_a_zero_length_frame_is_valid() -> None:
    assert encode_response(7) == b"\x00\x00\x00\x00\x00\x00\x00\x07\x02\x00"
    (frame,) = decode_all(encode_response(7))
    assert frame == Frame(7, TYPE_RESPONSE, 0, b"")
    assert decode_response(frame) == decode_response(Frame(7, TYPE_RESPONSE, 0, b""))


def test_a_frame_of_exactly_the_maximum_size_is_accepted() -> None:
    data = b"\xab" * MAX_MESSAGE_SIZE
    (frame,) = decode_all(encode_frame(1, TYPE_REQUEST, data))
    assert frame.data == data


def test_a_declared_length_over_the_maximum_is_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">IIBB", MAX_MESSAGE_SIZE + 1, 1, TYPE_REQUEST, 0))
    with pytest.raises(ProtocolError, match="declares 4194305 bytes, which exceeds the limit"):
        decoder.next_frame()


def test_encoding_more_than_the_maximum_is_refused() -> None:
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        encode_frame(1, TYPE_REQUEST, bytes(MAX_MESSAGE_SIZE + 1))


def test_a_decoder_stays_broken_after_an_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\xff" * HEADER_SIZE)
    with pytest.raises(ProtocolError) as first:
        decoder.next_frame()
    with pytest.raises(ProtocolError) as again:
        decoder.receive_data(encode_response(1))
    assert again.value is first.value
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    assert not decoder.closed


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_eof_in_the_middle_of_a_frame_is_a_protocol_error(cut: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(CONNECT_REQUEST[:cut])
    assert decoder.next_frame() is None
    decoder.receive_data(b"")
    with pytest.raises(ProtocolError, match="middle of a frame"):
        decoder.next_frame()


def test_eof_between_frames_closes_the_decoder_cleanly() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(CONNECT_REQUEST)
    decoder.receive_data(b"")
    assert not decoder.closed  # a frame is still buffered
    assert decoder.next_frame() is not None
    assert decoder.next_frame() is None
    assert decoder.closed


def test_data_after_eof_is_a_protocol_error() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"")
    with pytest.raises(ProtocolError, match="after end of stream"):
        decoder.receive_data(b"x")


def test_garbage_envelopes_are_protocol_errors() -> None:
    garbage = Frame(1, TYPE_REQUEST, 0, b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError, match="invalid request envelope on stream 1"):
        decode_request(garbage)
    with pytest.raises(ProtocolError, match="invalid response envelope on stream 1"):
        decode_response(garbage)


def test_frames_compare_by_value_and_show_their_fields() -> None:
    assert Frame(1, 2, 0, b"a") == Frame(1, 2, 0, b"a") != Frame(3, 2, 0, b"a")
    assert len({Frame(1, 2, 0, b"a"), Frame(1, 2, 0, b"a")}) == 1
    assert repr(Frame(1, 2, 0, b"a")) == "Frame(stream_id=1, type=2, flags=0, data=b'a')"
    assert "<100 bytes>" in repr(Frame(1, 2, 0, bytes(100)))


# --- properties -----------------------------------------------------------------------------------

frames_strategy = st.lists(st.builds(
    Frame,
    st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)),
    max_size=8)


@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_any_frames_chopped_anywhere_decode_to_the_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(f.encode() for f in frames)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    decoder = FrameDecoder()
    out: list[Frame] = []
    for chunk in [*chunks, b""]:
        decoder.receive_data(chunk)
        out.extend(decoder.frames())
    assert out == frames
    assert decoder.closed


text = st.text(max_size=40)


@given(stream_id=st.integers(0, 0xFFFFFFFF), service=text, method=text, payload=st.binary(max_size=200),
       timeout_nano=st.integers(0, 2**63 - 1), metadata=st.lists(st.tuples(text, text), max_size=5))
def test_requests_round_trip(stream_id: int, service: str, method: str, payload: bytes, timeout_nano: int,
                             metadata: list[tuple[str, str]]) -> None:
    (frame,) = decode_all(encode_request(stream_id, service, method, payload, timeout_nano=timeout_nano,
                                         metadata=metadata))
    req = decode_request(frame)
    assert (frame.stream_id, frame.type) == (stream_id, TYPE_REQUEST)
    assert (req.service, req.method, req.payload) == (service, method, payload)
    assert req.timeout_nano == timeout_nano
    assert [(kv.key, kv.value) for kv in req.metadata] == metadata


def test_mapping_metadata_repeats_a_key_for_each_of_its_values() -> None:
    (frame,) = decode_all(encode_request(1, "s", "m", b"", metadata={"a": ["1", "2"], "b": "3"}))
    pairs = [(kv.key, kv.value) for kv in decode_request(frame).metadata]
    assert pairs == [("a", "1"), ("a", "2"), ("b", "3")]


@given(stream_id=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=200), code=st.integers(0, 16),
       message=text)
def test_responses_round_trip(stream_id: int, payload: bytes, code: int, message: str) -> None:
    (frame,) = decode_all(encode_response(stream_id, payload, Status(code=code, message=message)))
    resp = decode_response(frame)
    assert resp.payload == payload
    assert resp.HasField("status") == (code != 0)
    if code:
        assert (resp.status.code, resp.status.message) == (code, message)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "code", "text"), [
    (not_found, Code.NOT_FOUND, "not found"),
    (already_exists, Code.ALREADY_EXISTS, "already exists"),
    (failed_precondition, Code.FAILED_PRECONDITION, "failed precondition"),
    (invalid_argument, Code.INVALID_ARGUMENT, "invalid argument"),
    (unimplemented, Code.UNIMPLEMENTED, "not implemented"),
])
def test_errdefs_helpers_append_the_class_text_once(make, code: Code, text: str) -> None:
    err = make("task c1")
    assert (err.code, err.message, str(err)) == (code, f"task c1: {text}", f"task c1: {text}")
    assert make(f"task c1: {text}").message == f"task c1: {text}"


def test_internal_errors_keep_their_message() -> None:
    assert (internal("boom").code, str(internal("boom"))) == (Code.INTERNAL, "boom")


def test_errors_round_trip_through_status() -> None:
    err = TtrpcError.from_status(TtrpcError(Code.ABORTED, "x").to_status())
    assert (err.code, err.message) == (Code.ABORTED, "x")
    assert isinstance(err.code, Code)
    assert repr(err) == "TtrpcError(ABORTED, 'x')"


def test_a_code_outside_google_rpc_is_kept_as_a_number() -> None:
    err = TtrpcError.from_status(Status(code=99, message="odd"))
    assert err.code == 99
    assert err.to_status().code == 99


def test_connection_closed_is_unavailable_ttrpc_closed() -> None:
    err = ConnectionClosed()
    assert isinstance(err, TtrpcError)
    assert (err.code, str(err)) == (Code.UNAVAILABLE, "ttrpc: closed")


@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    from hcsshim.ttrpc import FrameDecoder, ProtocolError

    dec = FrameDecoder()
    try:
        dec.receive_data(data)
        while dec.next_frame() is not None:
            pass
        dec.receive_data(b"")
        dec.next_frame()
    except ProtocolError:
        pass
