"""`a6fast bench` against a real runner: it counts answered calls, and counts failures as errors."""
import json
import os

import pytest
from click.testing import CliRunner

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
