"""The runner over a real unix socket, played against like APISIX plays it."""
import os
import signal
import socket
import stat
import threading

import pytest

from a6fast import gateway
from a6fast.protocol import (BAD_REQUEST, CONF_TOKEN_NOT_FOUND, RPC_ERR, RPC_HTTP_REQ_CALL,
                             RPC_PREPARE_CONF, SERVICE_UNAVAILABLE, ACTION_NONE, ACTION_REWRITE,
                             ACTION_STOP)

from faultkit import wait_until
from harness import PLUGINS, Gateway, PrepareFailed, RunnerProcess, err_code, unread

SERVER_PLUGINS = os.path.join(PLUGINS, "server")


@pytest.fixture
def runner(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", SERVER_PLUGINS)
    yield proc
    status = proc.stop()
    assert status == 0, proc.log()


def answer_of(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_HTTP_REQ_CALL, (rpc_type, payload)
    return gateway.decode_http_req_call_resp(payload)


STOP_CONF = [("stop", '{"status": 403, "headers": {"x-a": "1"}, "body": "text"}')]


def test_stop_example_answers_exactly_its_conf(runner):
    with runner.gateway() as gw:
        resp = answer_of(gw.call_like_apisix(STOP_CONF, id=7, path="/x"))
    assert resp.id == 7
    assert resp.action_type == ACTION_STOP
    assert resp.stop.status == 403
    assert resp.stop.headers == [("x-a", "1")]
    assert resp.stop.body == b"text"


def test_rewrite_example_answers_exactly_its_conf(runner):
    conf = [("rewrite", '{"path": "/new", "headers": {"x-a": "1", "x-gone": null},'
                        ' "args": {"a": "1", "b": null}, "resp_headers": {"x-r": "2"}}')]
    with runner.gateway() as gw:
        resp = answer_of(gw.call_like_apisix(conf, id=9, path="/old"))
    assert resp.action_type == ACTION_REWRITE
    rw = resp.rewrite
    assert rw.path == "/new"
    assert sorted(rw.headers) == [("x-a", "1"), ("x-gone", None)]
    assert sorted(rw.args) == [("a", "1"), ("b", None)]
    assert rw.resp_headers == [("x-r", "2")]
    assert rw.body is None


def test_id_zero_is_answered_with_id_zero(runner):
    with runner.gateway() as gw:
        resp = answer_of(gw.call_like_apisix(STOP_CONF, id=0))
    assert resp.id == 0 and resp.action_type == ACTION_STOP


def test_empty_conf_list_gives_no_action(runner):
    with runner.gateway() as gw:
        token = gw.prepare([], "route#empty")
        resp = answer_of(gw.call(token, id=3))
    assert resp.id == 3 and resp.action_type == ACTION_NONE


def test_unknown_token_is_conf_token_not_found(runner):
    with runner.gateway() as gw:
        assert err_code(gw.call(0xDEADBEEF)) == CONF_TOKEN_NOT_FOUND


def test_gateway_retry_after_conf_token_not_found_succeeds(runner):
    with runner.gateway() as gw:
        gw.confs["route#1"] = 0xDEADBEEF  # a token the runner never issued (it restarted, say)
        resp = answer_of(gw.call_like_apisix(STOP_CONF, key="route#1"))
    assert resp.action_type == ACTION_STOP


def test_unknown_plugin_is_bad_request_and_logged_by_name(runner):
    with runner.gateway() as gw:
        with pytest.raises(PrepareFailed) as failed:
            gw.prepare([("stop", "{}"), ("no-such-plugin", "{}")], "route#x")
    assert failed.value.code == BAD_REQUEST
    assert "no-such-plugin" in runner.log()


def test_plugin_that_raises_is_service_unavailable_with_traceback(runner):
    with runner.gateway() as gw:
        assert err_code(gw.call_like_apisix([("boom", "{}")])) == SERVICE_UNAVAILABLE
        # the connection keeps serving
        assert answer_of(gw.call_like_apisix(STOP_CONF, key="route#2")).action_type == ACTION_STOP
    log = runner.log()
    assert "Traceback" in log and "boom: the plugin failed on purpose" in log


@pytest.mark.parametrize("rpc_type,payload", [
    (RPC_HTTP_REQ_CALL, b""),
    (RPC_HTTP_REQ_CALL, b"\xff\xff\xff\x7f" + bytes(60)),
    (RPC_PREPARE_CONF, b"\x01\x02"),
    (9, b"whatever"),
    (RPC_ERR, b""),
])
def test_undecodable_or_unknown_frame_is_bad_request_and_connection_survives(runner, rpc_type, payload):
    with runner.gateway() as gw:
        assert err_code(gw.roundtrip(bytes([rpc_type]) + len(payload).to_bytes(3, "big") + payload)) == BAD_REQUEST
        assert answer_of(gw.call_like_apisix(STOP_CONF)).action_type == ACTION_STOP


def test_frame_split_into_single_bytes_is_read_exactly(runner):
    with runner.gateway() as gw:
        token = gw.prepare(STOP_CONF, "route#1")
        frame = gateway.encode_http_req_call_req(5, token, path="/slow")
        for i in range(len(frame)):
            gw.send(frame[i:i + 1])
            # read before the next byte is sent: one recv() per byte
            assert wait_until(lambda: unread(gw.sock) == 0, 10, interval=0.0005)
        resp = answer_of(gw.read())
    assert resp.id == 5 and resp.stop.status == 403


def test_several_frames_in_one_send_are_answered_in_order(runner):
    with runner.gateway() as gw:
        token = gw.prepare([("path-echo", "{}")], "route#echo")
        gw.send(b"".join(gateway.encode_http_req_call_req(i, token, path="/p%d" % i) for i in range(20)))
        for i in range(20):
            resp = answer_of(gw.read())
            assert (resp.id, resp.stop.body) == (i, b"/p%d" % i)


def test_hundreds_of_connections_each_reused_for_many_calls(runner):
    with runner.gateway() as gw:
        token = gw.prepare([("path-echo", "{}")], "route#echo")
    errors = []

    def worker(n):
        try:
            with runner.gateway() as gw:
                for i in range(100):
                    resp = answer_of(gw.call(token, id=n * 1000 + i, path="/c%d" % n))
                    assert resp.id == n * 1000 + i and resp.stop.body == b"/c%d" % n
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]


def test_same_key_and_conf_gets_the_same_token(runner):
    with runner.gateway() as gw:
        a = gw.prepare(STOP_CONF, "route#1#ext-plugin-pre-req#1")
        b = gw.prepare(STOP_CONF, "route#1#ext-plugin-pre-req#1")
        c = gw.prepare([("stop", '{"status": 401}')], "route#1#ext-plugin-pre-req#1")
        d = gw.prepare(STOP_CONF, "route#2#ext-plugin-pre-req#1")
    assert a == b
    assert len({a, c, d}) == 3


def test_token_from_before_a_restart_is_not_found_never_another_conf(tmp_path):
    first = RunnerProcess(tmp_path)
    with first.gateway() as gw:
        old = [gw.prepare([("stop", '{"status": %d}' % (400 + i))], "k%d" % i) for i in range(5)]
    first.kill()
    second = RunnerProcess(tmp_path)  # the stale socket is replaced
    try:
        with second.gateway() as gw:
            new = [gw.prepare([("stop", '{"status": 200}')], "n%d" % i) for i in range(5)]
            assert not set(old) & set(new)
            for token in old:
                assert err_code(gw.call(token)) == CONF_TOKEN_NOT_FOUND
    finally:
        assert second.stop() == 0


def test_sigterm_finishes_the_call_in_flight_removes_socket_and_exits_zero(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", SERVER_PLUGINS)
    with proc.gateway() as gw:
        token = gw.prepare([("slow", '{"seconds": 0.3}')], "route#slow")
        gw.send(gateway.encode_http_req_call_req(11, token))
        assert wait_until(lambda: unread(gw.sock) == 0, 10)  # the call is in the runner
        proc.signal(signal.SIGTERM)
        resp = answer_of(gw.read())
        assert resp.id == 11 and resp.stop.body == b"slept"
    assert proc.proc.wait(10) == 0
    assert not os.path.exists(proc.path)
    with pytest.raises(OSError):
        Gateway(proc.path)


def test_sigint_also_stops_cleanly(tmp_path):
    proc = RunnerProcess(tmp_path)
    proc.signal(signal.SIGINT)
    assert proc.proc.wait(10) == 0
    assert not os.path.exists(proc.path)


def test_live_runner_socket_is_not_taken_over(tmp_path, runner):
    second = RunnerProcess(tmp_path, "--listen", "unix:" + runner.path, wait=False)
    assert second.proc.wait(10) != 0
    assert "another runner" in second.log()
    with runner.gateway() as gw:
        assert answer_of(gw.call_like_apisix(STOP_CONF)).action_type == ACTION_STOP


def test_path_that_is_not_a_socket_is_never_deleted(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    proc = RunnerProcess(tmp_path, "--listen", "unix:%s" % path, wait=False)
    assert proc.proc.wait(10) != 0
    assert path.read_text() == "precious"


def test_socket_is_not_world_writable(runner):
    mode = stat.S_IMODE(os.stat(runner.path).st_mode)
    assert mode == 0o660


def test_listen_address_comes_from_apisix_env(tmp_path):
    path = str(tmp_path / "env.sock")
    proc = RunnerProcess(tmp_path, env={"APISIX_LISTEN_ADDRESS": "unix:" + path}, sock_name="env.sock")
    try:
        with proc.gateway() as gw:
            assert answer_of(gw.call_like_apisix(STOP_CONF)).action_type == ACTION_STOP
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("spelling", ["$env.APISIX_LISTEN_ADDRESS", "$env:APISIX_LISTEN_ADDRESS"])
def test_official_config_yaml_is_accepted(tmp_path, spelling):
    path = str(tmp_path / "cfg.sock")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("socket:\n  file: %s\nlogging:\n  level: debug\n" % spelling)
    proc = RunnerProcess(tmp_path, "--config", str(cfg), env={"APISIX_LISTEN_ADDRESS": "unix:" + path},
                         sock_name="cfg.sock")
    try:
        with proc.gateway() as gw:
            token = gw.prepare(STOP_CONF, "route#dbg")
        assert "conf_token %d" % token in proc.log()  # logged at debug level only
    finally:
        assert proc.stop() == 0


def test_frames_built_by_the_official_flatbuffers_library_are_served(runner):
    flatbuffers = pytest.importorskip("flatbuffers")
    from A6 import TextEntry
    from A6.HTTPReqCall import Req as HCReq
    from A6.PrepareConf import Req as PCReq

    def frame(ty, b):
        out = bytes(b.Output())
        return bytes([ty]) + len(out).to_bytes(3, "big") + out

    b = flatbuffers.Builder(256)
    name, value = b.CreateString("stop"), b.CreateString('{"status": 418, "body": "tea"}')
    TextEntry.Start(b)
    TextEntry.AddName(b, name)
    TextEntry.AddValue(b, value)
    entry = TextEntry.End(b)
    PCReq.StartConfVector(b, 1)
    b.PrependUOffsetTRelative(entry)
    conf = b.EndVector()
    PCReq.Start(b)
    PCReq.AddConf(b, conf)
    b.Finish(PCReq.End(b))
    with runner.gateway() as gw:
        rpc_type, payload = gw.roundtrip(frame(RPC_PREPARE_CONF, b))
        token = gateway.decode_prepare_conf_resp(payload)
        b = flatbuffers.Builder(256)
        path = b.CreateString("/tea")
        HCReq.Start(b)
        HCReq.AddId(b, 0)
        HCReq.AddPath(b, path)
        HCReq.AddConfToken(b, token)
        b.Finish(HCReq.End(b))
        resp = answer_of(gw.roundtrip(frame(RPC_HTTP_REQ_CALL, b)))
    assert resp.stop.status == 418 and resp.stop.body == b"tea" and resp.id == 0


def test_version_option_prints_the_version():
    import subprocess
    import sys

    import a6fast

    out = subprocess.run([sys.executable, "-m", "a6fast", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and a6fast.__version__ in out.stdout


def test_connections_are_dealt_evenly_to_the_workers(tmp_path):
    proc = RunnerProcess(tmp_path, "--plugins", SERVER_PLUGINS, "--workers", "2")
    gateways = []
    try:
        with proc.gateway() as gw:
            token = gw.prepare([("worker-pid", "{}")], "route#pid")
        # Both workers serving first: one still starting has not taken (nor given back the
        # credit for) what it was dealt, and the supervisor deals its turn to the other.
        seen = set()

        def both_serving():
            with proc.gateway() as gw:
                seen.add(answer_of(gw.call(token)).stop.body)
            return len(seen) == 2
        assert wait_until(both_serving, 20), seen
        gateways = [proc.gateway() for _ in range(8)]  # opened in a burst, as APISIX does
        pids = [answer_of(gw.call(token)).stop.body for gw in gateways]
    finally:
        for gw in gateways:
            gw.close()
        assert proc.stop() == 0
    assert sorted(pids.count(pid) for pid in set(pids)) == [4, 4]
