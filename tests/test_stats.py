"""Live counters: a runner started with --stats answers snapshots whose counts match the calls."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from a6fast.protocol import RPC_ERR, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL
from a6fast.server.stats import (BUCKETS, WorkerStats, format_snapshot, merge, percentiles,
                                 read_snapshot)
from harness import A6FAST_ROOT, RunnerProcess

STOP = [("stop", json.dumps({"status": 403, "body": "no"}))]
ECHO = [("echo-vars", json.dumps({"vars": ["remote_addr"]})), ("resp-header", None)]


# ---------------------------------------------------------------------------------------------
# Summing and percentiles

def test_percentiles_are_bucket_upper_bounds_in_microseconds():
    hist = [0] * BUCKETS
    hist[10] = 90  # 512..1023 ns
    hist[20] = 10  # ~0.5..1 ms
    p = percentiles(hist)
    assert p["count"] == 100
    assert p["p50"] == p["p90"] == 1.024
    assert p["p99"] == p["p999"] == p["max"] == 1048.576


def test_empty_histogram_has_no_percentiles():
    p = percentiles([0] * BUCKETS)
    assert p["count"] == 0 and p["p50"] is None and p["max"] is None


def _snap(pid, calls, confs, plugins):
    hist = [0] * BUCKETS
    hist[12] = calls
    return {"pid": pid, "time": time.time(), "started": time.time() - 5, "confs": confs,
            "calls": {"PrepareConf": 1, "HTTPReqCall": calls, "HTTPRespCall": 0,
                      "ExtraInfo": 2},
            "errors": {"BAD_REQUEST": 0, "SERVICE_UNAVAILABLE": 1, "CONF_TOKEN_NOT_FOUND": 0},
            "plugins": plugins, "histogram_ns": {"HTTPReqCall": hist, "HTTPRespCall": [0] * BUCKETS}}


def test_merge_sums_workers_and_keeps_the_gone_ones_in_the_totals():
    snaps = [_snap(1, 10, 3, {"stop": 10}), _snap(2, 5, 4, {"stop": 4, "echo": 1}),
             _snap(3, 7, 9, {"echo": 7})]
    total = merge(snaps, alive=lambda pid: pid != 3)
    assert total["workers"] == 2
    assert total["calls"] == {"PrepareConf": 3, "HTTPReqCall": 22, "HTTPRespCall": 0,
                              "ExtraInfo": 6}
    assert total["errors"]["SERVICE_UNAVAILABLE"] == 3
    assert total["plugins"] == {"stop": 14, "echo": 8}
    assert total["confs"] == 4  # the largest store among live workers
    assert total["latency_us"]["HTTPReqCall"]["count"] == 22
    assert [w["alive"] for w in total["per_worker"]] == [True, True, False]
    text = format_snapshot(total)
    assert "HTTPReqCall 22" in text and "gone" in text


def test_a_timed_call_counts_in_its_bucket_and_in_the_sum():
    from a6fast.server.stats import clock_ns

    class _Confs:
        def __len__(self):
            return 0

        def calls_by_plugin(self):
            return {}

        def calls(self):
            return 3

    class _Runner:  # what snapshot() reads of a runner
        confs = _Confs()

        class loop:
            threads_overdue = staticmethod(lambda: 0)

    stats = WorkerStats()
    before = clock_ns()
    stats.observe(RPC_HTTP_REQ_CALL, before - 5000)
    stats.observe(RPC_HTTP_REQ_CALL, before - 3_000_000)
    stats.observe(RPC_HTTP_RESP_CALL, before - 1000)
    took = clock_ns() - before
    snap = stats.snapshot(_Runner())
    req = snap["histogram_ns"]["HTTPReqCall"]
    assert len(req) == BUCKETS and sum(req) == 2
    assert sum(req[(5000).bit_length():]) == 2  # none below 4096 ns
    assert 3_005_000 <= snap["histogram_sum_ns"]["HTTPReqCall"] <= 3_005_000 + 2 * took
    assert 1000 <= snap["histogram_sum_ns"]["HTTPRespCall"] <= 1000 + took
    total = merge([snap, snap])
    assert total["histogram_sum_ns"]["HTTPReqCall"] == 2 * snap["histogram_sum_ns"]["HTTPReqCall"]


def test_a_prepare_conf_err_answer_counts_as_an_error():
    from a6fast import codec
    from a6fast.protocol import BAD_REQUEST

    stats = WorkerStats()
    stats.prepared(codec.encode_prepare_conf_resp(7))
    stats.prepared(codec.encode_err(BAD_REQUEST))
    assert stats.prepare_conf == 2 and stats.errors[BAD_REQUEST] == 1


# ---------------------------------------------------------------------------------------------
# A live runner

def _wait_for(address, check, timeout=10.0):
    """Poll the stats socket until ``check(snapshot)`` holds; the last snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        snap = read_snapshot(address)
        if check(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.1)


