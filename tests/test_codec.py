"""Behaviour of the runner-side codec, on both implementations (the ``codec`` fixture).

Inputs are built with ``a6fast.gateway`` (the gateway's side) or, for shapes our writers never
produce, with the official ``flatbuffers.Builder``; corrupt fields are located with the official
``flatbuffers.table.Table`` so the tests do not lean on the reader under test.
"""
import gc
import socket
import struct
import sys
import threading
import tracemalloc

import flatbuffers
import pytest
from flatbuffers.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a6fast import gateway
from a6fast.errors import DecodeError, EncodeError, TooManyPlugins
from a6fast.protocol import (
    ACTION_NONE, ACTION_REWRITE, ACTION_STOP, INFO_REQ_BODY, INFO_RESP_BODY, INFO_VAR,
    MAX_PAYLOAD, METHODS, RPC_ERR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL,
    RPC_PREPARE_CONF,
)

U32_MAX = 0xFFFFFFFF
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
                      max_examples=150, deadline=None)


# ---------------------------------------------------------------------------------------------
# Helpers

def payload_of(frame, rpc_type=None):
    """The payload of a whole frame, after checking its header by hand."""
    assert isinstance(frame, bytes)
    length = int.from_bytes(frame[1:4], "big")
    assert length == len(frame) - 4
    if rpc_type is not None:
        assert frame[0] == rpc_type
    return frame[4:]


def root_field(payload, slot):
    """Absolute position of a root-table field, found by the official reader."""
    root = struct.unpack_from("<I", payload, 0)[0]
    offset = Table(bytearray(payload), root).Offset(4 + 2 * slot)
    assert offset, "slot %d absent" % slot
    return root + offset


def target(payload, at):
    """Where the uoffset stored at ``at`` points."""
    return at + struct.unpack_from("<I", payload, at)[0]


def patched_u32(payload, at, value):
    data = bytearray(payload)
    struct.pack_into("<I", data, at, value)
    return bytes(data)


def fb_entries(builder, entries):
    """A [TextEntry] vector built by the official builder; None leaves name/value out."""
    tables = []
    for name, value in entries:
        name_off = None if name is None else builder.CreateString(name)
        value_off = None if value is None else builder.CreateString(value)
        builder.StartObject(2)
        if name_off is not None:
            builder.PrependUOffsetTRelativeSlot(0, name_off, 0)
        if value_off is not None:
            builder.PrependUOffsetTRelativeSlot(1, value_off, 0)
        tables.append(builder.EndObject())
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    return builder.EndVector()


def fb_table(nslots, children=lambda builder: None, fields=lambda builder, made: None):
    """A whole payload from the official builder: ``children`` makes the objects the root
    refers to, ``fields(builder, made)`` adds the root's fields."""
    builder = flatbuffers.Builder(0)
    made = children(builder)
    builder.StartObject(nslots)
    fields(builder, made)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def empty_table():
    return fb_table(0)


def req_call(**kw):
    kw.setdefault("id", 1)
    kw.setdefault("conf_token", 2)
    return payload_of(gateway.encode_http_req_call_req(**kw), RPC_HTTP_REQ_CALL)


def resp_call(**kw):
    kw.setdefault("id", 1)
    kw.setdefault("conf_token", 2)
    return payload_of(gateway.encode_http_resp_call_req(**kw), RPC_HTTP_RESP_CALL)


def read_all(codec, kind, payload, *bounds):
    """Every field of a decoded message, lazy ones included, as a plain tuple; ``bounds`` are
    the decoder's ``start, end``."""
    if kind == "prepare_conf":
        req = codec.decode_prepare_conf_req(payload, None, *bounds)
        return req.conf, req.key
    if kind == "http_req_call":
        req = codec.decode_http_req_call(payload, *bounds)
        return (req.id, req.method, req.conf_token, req.path, req.src_ip, req.args,
                req.headers)
    if kind == "http_resp_call":
        req = codec.decode_http_resp_call(payload, *bounds)
        return req.id, req.status, req.conf_token, req.headers
    assert kind == "extra_info_resp"
    return codec.decode_extra_info_resp(payload, *bounds)


SAMPLES = [
    ("prepare_conf", payload_of(gateway.encode_prepare_conf_req(
        [("auth", '{"k":1}'), ("limit", "{}")], key="route#1#ext-plugin-pre-req#7"))),
    ("prepare_conf", payload_of(gateway.encode_prepare_conf_req([("only", None)]))),
    ("http_req_call", req_call(id=0, method="POST", path="/a/b", src_ip="10.0.0.1",
                               args=[("flag", None), ("y", ""), ("x", "1"), ("x", "2")],
                               headers=[("host", "up.example"), ("cookie", "a=b")])),
    ("http_req_call", req_call(src_ip="2001:db8::1", headers=[("x-empty", "")])),
    ("http_resp_call", resp_call(status=502, headers=[("content-type", "text/plain"),
                                                      ("set-cookie", "a"), ("set-cookie", "b")])),
    ("extra_info_resp", payload_of(gateway.encode_extra_info_resp(b"\x00body\xff"))),
    ("extra_info_resp", payload_of(gateway.encode_extra_info_resp(b""))),
]
SAMPLE_IDS = ["%s-%d" % (kind, index) for index, (kind, _) in enumerate(SAMPLES)]


# ---------------------------------------------------------------------------------------------
# Frame header

@pytest.mark.parametrize("rpc_type,length", [(0, 0), (1, 1), (2, 0x010203), (4, MAX_PAYLOAD),
                                             (255, 17)])
def test_header_round_trips_type_and_length(codec, rpc_type, length):
    header = codec.encode_header(rpc_type, length)
    assert len(header) == 4
    assert codec.decode_header(header) == (rpc_type, length)


def test_header_is_type_then_big_endian_24_bit_length(codec):
    assert codec.encode_header(2, 0x010203) == b"\x02\x01\x02\x03"
    assert codec.encode_header(1, MAX_PAYLOAD) == b"\x01\xff\xff\xff"
    assert codec.decode_header(b"\x04\x00\x01\x00") == (4, 256)


@pytest.mark.parametrize("rpc_type,length", [(0, MAX_PAYLOAD + 1), (0, -1), (256, 0), (-1, 0),
                                             ("1", 0), (1, 2.0), (None, 0)])
def test_header_out_of_range_or_wrong_type_is_encode_error(codec, rpc_type, length):
    with pytest.raises(EncodeError):
        codec.encode_header(rpc_type, length)


def test_decode_header_reads_at_offset_in_any_bytes_like(codec):
    data = b"xx" + codec.encode_header(3, 70000) + b"yy"
    for view in (data, bytearray(data), memoryview(data)):
        assert codec.decode_header(view, 2) == (3, 70000)
    assert codec.decode_header(memoryview(data)[2:]) == (3, 70000)


@pytest.mark.parametrize("data,offset", [(b"", 0), (b"\x01\x00\x00", 0), (b"\x01\x00\x00\x00", 1),
                                         (b"\x01\x00\x00\x00\x00", 2), (b"\x01\x00\x00\x00", -4),
                                         (b"\x01\x00\x00\x00", 1 << 40)])
def test_decode_header_with_fewer_than_4_bytes_is_decode_error(codec, data, offset):
    with pytest.raises(DecodeError):
        codec.decode_header(data, offset)


def test_frame_end_is_where_a_whole_frame_ends_in_any_bytes_like(codec):
    frame = codec.encode_err(1)
    data = b"xx" + frame + b"yy"
    for buf in (data, bytearray(data), memoryview(data)):
        assert codec.frame_end(buf, 2) == 2 + len(frame)
    assert codec.frame_end(frame) == len(frame)
    assert codec.frame_end(memoryview(data)[2:]) == len(frame)


def test_frame_end_is_minus_one_until_the_whole_frame_is_there(codec):
    frame = codec.encode_stop(7, 403, [("x", "y")], b"denied")
    for size in range(len(frame)):
        assert codec.frame_end(frame[:size]) == -1, size
        assert codec.frame_end(bytearray(frame[:size])) == -1, size
    assert codec.frame_end(frame) == len(frame)


def test_frame_end_walks_frames_back_to_back(codec):
    frames = [codec.encode_err(0), codec.encode_no_action(1), codec.encode_prepare_conf_resp(2),
              codec.encode_extra_info_req_body(), codec.encode_header(4, 0)]
    rbuf = bytearray(b"".join(frames)) + codec.encode_header(2, 10) + b"short"
    pos, seen = 0, []
    while (end := codec.frame_end(rbuf, pos)) >= 0:
        seen.append(bytes(rbuf[pos:end]))
        pos = end
    assert seen == frames
    assert rbuf[pos:] == codec.encode_header(2, 10) + b"short"


def test_frame_end_reads_the_largest_payload_length(codec):
    header = codec.encode_header(RPC_HTTP_REQ_CALL, MAX_PAYLOAD)
    assert header == b"\x02\xff\xff\xff"
    data = bytearray(header) + bytes(MAX_PAYLOAD)
    assert codec.frame_end(data) == 4 + MAX_PAYLOAD == len(data)
    del data[-1]
    assert codec.frame_end(data) == -1
    assert codec.frame_end(bytes(data[:4])) == -1


@pytest.mark.parametrize("offset", [4, 5, 6, 1 << 40, 1 << 70])
def test_frame_end_at_or_past_the_end_is_minus_one(codec, offset):
    assert codec.frame_end(codec.encode_header(0, 0), offset) == -1


EMPTY_FRAME = b"\x00\x00\x00\x00"


def test_frame_end_of_an_empty_payload_is_right_after_its_header(codec):
    assert codec.frame_end(EMPTY_FRAME) == 4
    assert codec.frame_end(b"..\x00\x00\x00\x00..", 2) == 6


@pytest.mark.parametrize("data,offset", [
    ("\x00\x00\x00\x00", 0), (None, 0), (4, 0), (EMPTY_FRAME, -1), (EMPTY_FRAME, -(1 << 70)),
    (EMPTY_FRAME, 1.0), (EMPTY_FRAME, None), (EMPTY_FRAME, "0")])
def test_frame_end_of_what_is_not_bytes_or_not_an_offset_is_decode_error(codec, data, offset):
    with pytest.raises(DecodeError):
        codec.frame_end(data, offset)


def test_frame_end_of_a_released_buffer_is_decode_error(codec):
    view = memoryview(EMPTY_FRAME)
    view.release()
    with pytest.raises(DecodeError):
        codec.frame_end(view)


# ---------------------------------------------------------------------------------------------
# PrepareConf.Req

def test_prepare_conf_req_reads_plugins_in_order_and_key(codec):
    conf = [("auth", '{"key":"v"}'), ("limit", "{}"), ("auth", "{}")]
    req = codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req(
        conf, key="route#1#ext-plugin-pre-req#3")))
    assert req.conf == conf
    assert all(type(entry) is tuple for entry in req.conf)
    assert req.key == "route#1#ext-plugin-pre-req#3"


def test_prepare_conf_req_without_key_has_key_none(codec):
    req = codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req([("a", "{}")])))
    assert req.key is None


def test_prepare_conf_req_empty_key_is_empty_string(codec):
    req = codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req([], key="")))
    assert req.key == ""


@pytest.mark.parametrize("conf", [None, []])
def test_prepare_conf_req_absent_or_empty_conf_reads_empty_list(codec, conf):
    req = codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req(conf, key="k")))
    assert req.conf == []


def test_prepare_conf_entry_without_value_has_value_none(codec):
    req = codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req(
        [("auth", None), ("limit", "")])))
    assert req.conf == [("auth", None), ("limit", "")]


