"""Shared pieces of the benchmarks: the request frames and the three codec implementations.

Every benchmark sets ``benchmark.group`` and carries its implementation in the test id
(``compiled``, ``pure``, ``reference``), so ``make bench`` prints one side-by-side table per group
and, after the tables, the median ratios between the implementations.

``reference`` is the official ``flatbuffers`` library with the ``a6pluginprotos`` generated code
(module ``A6``) doing the same work as our codec: reading every field of an HTTPReqCall.Req with
its accessors (strings decoded to ``str`` the way our codec returns them) and building the answers
with the A6 builders.  The request frames are built here once, with the headers and args that
`a6fast bench` and the load generator of ``make floor`` send (``a6fast.loadgen``), so these
numbers and the socket numbers of ``make floor`` describe the same requests.
"""
import importlib
import statistics

import flatbuffers
import pytest
from A6 import Method, TextEntry
from A6.HTTPReqCall import Action, Resp, Rewrite, Stop
from A6.HTTPReqCall import Req as HCReq
from A6.PrepareConf import Req as PCReq

from a6fast import gateway
from a6fast.loadgen import REQUEST_ARGS, REQUEST_HEADERS, REQUEST_PATH, request_headers

IMPLEMENTATIONS = ("compiled", "pure", "reference")

# A conf_token for frames no runner reads (the earlier load generator's placeholder value).
TOKEN_PLACEHOLDER = 0xA6A6A6A6

# the request `a6fast bench` and make floor send
HEADERS_10 = list(REQUEST_HEADERS)
ARGS_5 = list(REQUEST_ARGS)
PATH = REQUEST_PATH
SRC_IP = bytes([10, 0, 0, 7])
CALL_ID = 42

# The answers the benchmarks encode (a Stop of the size the floor runner answers with).
STOP = dict(status=200, headers=[("x-runner", "ideal")], body=b"hi")
REWRITE = dict(path="/rewritten", headers=[("x-runner", "ideal"), ("x-user", "12345")])
# The conf of the built-in ``stop`` example that bench/floor.py and the whole-call bench run.
STOP_EXAMPLE_CONF = '{"body": "hi"}'


# ---------------------------------------------------------------------------------------------
# Frames, built with the reference encoder

def frame(rpc_type, payload):
    return bytes((rpc_type,)) + len(payload).to_bytes(3, "big") + payload


def _ref_entries(b, pairs):
    offsets = []
    for name, value in pairs:
        name_at = b.CreateString(name)
        value_at = None if value is None else b.CreateString(value)
        TextEntry.Start(b)
        TextEntry.AddName(b, name_at)
        if value_at is not None:
            TextEntry.AddValue(b, value_at)
        offsets.append(TextEntry.End(b))
    return offsets


def _ref_vector(b, start_vector, offsets):
    start_vector(b, len(offsets))
    for at in reversed(offsets):
        b.PrependUOffsetTRelative(at)
    return b.EndVector()


def build_call_frame(headers, conf_token=TOKEN_PLACEHOLDER):
    """An HTTPReqCall frame (GET, IPv4, ARGS_5) built with the official flatbuffers builder."""
    b = flatbuffers.Builder(1024)
    path = b.CreateString(PATH)
    args = _ref_vector(b, HCReq.StartArgsVector, _ref_entries(b, ARGS_5))
    hdrs = _ref_vector(b, HCReq.StartHeadersVector, _ref_entries(b, headers))
    ip = b.CreateByteVector(SRC_IP)
    HCReq.Start(b)
    HCReq.AddId(b, CALL_ID)
    HCReq.AddSrcIp(b, ip)
    HCReq.AddMethod(b, Method.Method.GET)
    HCReq.AddPath(b, path)
    HCReq.AddArgs(b, args)
    HCReq.AddHeaders(b, hdrs)
    HCReq.AddConfToken(b, conf_token)
    b.Finish(HCReq.End(b))
    return frame(2, bytes(b.Output()))


def build_prepare_frame(conf, key="route-1#plugins"):
    b = flatbuffers.Builder(256)
    key_at = b.CreateString(key)
    entries = _ref_vector(b, PCReq.StartConfVector, _ref_entries(b, conf))
    PCReq.Start(b)
    PCReq.AddConf(b, entries)
    PCReq.AddKey(b, key_at)
    b.Finish(PCReq.End(b))
    return frame(1, bytes(b.Output()))