def _drive(runner, stop_calls, echo_calls, resp_calls):
    """Calls on one connection: PrepareConf x2, HTTPReqCall, HTTPRespCall, one unknown token."""
    with runner.gateway(vars={"remote_addr": "10.0.0.1"}) as gw:
        stop_token = gw.prepare(STOP, "route#stats-stop")
        echo_token = gw.prepare(ECHO, "route#stats-echo")
        for i in range(stop_calls):
            assert gw.call(stop_token, id=i)[0] == RPC_HTTP_REQ_CALL
        for i in range(echo_calls):
            assert gw.call(echo_token, id=i)[0] == RPC_HTTP_REQ_CALL
        for i in range(resp_calls):
            assert gw.resp_call(echo_token, id=i, status=200)[0] == RPC_HTTP_RESP_CALL
        assert gw.call(123456789, id=1)[0] == RPC_ERR  # CONF_TOKEN_NOT_FOUND


def test_one_worker_counts_match_the_calls(tmp_path):
    address = "unix:%s" % (tmp_path / "stats.sock")
    runner = RunnerProcess(tmp_path, "--workers", "1", "--stats", address)
    try:
        before = read_snapshot(address)
        assert before["calls"]["HTTPReqCall"] == 0 and before["workers"] == 1
        _drive(runner, stop_calls=40, echo_calls=9, resp_calls=3)
        snap = read_snapshot(address)  # one worker answers from its live counters
        assert snap["calls"] == {"PrepareConf": 2, "HTTPReqCall": 49, "HTTPRespCall": 3,
                                 "ExtraInfo": 9}
        assert snap["errors"] == {"BAD_REQUEST": 0, "SERVICE_UNAVAILABLE": 0,
                                  "CONF_TOKEN_NOT_FOUND": 1}
        assert snap["plugins"] == {"stop": 40, "echo-vars": 12, "resp-header": 12}
        assert snap["confs"] == 2
        timed = snap["latency_us"]["HTTPReqCall"]["count"] + \
            snap["latency_us"]["HTTPRespCall"]["count"]
        assert 52 // 8 <= timed <= 52 // 8 + 1  # each conf's first call, then 1 in 8
        assert snap["latency_us"]["HTTPReqCall"]["p50"] > 0
    finally:
        assert runner.stop() == 0
    assert not os.path.exists(tmp_path / "stats.sock")


def test_counters_are_visible_while_calls_run(tmp_path):
    address = "unix:%s" % (tmp_path / "stats.sock")
    runner = RunnerProcess(tmp_path, "--workers", "1", "--stats", address)
    seen = []
    midway = threading.Event()  # set once a snapshot showed some of the calls but not all
    done = threading.Event()

    def load():
        try:
            with runner.gateway() as gw:
                token = gw.prepare(STOP, "route#load")
                for i in range(600):
                    if i == 300:  # half done: the rest waits until the counters were seen
                        midway.wait(30)
                    gw.call(token, id=i)
        finally:
            done.set()
    try:
        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        while not done.is_set():
            seen.append(read_snapshot(address)["calls"]["HTTPReqCall"])
            if 0 < seen[-1] < 1800:
                midway.set()
            time.sleep(0.01)
        for t in threads:
            t.join(60)
        final = read_snapshot(address)
    finally:
        midway.set()
        assert runner.stop() == 0
    assert seen == sorted(seen)  # counters only grow
    assert any(0 < n < 1800 for n in seen)  # read while the calls ran
    assert final["calls"]["HTTPReqCall"] == 1800 and final["plugins"] == {"stop": 1800}
    assert final["calls"]["PrepareConf"] == 3


