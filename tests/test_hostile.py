"""Malformed bytes over a real socket: every bad frame with an intact boundary is answered with a
type 0 Err frame (never anything the gateway would read as success), a broken boundary closes
only that connection, each is logged with its reason, and the log is not flooded."""
import collections
import random
import re
import socket
import textwrap
import time

import flatbuffers
import pytest

from a6fast import gateway
from a6fast.protocol import (ACTION_STOP, BAD_REQUEST, RPC_ERR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
                             RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF, SERVICE_UNAVAILABLE)

from faultkit import (FAULT_PLUGINS, field_at, frame, prepare_conf_sharing_one_entry, put_u32,
                      req_call_frame, req_call_payload, root_of, rss_kib, target_of, vtable_of,
                      wait_until)
from harness import PrepareFailed, RunnerProcess, err_code, unread


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    proc = RunnerProcess(tmp_path_factory.mktemp("hostile"), "--plugins", FAULT_PLUGINS,
                         "--workers", "1", "--call-timeout", "5")
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def tokens(runner):
    with runner.gateway() as gw:
        return {name: gw.prepare([(name, "{}")], "route#" + name)
                for name in ("echo", "count-headers", "add-header")}


def assert_still_serving(runner, token):
    with runner.gateway() as gw:
        rpc_type, payload = gw.call(token, id=42, path="/alive")
    assert rpc_type == RPC_HTTP_REQ_CALL
    resp = gateway.decode_http_req_call_resp(payload)
    assert (resp.id, resp.action_type, resp.stop.body) == (42, ACTION_STOP, b"/alive")


def wait_for_log(runner, pattern, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        log = runner.log()
        if re.search(pattern, log) or time.monotonic() > deadline:
            return log
        time.sleep(0.02)


# Frames whose boundary is intact ----------------------------------------------------------------

@pytest.mark.parametrize("rpc_type", [RPC_ERR, RPC_PREPARE_CONF, RPC_HTTP_REQ_CALL,
                                      RPC_HTTP_RESP_CALL, 5, 127, 255])
def test_zero_length_payload_of_any_type_is_bad_request(runner, tokens, rpc_type):
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(frame(rpc_type, b""))) == BAD_REQUEST
        # the same connection goes on
        assert gw.call(tokens["echo"], path="/next")[0] == RPC_HTTP_REQ_CALL


@pytest.mark.parametrize("rpc_type", [5, 6, 64, 128, 255])
def test_unknown_rpc_type_is_bad_request(runner, tokens, rpc_type):
    payload = req_call_payload(tokens["echo"])
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(frame(rpc_type, bytes(payload)))) == BAD_REQUEST
        assert gw.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL


def test_prepare_conf_payload_sent_as_http_req_call_is_bad_request(runner, tokens):
    prepare = gateway.encode_prepare_conf_req([("echo", "{}")], "route#confused")
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(frame(RPC_HTTP_REQ_CALL, prepare[4:]))) == BAD_REQUEST
        assert err_code(gw.roundtrip(frame(RPC_HTTP_RESP_CALL, prepare[4:]))) == BAD_REQUEST
    assert_still_serving(runner, tokens["echo"])


def test_http_resp_call_payload_sent_as_http_req_call_is_bad_request(runner, tokens):
    resp_call = gateway.encode_http_resp_call_req(5, tokens["echo"], status=200,
                                                  headers=[("a", "1")])
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(frame(RPC_HTTP_REQ_CALL, resp_call[4:]))) == BAD_REQUEST


@pytest.mark.parametrize("payload", [b"", gateway.encode_extra_info_resp(b"stray")[4:]])
def test_extra_info_answer_outside_a_call_closes_the_connection_unanswered(runner, tokens,
                                                                          payload):
    # An answer nobody asked for cannot be answered: an Err would be read as the answer to the
    # gateway's next call.
    with runner.gateway() as gw:
        gw.send(frame(RPC_EXTRA_INFO, payload))
        assert gw.sock.recv(64) == b""
    with runner.gateway() as gw:
        assert gw.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL


def _corrupt(token, how):
    """An HTTPReqCall payload of ``token`` with one offset or length made hostile."""
    p = req_call_payload(token)
    root = root_of(p)
    if how == "root beyond the end":
        put_u32(p, 0, len(p) + 64)
    elif how == "root 0xFFFFFFFF":
        put_u32(p, 0, 0xFFFFFFFF)
    elif how == "vtable beyond the end":
        put_u32(p, root, (root - len(p) - 64) & 0xFFFFFFFF)  # soffset: vtable = root - soffset
    elif how == "vtable before the start":
        put_u32(p, root, root + 64)
    elif how == "vtable size beyond the end":
        vtable = vtable_of(p)
        p[vtable:vtable + 2] = (0xFFF0).to_bytes(2, "little")
    elif how == "table size beyond the end":
        vtable = vtable_of(p)
        p[vtable + 2:vtable + 4] = (0xFFF0).to_bytes(2, "little")
    elif how == "conf_token field beyond the end":
        vtable = vtable_of(p)
        p[vtable + 4 + 12:vtable + 4 + 14] = (0xFFF0).to_bytes(2, "little")
    else:
        raise AssertionError(how)
    return p


@pytest.mark.parametrize("how", ["root beyond the end", "root 0xFFFFFFFF", "vtable beyond the end",
                                 "vtable before the start", "vtable size beyond the end",
                                 "table size beyond the end", "conf_token field beyond the end"])
def test_root_and_vtable_offsets_outside_the_buffer_are_bad_request(runner, tokens, how):
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(req_call_frame(_corrupt(tokens["echo"], how)))) == BAD_REQUEST
        assert gw.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL


NEAR_2_31 = [0x3FFFFFFF, 0x40000000, 0x40000001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


@pytest.mark.parametrize("length", NEAR_2_31)
def test_path_string_length_near_2_31_read_by_a_plugin_is_bad_request(runner, tokens, length):
    p = req_call_payload(tokens["echo"])
    put_u32(p, target_of(p, field_at(p, root_of(p), 3)), length)
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(req_call_frame(p))) == BAD_REQUEST


def test_path_string_offset_outside_the_buffer_read_by_a_plugin_is_bad_request(runner, tokens):
    p = req_call_payload(tokens["echo"])
    at = field_at(p, root_of(p), 3)
    put_u32(p, at, len(p) - at + 8)
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(req_call_frame(p))) == BAD_REQUEST


def _corrupt_headers(token, how, length=None):
    p = req_call_payload(token)
    at = field_at(p, root_of(p), 5)
    vector = target_of(p, at)
    if how == "vector offset outside":
        put_u32(p, at, len(p) - at + 4)
    elif how == "vector offset 0xFFFFFFF0":
        put_u32(p, at, 0xFFFFFFF0)
    elif how == "vector length":
        put_u32(p, vector, length)
    elif how == "entry offset outside":
        put_u32(p, vector + 4, len(p))
    elif how == "entry name offset outside":
        entry = target_of(p, vector + 4)
        name_at = field_at(p, entry, 0)
        put_u32(p, name_at, len(p) - name_at + 16)
    elif how == "entry value length near 2^31":
        entry = target_of(p, vector + 4)
        put_u32(p, target_of(p, field_at(p, entry, 1)), 0x7FFFFFFF)
    else:
        raise AssertionError(how)
    return p


HEADER_CORRUPTIONS = [("vector offset outside", None), ("vector offset 0xFFFFFFF0", None),
                      ("entry offset outside", None), ("entry name offset outside", None),
                      ("entry value length near 2^31", None)] + [
    ("vector length", n) for n in NEAR_2_31]