def test_prepare_conf_req_from_empty_table_has_nothing(codec):
    req = codec.decode_prepare_conf_req(empty_table())
    assert req.conf == [] and req.key is None


# ---------------------------------------------------------------------------------------------
# HTTPReqCall.Req

def test_http_req_call_reads_every_field(codec):
    req = codec.decode_http_req_call(req_call(
        id=(5 << 22) + 9, conf_token=77, method="PUT", path="/api/v1", src_ip="192.0.2.7",
        args=[("a", "1")], headers=[("host", "example.com"), ("accept", "*/*")]))
    assert req.id == (5 << 22) + 9
    assert req.conf_token == 77
    assert req.method == METHODS.index("PUT")
    assert req.path == "/api/v1"
    assert req.src_ip == bytes([192, 0, 2, 7])
    assert req.args == [("a", "1")]
    assert req.headers == [("host", "example.com"), ("accept", "*/*")]


def test_http_req_call_id_0_is_read_as_0(codec):
    assert codec.decode_http_req_call(req_call(id=0, conf_token=3)).id == 0


def test_http_req_call_max_uint32_id_and_conf_token(codec):
    req = codec.decode_http_req_call(req_call(id=U32_MAX, conf_token=U32_MAX))
    assert (req.id, req.conf_token) == (U32_MAX, U32_MAX)


def test_http_req_call_from_empty_table_reads_defaults(codec):
    req = codec.decode_http_req_call(empty_table())
    assert (req.id, req.method, req.conf_token) == (0, 0, 0)
    assert req.path is None and req.src_ip is None
    assert req.args == [] and req.headers == []


def test_absent_src_ip_is_none(codec):
    assert codec.decode_http_req_call(req_call(path="/")).src_ip is None


def test_16_byte_src_ip_is_read_whole(codec):
    ip = bytes(range(1, 17))
    src_ip = codec.decode_http_req_call(req_call(src_ip=ip)).src_ip
    assert type(src_ip) is bytes and src_ip == ip


def test_absent_path_is_none_and_empty_path_is_empty(codec):
    assert codec.decode_http_req_call(req_call()).path is None
    assert codec.decode_http_req_call(req_call(path="")).path == ""


@pytest.mark.parametrize("method", range(len(METHODS)))
def test_every_method_value_is_read(codec, method):
    assert codec.decode_http_req_call(req_call(method=method)).method == method


@pytest.mark.parametrize("method", [15, 128, 255])
def test_method_above_trace_is_decode_error(codec, method):
    with pytest.raises(DecodeError):
        codec.decode_http_req_call(req_call(method=method))


def test_bare_query_arg_has_no_value(codec):
    assert codec.decode_http_req_call(req_call(args=[("flag", None)])).args == [("flag", None)]


def test_empty_query_arg_value_is_empty_string(codec):
    assert codec.decode_http_req_call(req_call(args=[("y", "")])).args == [("y", "")]


def test_repeated_arg_and_header_names_keep_their_order(codec):
    args = [("x", "1"), ("y", "a"), ("x", "2")]
    headers = [("accept", "a"), ("cookie", "c1"), ("accept", "b"), ("cookie", "c2")]
    req = codec.decode_http_req_call(req_call(args=args, headers=headers))
    assert req.args == args and req.headers == headers


@pytest.mark.parametrize("entries", [None, []])
def test_absent_or_empty_entry_vectors_read_as_empty_list(codec, entries):
    req = codec.decode_http_req_call(req_call(args=entries, headers=entries))
    assert req.args == [] and req.headers == []


def test_non_utf8_bytes_survive_as_surrogate_escapes(codec):
    raw = b"\xff\xfe\xc3("
    req = codec.decode_http_req_call(req_call(path=b"/p" + raw, headers=[(b"x-" + raw, raw)]))
    assert req.path.encode("utf-8", "surrogateescape") == b"/p" + raw
    (name, value), = req.headers
    assert name.encode("utf-8", "surrogateescape") == b"x-" + raw
    assert value.encode("utf-8", "surrogateescape") == raw


def test_utf8_text_is_decoded(codec):
    req = codec.decode_http_req_call(req_call(path="/caf\u00e9", headers=[("x", "\u2603")]))
    assert req.path == "/caf\u00e9" and req.headers == [("x", "\u2603")]


def test_text_entry_without_name_has_name_none(codec):
    payload = fb_table(7, lambda b: fb_entries(b, [(None, "v"), ("n", None)]),
                       lambda b, vector: b.PrependUOffsetTRelativeSlot(5, vector, 0))
    assert codec.decode_http_req_call(payload).headers == [(None, "v"), ("n", None)]


def test_string_needs_no_trailing_nul(codec):
    payload = req_call(path="/abc")
    # The path is the last object: dropping its NUL leaves every byte the reader needs.
    assert payload.endswith(b"/abc\x00")
    assert codec.decode_http_req_call(payload[:-1]).path == "/abc"
    patched = bytearray(payload)
    patched[-1] = ord("X")
    assert codec.decode_http_req_call(bytes(patched)).path == "/abc"


def test_unknown_extra_vtable_slots_are_ignored(codec):
    def add(builder, _):
        builder.PrependUint32Slot(0, 42, 0)
        builder.PrependUint32Slot(6, 9, 0)
        builder.PrependUint32Slot(10, 0xDEAD, 0)   # a field from a future schema

    req = codec.decode_http_req_call(fb_table(11, fields=add))
    assert (req.id, req.conf_token, req.headers) == (42, 9, [])


def test_lazy_fields_are_decoded_once_and_cached(codec):
    req = codec.decode_http_req_call(req_call(path="/", args=[("a", "b")], headers=[("h", "v")]))
    assert req.headers is req.headers
    assert req.args is req.args


def test_corrupt_headers_raise_only_when_accessed(codec):
    payload = req_call(path="/ok", args=[("a", "1")], headers=[("h", "v")])
    vector = target(payload, root_field(payload, 5))
    payload = patched_u32(payload, vector, 0x7FFFFFFF)
    req = codec.decode_http_req_call(payload)
    assert (req.id, req.conf_token, req.path, req.args) == (1, 2, "/ok", [("a", "1")])
    for _ in range(2):
        with pytest.raises(DecodeError):
            req.headers


def test_corrupt_path_raises_on_every_access_but_leaves_others_readable(codec):
    payload = req_call(path="/ok", headers=[("h", "v")])
    payload = patched_u32(payload, root_field(payload, 3), 0x7FFFFFF0)
    req = codec.decode_http_req_call(payload)
    for _ in range(2):
        with pytest.raises(DecodeError):
            req.path
    assert req.headers == [("h", "v")]


def test_decoded_request_ignores_later_changes_to_a_reused_buffer(codec):
    data = bytearray(req_call(path="/keep", headers=[("h", "v")]))
    req = codec.decode_http_req_call(data)
    data[:] = bytes(len(data))
    assert req.path == "/keep" and req.headers == [("h", "v")]


def test_repr_names_the_message_and_its_id(codec):
    text = repr(codec.decode_http_req_call(req_call(id=12345)))
    assert "HTTPReqCallReq" in text and "12345" in text
    text = repr(codec.decode_http_resp_call(resp_call(id=54321)))
    assert "HTTPRespCallReq" in text and "54321" in text
    text = repr(codec.decode_prepare_conf_req(payload_of(gateway.encode_prepare_conf_req(
        [("p", "{}")], key="route#9"))))
    assert "PrepareConfReq" in text and "route#9" in text


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decoders_accept_any_bytes_like(codec, wrap):
    payload = req_call(id=3, path="/w", headers=[("h", "v")])
    req = codec.decode_http_req_call(wrap(payload))
    assert (req.id, req.path, req.headers) == (3, "/w", [("h", "v")])
    assert codec.decode_extra_info_resp(wrap(payload_of(
        gateway.encode_extra_info_resp(b"r")))) == b"r"


@pytest.mark.parametrize("payload", ["text", 12, None, [1, 2, 3, 4]])
def test_decoders_reject_non_bytes_with_decode_error(codec, payload):
    for decode in (codec.decode_prepare_conf_req, codec.decode_http_req_call,
                   codec.decode_http_resp_call, codec.decode_extra_info_resp):
        with pytest.raises(DecodeError):
            decode(payload)


# ---------------------------------------------------------------------------------------------
# HTTPRespCall.Req and ExtraInfo.Resp

