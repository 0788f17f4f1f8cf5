"""One whole call in-process, no socket: decode the HTTPReqCall, run the ``stop`` example through
the plugin chain, encode its answer.  What the runner does per call, minus the loop and syscalls.

The chain encodes with ``a6fast.codec``, i.e. the compiled codec unless ``A6FAST_NO_EXTENSIONS``
is set, so the test id names that implementation (``A6FAST_NO_EXTENSIONS=1 make bench`` gives the
pure rows).
"""
import os

import pytest

from a6fast import codec, gateway
from a6fast.registry import Registry

from conftest import CALL_ID, REQUESTS, STOP_EXAMPLE_CONF, check_example_stop


@pytest.fixture(scope="module")
def stop_chain():
    registry = Registry.load(plugin_dirs=[], builtins=True, entry_points=False)
    return registry.prepare([("stop", STOP_EXAMPLE_CONF)], "route#bench#ext-plugin-pre-req#1")


@pytest.mark.parametrize("size", [pytest.param(size, id="%s-%s" % (size, codec.IMPLEMENTATION))
                                  for size in sorted(REQUESTS)])
def test_whole_call(benchmark, stop_chain, size):
    benchmark.group = "whole call in-process (stop)"
    payload, _ = REQUESTS[size]
    decode = codec.decode_http_req_call
    call_request = stop_chain.call_request

    def whole_call():
        return call_request(decode(payload), None)

    answer = whole_call()
    assert answer.__class__ is bytes, "the stop example must answer at once, got %r" % (answer,)
    check_example_stop(answer, CALL_ID)
    benchmark(whole_call)


@pytest.fixture(scope="module")
def header_chain():
    """bench/plugins/read_header.py: one request header read (the user agent), then a Stop: the
    cost of one header read must not grow with the headers it does not read."""
    registry = Registry.load(plugin_dirs=[os.path.join(os.path.dirname(__file__), "plugins")],
                             builtins=False, entry_points=False)
    return registry.prepare([("read-header", "{}")], "route#bench#ext-plugin-pre-req#2")


@pytest.mark.parametrize("size", [pytest.param(size, id="%s-%s" % (size, codec.IMPLEMENTATION))
                                  for size in sorted(REQUESTS)])
def test_whole_call_reading_one_header(benchmark, header_chain, size):
    benchmark.group = "whole call in-process (one header read, then stop)"
    payload, _ = REQUESTS[size]
    decode = codec.decode_http_req_call
    call_request = header_chain.call_request

    def whole_call():
        return call_request(decode(payload), None)

    answer = whole_call()
    check_example_stop(answer, CALL_ID)
    assert gateway.decode_http_req_call_resp(answer[4:]).stop.status == 200  # the header found
    benchmark(whole_call)