@pytest.mark.parametrize("how,length", HEADER_CORRUPTIONS)
@pytest.mark.parametrize("plugin", ["count-headers", "add-header"])
def test_plugin_touching_a_corrupt_headers_vector_gets_bad_request_never_an_action(
        runner, tokens, plugin, how, length):
    p = _corrupt_headers(tokens[plugin], how, length)
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(req_call_frame(p))) == BAD_REQUEST
        assert gw.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL  # the connection goes on


def test_corrupt_headers_vector_no_plugin_reads_does_not_fail_the_call(runner, tokens):
    # Fields are decoded lazily: what no plugin looks at cannot sway its decision.
    p = _corrupt_headers(tokens["echo"], "vector length", 0x7FFFFFFF)
    with runner.gateway() as gw:
        rpc_type, payload = gw.roundtrip(req_call_frame(p))
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload).stop.body == b"/p"


def test_random_payloads_each_get_exactly_one_err_answer(runner, tokens):
    rnd = random.Random(20261122)
    good = bytes(req_call_payload(tokens["count-headers"]))
    with runner.gateway() as gw:
        for i in range(400):
            # (an ExtraInfo frame outside a call closes the connection: tested on its own)
            rpc_type = rnd.choice([RPC_ERR, RPC_PREPARE_CONF, RPC_HTTP_REQ_CALL,
                                   RPC_HTTP_RESP_CALL, rnd.randrange(5, 256)])
            if i % 2:
                payload = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 200)))
            else:  # a valid message with a few bytes changed: gets past the first checks
                payload = bytearray(good)
                for _ in range(rnd.randint(1, 4)):
                    payload[rnd.randrange(len(payload))] = rnd.randrange(256)
                payload = bytes(payload)
                if rpc_type == RPC_PREPARE_CONF:
                    rpc_type = RPC_HTTP_REQ_CALL
            answer_type, answer = gw.roundtrip(frame(rpc_type, payload))
            if rpc_type == RPC_PREPARE_CONF and answer_type == RPC_PREPARE_CONF:
                continue  # random bytes may well be a PrepareConf of an empty conf list
            if answer_type == RPC_HTTP_REQ_CALL and rpc_type == RPC_HTTP_REQ_CALL:
                # a mutation that left the message valid (it touched padding, say): the plugin
                # read every header, so the headers were well-formed
                resp = gateway.decode_http_req_call_resp(answer)
                assert resp.action_type == ACTION_STOP and resp.stop.status == 200
                continue
            assert answer_type == RPC_ERR, (i, rpc_type, payload, answer_type, answer)
        assert gw.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL
    assert_still_serving(runner, tokens["echo"])


def test_prepare_conf_listing_more_than_1024_plugins_is_bad_request(runner, tokens):
    with runner.gateway() as gw:
        assert gw.prepare([("echo", "{}")] * 1024, "route#1024")
        with pytest.raises(PrepareFailed) as failed:
            gw.prepare([("echo", "{}")] * 1025, "route#1025")
        assert failed.value.code == BAD_REQUEST


def test_prepare_conf_listing_a_million_copies_of_one_plugin_is_refused_cheaply(tmp_path, perf):
    # 4 MB on the wire; prepared, it would hold a chain of a million steps (about 0.5 GB).  A
    # runner of its own: the module's has its log's warnings limited by the tests before.
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1")
    try:
        with proc.gateway(timeout=30) as gw:
            token = gw.prepare([("echo", "{}")], "route#echo")
            before = rss_kib([proc.proc.pid])
            payload = prepare_conf_sharing_one_entry(1000000)
            assert err_code(gw.roundtrip(frame(RPC_PREPARE_CONF, payload))) == BAD_REQUEST
            assert gw.call(token)[0] == RPC_HTTP_REQ_CALL
            if perf:
                assert rss_kib([proc.proc.pid]) - before < 64 * 1024
        # refused for its plugin count, a check made before any chain is built
        log = wait_for_log(proc, "lists 1000000 plugins")
        assert "lists 1000000 plugins, more than 1024" in log, log
    finally:
        assert proc.stop() == 0