def test_http_resp_call_reads_every_field(codec):
    headers = [("content-type", "text/html"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]
    req = codec.decode_http_resp_call(resp_call(id=0, conf_token=U32_MAX, status=404,
                                                headers=headers))
    assert (req.id, req.conf_token, req.status) == (0, U32_MAX, 404)
    assert req.headers == headers


def test_http_resp_call_from_empty_table_reads_defaults(codec):
    req = codec.decode_http_resp_call(empty_table())
    assert (req.id, req.status, req.conf_token, req.headers) == (0, 0, 0, [])


def test_http_resp_call_max_status(codec):
    assert codec.decode_http_resp_call(resp_call(status=0xFFFF)).status == 0xFFFF


def test_http_resp_call_corrupt_headers_raise_only_when_accessed(codec):
    payload = resp_call(status=200, headers=[("h", "v")])
    entry_slot = target(payload, root_field(payload, 2)) + 4
    payload = patched_u32(payload, entry_slot, len(payload))
    req = codec.decode_http_resp_call(payload)
    assert req.status == 200
    for _ in range(2):
        with pytest.raises(DecodeError):
            req.headers


def test_extra_info_result_is_bytes(codec):
    body = bytes(range(256))
    assert codec.decode_extra_info_resp(payload_of(gateway.encode_extra_info_resp(body))) == body


def test_extra_info_absent_result_is_none_and_empty_is_empty(codec):
    assert codec.decode_extra_info_resp(payload_of(gateway.encode_extra_info_resp(None))) is None
    assert codec.decode_extra_info_resp(payload_of(gateway.encode_extra_info_resp(b""))) == b""


# ---------------------------------------------------------------------------------------------
# Malformed input: DecodeError and nothing else

@pytest.mark.parametrize("kind,payload", SAMPLES, ids=SAMPLE_IDS)
def test_truncation_at_every_length_is_decode_error(codec, kind, payload):
    whole = read_all(codec, kind, payload)
    # Only trailing NULs and padding can go without losing a byte the reader checks.
    needed = len(payload.rstrip(b"\x00"))
    for length in range(len(payload)):
        try:
            got = read_all(codec, kind, payload[:length])
        except DecodeError:
            continue
        assert length >= needed, "truncated to %d bytes but decoded" % length
        assert got == whole


@pytest.mark.parametrize("kind,payload", SAMPLES, ids=SAMPLE_IDS)
def test_every_single_byte_change_is_decoded_or_decode_error(codec, kind, payload):
    for index in range(len(payload)):
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            data = bytearray(payload)
            data[index] = value
            try:
                read_all(codec, kind, bytes(data))
            except DecodeError:
                pass


@pytest.mark.parametrize("kind", ["prepare_conf", "http_req_call", "http_resp_call",
                                  "extra_info_resp"])
@fixture_ok
@given(data=st.binary(max_size=96))
def test_random_bytes_are_decoded_or_decode_error(codec, kind, data):
    try:
        read_all(codec, kind, data)
    except DecodeError:
        pass


def test_root_offset_outside_the_buffer_is_decode_error(codec):
    payload = req_call()
    for root in (len(payload) - 3, len(payload), 0x7FFFFFFF, U32_MAX):
        with pytest.raises(DecodeError):
            codec.decode_http_req_call(patched_u32(payload, 0, root))


def test_vtable_outside_the_buffer_is_decode_error(codec):
    payload = req_call()
    root = struct.unpack_from("<I", payload, 0)[0]
    for soffset in (root + 1, -len(payload), 0x7FFFFFFF, -0x80000000):
        data = bytearray(payload)
        struct.pack_into("<i", data, root, soffset)
        with pytest.raises(DecodeError):
            codec.decode_http_req_call(bytes(data))


def _vtable_of(payload):
    root = struct.unpack_from("<I", payload, 0)[0]
    return root, root - struct.unpack_from("<i", payload, root)[0]


@pytest.mark.parametrize("vtsize", [0, 2, 5, 0xFFFE])
def test_bad_vtable_size_is_decode_error(codec, vtsize):
    payload = bytearray(req_call())
    _, vt = _vtable_of(payload)
    struct.pack_into("<H", payload, vt, vtsize)
    with pytest.raises(DecodeError):
        codec.decode_http_req_call(bytes(payload))


@pytest.mark.parametrize("tblsize", [0, 3, 0xFFFF])
def test_bad_table_size_is_decode_error(codec, tblsize):
    payload = bytearray(req_call())
    _, vt = _vtable_of(payload)
    struct.pack_into("<H", payload, vt + 2, tblsize)
    with pytest.raises(DecodeError):
        codec.decode_http_req_call(bytes(payload))


def test_scalar_field_beyond_the_table_inline_size_is_decode_error(codec):
    # Children follow the table, so only the inline-size check can catch the overrun.
    payload = bytearray(req_call(path="/p", headers=[("h", "v")]))
    _, vt = _vtable_of(payload)
    tblsize = struct.unpack_from("<H", payload, vt + 2)[0]
    struct.pack_into("<H", payload, vt + 4, tblsize - 3)   # id: 4 bytes, only 3 left
    with pytest.raises(DecodeError):
        codec.decode_http_req_call(bytes(payload))


def test_offset_field_beyond_the_table_inline_size_raises_on_access(codec):
    payload = bytearray(req_call(path="/p"))
    _, vt = _vtable_of(payload)
    tblsize = struct.unpack_from("<H", payload, vt + 2)[0]
    struct.pack_into("<H", payload, vt + 4 + 2 * 3, tblsize - 2)
    req = codec.decode_http_req_call(bytes(payload))
    with pytest.raises(DecodeError):
        req.path


LAZY_FIELDS = [(1, "src_ip"), (3, "path"), (4, "args"), (5, "headers")]


@pytest.mark.parametrize("slot,attr", LAZY_FIELDS)
@pytest.mark.parametrize("offset", [0x7FFFFFFF, U32_MAX])
def test_offset_pointing_outside_the_buffer_is_decode_error(codec, slot, attr, offset):
    payload = req_call(path="/p", src_ip="::1", args=[("a", "b")], headers=[("h", "v")])
    req = codec.decode_http_req_call(patched_u32(payload, root_field(payload, slot), offset))
    with pytest.raises(DecodeError):
        getattr(req, attr)


@pytest.mark.parametrize("slot,attr", LAZY_FIELDS)
def test_zero_offset_pointing_at_itself_is_decode_error(codec, slot, attr):
    # No builder writes it; the official C++ verifier rejects it too.
    payload = req_call(path="/p", src_ip="::1", args=[("a", "b")], headers=[("h", "v")])
    req = codec.decode_http_req_call(patched_u32(payload, root_field(payload, slot), 0))
    with pytest.raises(DecodeError):
        getattr(req, attr)


@pytest.mark.parametrize("slot,attr", LAZY_FIELDS)
@pytest.mark.parametrize("length", [0x7FFFFFFF, 0x80000000, U32_MAX, 0x40000000])
def test_vector_length_beyond_the_buffer_is_decode_error(codec, slot, attr, length):
    payload = req_call(path="/p", src_ip="::1", args=[("a", "b")], headers=[("h", "v")])
    vector = target(payload, root_field(payload, slot))
    req = codec.decode_http_req_call(patched_u32(payload, vector, length))
    with pytest.raises(DecodeError):
        getattr(req, attr)


@pytest.mark.parametrize("which", ["element", "name", "value"])
def test_entry_offsets_pointing_outside_are_decode_error(codec, which):
    payload = req_call(headers=[("h", "v")])
    element = target(payload, root_field(payload, 5)) + 4
    if which != "element":
        entry = target(payload, element)
        entry_table = Table(bytearray(payload), entry)
        element = entry + entry_table.Offset(4 if which == "name" else 6)
    req = codec.decode_http_req_call(patched_u32(payload, element, 0x7FFFFFF0))
    with pytest.raises(DecodeError):
        req.headers


def test_extra_info_result_length_beyond_the_buffer_is_decode_error(codec):
    payload = payload_of(gateway.encode_extra_info_resp(b"abc"))
    vector = target(payload, root_field(payload, 0))
    with pytest.raises(DecodeError):
        codec.decode_extra_info_resp(patched_u32(payload, vector, 0x7FFFFFFF))


def test_prepare_conf_corrupt_entry_is_decode_error_at_once(codec):
    payload = payload_of(gateway.encode_prepare_conf_req([("p", "{}")], key="k"))
    element = target(payload, root_field(payload, 0)) + 4
    with pytest.raises(DecodeError):
        codec.decode_prepare_conf_req(patched_u32(payload, element, U32_MAX))


# ---------------------------------------------------------------------------------------------
# Shared offsets: FlatBuffers lets any number of offsets point at one object, so a small payload
# can name one entry over and over.  Decoding stays bounded by the payload's size.

def fb_entry(builder, name, value, share=False):
    """One TextEntry table; ``share`` makes its strings with CreateSharedString."""
    create = builder.CreateSharedString if share else builder.CreateString
    name_off = None if name is None else create(name)
    value_off = None if value is None else create(value)
    builder.StartObject(2)
    if name_off is not None:
        builder.PrependUOffsetTRelativeSlot(0, name_off, 0)
    if value_off is not None:
        builder.PrependUOffsetTRelativeSlot(1, value_off, 0)
    return builder.EndObject()


def fb_vector(builder, tables):
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    return builder.EndVector()


# (message, root slot count, slot of the vector, attribute that reads it)
ENTRY_VECTORS = [("prepare_conf", 2, 0, "conf"), ("http_req_call", 7, 5, "headers"),
                 ("http_req_call", 7, 4, "args"), ("http_resp_call", 4, 2, "headers")]
ENTRY_VECTOR_IDS = ["%s.%s" % (kind, attr) for kind, _, _, attr in ENTRY_VECTORS]


def vector_payload(nslots, slot, make_tables):
    """A payload whose root has one [TextEntry] at ``slot``, of the tables ``make_tables``
    returns (the same table any number of times, if it likes)."""
    return fb_table(nslots, lambda b: fb_vector(b, make_tables(b)),
                    lambda b, vector: b.PrependUOffsetTRelativeSlot(slot, vector, 0))


def read_vector(codec, kind, attr, payload):
    if kind == "prepare_conf":
        return codec.decode_prepare_conf_req(payload).conf
    if kind == "http_req_call":
        return getattr(codec.decode_http_req_call(payload), attr)
    return getattr(codec.decode_http_resp_call(payload), attr)


def text_size(entries):
    return sum(len(name or "") + len(value or "") for name, value in entries)


@pytest.mark.parametrize("kind,nslots,slot,attr", ENTRY_VECTORS, ids=ENTRY_VECTOR_IDS)
def test_vector_whose_slots_all_share_one_large_entry_is_decode_error(codec, kind, nslots, slot,
                                                                      attr):
    # 33 KB that would decode to 4096 copies of a 16 KiB value: 64 MiB of text
    payload = vector_payload(nslots, slot, lambda b: [fb_entry(b, "x", "v" * 16384)] * 4096)
    assert len(payload) < 34000
    if kind != "prepare_conf":
        codec_decode = (codec.decode_http_req_call if kind == "http_req_call"
                        else codec.decode_http_resp_call)
        req = codec_decode(payload)   # the lazy vector is refused when read, every time
        for _ in range(2):
            with pytest.raises(DecodeError):
                getattr(req, attr)
    with pytest.raises(DecodeError):
        read_vector(codec, kind, attr, payload)


@pytest.mark.parametrize("kind,nslots,slot,attr", ENTRY_VECTORS, ids=ENTRY_VECTOR_IDS)
def test_vector_whose_slots_all_share_one_small_entry_is_decode_error(codec, kind, nslots, slot,
                                                                      attr):
    # One 4-byte slot per entry of (name, value): more entries than the payload could hold apart
    payload = vector_payload(nslots, slot, lambda b: [fb_entry(b, "n", "v")] * 20000)
    with pytest.raises(DecodeError):
        read_vector(codec, kind, attr, payload)


@fixture_ok
@given(count=st.integers(1, 3000), distinct=st.integers(1, 3),
       name=st.none() | st.text("ab", max_size=40), value=st.none() | st.text("xy", max_size=600),
       shared=st.booleans())
def test_any_vector_of_shared_entries_decodes_to_at_most_twice_its_payload(
        codec, count, distinct, name, value, shared):
    def tables(builder):
        made = [fb_entry(builder, name, value, shared) for _ in range(distinct)]
        return [made[i % distinct] for i in range(count)]

    for kind, nslots, slot, attr in ENTRY_VECTORS:
        payload = vector_payload(nslots, slot, tables)
        if count <= distinct and not shared:
            entries = read_vector(codec, kind, attr, payload)  # nothing shared: always read
        else:
            try:
                entries = read_vector(codec, kind, attr, payload)
            except DecodeError:
                continue
        assert entries == [(name, value)] * count
        assert text_size(entries) <= 2 * len(payload) + 4096


def test_entries_sharing_a_few_strings_still_decode(codec):
    # CreateSharedString, as a builder may use for repeated names and values
    headers = [("accept", "*/*"), ("x-forwarded-for", "10.0.0.1"), ("cookie", "c" * 200)]
    headers += [("x-dup-%d" % i, "same value for every one of them") for i in range(40)]
    headers += [("cookie", "c" * 200)] * 3
    payload = vector_payload(7, 5, lambda b: [fb_entry(b, n, v, share=True) for n, v in headers])
    assert codec.decode_http_req_call(payload).headers == headers


def test_headers_and_args_sharing_one_vector_both_decode(codec):
    pairs = [("k%d" % i, "v" * 100) for i in range(50)]

    def fields(builder, vector):
        builder.PrependUOffsetTRelativeSlot(4, vector, 0)
        builder.PrependUOffsetTRelativeSlot(5, vector, 0)

    payload = fb_table(7, lambda b: fb_vector(b, [fb_entry(b, n, v) for n, v in pairs]), fields)
    req = codec.decode_http_req_call(payload)
    assert req.args == pairs and req.headers == pairs


def conf_vector_payload(count, key=None):
    """A PrepareConf payload whose conf vector has ``count`` slots holding 0: an offset pointing
    at itself, which no entry read could get past."""
    def children(builder):
        key_off = None if key is None else builder.CreateString(key)
        builder.StartVector(4, count, 4)
        for _ in range(count):
            builder.PrependUint32(0)
        return builder.EndVector(), key_off

    def fields(builder, made):
        builder.PrependUOffsetTRelativeSlot(0, made[0], 0)
        if made[1] is not None:
            builder.PrependUOffsetTRelativeSlot(1, made[1], 0)

    return fb_table(2, children, fields)


def test_prepare_conf_over_max_entries_is_refused_before_any_entry_is_read(codec):
    payload = conf_vector_payload(1025, key="route#big")
    with pytest.raises(TooManyPlugins) as refused:
        codec.decode_prepare_conf_req(payload, max_entries=1024)
    assert (refused.value.count, refused.value.limit, refused.value.key) == (
        1025, 1024, "route#big")
    # within the limit the entries are read, and these cannot be
    with pytest.raises(DecodeError) as unreadable:
        codec.decode_prepare_conf_req(payload, max_entries=1025)
    assert not isinstance(unreadable.value, TooManyPlugins)


def test_prepare_conf_up_to_max_entries_is_read_whole(codec):
    conf = [("a", "{}"), ("b", None), ("c", '{"x":1}')]
    payload = payload_of(gateway.encode_prepare_conf_req(conf, key="k"))
    for limit in (3, 4, None):
        req = codec.decode_prepare_conf_req(payload, max_entries=limit)
        assert (req.conf, req.key) == (conf, "k")
    assert codec.decode_prepare_conf_req(payload).conf == conf
    with pytest.raises(TooManyPlugins):
        codec.decode_prepare_conf_req(payload, max_entries=2)
    empty = payload_of(gateway.encode_prepare_conf_req(None))
    assert codec.decode_prepare_conf_req(empty, max_entries=0).conf == []


# ---------------------------------------------------------------------------------------------
# Reading in place: the message is buf[start:end] of a bigger buffer (a whole frame, a receive
# buffer), and none of its offsets may reach a byte outside that part

def framed(payload, rpc_type=RPC_HTTP_REQ_CALL):
    return bytes((rpc_type,)) + len(payload).to_bytes(3, "big") + payload


def strided(data):
    """``data`` as a memoryview that is not contiguous (every other byte of a bigger buffer)."""
    return memoryview(bytes(b for byte in data for b in (byte, 0)))[::2]


BUFFERS = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview, "strided": strided}
JUNK = {
    "frame-header": lambda payload: (framed(payload)[:4], b""),
    "bytes-around": lambda payload: (bytes(range(7)), b"\xff" * 9),
    # valid FlatBuffers on both sides: the same message again
    "copies-around": lambda payload: (payload, payload),
}