CALL_FRAME = build_call_frame(request_headers(10))
CALL_BIG_FRAME = build_call_frame(request_headers(60, cookie=1024))
CALL_PAYLOAD = CALL_FRAME[4:]
CALL_BIG_PAYLOAD = CALL_BIG_FRAME[4:]

REQUESTS = {
    "10h": (CALL_PAYLOAD, request_headers(10)),
    "60h": (CALL_BIG_PAYLOAD, request_headers(60, cookie=1024)),
}


# ---------------------------------------------------------------------------------------------
# The same operations, three ways

class OurCodec:
    """a6fast's codec API, compiled or pure."""

    def __init__(self, module):
        self.module = module
        decode = module.decode_http_req_call
        decode_header = module.decode_header
        encode_header = module.encode_header
        encode_stop = module.encode_stop
        encode_rewrite = module.encode_rewrite

        def header_roundtrip(data):
            rpc_type, length = decode_header(data)
            return encode_header(rpc_type, length)

        def read_all(payload):
            req = decode(payload)
            return (req.id, req.src_ip, req.method, req.path, req.args, req.headers,
                    req.conf_token)

        def read_path(payload):
            return decode(payload).path

        def stop(call_id):
            return encode_stop(call_id, STOP["status"], STOP["headers"], STOP["body"])

        def rewrite(call_id):
            return encode_rewrite(call_id, REWRITE["path"], REWRITE["headers"], None, None, None)

        def read_all_then_rewrite(payload):
            req = decode(payload)
            # every field touched, as a plugin reading the whole request would
            req.src_ip, req.method, req.path, req.args, req.headers, req.conf_token
            return encode_rewrite(req.id, REWRITE["path"], REWRITE["headers"], None, None, None)

        self.header_roundtrip = header_roundtrip
        self.read_all = read_all
        self.read_path = read_path
        self.stop = stop
        self.rewrite = rewrite
        self.read_all_then_rewrite = read_all_then_rewrite


def _text(raw):
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


class ReferenceCodec:
    """flatbuffers + a6pluginprotos: the accessors and builders a runner on them would use."""

    module = None

    @staticmethod
    def header_roundtrip(data):
        rpc_type, length = data[0], int.from_bytes(data[1:4], "big")
        return bytes((rpc_type,)) + length.to_bytes(3, "big")

    @staticmethod
    def _entries(req, count, get):
        out = []
        for index in range(count):
            entry = get(index)
            out.append((_text(entry.Name()), _text(entry.Value())))
        return out

    @classmethod
    def read_all(cls, payload):
        req = HCReq.Req.GetRootAs(payload, 0)
        src_ip = None if req.SrcIpIsNone() else bytes(
            [req.SrcIp(index) for index in range(req.SrcIpLength())])
        return (req.Id(), src_ip, req.Method(), _text(req.Path()),
                cls._entries(req, req.ArgsLength(), req.Args),
                cls._entries(req, req.HeadersLength(), req.Headers), req.ConfToken())

    @staticmethod
    def read_path(payload):
        return _text(HCReq.Req.GetRootAs(payload, 0).Path())

    @staticmethod
    def _answer(b, call_id, action_type, action):
        Resp.Start(b)
        Resp.AddId(b, call_id)
        Resp.AddActionType(b, action_type)
        Resp.AddAction(b, action)
        b.Finish(Resp.End(b))
        return frame(2, bytes(b.Output()))

    @classmethod
    def stop(cls, call_id):
        b = flatbuffers.Builder(256)
        headers = _ref_vector(b, Stop.StartHeadersVector, _ref_entries(b, STOP["headers"]))
        body = b.CreateByteVector(STOP["body"])
        Stop.Start(b)
        Stop.AddStatus(b, STOP["status"])
        Stop.AddHeaders(b, headers)
        Stop.AddBody(b, body)
        return cls._answer(b, call_id, Action.Action.Stop, Stop.End(b))

    @classmethod
    def rewrite(cls, call_id):
        b = flatbuffers.Builder(256)
        headers = _ref_vector(b, Rewrite.StartHeadersVector, _ref_entries(b, REWRITE["headers"]))
        path = b.CreateString(REWRITE["path"])
        Rewrite.Start(b)
        Rewrite.AddPath(b, path)
        Rewrite.AddHeaders(b, headers)
        return cls._answer(b, call_id, Action.Action.Rewrite, Rewrite.End(b))

    @classmethod
    def read_all_then_rewrite(cls, payload):
        fields = cls.read_all(payload)
        return cls.rewrite(fields[0])