# Shared offsets: many slots naming one object ----------------------------------------------------

@pytest.fixture(scope="module", params=["compiled", "pure"])
def codec_runner(request, tmp_path_factory):
    """A runner on each codec (A6FAST_NO_EXTENSIONS picks the pure one)."""
    pure = request.param == "pure"
    proc = RunnerProcess(tmp_path_factory.mktemp("shared-" + request.param), "--plugins",
                         FAULT_PLUGINS, "--workers", "1",
                         env={"A6FAST_NO_EXTENSIONS": "1" if pure else "0"})
    assert "%s codec" % request.param in proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


def req_call_sharing_one_header(token, count, value):
    """An HTTPReqCall payload whose headers vector has ``count`` slots, all one (x-big, value)."""
    b = flatbuffers.Builder(0)
    name_off, value_off = b.CreateString("x-big"), b.CreateString(value)
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, name_off, 0)
    b.PrependUOffsetTRelativeSlot(1, value_off, 0)
    entry = b.EndObject()
    b.StartVector(4, count, 4)
    for _ in range(count):
        b.PrependUOffsetTRelative(entry)
    headers = b.EndVector()
    path = b.CreateString("/shared")
    b.StartObject(7)
    b.PrependUint32Slot(0, 1, 0)
    b.PrependUOffsetTRelativeSlot(3, path, 0)
    b.PrependUOffsetTRelativeSlot(5, headers, 0)
    b.PrependUint32Slot(6, token, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def assert_prepares_and_calls(gw):
    token = gw.prepare([("echo", "{}")], "route#after")
    rpc_type, payload = gw.call(token, id=43, path="/after")
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload).stop.body == b"/after"


def test_prepare_conf_whose_plugins_all_share_one_large_entry_is_bad_request(codec_runner):
    # 70 KB on the wire naming one 64 KiB conf 1024 times: 64 MiB once decoded
    conf = b'{"pad": "' + b"x" * 65536 + b'"}'
    payload = prepare_conf_sharing_one_entry(1024, value=conf)
    assert len(payload) < 72 * 1024
    with codec_runner.gateway() as gw:
        assert err_code(gw.roundtrip(frame(RPC_PREPARE_CONF, payload))) == BAD_REQUEST
        assert_prepares_and_calls(gw)  # the same connection goes on
    assert "undecodable PrepareConf" in wait_for_log(codec_runner, "undecodable PrepareConf")


def test_headers_all_sharing_one_large_entry_read_by_a_plugin_is_bad_request(codec_runner):
    with codec_runner.gateway() as gw:
        token = gw.prepare([("count-headers", "{}")], "route#count-headers")
        # 33 KB naming one 16 KiB header 4096 times: 64 MiB once decoded
        payload = req_call_sharing_one_header(token, 4096, "v" * 16384)
        assert len(payload) < 34000
        assert err_code(gw.roundtrip(req_call_frame(payload))) == BAD_REQUEST
        assert_prepares_and_calls(gw)


def conf_of_unreadable_entries(count, key):
    """A PrepareConf payload listing ``count`` plugins whose every slot holds 0 (an offset to
    itself): reading any one of them is a DecodeError."""
    b = flatbuffers.Builder(0)
    key_off = b.CreateString(key)
    b.StartVector(4, count, 4)
    for _ in range(count):
        b.PrependUint32(0)
    conf = b.EndVector()
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, conf, 0)
    b.PrependUOffsetTRelativeSlot(1, key_off, 0)
    b.Finish(b.EndObject())
    return bytes(b.Output())


def test_prepare_conf_listing_more_than_1024_plugins_is_refused_before_reading_them(codec_runner):
    with codec_runner.gateway() as gw:
        payload = conf_of_unreadable_entries(1025, "route#unread")
        assert err_code(gw.roundtrip(frame(RPC_PREPARE_CONF, payload))) == BAD_REQUEST
        assert_prepares_and_calls(gw)
    # refused for its length, not for an entry it could only have found by reading them
    log = wait_for_log(codec_runner, "'route#unread'")
    assert "PrepareConf (key 'route#unread') lists 1025 plugins, more than 1024" in log, log