@pytest.mark.parametrize("wrap", BUFFERS.values(), ids=BUFFERS.keys())
@pytest.mark.parametrize("kind,payload", SAMPLES, ids=SAMPLE_IDS)
def test_every_decoder_reads_a_message_between_junk_as_its_sliced_payload(codec, kind, payload,
                                                                          wrap):
    whole = read_all(codec, kind, payload)
    for junk in JUNK.values():
        before, after = junk(payload)
        buf = wrap(before + payload + after)
        start, end = len(before), len(before) + len(payload)
        assert read_all(codec, kind, buf, start, end) == whole
        if not after:
            assert read_all(codec, kind, buf, start) == whole
            assert read_all(codec, kind, buf, start, None) == whole


def test_bounds_are_taken_by_position_or_by_name_and_by_the_constructors(codec):
    payload = req_call(id=9, path="/p", headers=[("h", "v")])
    buf = b"\x00" * 5 + payload + b"\x00" * 3
    start, end = 5, 5 + len(payload)
    for req in (codec.decode_http_req_call(buf, start, end),
                codec.decode_http_req_call(buf, start=start, end=end),
                codec.HTTPReqCallReq(buf, start, end),
                codec.HTTPReqCallReq(buf, end=end, start=start)):
        assert (req.id, req.path, req.headers) == (9, "/p", [("h", "v")])
    payload = resp_call(id=8, status=201)
    buf = b"\x00" * 5 + payload
    for req in (codec.decode_http_resp_call(buf, 5), codec.decode_http_resp_call(buf, start=5),
                codec.HTTPRespCallReq(buf, 5), codec.HTTPRespCallReq(buf, start=5, end=None)):
        assert (req.id, req.status) == (8, 201)
    payload = payload_of(gateway.encode_prepare_conf_req([("p", "{}")], key="k"))
    buf = b"\x00" * 5 + payload
    for req in (codec.decode_prepare_conf_req(buf, None, 5),
                codec.decode_prepare_conf_req(buf, start=5, max_entries=1),
                codec.PrepareConfReq(buf, 1, 5, len(buf)), codec.PrepareConfReq(buf, start=5)):
        assert (req.conf, req.key) == ([("p", "{}")], "k")
    with pytest.raises(TooManyPlugins):
        codec.decode_prepare_conf_req(buf, 0, 5)
    payload = payload_of(gateway.encode_extra_info_resp(b"body"))
    buf = b"\x00" * 5 + payload + b"\x00"
    assert codec.decode_extra_info_resp(buf, 5, len(buf) - 1) == b"body"
    assert codec.decode_extra_info_resp(buf, end=len(buf) - 1, start=5) == b"body"


# Each decoder with bounds, as a callable of (codec, buf, start, end).
BOUNDED_DECODERS = {
    "prepare_conf": lambda c, buf, *bounds: c.decode_prepare_conf_req(buf, None, *bounds),
    "http_req_call": lambda c, buf, *bounds: c.decode_http_req_call(buf, *bounds),
    "http_resp_call": lambda c, buf, *bounds: c.decode_http_resp_call(buf, *bounds),
    "extra_info_resp": lambda c, buf, *bounds: c.decode_extra_info_resp(buf, *bounds),
    "HTTPReqCallReq": lambda c, buf, *bounds: c.HTTPReqCallReq(buf, *bounds),
}
BAD_BOUNDS = {
    "start-true": (True, None), "start-false": (False, None), "end-true": (0, True),
    "start-negative": (-1, None), "end-negative": (0, -1), "end-before-start": (5, 4),
    "start-past-the-end": (41, None), "end-past-the-end": (0, 41), "start-2**64": (2 ** 64, None),
    "end-2**64": (0, 2 ** 64), "start--2**64": (-2 ** 64, 40), "start-none": (None, None),
    "start-float": (4.0, None), "end-float": (4, 40.0), "start-str": ("4", None),
    "end-bytes": (0, b"4"),
}


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, strided],
                         ids=["bytes", "bytearray", "memoryview", "strided"])
@pytest.mark.parametrize("start,end", BAD_BOUNDS.values(), ids=BAD_BOUNDS.keys())
def test_bounds_that_are_not_ints_within_the_buffer_are_decode_error(codec, start, end, wrap):
    buf = wrap(bytes(40))
    for decode in BOUNDED_DECODERS.values():
        with pytest.raises(DecodeError):
            decode(codec, buf, start, end)


def test_bounds_error_names_the_bounds_and_the_buffer_size(codec):
    with pytest.raises(DecodeError, match=r"^payload \[3:41\] is not within the 40 bytes"):
        codec.decode_http_req_call(bytes(40), 3, 41)
    with pytest.raises(DecodeError, match=r"^payload start must be an int, not bool$"):
        codec.decode_http_resp_call(bytearray(40), True)
    with pytest.raises(DecodeError, match=r"^payload end must be an int or None, not float$"):
        codec.decode_extra_info_resp(memoryview(bytes(40)), 0, 4.0)


def test_bounds_count_bytes_of_a_buffer_of_wider_items(codec):
    payload = req_call(id=5, path="/wide")
    padded = b"\x00" * 4 + payload + b"\x00" * (-len(payload) % 4)
    view = memoryview(padded).cast("I")
    req = codec.decode_http_req_call(view, 4, 4 + len(payload))
    assert (req.id, req.path) == (5, "/wide")
    with pytest.raises(DecodeError):
        codec.decode_http_req_call(view, 0, len(padded) + 1)


def test_released_buffer_is_decode_error(codec):
    view = memoryview(req_call())
    view.release()
    for decode in BOUNDED_DECODERS.values():
        with pytest.raises(DecodeError):
            decode(codec, view)
        with pytest.raises(DecodeError):
            decode(codec, view, 0, None)


def test_empty_part_is_decode_error_as_an_empty_payload_is(codec):
    buf = framed(req_call())
    for decode in BOUNDED_DECODERS.values():
        for start in (0, 4, len(buf)):
            with pytest.raises(DecodeError):
                decode(codec, buf, start, start)


def _rich_req_call():
    return req_call(path="/p", src_ip="::1", args=[("a", "b")], headers=[("h", "v")])


def _entry_field(payload, element, slot):
    """Where the uoffset of field ``slot`` of the entry at vector element ``element`` sits."""
    entry = target(payload, element)
    offset = Table(bytearray(payload), entry).Offset(4 + 2 * slot)
    assert offset
    return entry + offset


def _element(payload, slot):
    return target(payload, root_field(payload, slot)) + 4


# Every offset of each message, as (decoder, message, where the offset is stored, what reads
# it from the decoded message: an eager decoder has read everything already).
def _prepare_conf():
    return payload_of(gateway.encode_prepare_conf_req([("p", "{}")], key="k"))


def _extra_info():
    return payload_of(gateway.encode_extra_info_resp(b"body"))


def _resp_call():
    return resp_call(headers=[("h", "v")])


def _fields(req):
    return req.id, req.path, req.src_ip, req.args, req.headers


def _conf(req):
    return req.conf, req.key


REQ, RESP, CONF, INFO = ("decode_http_req_call", "decode_http_resp_call",
                         "decode_prepare_conf_req", "decode_extra_info_resp")
FORWARD_OFFSETS = {
    "req-root": (REQ, _rich_req_call, lambda p: 0, _fields),
    "req-src_ip": (REQ, _rich_req_call, lambda p: root_field(p, 1), lambda req: req.src_ip),
    "req-path": (REQ, _rich_req_call, lambda p: root_field(p, 3), lambda req: req.path),
    "req-args": (REQ, _rich_req_call, lambda p: root_field(p, 4), lambda req: req.args),
    "req-args-lookup": (REQ, _rich_req_call, lambda p: root_field(p, 4),
                        lambda req: req.arg_values("a")),
    "req-arg-entry-lookup": (REQ, _rich_req_call, lambda p: _element(p, 4),
                             lambda req: req.arg_values("zz")),
    "req-headers": (REQ, _rich_req_call, lambda p: root_field(p, 5), lambda req: req.headers),
    "req-headers-lookup": (REQ, _rich_req_call, lambda p: root_field(p, 5),
                           lambda req: req.header_values("h")),
    "req-header-entry": (REQ, _rich_req_call, lambda p: _element(p, 5),
                         lambda req: req.headers),
    "req-header-entry-lookup": (REQ, _rich_req_call, lambda p: _element(p, 5),
                                lambda req: req.header_values("H")),
    "req-header-name-lookup": (REQ, _rich_req_call, lambda p: _entry_field(p, _element(p, 5), 0),
                               lambda req: req.header_values("x")),
    "req-header-value": (REQ, _rich_req_call, lambda p: _entry_field(p, _element(p, 5), 1),
                         lambda req: req.headers),
    "req-header-value-lookup": (REQ, _rich_req_call,
                                lambda p: _entry_field(p, _element(p, 5), 1),
                                lambda req: req.header_values("h")),
    "resp-root": (RESP, _resp_call, lambda p: 0, lambda req: (req.id, req.headers)),
    "resp-headers": (RESP, _resp_call, lambda p: root_field(p, 2), lambda req: req.headers),
    "resp-header-entry-lookup": (RESP, _resp_call, lambda p: _element(p, 2),
                                 lambda req: req.header_values("h")),
    "conf-root": (CONF, _prepare_conf, lambda p: 0, _conf),
    "conf-key": (CONF, _prepare_conf, lambda p: root_field(p, 1), _conf),
    "conf-vector": (CONF, _prepare_conf, lambda p: root_field(p, 0), _conf),
    "conf-entry": (CONF, _prepare_conf, lambda p: _element(p, 0), _conf),
    "conf-entry-name": (CONF, _prepare_conf, lambda p: _entry_field(p, _element(p, 0), 0), _conf),
    "info-root": (INFO, _extra_info, lambda p: 0, lambda result: result),
    "info-result": (INFO, _extra_info, lambda p: root_field(p, 0), lambda result: result),
}


