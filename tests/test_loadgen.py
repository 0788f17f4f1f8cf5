"""`a6fast bench` against a real runner: it counts answered calls, and counts failures as errors."""
import json
import os
import socket
import threading

import pytest
from click.testing import CliRunner

from a6fast import gateway
from a6fast.loadgen import LoadSpec, bench_command, request_headers, run_load
from a6fast.protocol import ERR_NAMES, CONF_TOKEN_NOT_FOUND, SERVICE_UNAVAILABLE

from harness import PLUGINS, RunnerProcess

SERVER_PLUGINS = os.path.join(PLUGINS, "server")


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    proc = RunnerProcess(tmp_path_factory.mktemp("loadgen"), "--plugins", SERVER_PLUGINS,
                         sock_name="r.sock")
    yield proc
    status = proc.stop()
    assert status == 0, proc.log()


def bench(runner, *args):
    result = CliRunner().invoke(bench_command, ["--listen", "unix:" + runner.path, "--json",
                                                "--seconds", "1", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def test_stop_example_is_answered_without_errors(runner):
    status, out = bench(runner, "--plugin", "stop", "--conf", '{"body": "hi"}',
                        "--connections", "4", "--verify")
    assert status == 0, out
    assert out["calls"] > 0 and out["ok"] == out["calls"]
    assert out["errors"] == {}
    assert 0 < out["p50_us"] <= out["p99_us"] <= out["max_us"]


def test_connections_spread_over_processes_are_merged(runner):
    result = run_load(LoadSpec(listen="unix:" + runner.path, conf=[("stop", "{}")],
                               connections=4, processes=2, seconds=1.0))
    assert result.processes == 2
    assert result.answered > 0 and not result.errors


def test_unknown_conf_token_is_counted_as_errors(runner):
    status, out = bench(runner, "--token", "4242", "--connections", "2")
    assert status == 1
    assert out["calls"] > 0 and out["ok"] == 0
    assert out["errors"] == {"Err %s" % ERR_NAMES[CONF_TOKEN_NOT_FOUND]: out["calls"]}


def test_plugin_that_raises_is_counted_as_errors(runner):
    status, out = bench(runner, "--plugin", "boom", "--connections", "2")
    assert status == 1
    assert out["calls"] > 0 and out["ok"] == 0
    assert out["errors"] == {"Err %s" % ERR_NAMES[SERVICE_UNAVAILABLE]: out["calls"]}


def test_unknown_plugin_stops_before_the_load(runner):
    result = CliRunner().invoke(bench_command, ["--listen", "unix:" + runner.path,
                                                "--plugin", "no-such-plugin", "--seconds", "1"])
    assert result.exit_code == 1
    assert "PrepareConf answered Err BAD_REQUEST" in result.output


def test_missing_socket_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(bench_command, ["--listen", "unix:%s/none.sock" % tmp_path,
                                                "--plugin", "stop"])
    assert result.exit_code == 1
    assert "cannot connect" in result.output


def test_request_shape_matches_gen_frames():
    headers = request_headers(60, cookie=1024)
    assert len(headers) == 61
    assert headers[0] == ("host", "api.example.com")
    assert headers[-1] == ("cookie", "s=" + "a" * 1024)


# ---------------------------------------------------------------------------------------------
# Shaping the request, and answers by kind: an auth plugin's success path under load

LOADGEN_PLUGINS = os.path.join(PLUGINS, "loadgen")
AUTH = ["--plugin", "bench-auth", "--conf", '{"token": "good"}']


@pytest.fixture(scope="module", params=["compiled", "pure"])
def shaped_runner(request, tmp_path_factory):
    env = {"A6FAST_NO_EXTENSIONS": "1"} if request.param == "pure" else {"A6FAST_NO_EXTENSIONS": ""}
    proc = RunnerProcess(tmp_path_factory.mktemp("shaped"), "--plugins", LOADGEN_PLUGINS,
                         "--workers", "1", env=env, sock_name="r.sock")
    assert "%s codec" % request.param in proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


def shaped(runner, *args):
    """`a6fast bench` for exactly 60 calls on 3 connections: (exit status, JSON result)."""
    result = CliRunner().invoke(bench_command, ["--listen", "unix:" + runner.path, "--json",
                                                "--calls", "60", "--connections", "3", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def test_auth_success_path_is_counted_as_rewrite(shaped_runner):
    status, out = shaped(shaped_runner, *AUTH, "--header", "authorization: Bearer good",
                         "--var", "remote_addr=203.0.113.7", "--expect", "Rewrite")
    assert status == 0, out
    assert out["calls"] == out["ok"] == 60
    assert out["answers"] == {"Rewrite": 60}
    assert out["extra_info_questions"] == {"var remote_addr": 60}
    assert out["errors"] == {}


def test_auth_without_a_token_is_counted_as_stop_401(shaped_runner):
    # --header replaces the browser-like set, which carries an authorization header
    status, out = shaped(shaped_runner, *AUTH, "--header", "accept: */*")
    assert status == 0, out   # a Stop is an answer, not an error
    assert out["answers"] == {"Stop 401": 60}
    assert out["extra_info_questions"] == {}


def test_auth_with_a_wrong_token_is_counted_as_stop_403_and_unexpected(shaped_runner):
    status, out = shaped(shaped_runner, *AUTH, "--header", "authorization: Bearer bad",
                         "--var", "remote_addr=203.0.113.7", "--expect", "Rewrite")
    assert status == 1
    assert out["answers"] == {"Stop 403": 60}
    assert out["errors"] == {"unexpected answer: Stop 403": 60}


def test_a_var_not_given_is_answered_absent_and_reported(shaped_runner):
    status, out = shaped(shaped_runner, *AUTH, "--header", "authorization: Bearer good")
    assert status == 0, out
    assert out["answers"] == {"Stop 403": 60}
    assert out["extra_info_questions"] == {
        "var remote_addr (no --var remote_addr=...: answered absent)": 60}


MATCH_CONF = {"method": "POST", "path": "/orders/7", "src_ip": "2001:db8::1",
              "args": [["a", "1"], ["flag", None], ["a", "2"]],
              "headers": [["x-api-key", "k: v"], ["content-type", "text/plain"]],
              "body": "payload"}
MATCH = ["--plugin", "bench-match", "--conf", json.dumps(MATCH_CONF), "--method", "post",
         "--path", "/orders/7", "--src-ip", "2001:db8::1", "--arg", "a=1", "--arg", "flag",
         "--arg", "a=2", "--header", "x-api-key: k: v", "--header", "content-type:text/plain"]


def test_every_part_of_the_request_is_sent_as_shaped(shaped_runner, tmp_path):
    body = tmp_path / "body"
    body.write_bytes(b"payload")
    for given in ("payload", "@%s" % body):
        status, out = shaped(shaped_runner, *MATCH, "--body", given, "--expect", "no change")
        assert status == 0, out
        assert out["answers"] == {"no change": 60}
        assert out["extra_info_questions"] == {"request body": 60}


def test_a_request_differing_from_the_plugins_expectation_is_stopped(shaped_runner):
    status, out = shaped(shaped_runner, *MATCH)   # no --body
    assert out["answers"] == {"Stop 400": 60}
    assert out["extra_info_questions"] == {"request body (no --body: answered absent)": 60}


def test_err_answers_are_reported_by_code(runner):
    status, out = bench(runner, "--plugin", "boom", "--connections", "2", "--calls", "40")
    assert status == 1
    assert out["answers"] == {"Err %s" % ERR_NAMES[SERVICE_UNAVAILABLE]: 40}


def test_calls_are_counted_exactly_across_processes(runner):
    result = run_load(LoadSpec(listen="unix:" + runner.path, conf=[("stop", "{}")],
                               connections=4, processes=2, seconds=None, calls=101))
    assert result.answered == 101 and result.answers == {"Stop 200": 101}
    assert not result.errors


@pytest.mark.parametrize("args, message", [
    (["--header", "no-colon"], "expected NAME:VALUE"),
    (["--header", "a: b", "--headers", "3"], "--header and --headers do not mix"),
    (["--arg", "=x"], "expected NAME=VALUE or NAME"),
    (["--arg", "a=1", "--args", "2"], "--arg and --args do not mix"),
    (["--src-ip", "10.0.0.300"], "not an IPv4 or IPv6 address"),
    (["--calls", "0"], "0 is not in the range"),
])
def test_bad_request_options_are_usage_errors(args, message):
    result = CliRunner().invoke(bench_command, ["--plugin", "stop", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_answers_for_another_call_are_errors(tmp_path):
    """A runner answering with the wrong call id (a shifted answer) is caught, not counted ok."""
    from a6fast import codec

    path = str(tmp_path / "liar.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    while True:
                        rpc_type, _ = gateway.read_frame(conn)
                        conn.sendall(codec.encode_prepare_conf_resp(5) if rpc_type == 1
                                     else codec.encode_stop(999, 200, [], b""))
                except (EOFError, OSError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = run_load(LoadSpec(listen="unix:" + path, conf=[("stop", "{}")], connections=1,
                                   seconds=None, calls=5))
    finally:
        listener.close()
    assert result.answers == {"Stop 200": 5}
    assert result.errors == {"bad answer (id 999 for call 0)": 5}