# Decoding a PrepareConf runs out of memory: the import of this plugin file makes it so for
# the key route#no-memory (the runner reads its codec's decoder at each PrepareConf).
NO_MEMORY_PLUGIN = textwrap.dedent('''
    import a6fast
    from a6fast import codec

    _decode = codec.decode_prepare_conf_req

    def _decode_or_run_out(payload, *args):
        if b"route#no-memory" in bytes(payload):
            raise MemoryError()
        return _decode(payload, *args)

    codec.decode_prepare_conf_req = _decode_or_run_out

    @a6fast.plugin("noop", inline=True)
    def noop(request, conf):
        pass
''')


def test_prepare_conf_failing_with_memory_error_is_answered_with_an_err(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "no_memory.py").write_text(NO_MEMORY_PLUGIN)
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--plugins", str(plugins),
                         "--workers", "1")
    try:
        with proc.gateway() as gw:
            with pytest.raises(PrepareFailed) as failed:
                gw.prepare([("echo", "{}")], "route#no-memory")
            assert failed.value.code == BAD_REQUEST
            assert_prepares_and_calls(gw)
        assert "MemoryError" in wait_for_log(proc, "MemoryError")
    finally:
        assert proc.stop() == 0


NO_MEMORY_FOR_A_CALL_PLUGIN = textwrap.dedent('''
    import a6fast
    from a6fast.server import connection

    _Call = connection.Call

    def _call_or_run_out(conn, rpc_type, call_id):
        if call_id == 666:
            raise MemoryError()
        return _Call(conn, rpc_type, call_id)

    connection.Call = _call_or_run_out

    @a6fast.plugin("waits")
    async def waits(request, conf):
        pass
''')


def test_a_call_failing_with_memory_error_before_its_plugins_run_is_answered_with_an_err(
        tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "no_memory_for_a_call.py").write_text(NO_MEMORY_FOR_A_CALL_PLUGIN)
    proc = RunnerProcess(tmp_path, "--plugins", str(plugins), "--workers", "1")
    try:
        with proc.gateway() as gw:
            token = gw.prepare([("waits", "{}")], "route#waits")
            assert gw.call(token, id=1)[0] == RPC_HTTP_REQ_CALL
            assert err_code(gw.call(token, id=666)) == SERVICE_UNAVAILABLE
            assert gw.call(token, id=2)[0] == RPC_HTTP_REQ_CALL  # the connection goes on
        assert "MemoryError" in wait_for_log(proc, "MemoryError")
    finally:
        assert proc.stop() == 0


# Frames whose boundary is broken ----------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_peer_closing_mid_frame_closes_only_that_connection(runner, tokens, cut):
    whole = req_call_frame(req_call_payload(tokens["echo"]))
    with runner.gateway() as other:
        with runner.gateway() as gw:
            gw.send(whole[:cut])
            assert wait_until(lambda: unread(gw.sock) == 0, 10)  # the runner has it, then
        assert other.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL


def test_random_byte_stream_then_close_leaves_other_connections_served(runner, tokens):
    rnd = random.Random(7)
    with runner.gateway() as other:
        for _ in range(5):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.connect(runner.path)
                raw.sendall(bytes(rnd.randrange(256) for _ in range(4096)))
                # read by the runner (or dropped as it closed the connection), then closed here
                assert wait_until(lambda: unread(raw) == 0, 10)
        assert other.call(tokens["echo"])[0] == RPC_HTTP_REQ_CALL
    assert_still_serving(runner, tokens["echo"])