@pytest.mark.parametrize("decoder,make,where,read", FORWARD_OFFSETS.values(),
                         ids=FORWARD_OFFSETS.keys())
def test_offset_into_the_bytes_after_end_is_decode_error(codec, decoder, make, where, read):
    # The attacker's case: the offset is moved by one message length, onto the same object in a
    # copy of the message right after it (the next frame, say).  Bounded by the buffer, the read
    # would succeed; bounded by the message, it must not.
    decode = getattr(codec, decoder)
    payload = make()
    at = where(payload)
    moved = patched_u32(payload, at, struct.unpack_from("<I", payload, at)[0] + len(payload))
    buf = framed(moved) + payload
    assert read(decode(buf, start=4)) == read(decode(payload))    # the buffer's bound
    with pytest.raises(DecodeError):
        read(decode(buf, start=4, end=4 + len(moved)))
    with pytest.raises(DecodeError):
        read(decode(moved))                                         # as the message alone


def _root(payload):
    return struct.unpack_from("<I", payload, 0)[0]


# Every table of each message, as (decoder, message, where it is, what reads it): its vtable is
# found by a signed offset, the one kind of offset that can point backwards.
BACKWARD_TABLES = {
    "req-root": (REQ, _rich_req_call, _root, _fields),
    "req-header-entry": (REQ, _rich_req_call, lambda p: target(p, _element(p, 5)),
                         lambda req: req.headers),
    "req-header-entry-lookup": (REQ, _rich_req_call, lambda p: target(p, _element(p, 5)),
                                lambda req: req.header_values("nothing")),
    "req-arg-entry-lookup": (REQ, _rich_req_call, lambda p: target(p, _element(p, 4)),
                             lambda req: req.arg_values("a")),
    "resp-root": (RESP, _resp_call, _root, lambda req: (req.id, req.headers)),
    "resp-header-entry-lookup": (RESP, _resp_call, lambda p: target(p, _element(p, 2)),
                                 lambda req: req.header_values("h")),
    "conf-root": (CONF, _prepare_conf, _root, _conf),
    "conf-entry": (CONF, _prepare_conf, lambda p: target(p, _element(p, 0)), _conf),
    "info-root": (INFO, _extra_info, _root, lambda result: result),
}


@pytest.mark.parametrize("decoder,make,where,read", BACKWARD_TABLES.values(),
                         ids=BACKWARD_TABLES.keys())
def test_vtable_in_the_bytes_before_start_is_decode_error(codec, decoder, make, where, read):
    # The table's vtable is moved back by one message length, onto the same vtable in a copy of
    # the message right before it (the frame header and an earlier frame, say).
    decode = getattr(codec, decoder)
    payload = make()
    table = where(payload)
    soffset = struct.unpack_from("<i", payload, table)[0]
    moved = bytearray(payload)
    struct.pack_into("<i", moved, table, soffset + len(payload))
    moved = bytes(moved)
    buf = payload + moved
    start = len(payload)
    # the official reader, bounded by nothing, finds a vtable there
    assert Table(bytearray(buf), start + table).Offset(4) == Table(bytearray(payload),
                                                                   table).Offset(4) != 0
    with pytest.raises(DecodeError):
        read(decode(buf, start=start))
    with pytest.raises(DecodeError):
        read(decode(moved))


def test_string_running_into_the_bytes_after_end_is_decode_error(codec):
    payload = req_call(path="/abc", src_ip="10.0.0.1")
    for slot, attr in ((3, "path"), (1, "src_ip")):
        string = target(payload, root_field(payload, slot))
        longer = patched_u32(payload, string, len(payload) - string)   # 4 bytes past the end
        buf = framed(longer) + b"next"
        tail = b"next" if attr == "src_ip" else "next"
        assert getattr(codec.decode_http_req_call(buf, 4), attr).endswith(tail)
        with pytest.raises(DecodeError):
            getattr(codec.decode_http_req_call(buf, 4, 4 + len(longer)), attr)
    payload = payload_of(gateway.encode_extra_info_resp(b"abc"))
    result = target(payload, root_field(payload, 0))
    longer = patched_u32(payload, result, len(payload) - result)
    assert codec.decode_extra_info_resp(longer + b"next").endswith(b"next")
    with pytest.raises(DecodeError):
        codec.decode_extra_info_resp(b"prev" + longer + b"next", 4, 4 + len(longer))


def test_budget_is_twice_the_message_not_the_buffer(codec):
    # The smallest count of slots sharing one entry that is refused alone is refused in place
    # too, however many bytes the buffer holds around it.
    def make(count):
        return vector_payload(7, 5, lambda b: [fb_entry(b, "n", "v" * 100)] * count)

    def refused(buf, *bounds):
        try:
            codec.decode_http_req_call(buf, *bounds).headers
        except DecodeError:
            return True
        return False

    count = next(count for count in range(1, 200) if refused(make(count)))
    payload = make(count)
    junk = bytes(8 * len(payload))
    assert refused(junk + payload + junk, len(junk), len(junk) + len(payload))
    assert not refused(junk + make(count - 1) + junk, len(junk), len(junk) + len(make(count - 1)))


def test_message_read_from_a_bytearray_ignores_later_changes_to_it(codec):
    payload = req_call(path="/keep", src_ip="10.0.0.1", args=[("a", "1")],
                       headers=[("h", "v"), ("H", "w")])
    rbuf = bytearray(framed(payload) + b"the next frame")
    req = codec.decode_http_req_call(rbuf, 4, 4 + len(payload))
    resp_payload = resp_call(status=201, headers=[("h", "v")])
    rbuf2 = bytearray(b"xx" + resp_payload)
    resp = codec.decode_http_resp_call(rbuf2, 2)
    rbuf[:] = bytes(len(rbuf))       # reused: overwritten, then shrunk
    rbuf2[:] = b"\xff" * len(rbuf2)
    del rbuf[4:]
    del rbuf2[:]
    assert (req.path, req.src_ip, req.args, req.headers) == (
        "/keep", bytes([10, 0, 0, 1]), [("a", "1")], [("h", "v"), ("H", "w")])
    assert req.header_values("h") == ["v", "w"] and req.arg_values("a") == ["1"]
    assert (resp.status, resp.headers, resp.header_values("H")) == (201, [("h", "v")], ["v"])


