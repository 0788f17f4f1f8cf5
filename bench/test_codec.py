"""Codec benchmarks: compiled, pure and the flatbuffers reference side by side, one group each.

Each benchmark first checks that the implementation produces the right thing, then times it.
"""
from conftest import (CALL_BIG_PAYLOAD, CALL_FRAME, CALL_ID, CALL_PAYLOAD, check_request,
                      check_rewrite, check_stop, request_headers)


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