def test_call_frame_while_the_runner_waits_for_extra_info_closes_that_connection(runner, tokens):
    with runner.gateway() as gw:
        token = gw.prepare([("var-async", "{}")], "route#var-async")
        gw.send(gateway.encode_http_req_call_req(1, token))
        assert gw.read()[0] == RPC_EXTRA_INFO
        gw.send(gateway.encode_http_req_call_req(2, token))  # not the answer it waits for
        with pytest.raises((EOFError, ConnectionError)):
            gw.read()
    assert_still_serving(runner, tokens["echo"])


# The log ----------------------------------------------------------------------------------------

def test_each_refusal_is_logged_with_its_reason(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1")
    try:
        with proc.gateway() as gw:
            headers = gw.prepare([("count-headers", "{}")], "route#count-headers")
            var = gw.prepare([("var-async", "{}")], "route#var-async")
            prepare = gateway.encode_prepare_conf_req([("echo", "{}")], "route#confused")
            err_code(gw.roundtrip(frame(77, b"junk")))
            err_code(gw.roundtrip(frame(RPC_HTTP_REQ_CALL, b"")))
            err_code(gw.roundtrip(frame(RPC_HTTP_REQ_CALL, prepare[4:])))
            err_code(gw.roundtrip(req_call_frame(_corrupt_headers(headers, "vector length",
                                                                  0x7FFFFFFF))))
            gw.send(gateway.encode_http_req_call_req(9, var))
            assert gw.read()[0] == RPC_EXTRA_INFO
            gw.send(gateway.encode_http_req_call_req(10, var))
            with pytest.raises((EOFError, ConnectionError)):
                gw.read()
        with proc.gateway() as gw:
            gw.send(req_call_frame(req_call_payload(headers))[:10])
        reasons = ["unexpected frame of unknown type 77 (4 bytes)",
                   "undecodable HTTPReqCall",
                   "HTTPReqCall without a conf_token",
                   "HTTPReqCall id=1: corrupt field",
                   "protocol error: HTTPReqCall frame while ExtraInfo answers are due",
                   "peer closed the connection mid-frame"]
        log = wait_for_log(proc, "mid-frame")
        for reason in reasons:
            assert reason in log, (reason, log)
    finally:
        assert proc.stop() == 0


def test_peer_chosen_key_and_plugin_name_are_clipped_in_the_log(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1")
    try:
        before = len(proc.log())
        with proc.gateway() as gw:
            with pytest.raises(PrepareFailed):
                gw.prepare([("n" * 1000000, "{}")], "k" * 1000000)
            with pytest.raises(PrepareFailed):
                gw.prepare([("echo", "{}")] * 2000, "k" * 1000000)
        log = wait_for_log(proc, "more than 1024")
        assert "which is not loaded" in log and "(1000000 characters)" in log
        assert len(log) - before < 4000
    finally:
        assert proc.stop() == 0


def test_thousands_of_bad_frames_do_not_flood_the_log(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1")
    try:
        with proc.gateway() as gw:
            token = gw.prepare([("echo", "{}")], "route#echo")
            before = len(proc.log().splitlines())
            bad = frame(9, b"junk")
            for _ in range(10):
                gw.send(bad * 500)
                for _ in range(500):
                    assert err_code(gw.read()) == BAD_REQUEST
            assert gw.call(token)[0] == RPC_HTTP_REQ_CALL
        log = wait_for_log(proc, r"more warnings about bad frames and connections suppressed")
        lines = log.splitlines()[before:]
        warned = [line for line in lines if "answering BAD_REQUEST" in line]
        summaries = [int(m.group(1)) for m in
                     (re.search(r"(\d+) more warnings about bad frames", line) for line in lines) if m]
        # At most 20 lines a second get through (the rest are counted, not lost), by the log's
        # own time: a second of it meets at most two of the limiter's 1 s periods.
        per_second = collections.Counter(line[:19] for line in warned)  # "YYYY-MM-DD HH:MM:SS"
        assert 1 <= len(warned) < 5000 and max(per_second.values()) <= 2 * 20, per_second
        assert summaries and len(warned) + sum(summaries) == 5000
    finally:
        assert proc.stop() == 0