def load(name):
    """The implementation called ``name``; the compiled one is imported directly, so a missing
    extension fails here instead of silently benchmarking the pure fallback."""
    if name == "reference":
        return ReferenceCodec()
    return OurCodec(importlib.import_module("a6fast._codec" if name == "compiled"
                                            else "a6fast._codec_py"))


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return load(request.param)


def check_request(fields, headers):
    """What reading CALL_PAYLOAD / CALL_BIG_PAYLOAD must give, whichever implementation read it."""
    assert fields == (CALL_ID, SRC_IP, 0, PATH, ARGS_5, headers, TOKEN_PLACEHOLDER), fields


def check_stop(data):
    assert data[0] == 2 and int.from_bytes(data[1:4], "big") == len(data) - 4
    resp = gateway.decode_http_req_call_resp(data[4:])
    assert (resp.id, resp.action_type) == (CALL_ID, 1)
    assert resp.stop == (STOP["status"], STOP["headers"], STOP["body"]), resp


def check_example_stop(data, call_id):
    """The ``stop`` example's answer to STOP_EXAMPLE_CONF: a Stop with body "hi"."""
    assert data[0] == 2 and int.from_bytes(data[1:4], "big") == len(data) - 4, data[:4]
    resp = gateway.decode_http_req_call_resp(data[4:])
    assert (resp.id, resp.action_type) == (call_id, 1), resp
    assert resp.stop.body == b"hi", resp


def check_rewrite(data):
    assert data[0] == 2 and int.from_bytes(data[1:4], "big") == len(data) - 4
    resp = gateway.decode_http_req_call_resp(data[4:])
    assert (resp.id, resp.action_type) == (CALL_ID, 2)
    assert resp.rewrite == (REWRITE["path"], REWRITE["headers"], None, None, None), resp


# ---------------------------------------------------------------------------------------------
# Ratios after the tables

# (group, faster, slower, at least): targets the project holds itself to.
TARGETS = {
    ("decode 10h+5a + encode Rewrite", "reference", "compiled"): 50.0,
    ("decode 10h+5a + encode Rewrite", "pure", "compiled"): 10.0,
}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        if not bench.has_error and bench.stats:
            info = bench.as_dict(include_data=False)
            groups.setdefault(info["group"], {})[info["param"]] = info["stats"]["median"]
    write = terminalreporter.write_line
    write("")
    write("median ratios (how many times slower than the first; > 1 means slower)")
    for group, medians in groups.items():
        if not medians:
            continue
        base_param = min(medians, key=medians.get)
        parts = ["%s %.2f us" % (base_param, medians[base_param] * 1e6)]
        for param, median in sorted(medians.items(), key=lambda item: item[1]):
            if param != base_param:
                parts.append("%s %.1fx" % (param, median / medians[base_param]))
        write("  %-50s %s" % (group, ", ".join(parts)))
    for (group, slower, faster), least in TARGETS.items():
        medians = groups.get(group, {})
        if slower in medians and faster in medians:
            ratio = medians[slower] / medians[faster]
            write("  target %s: %s/%s = %.1fx (want >= %.0fx) %s" % (
                group, slower, faster, ratio, least, "ok" if ratio >= least else "MISSED"))
    call = groups.get("whole call in-process (stop)", {})
    small = [v for k, v in call.items() if k.startswith("10h")]
    big = [v for k, v in call.items() if k.startswith("60h")]
    if small and big:
        ratio = statistics.median(big) / statistics.median(small)
        write("  target whole call: 60h/10h = %.2fx (want <= 1.30x) %s" % (
            ratio, "ok" if ratio <= 1.3 else "MISSED"))
