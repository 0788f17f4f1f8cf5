"""Codec benchmarks: compiled, pure and the flatbuffers reference side by side, one group each.

Each benchmark first checks that the implementation produces the right thing, then times it.
"""
import importlib

import pytest
from conftest import (CALL_BIG_FRAME, CALL_BIG_PAYLOAD, CALL_FRAME, CALL_ID, CALL_PAYLOAD, PATH,
                      check_request, check_rewrite, check_stop, request_headers)

from a6fast.loadgen import REQUEST_HEADERS


def test_frame_header(benchmark, impl):
    benchmark.group = "frame header: decode + encode"
    header = CALL_FRAME[:4]
    assert impl.header_roundtrip(header) == header
    benchmark(impl.header_roundtrip, header)


def test_decode_req_call_every_field(benchmark, impl):
    benchmark.group = "decode HTTPReqCall 10h+5a: every field"
    check_request(impl.read_all(CALL_PAYLOAD), request_headers(10))
    benchmark(impl.read_all, CALL_PAYLOAD)


def test_decode_req_call_path_only(benchmark, impl):
    benchmark.group = "decode HTTPReqCall 10h+5a: path only"
    assert impl.read_path(CALL_PAYLOAD) == "/api/v1/users/12345/orders"
    benchmark(impl.read_path, CALL_PAYLOAD)


def test_decode_big_req_call_every_field(benchmark, impl):
    benchmark.group = "decode HTTPReqCall 60h+1KiB cookie: every field"
    check_request(impl.read_all(CALL_BIG_PAYLOAD), request_headers(60, cookie=1024))
    benchmark(impl.read_all, CALL_BIG_PAYLOAD)


def test_encode_stop(benchmark, impl):
    benchmark.group = "encode Stop"
    check_stop(impl.stop(CALL_ID))
    benchmark(impl.stop, CALL_ID)


def test_encode_rewrite(benchmark, impl):
    benchmark.group = "encode Rewrite 2 headers"
    check_rewrite(impl.rewrite(CALL_ID))
    benchmark(impl.rewrite, CALL_ID)


def test_decode_then_encode_rewrite(benchmark, impl):
    benchmark.group = "decode 10h+5a + encode Rewrite"
    check_rewrite(impl.read_all_then_rewrite(CALL_PAYLOAD))
    benchmark(impl.read_all_then_rewrite, CALL_PAYLOAD)


# ---------------------------------------------------------------------------------------------
# Reading in place and looking a header up, against the ways they replace: our codec only

OUR_CODECS = {"compiled": "a6fast._codec", "pure": "a6fast._codec_py"}
FRAMES = {"10h+5a": CALL_FRAME, "60h+1KiB cookie": CALL_BIG_FRAME}
USER_AGENT = dict(REQUEST_HEADERS)["user-agent"]


def _ways(*ways):
    return pytest.mark.parametrize("impl,way", [(impl, way) for impl in OUR_CODECS
                                                for way in ways],
                                   ids=["%s-%s" % (impl, way) for impl in OUR_CODECS
                                        for way in ways])


@pytest.mark.parametrize("size", FRAMES)
@_ways("in place", "sliced")
def test_decode_req_call_from_a_bytes_frame(benchmark, size, impl, way):
    benchmark.group = "decode HTTPReqCall %s from a bytes frame: path" % size
    decode = importlib.import_module(OUR_CODECS[impl]).decode_http_req_call
    frame = FRAMES[size]
    if way == "in place":
        def read_path():
            return decode(frame, 4).path
    else:
        def read_path():
            return decode(frame[4:]).path
    assert read_path() == PATH
    benchmark(read_path)


@pytest.mark.parametrize("size", FRAMES)
@_ways("in place", "copied")
def test_decode_req_call_from_a_receive_buffer(benchmark, size, impl, way):
    benchmark.group = "decode HTTPReqCall %s from a bytearray: path" % size
    decode = importlib.import_module(OUR_CODECS[impl]).decode_http_req_call
    frame = FRAMES[size]
    rbuf = bytearray(frame + frame)                   # the next frame behind it
    end = len(frame)
    if way == "in place":
        def read_path():
            return decode(rbuf, 4, end).path
    else:
        def read_path():
            return decode(bytes(rbuf[4:end])).path
    assert read_path() == PATH
    benchmark(read_path)


@pytest.mark.parametrize("size", FRAMES)
@_ways("header_values", "headers searched")
def test_header_lookup(benchmark, size, impl, way):
    benchmark.group = "decode HTTPReqCall %s: the user-agent header" % size
    decode = importlib.import_module(OUR_CODECS[impl]).decode_http_req_call
    payload = FRAMES[size][4:]
    if way == "header_values":
        def user_agent():
            return decode(payload).header_values("user-agent")
    else:
        def user_agent():
            return [value for name, value in decode(payload).headers
                    if name.lower() == "user-agent"]
    assert user_agent() == [USER_AGENT]
    benchmark(user_agent)