def test_several_workers_are_summed(tmp_path):
    address = "unix:%s" % (tmp_path / "stats.sock")
    runner = RunnerProcess(tmp_path, "--workers", "2", "--stats", address)
    try:
        threads = [threading.Thread(target=_drive, args=(runner, 25, 5, 2)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        snap = _wait_for(address, lambda s: s["calls"]["HTTPReqCall"] == 120)
        assert snap["workers"] == 2 and len(snap["per_worker"]) == 2
        assert snap["calls"] == {"PrepareConf": 8, "HTTPReqCall": 120, "HTTPRespCall": 8,
                                 "ExtraInfo": 20}
        assert snap["errors"]["CONF_TOKEN_NOT_FOUND"] == 4
        assert snap["plugins"] == {"stop": 100, "echo-vars": 28, "resp-header": 28}
        assert sum(w["calls"]["HTTPReqCall"] for w in snap["per_worker"]) == 120
    finally:
        assert runner.stop() == 0
    assert not os.path.exists(tmp_path / "stats.sock")


def test_stats_command_prints_a_table_and_json(tmp_path):
    address = "unix:%s" % (tmp_path / "stats.sock")
    runner = RunnerProcess(tmp_path, "--workers", "1", "--stats", address)
    env = dict(os.environ, PYTHONPATH=A6FAST_ROOT)
    try:
        _drive(runner, stop_calls=5, echo_calls=0, resp_calls=0)
        table = subprocess.run([sys.executable, "-m", "a6fast", "stats", "--listen", address],
                               capture_output=True, text=True, timeout=30, env=env)
        raw = subprocess.run([sys.executable, "-m", "a6fast", "stats", "--listen", address,
                              "--json"], capture_output=True, text=True, timeout=30, env=env)
    finally:
        runner.stop()
    assert table.returncode == 0, table.stderr
    assert "HTTPReqCall 5" in table.stdout and "CONF_TOKEN_NOT_FOUND 1" in table.stdout
    assert "stop" in table.stdout and "p99" in table.stdout
    assert json.loads(raw.stdout)["calls"]["HTTPReqCall"] == 5


def test_stats_pointed_at_the_gateway_socket_says_it_is_not_the_stats_socket(tmp_path):
    runner = RunnerProcess(tmp_path, "--workers", "1")
    env = dict(os.environ, PYTHONPATH=A6FAST_ROOT)
    try:
        out = subprocess.run([sys.executable, "-m", "a6fast", "stats", "--listen",
                              "unix:" + runner.path, "--timeout", "0.5"],
                             capture_output=True, text=True, timeout=30, env=env)
        with runner.gateway() as gw:  # the runner goes on serving
            assert gw.call(123456789)[0] == RPC_ERR
    finally:
        assert runner.stop() == 0
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "a6fast stats: no runner's stats at unix:%s: it answered nothing within 0.5 s (is it "
        "the runner's --listen socket? `a6fast stats` reads the one given to --stats)"
        % runner.path]


def test_without_stats_there_is_no_stats_socket(tmp_path):
    runner = RunnerProcess(tmp_path, "--workers", "1")
    try:
        _drive(runner, stop_calls=1, echo_calls=0, resp_calls=0)
        assert not [n for n in os.listdir(tmp_path) if "stats" in n]
    finally:
        assert runner.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_stats_path_is_refused_at_start(tmp_path, workers):
    taken = tmp_path / "stats.sock"
    taken.write_text("not a socket")
    runner = RunnerProcess(tmp_path, "--workers", workers, "--stats", "unix:%s" % taken,
                           wait=False)
    try:
        assert runner.proc.wait(20) != 0
    finally:
        runner.kill()
    assert taken.read_text() == "not a socket"
    assert not os.path.exists(runner.path)  # the main socket is not left behind either


def test_a_restarted_worker_keeps_its_calls_in_the_totals(tmp_path):
    import signal

    address = "unix:%s" % (tmp_path / "stats.sock")
    runner = RunnerProcess(tmp_path, "--workers", "2", "--stats", address)
    try:
        _drive(runner, stop_calls=30, echo_calls=0, resp_calls=0)
        snap = _wait_for(address, lambda s: s["calls"]["HTTPReqCall"] == 30)
        assert snap["calls"]["HTTPReqCall"] == 30
        busy = [w["pid"] for w in snap["per_worker"] if w["calls"]["HTTPReqCall"]]
        os.kill(busy[0], signal.SIGKILL)
        snap = _wait_for(address, lambda s: s["workers"] == 2 and len(s["per_worker"]) == 3)
        assert snap["workers"] == 2 and len(snap["per_worker"]) == 3
        gone = [w for w in snap["per_worker"] if not w["alive"]]
        assert [w["pid"] for w in gone] == busy[:1]
        assert snap["calls"]["HTTPReqCall"] == 30 and snap["plugins"]["stop"] == 30
    finally:
        assert runner.stop() == 0
