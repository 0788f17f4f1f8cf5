"""One whole call through the runner's ``Connection`` (frame in, answer out, no syscalls): what
the live counters add to is this path.  ``counters`` keeps them as they run; ``counters-sampled``
makes every call a timed one (the worst case, one call in eight in real runs).  The difference
between the two rows is the cost of a timed call's two clock reads and histogram update."""
import os
import socket

import pytest

from a6fast import codec, gateway
from a6fast.protocol import RPC_HTTP_REQ_CALL
from a6fast.registry import Registry
from a6fast.server.confstore import ConfStore
from a6fast.server.loop import Loop
from a6fast.server.runner import Connection, Runner

from conftest import ARGS_5, CALL_ID, HEADERS_10, PATH, SRC_IP, STOP_EXAMPLE_CONF


class _Tokens:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


class _Socket:
    """Writes go to /dev/null (the connection writes to its fd); never registered with the loop:
    an inline call never waits."""

    def __init__(self):
        self.fd = os.open(os.devnull, os.O_WRONLY)

    def fileno(self):
        return self.fd

    def close(self):
        os.close(self.fd)


def _connection():
    """A real Runner on a real loop; its Connection writes to a socket that takes everything."""
    registry = Registry.load(plugin_dirs=[], builtins=True, entry_points=False)
    confs = ConfStore(_Tokens(), registry.prepare)
    token = confs.put("route#bench", [("stop", STOP_EXAMPLE_CONF)])
    listener, _ = socket.socketpair()
    runner = Runner(Loop(threads=1), listener, registry, confs)
    return Connection(runner, _Socket()), token


@pytest.mark.parametrize("mode", ["counters", "counters-sampled"],
                         ids=lambda m: "%s-%s" % (m, codec.IMPLEMENTATION))
def test_call_through_the_connection(benchmark, mode):
    benchmark.group = "one call through Connection.on_frame (stop example)"
    conn, token = _connection()
    frame = gateway.encode_http_req_call_req(CALL_ID, token, method="GET", path=PATH,
                                             src_ip=SRC_IP, args=ARGS_5, headers=HEADERS_10)
    on_frame = conn.on_frame
    runner = conn.runner
    conf = runner.confs.find(token)
    size = len(frame)
    if mode == "counters":
        def call():
            on_frame(RPC_HTTP_REQ_CALL, frame, 4, size)
    else:
        def call():
            conf.calls = 0  # the next call is a timed one
            on_frame(RPC_HTTP_REQ_CALL, frame, 4, size)
    call()
    assert conf.calls >= 1 and runner.stats.errors == [0, 0, 0]
    benchmark(call)