def _traced_growth(call):
    """``call()`` and the most memory it had allocated at once meanwhile, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


MIB = 1 << 20


def test_message_in_a_bytearray_is_copied_once_and_only_its_part(codec):
    payload = req_call(path="/p", headers=[("h", "v" * MIB)])
    rbuf = bytearray(bytes(4 * MIB) + framed(payload) + bytes(4 * MIB))
    start = 4 * MIB + 4
    req, grown = _traced_growth(lambda: codec.decode_http_req_call(rbuf, start,
                                                                   start + len(payload)))
    assert len(payload) <= grown < len(payload) + 64 * 1024      # one copy: not two, nor rbuf
    assert req.path == "/p"


@pytest.mark.compiled
def test_compiled_decoder_reads_a_bytes_frame_without_copying_it():
    from a6fast import _codec
    payload = req_call(path="/p", headers=[("h", "v" * MIB)])
    frame = framed(payload) + bytes(MIB)
    for decode in (lambda: _codec.decode_http_req_call(frame, 4, 4 + len(payload)),
                   lambda: _codec.HTTPReqCallReq(frame, 4, 4 + len(payload))):
        req, grown = _traced_growth(decode)
        assert grown < 4096, grown                                  # no copy of 1 MiB
        assert req.path == "/p" and req.header_values("h") == ["v" * MIB]
    resp_payload = resp_call(headers=[("h", "v" * MIB)])
    frame = framed(resp_payload, RPC_HTTP_RESP_CALL)
    resp, grown = _traced_growth(lambda: _codec.decode_http_resp_call(frame, 4))
    assert grown < 4096, grown
    assert resp.headers == [("h", "v" * MIB)]


@pytest.mark.compiled
def test_compiled_extra_info_result_is_the_one_copy_made_of_a_bytearray():
    from a6fast import _codec
    payload = payload_of(gateway.encode_extra_info_resp(b"r" * MIB))
    rbuf = bytearray(framed(payload, RPC_EXTRA_INFO) + bytes(MIB))
    result, grown = _traced_growth(lambda: _codec.decode_extra_info_resp(
        rbuf, 4, 4 + len(payload)))
    assert result == b"r" * MIB
    assert MIB <= grown < MIB + 4096, grown


# ---------------------------------------------------------------------------------------------
# Lookups by name: header_values (any case, as str.lower) and arg_values (exact), defined as the
# same comprehension over the decoded list, errors and all

def by_definition(entries, name, any_case):
    if any_case:
        return [value for entry_name, value in entries
                if entry_name is not None and entry_name.lower() == name.lower()]
    return [value for entry_name, value in entries if entry_name == name]


# (decoder, root slot count, slot of the vector, list attribute, lookup method, any case)
LOOKUPS = {
    "req-headers": ("decode_http_req_call", 7, 5, "headers", "header_values", True),
    "req-args": ("decode_http_req_call", 7, 4, "args", "arg_values", False),
    "resp-headers": ("decode_http_resp_call", 4, 2, "headers", "header_values", True),
}


def entries_payload(nslots, slot, entries):
    """A payload whose root has the [TextEntry] ``entries`` (names may be None or bytes) at
    ``slot``, written by the official builder."""
    return fb_table(nslots, lambda b: fb_entries(b, entries),
                    lambda b, vector: b.PrependUOffsetTRelativeSlot(slot, vector, 0))


def test_header_values_are_every_value_of_the_name_in_any_case_in_order(codec):
    headers = [("Accept", "a"), ("cookie", "c1"), ("ACCEPT", None), ("x", "1"), ("Cookie", "c2"),
               ("accept", "")]
    req = codec.decode_http_req_call(req_call(headers=headers))
    assert req.header_values("accept") == ["a", None, ""]
    assert req.header_values("COOKIE") == ["c1", "c2"]
    assert req.header_values("missing") == []
    assert req.header_values("") == []
    resp = codec.decode_http_resp_call(resp_call(headers=[("Set-Cookie", "a"),
                                                          ("set-cookie", "b")]))
    assert resp.header_values("SET-COOKIE") == ["a", "b"]


def test_arg_values_are_every_value_of_the_exact_name_in_order(codec):
    args = [("a", "1"), ("A", "2"), ("flag", None), ("a", ""), ("ab", "3")]
    req = codec.decode_http_req_call(req_call(args=args))
    assert req.arg_values("a") == ["1", ""]
    assert req.arg_values("A") == ["2"]
    assert req.arg_values("flag") == [None]
    assert req.arg_values("b") == []


def test_header_names_compare_as_str_lower_does_beyond_ascii(codec):
    headers = [("\u212aey", "kelvin"), ("key", "ascii"), ("\u00c9t\u00e9", "e"),
               ("\u00e9T\u00c9", "E"), ("stra\u00dfe", "sharp"), ("STRASSE", "ss"),
               (b"x-\xff", "raw"), (b"X-\xff", "RAW"), (b"x-\xc3", "cut")]
    req = codec.decode_http_req_call(req_call(headers=headers))
    assert req.header_values("KEY") == ["kelvin", "ascii"]          # KELVIN SIGN lowers to k
    assert req.header_values("\u212aEY") == ["kelvin", "ascii"]
    assert req.header_values("\u00e9t\u00e9") == ["e", "E"]
    assert req.header_values("STRASSE") == ["ss"]                    # lower() is not casefold()
    assert req.header_values("Stra\u00dfe") == ["sharp"]
    assert req.header_values("x-\udcff") == ["raw", "RAW"]           # invalid UTF-8, escaped
    assert req.header_values("x-\udcc3") == ["cut"]
    assert req.header_values("x-\u00ff") == []


def test_kelvin_sign_is_the_one_character_beyond_ascii_that_lowers_into_ascii():
    # The compiled lookup decodes a non-ASCII header name only if it could lower to the ASCII
    # name sought, which it may only through this character (3 bytes in UTF-8, lowered to "k").
    import sys
    assert [c for c in range(0x80, sys.maxunicode + 1) if chr(c).lower().isascii()] == [0x212A]


def test_names_with_several_kelvin_signs_match_as_lowered(codec):
    headers = [("KK", "two"), ("kk", "ascii"), ("Kk", "one"), ("xK", "no"),
               ("kKKy", "three")]
    req = codec.decode_http_req_call(req_call(headers=headers))
    assert req.header_values("KK") == ["two", "ascii", "one"]
    assert req.header_values("kkky") == ["three"]
    assert req.header_values("xk") == ["no"]


def test_arg_names_compare_as_the_decoded_str(codec):
    args = [("caf\u00e9", "1"), (b"caf\xc3", "cut"), (b"x\xff", "raw"), ("\u00e9", "e")]
    req = codec.decode_http_req_call(req_call(args=args))
    assert req.arg_values("caf\u00e9") == ["1"]
    assert req.arg_values("caf\udcc3") == ["cut"]
    assert req.arg_values("x\udcff") == ["raw"]
    # the escapes of bytes that are valid UTF-8 are not what those bytes decode to
    assert req.arg_values("\udcc3\udca9") == []
    assert req.arg_values("\ud800") == [] and req.arg_values("x\udc7f") == []


def test_entry_without_a_name_matches_no_name(codec):
    payload = entries_payload(7, 5, [(None, "v"), ("", "empty"), ("n", None)])
    req = codec.decode_http_req_call(payload)
    assert req.header_values("") == ["empty"] and req.header_values("n") == [None]
    payload = entries_payload(7, 4, [(None, "v"), ("", "empty")])
    assert codec.decode_http_req_call(payload).arg_values("") == ["empty"]


@pytest.mark.parametrize("name", [None, 1, b"host", bytearray(b"host"), ("host",)])
def test_lookup_name_that_is_not_str_is_type_error(codec, name):
    req = codec.decode_http_req_call(req_call(args=[("host", "1")], headers=[("host", "h")]))
    resp = codec.decode_http_resp_call(resp_call(headers=[("host", "h")]))
    payload = req_call(args=[("a", "1")], headers=[("h", "v")])
    for slot in (4, 5):                     # the name is checked before any entry is read
        payload = patched_u32(payload, root_field(payload, slot), 0x7FFFFFF0)
    broken = codec.decode_http_req_call(payload)
    for lookup in (req.header_values, req.arg_values, resp.header_values, broken.header_values,
                   broken.arg_values):
        with pytest.raises(TypeError):
            lookup(name)


class Lowering(str):
    """A str subclass whose methods would give other answers, were they called."""

    def lower(self):
        return "host"

    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


def test_lookup_name_of_a_str_subclass_is_compared_as_its_str(codec):
    req = codec.decode_http_req_call(req_call(args=[("host", "1"), ("Ab", "2")],
                                              headers=[("host", "h"), ("AB", "x")]))
    assert req.header_values(Lowering("ab")) == ["x"]
    assert req.arg_values(Lowering("Ab")) == ["2"]


def test_lookups_are_not_cached_and_agree_with_the_decoded_lists(codec):
    headers = [("h", "1"), ("H", "2")]
    req = codec.decode_http_req_call(req_call(args=[("a", "1")], headers=headers))
    first = req.header_values("h")
    assert first == ["1", "2"] and req.header_values("h") is not first
    assert req.headers == headers                       # then the list, then the lookup again
    assert req.header_values("h") == ["1", "2"] and req.arg_values("a") == ["1"]


names = (st.sampled_from(["host", "Host", "HOST", "k", "K", "\u212a", "\u212aey", "key", "KEY",
                          "\u00df", "SS", "ss", "\u0130", "i\u0307", "I", "\u00e9", "\u00c9", ""])
         | st.text("aAkK\u212a\u00e9\u00c9\u0130-", max_size=4)
         | st.binary(max_size=4))
values = st.none() | st.text(max_size=4) | st.binary(max_size=3)
queries = (st.sampled_from(["host", "HOST", "k", "K", "\u212a", "\u212aEY", "KEY", "SS", "\u00df",
                            "i", "I", "\u0130", "i\u0307", "\u00e9", "\u00c9", "\udcff",
                            "\udcc3\udca9", "\ud800", ""])
           | st.text("aAkK\u212a\u00e9\u00c9\u0130-\udcff\udcc3", max_size=4))


@fixture_ok
@given(entries=st.lists(st.tuples(st.none() | names, values), max_size=12), data=st.data())
def test_lookups_agree_with_their_definition_on_any_entries(codec, entries, data):
    from_entries = [name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
                    for name, _ in entries if name is not None]
    query = data.draw(queries | (st.sampled_from(from_entries).map(str.swapcase)
                                 if from_entries else queries))
    for decoder, nslots, slot, attr, lookup, any_case in LOOKUPS.values():
        payload = entries_payload(nslots, slot, entries)
        got = getattr(getattr(codec, decoder)(payload), lookup)(query)   # nothing decoded yet
        req = getattr(codec, decoder)(payload)
        assert got == by_definition(getattr(req, attr), query, any_case)
        assert getattr(req, lookup)(query) == got                        # with the list cached


def _lookup_outcome(codec, decoder, attr, lookup, payload, name):
    """What the list and the lookup (each on a fresh message) give: values, or the error."""
    outcomes = []
    for read in (lambda req: getattr(req, attr), lambda req: getattr(req, lookup)(name)):
        try:
            outcomes.append(read(getattr(codec, decoder)(payload)))
        except DecodeError as exc:
            outcomes.append((type(exc), str(exc)))
    return outcomes


def _corruptions(payload, slot):
    """The [TextEntry] at ``slot`` of ``payload`` broken in each way a reader must catch."""
    vector = target(payload, root_field(payload, slot))
    last = vector + 4 * struct.unpack_from("<I", payload, vector)[0]     # the last element
    entry = target(payload, last)
    out = {
        "vector-offset": patched_u32(payload, root_field(payload, slot), 0x7FFFFFF0),
        "vector-length": patched_u32(payload, vector, 0x40000000),
        "first-element": patched_u32(payload, vector + 4, 0x7FFFFFF0),
        "last-element": patched_u32(payload, last, len(payload)),
        "last-element-zero": patched_u32(payload, last, 0),
        "last-name": patched_u32(payload, _entry_field(payload, last, 0), 0x7FFFFFF0),
        "last-value": patched_u32(payload, _entry_field(payload, last, 1), 0x7FFFFFF0),
        "last-vtable": bytes(payload[:entry]) + struct.pack("<i", entry + 8)
        + bytes(payload[entry + 4:]),
    }
    name = _entry_field(payload, last, 0)
    out["last-name-length"] = patched_u32(payload, target(payload, name), 0x7FFFFFFF)
    return out


@pytest.mark.parametrize("decoder,nslots,slot,attr,lookup,any_case", LOOKUPS.values(),
                         ids=LOOKUPS.keys())
def test_corrupt_entries_raise_the_same_error_from_the_lookup_as_from_the_list(
        codec, decoder, nslots, slot, attr, lookup, any_case):
    # The match comes first: a lookup walks every entry, as the list does.
    entries = [("h", "match"), ("x-other", "1"), ("x-last", "2")]
    kind = "http_resp_call" if decoder == "decode_http_resp_call" else "http_req_call"
    make = resp_call if kind == "http_resp_call" else req_call
    payload = make(**{attr: entries})
    for how, broken in _corruptions(payload, slot).items():
        for name in ("h", "x-last", "nothing"):
            as_list, as_lookup = _lookup_outcome(codec, decoder, attr, lookup, broken, name)
            assert as_list[0] is DecodeError or type(as_list) is tuple, (how, as_list)
            assert as_lookup == as_list, (how, name)
        req = getattr(codec, decoder)(broken)
        for _ in range(2):                                     # a failure is not cached
            with pytest.raises(DecodeError):
                getattr(req, lookup)("h")


@pytest.mark.parametrize("decoder,nslots,slot,attr,lookup,any_case", LOOKUPS.values(),
                         ids=LOOKUPS.keys())
def test_lookup_in_a_vector_whose_slots_all_share_one_entry_is_decode_error(
        codec, decoder, nslots, slot, attr, lookup, any_case):
    payload = vector_payload(nslots, slot, lambda b: [fb_entry(b, "x", "v" * 16384)] * 4096)
    req = getattr(codec, decoder)(payload)
    for name in ("x", "X", "other", "\u212a"):
        for _ in range(2):
            with pytest.raises(DecodeError):
                getattr(req, lookup)(name)
    payload = vector_payload(nslots, slot, lambda b: [fb_entry(b, "n", "v")] * 20000)
    with pytest.raises(DecodeError):
        getattr(getattr(codec, decoder)(payload), lookup)("zz")


@pytest.mark.parametrize("decoder,nslots,slot,attr,lookup,any_case", LOOKUPS.values(),
                         ids=LOOKUPS.keys())
def test_lookup_is_refused_from_the_same_shared_entry_count_on_as_the_list(
        codec, decoder, nslots, slot, attr, lookup, any_case):
    for name, value in [("n", "v" * 100), ("", ""), ("N", None), (None, "v" * 10)]:
        def outcome(count):
            payload = vector_payload(nslots, slot, lambda b: [fb_entry(b, name, value)] * count)
            return _lookup_outcome(codec, decoder, attr, lookup, payload, "n")

        low, high = 1, 1 << 14           # the list: read at low, refused at high
        assert isinstance(outcome(low)[0], list) and not isinstance(outcome(high)[0], list)
        while high - low > 1:
            middle = (low + high) // 2
            if isinstance(outcome(middle)[0], list):
                low = middle
            else:
                high = middle
        as_list, as_lookup = outcome(low)
        assert as_lookup == by_definition(as_list, "n", any_case) == (
            [value] * low if name == "n" or any_case and name == "N" else []), (name, value)
        as_list, as_lookup = outcome(high)
        assert as_lookup == as_list, (name, value)


@fixture_ok
@given(count=st.integers(1, 3000), distinct=st.integers(1, 3),
       name=st.none() | st.text("aB", max_size=40), value=st.none() | st.text("xy", max_size=600),
       shared=st.booleans(), query=st.text("ab", max_size=3))
def test_lookup_over_any_vector_of_shared_entries_is_the_list_searched_or_its_error(
        codec, count, distinct, name, value, shared, query):
    def tables(builder):
        made = [fb_entry(builder, name, value, shared) for _ in range(distinct)]
        return [made[i % distinct] for i in range(count)]

    for decoder, nslots, slot, attr, lookup, any_case in LOOKUPS.values():
        payload = vector_payload(nslots, slot, tables)
        as_list, as_lookup = _lookup_outcome(codec, decoder, attr, lookup, payload, query)
        if isinstance(as_list, list):
            assert as_lookup == by_definition(as_list, query, any_case)
        else:
            assert as_lookup == as_list


@pytest.mark.compiled
def test_compiled_header_lookup_keeps_no_object_per_header():
    # A lookup that built the header list would leave 60 tuples and 120 strs behind at least.
    from a6fast import _codec
    from a6fast.loadgen import request_headers
    payload = req_call(headers=request_headers(60))
    _codec.decode_http_req_call(payload).header_values("user-agent")  # what is made once is
    req = _codec.decode_http_req_call(payload)
    gc.disable()
    try:
        before = sys.getallocatedblocks()
        values = req.header_values("user-agent")
        kept = sys.getallocatedblocks() - before
    finally:
        gc.enable()
    assert values == ["Mozilla/5.0 (X11; Linux x86_64) load/1.0"]
    assert kept <= 4, kept                             # the list, its items and the value


@pytest.mark.compiled
def test_compiled_header_lookup_decodes_no_name_it_skips():
    # Each skipped name is 8 KiB: decoding any one of them, even to drop it at once, would take
    # more memory than the whole lookup is allowed.
    from a6fast import _codec
    headers = [("x-skipped-%02d-" % i + "n" * 8192, "v") for i in range(59)]
    headers.insert(30, ("User-Agent", "ua/1.0"))
    for name in ("user-agent", "USER-AGENT", "none-of-them"):
        req = _codec.decode_http_req_call(req_call(headers=headers))
        values, grown = _traced_growth(lambda: req.header_values(name))
        assert values == ([] if name == "none-of-them" else ["ua/1.0"])
        assert grown < 1024, (name, grown)


# ---------------------------------------------------------------------------------------------
# Writers, read back by the gateway side

def test_err_frame_carries_each_code(codec):
    for code in (0, 1, 2):
        assert gateway.decode_err(payload_of(codec.encode_err(code), RPC_ERR)) == code


def test_prepare_conf_resp_carries_the_token(codec):
    for token in (0, 1, U32_MAX):
        frame = codec.encode_prepare_conf_resp(token)
        assert gateway.decode_prepare_conf_resp(payload_of(frame, RPC_PREPARE_CONF)) == token


@pytest.mark.parametrize("id", [0, 1, U32_MAX])
def test_no_action_answers_the_id_with_action_none(codec, id):
    resp = gateway.decode_http_req_call_resp(payload_of(codec.encode_no_action(id),
                                                        RPC_HTTP_REQ_CALL))
    assert resp == (id, ACTION_NONE, None, None)


def test_stop_carries_status_headers_and_body(codec):
    headers = [("x-a", "1"), ("set-cookie", "a"), ("set-cookie", "b"), ("x-none", None)]
    frame = codec.encode_stop(0, 403, headers, b"denied\x00\xff")
    resp = gateway.decode_http_req_call_resp(payload_of(frame, RPC_HTTP_REQ_CALL))
    assert (resp.id, resp.action_type, resp.rewrite) == (0, ACTION_STOP, None)
    assert resp.stop == (403, headers, b"denied\x00\xff")


def test_stop_none_fields_are_absent_and_empty_ones_are_empty(codec):
    stop = gateway.decode_http_req_call_resp(payload_of(codec.encode_stop(5, 0, None, None))).stop
    assert stop == (0, None, None)
    stop = gateway.decode_http_req_call_resp(payload_of(codec.encode_stop(5, 200, [], b""))).stop
    assert stop == (200, [], b"")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bodies_accept_any_bytes_like(codec, wrap):
    stop = gateway.decode_http_req_call_resp(payload_of(
        codec.encode_stop(1, 200, None, wrap(b"abc")))).stop
    assert stop.body == b"abc"


def test_rewrite_carries_every_change(codec):
    frame = codec.encode_rewrite(7, "/new", [("x-add", "1"), ("x-del", None)],
                                 [("q", "v"), ("q", "w"), ("gone", None)],
                                 [("x-resp", "r")], b"new body")
    resp = gateway.decode_http_req_call_resp(payload_of(frame, RPC_HTTP_REQ_CALL))
    assert (resp.id, resp.action_type, resp.stop) == (7, ACTION_REWRITE, None)
    assert resp.rewrite == ("/new", [("x-add", "1"), ("x-del", None)],
                            [("q", "v"), ("q", "w"), ("gone", None)], [("x-resp", "r")],
                            b"new body")


def test_rewrite_none_fields_are_absent_and_empty_ones_are_empty(codec):
    absent = gateway.decode_http_req_call_resp(payload_of(
        codec.encode_rewrite(1, None, None, None, None, None))).rewrite
    assert absent == (None, None, None, None, None)
    empty = gateway.decode_http_req_call_resp(payload_of(
        codec.encode_rewrite(1, "", [], [], [], b""))).rewrite
    assert empty == ("", [], [], [], b"")


def test_writers_take_bytes_names_and_surrogate_escaped_text(codec):
    frame = codec.encode_rewrite(1, b"/b\xff", [(b"x-raw", b"\xfe")],
                                 [("k\udcff", "v\udcfe")], None, None)
    rewrite = gateway.decode_http_req_call_resp(payload_of(frame)).rewrite
    assert rewrite.path == "/b\udcff"
    assert rewrite.headers == [("x-raw", "\udcfe")]
    assert rewrite.args == [("k\udcff", "v\udcfe")]


def test_entry_lists_accept_any_iterable_of_pairs(codec):
    pairs = (pair for pair in [["a", "1"], ("b", None)])
    stop = gateway.decode_http_req_call_resp(payload_of(codec.encode_stop(1, 200, pairs,
                                                                          None))).stop
    assert stop.headers == [("a", "1"), ("b", None)]


def test_http_resp_call_resp_carries_status_headers_and_body(codec):
    frame = codec.encode_http_resp_call_resp(0, 201, [("a", "1"), ("a", "2")], b"x")
    resp = gateway.decode_http_resp_call_resp(payload_of(frame, RPC_HTTP_RESP_CALL))
    assert resp == (0, 201, [("a", "1"), ("a", "2")], b"x")


def test_http_resp_call_resp_with_nothing_set_has_nothing(codec):
    resp = gateway.decode_http_resp_call_resp(payload_of(
        codec.encode_http_resp_call_resp(9, 0, None, None)))
    assert resp == (9, 0, None, None)
    resp = gateway.decode_http_resp_call_resp(payload_of(
        codec.encode_http_resp_call_resp(9, 0, [], b"")))
    assert resp == (9, 0, [], b"")


def test_extra_info_requests_name_what_they_ask_for(codec):
    read = gateway.decode_extra_info_req
    assert read(payload_of(codec.encode_extra_info_var("remote_addr"), RPC_EXTRA_INFO)) == (
        INFO_VAR, "remote_addr")
    assert read(payload_of(codec.encode_extra_info_var(b"arg_\xff"))) == (INFO_VAR, "arg_\udcff")
    assert read(payload_of(codec.encode_extra_info_req_body(), RPC_EXTRA_INFO)) == (
        INFO_REQ_BODY, None)
    assert read(payload_of(codec.encode_extra_info_resp_body(), RPC_EXTRA_INFO)) == (
        INFO_RESP_BODY, None)


ENTRY = [(0, "str"), (1, "str")]
STOP = [(0, 2), (1, ENTRY), (2, "vec")]
REWRITE = [(0, "str"), (1, ENTRY), (2, ENTRY), (3, ENTRY), (4, "vec")]


def assert_aligned(payload, pos, spec):
    """Tables and vectors 4-byte aligned, vtables 2, scalars to their width (payload-relative)."""
    assert pos % 4 == 0
    vt = pos - struct.unpack_from("<i", payload, pos)[0]
    assert vt % 2 == 0
    table = Table(bytearray(payload), pos)
    for slot, kind in spec:
        offset = table.Offset(4 + 2 * slot)
        if not offset:
            continue
        at = pos + offset
        if isinstance(kind, int):
            assert at % kind == 0
            continue
        assert at % 4 == 0
        child = target(payload, at)
        assert child % 4 == 0
        if kind is ENTRY:
            count = struct.unpack_from("<I", payload, child)[0]
            for element in range(child + 4, child + 4 + 4 * count, 4):
                assert_aligned(payload, target(payload, element), ENTRY)
        elif isinstance(kind, list):
            assert_aligned(payload, child, kind)


@pytest.mark.parametrize("frame", [
    lambda c: (c.encode_stop(1, 403, [("a", "1"), ("bb", None)], b"xyz"), [
        (0, 4), (1, 1), (2, STOP)]),
    lambda c: (c.encode_rewrite(1, "/odd", [("h", "v")], [("a", None)], [("r", "s")], b"b"), [
        (0, 4), (1, 1), (2, REWRITE)]),
    lambda c: (c.encode_http_resp_call_resp(1, 201, [("h", "vvv")], b"12345"), [
        (0, 4), (1, 2), (2, ENTRY), (3, "vec")]),
    lambda c: (c.encode_extra_info_var("abc"), [(0, 1), (1, [(0, "str")])]),
    lambda c: (c.encode_err(2), [(0, 1)]),
], ids=["stop", "rewrite", "http-resp-call-resp", "extra-info-var", "err"])
def test_writers_align_every_object(codec, frame):
    data, spec = frame(codec)
    payload = payload_of(data)
    assert_aligned(payload, struct.unpack_from("<I", payload, 0)[0], spec)


def test_payload_of_exactly_max_size_is_written_and_one_more_byte_is_not(codec):
    overhead = len(codec.encode_stop(1, 200, None, b"")) - 4
    body = bytes(MAX_PAYLOAD - overhead)
    frame = codec.encode_stop(1, 200, None, body)
    assert len(frame) == 4 + MAX_PAYLOAD
    assert gateway.decode_http_req_call_resp(payload_of(frame)).stop.body == body
    with pytest.raises(EncodeError):
        codec.encode_stop(1, 200, None, body + b"x")


def test_payload_over_max_size_is_encode_error_for_every_big_field(codec):
    big = bytes(MAX_PAYLOAD)
    with pytest.raises(EncodeError):
        codec.encode_http_resp_call_resp(1, 200, None, big)
    with pytest.raises(EncodeError):
        codec.encode_rewrite(1, big, None, None, None, None)
    with pytest.raises(EncodeError):
        codec.encode_rewrite(1, None, [("h", big)], None, None, None)
    with pytest.raises(EncodeError):
        codec.encode_http_resp_call_resp(1, 0, [("h", "v" * 8)] * (MAX_PAYLOAD // 16), None)


BAD_WRITES = {
    "err-code-3": lambda c: c.encode_err(3),
    "err-code-negative": lambda c: c.encode_err(-1),
    "err-code-str": lambda c: c.encode_err("0"),
    "conf-token-2**32": lambda c: c.encode_prepare_conf_resp(U32_MAX + 1),
    "conf-token-negative": lambda c: c.encode_prepare_conf_resp(-1),
    "conf-token-float": lambda c: c.encode_prepare_conf_resp(1.0),
    "id-2**32": lambda c: c.encode_no_action(U32_MAX + 1),
    "id-none": lambda c: c.encode_no_action(None),
    "id-negative": lambda c: c.encode_rewrite(-1, None, None, None, None, None),
    "status-65536": lambda c: c.encode_stop(1, 0x10000, None, None),
    "status-negative": lambda c: c.encode_stop(1, -1, None, None),
    "resp-status-70000": lambda c: c.encode_http_resp_call_resp(1, 70000, None, None),
    "stop-body-str": lambda c: c.encode_stop(1, 200, None, "text body"),
    "stop-body-int": lambda c: c.encode_stop(1, 200, None, 12),
    "rewrite-body-str": lambda c: c.encode_rewrite(1, None, None, None, None, "body"),
    "resp-body-str": lambda c: c.encode_http_resp_call_resp(1, 200, None, "body"),
    "headers-int": lambda c: c.encode_stop(1, 200, 5, None),
    "headers-str": lambda c: c.encode_stop(1, 200, "ab", None),
    "headers-dict": lambda c: c.encode_stop(1, 200, {"a": "b"}, None),
    "entry-is-2-char-str": lambda c: c.encode_stop(1, 200, ["ab"], None),
    "entry-of-3": lambda c: c.encode_stop(1, 200, [("a", "b", "c")], None),
    "entry-name-none": lambda c: c.encode_stop(1, 200, [(None, "v")], None),
    "entry-name-int": lambda c: c.encode_stop(1, 200, [(1, "v")], None),
    "entry-value-int": lambda c: c.encode_stop(1, 200, [("n", 1)], None),
    "path-int": lambda c: c.encode_rewrite(1, 5, None, None, None, None),
    "path-lone-surrogate": lambda c: c.encode_rewrite(1, "\ud800", None, None, None, None),
    "var-name-none": lambda c: c.encode_extra_info_var(None),
    "var-name-int": lambda c: c.encode_extra_info_var(3),
}


@pytest.mark.parametrize("call", BAD_WRITES.values(), ids=BAD_WRITES.keys())
def test_wrong_types_and_out_of_range_values_are_encode_error(codec, call):
    with pytest.raises(EncodeError):
        call(codec)


# ---------------------------------------------------------------------------------------------
# Writers given arguments that change while they are read: each argument is taken as it is when
# the writer reads it (in argument order), what a later argument's code does cannot reach what
# was read before, and the outcome is a right frame or EncodeError.  Values dropped mid-write are
# 1 MiB, so that a writer still pointing into one reads memory given back to the system.

BIG = 1 << 20


def big(fill):
    """A fresh 1 MiB bytes object, held only where the caller puts it."""
    return bytes([fill]) * BIG


def test_args_iterable_dropping_a_header_value_leaves_the_header_as_read(codec):
    pair = [b"x-big", big(0x61)]

    def args():
        pair[1] = b"short"              # the header value read before loses its last reference
        yield ("a", "1")

    frame = codec.encode_rewrite(1, None, (pair,), args(), None, None)
    rewrite = gateway.decode_http_req_call_resp(payload_of(frame)).rewrite
    assert rewrite.headers == [("x-big", "a" * BIG)] and rewrite.args == [("a", "1")]
    assert pair == [b"x-big", b"short"]


def test_pair_whose_len_drops_an_earlier_value_leaves_that_entry_as_read(codec):
    victim = [b"x-a", big(0x62)]

    class Meddling(list):
        def __len__(self):
            victim[1] = b"short"
            return 2

    stop = gateway.decode_http_req_call_resp(payload_of(codec.encode_stop(
        1, 200, [victim, Meddling([b"x-b", b"2"])], None))).stop
    assert stop.headers == [("x-a", "b" * BIG), ("x-b", "2")]


def test_entries_iterable_emptying_earlier_lists_leaves_them_as_read(codec):
    headers = [[b"x-h", big(0x63)], [big(0x64), None]]
    args = [("a", big(0x65))]

    class Emptying:
        def __iter__(self):
            for pair in headers:
                pair.clear()
            headers.clear()
            args.clear()
            return iter([("r", "1")])

    frame = codec.encode_rewrite(1, "/p", headers, args, Emptying(), b"body")
    rewrite = gateway.decode_http_req_call_resp(payload_of(frame)).rewrite
    assert rewrite == ("/p", [("x-h", "c" * BIG), ("d" * BIG, None)], [("a", "e" * BIG)],
                       [("r", "1")], b"body")


def test_generator_of_pairs_held_by_nothing_else_is_written_whole(codec):
    def pairs():
        for i in range(3):
            yield [b"x-%d" % i, big(0x30 + i)]

    frame = codec.encode_http_resp_call_resp(1, 200, pairs(), None)
    headers = gateway.decode_http_resp_call_resp(payload_of(frame)).headers
    assert headers == [("x-%d" % i, chr(0x30 + i) * BIG) for i in range(3)]


def test_arguments_are_read_in_order_each_as_it_is_then(codec):
    body = bytearray(b"old")
    pair = [b"x-h", b"before"]

    class Id:
        def __index__(self):
            pair[1] = big(0x66)         # the headers are read after the id
            return 7

    def headers():
        yield tuple(pair)
        body[:] = b"new body, longer than the old one"    # the body is read last

    frame = codec.encode_stop(Id(), 200, headers(), body)
    resp = gateway.decode_http_req_call_resp(payload_of(frame))
    assert resp.id == 7
    assert resp.stop == (200, [("x-h", "f" * BIG)], b"new body, longer than the old one")


class MeddlingStr(str):
    """A str subclass whose methods would change the list it sits in, were they called."""
    calls = []

    def _meddle(self, *args, **kwargs):
        MeddlingStr.calls.append(self)
        return "x"

    __str__ = __len__ = __iter__ = __getitem__ = encode = _meddle


class MeddlingBytes(bytes):
    calls = []

    def _meddle(self, *args, **kwargs):
        MeddlingBytes.calls.append(bytes(self))
        return 1

    __len__ = __iter__ = __getitem__ = __bytes__ = _meddle


@pytest.mark.parametrize("where", ["name", "value", "path", "var"])
def test_str_subclass_text_is_encode_error_and_none_of_its_methods_run(codec, where):
    MeddlingStr.calls.clear()
    text = MeddlingStr("x-sub")
    with pytest.raises(EncodeError):
        if where == "name":
            codec.encode_stop(1, 200, [[text, "v"]], None)
        elif where == "value":
            codec.encode_rewrite(1, None, None, [("a", "1"), ("n", text)], None, None)
        elif where == "path":
            codec.encode_rewrite(1, text, [("h", "v")], None, None, None)
        else:
            codec.encode_extra_info_var(text)
    assert MeddlingStr.calls == []


def test_bytes_subclass_text_is_written_as_stored_and_none_of_its_methods_run(codec):
    MeddlingBytes.calls.clear()
    frame = codec.encode_rewrite(1, MeddlingBytes(b"/sub"), [(MeddlingBytes(b"x-n"),
                                                              MeddlingBytes(b"v"))],
                                 None, None, MeddlingBytes(b"body"))
    rewrite = gateway.decode_http_req_call_resp(payload_of(frame)).rewrite
    assert rewrite == ("/sub", [("x-n", "v")], None, None, b"body")
    assert MeddlingBytes.calls == []


def test_memoryview_released_before_it_is_read_is_encode_error(codec):
    view = memoryview(bytearray(b"body"))
    name = memoryview(b"x-view")

    def headers():
        view.release()
        yield ("h", "v")

    with pytest.raises(EncodeError):
        codec.encode_stop(1, 200, headers(), view)
    name.release()
    with pytest.raises(EncodeError):
        codec.encode_stop(1, 200, [(name, "v")], None)


def test_bytearray_value_changed_by_a_later_argument_is_written_as_read(codec):
    value = bytearray(big(0x67))

    def resp_headers():
        value[:] = b"short"             # a resize, were the writer still pointing into it
        yield ("r", "1")

    frame = codec.encode_rewrite(1, None, [("h", value)], None, resp_headers(), None)
    assert gateway.decode_http_req_call_resp(payload_of(frame)).rewrite.headers == [
        ("h", "g" * BIG)]


# ---------------------------------------------------------------------------------------------
# Round trips over arbitrary values

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.binary(max_size=12)
entries = st.lists(st.tuples(text, st.none() | text), max_size=6)


def as_str(value):
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def as_strs(pairs):
    return [(as_str(name), as_str(value)) for name, value in pairs]


@fixture_ok
@given(id=st.integers(0, U32_MAX), method=st.integers(0, 14), path=st.none() | text,
       src_ip=st.none() | st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16),
       args=entries, headers=entries)
def test_any_http_req_call_round_trips(codec, id, method, path, src_ip, args, headers):
    req = codec.decode_http_req_call(req_call(id=id, method=method, path=path, src_ip=src_ip,
                                              args=args, headers=headers))
    assert (req.id, req.method, req.path, req.src_ip) == (id, method, as_str(path), src_ip)
    assert req.args == as_strs(args) and req.headers == as_strs(headers)


@fixture_ok
@given(id=st.integers(0, U32_MAX), path=st.none() | text, headers=st.none() | entries,
       args=st.none() | entries, resp_headers=st.none() | entries,
       body=st.none() | st.binary(max_size=40))
def test_any_rewrite_round_trips(codec, id, path, headers, args, resp_headers, body):
    frame = codec.encode_rewrite(id, path, headers, args, resp_headers, body)
    resp = gateway.decode_http_req_call_resp(payload_of(frame, RPC_HTTP_REQ_CALL))
    maybe = lambda pairs: None if pairs is None else as_strs(pairs)  # noqa: E731
    assert resp.id == id
    assert resp.rewrite == (as_str(path), maybe(headers), maybe(args), maybe(resp_headers), body)


# ---------------------------------------------------------------------------------------------
# The gateway-side frame helpers these tests lean on

def test_read_frame_reads_exactly_one_frame_sent_in_pieces():
    first = gateway.encode_http_resp_call_req(1, 2, 200, [("h", "v" * 3000)])
    second = gateway.encode_extra_info_resp(b"next")
    left, right = socket.socketpair()
    with left, right:
        data = first + second

        def send():
            for at in range(0, len(data), 7):
                left.sendall(data[at:at + 7])

        sender = threading.Thread(target=send)
        sender.start()
        assert gateway.read_frame(right) == (RPC_HTTP_RESP_CALL, first[4:])
        assert gateway.read_frame(right) == (RPC_EXTRA_INFO, second[4:])
        sender.join()


def test_read_frame_raises_eof_error_when_the_peer_closes():
    left, right = socket.socketpair()
    with right:
        left.sendall(gateway.encode_extra_info_resp(b"abc")[:6])
        left.close()
        with pytest.raises(EOFError):
            gateway.read_frame(right)
        with pytest.raises(EOFError):
            gateway.read_frame(right)


def test_split_frames_returns_whole_frames_and_the_incomplete_rest():
    one = gateway.encode_extra_info_resp(b"1")
    two = gateway.encode_extra_info_resp(None)
    frames, rest = gateway.split_frames(one + two + two[:5])
    assert frames == [(RPC_EXTRA_INFO, one[4:]), (RPC_EXTRA_INFO, two[4:])]
    assert rest == two[:5]
    assert gateway.split_frames(b"\x03\x00") == ([], b"\x03\x00")


def test_gateway_rejects_an_action_type_without_its_table():
    payload = fb_table(3, fields=lambda builder, _: builder.PrependUint8Slot(1, ACTION_STOP, 0))
    with pytest.raises(DecodeError):
        gateway.decode_http_req_call_resp(payload)
