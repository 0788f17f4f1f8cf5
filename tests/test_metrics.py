"""`a6fast serve --metrics HOST:PORT`: Prometheus text at /metrics, scraped over loopback HTTP
while calls run, parsed with prometheus_client's own parser, its counts matching the calls."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from a6fast.protocol import RPC_ERR, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, SERVICE_UNAVAILABLE
from a6fast.server import metrics as metrics_mod
from a6fast.server.metrics import parse_metrics_address
from a6fast.server.stats import BUCKETS, LoopBusy, StatsEndpoint, merge

from faultkit import FAULT_PLUGINS, children, wait_until
from harness import A6FAST_ROOT, RunnerProcess, err_code

STOP = [("stop", '{"status": 403, "body": "no"}')]
ECHO = [("echo-vars", '{"vars": ["remote_addr"]}'), ("resp-header", None)]
RAISES = [("raises", "{}")]


def start(tmp_path, workers, *args):
    runner = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", str(workers),
                           "--metrics", "127.0.0.1:0", *args)
    if workers > 1:
        assert wait_until(lambda: len(children(runner.proc.pid)) == workers, 10)
    found = re.search(r"Prometheus metrics on (http://\S+)", runner.log())
    assert found, runner.log()
    return runner, found.group(1)


def scrape(url):
    """{(sample name, sorted labels): value} of one scrape, parsed by prometheus_client."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("a6fast_")
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples, name, **labels):
    return samples[name, tuple(sorted(labels.items()))]


def current(url, name, **labels):
    """One sample of a fresh scrape, None while it is not there (no call of that plugin yet)."""
    return scrape(url).get((name, tuple(sorted(labels.items()))))


def histogram(samples, rpc):
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                      if name == "a6fast_call_duration_seconds_bucket"
                      and dict(labels)["type"] == rpc))
    return (buckets, value(samples, "a6fast_call_duration_seconds_count", type=rpc),
            value(samples, "a6fast_call_duration_seconds_sum", type=rpc))


# ---------------------------------------------------------------------------------------------
# Under load

STOP_CALLS, ECHO_CALLS, RESP_CALLS, RAISES_CALLS, THREADS = 600, 20, 10, 25, 4


def _load(runner, n, errors):
    """One connection: PrepareConf x3, then calls of each kind and one unknown conf token."""
    try:
        with runner.gateway(vars={"remote_addr": "10.0.0.1"}) as gw:
            stop = gw.prepare(STOP, "route#stop-%d" % n)
            echo = gw.prepare(ECHO, "route#echo-%d" % n)
            raises = gw.prepare(RAISES, "route#raises-%d" % n)
            for i in range(STOP_CALLS):
                assert gw.call(stop, id=i)[0] == RPC_HTTP_REQ_CALL
            for i in range(ECHO_CALLS):
                assert gw.call(echo, id=i)[0] == RPC_HTTP_REQ_CALL
            for i in range(RESP_CALLS):
                assert gw.resp_call(echo, id=i, status=200)[0] == RPC_HTTP_RESP_CALL
            for i in range(RAISES_CALLS):
                assert err_code(gw.call(raises, id=i)) == SERVICE_UNAVAILABLE
            assert gw.call(987654321, id=1)[0] == RPC_ERR  # CONF_TOKEN_NOT_FOUND
    except BaseException as exc:  # noqa: B902  reported by the test
        errors.append(exc)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_scrape_under_load_counts_every_call(tmp_path, workers):
    runner, url = start(tmp_path, workers)
    errors = []
    threads = [threading.Thread(target=_load, args=(runner, n, errors)) for n in range(THREADS)]
    seen = []
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            seen.append(value(scrape(url), "a6fast_calls_total", type="HTTPReqCall"))
        for t in threads:
            t.join(60)
        assert not errors, errors[:2]
        req_calls = THREADS * (STOP_CALLS + ECHO_CALLS + RAISES_CALLS)
        # several workers publish every second: poll until every call is in
        assert wait_until(lambda: current(url, "a6fast_calls_total", type="HTTPReqCall")
                          == req_calls, 10)
        final = scrape(url)
    finally:
        assert runner.stop() == 0, runner.log()
    assert seen and seen == sorted(seen)  # scraped while the calls ran; counters only grow
    if workers == 1:
        assert any(0 < n < req_calls for n in seen)  # the one worker's live counters
    assert value(final, "a6fast_calls_total", type="PrepareConf") == THREADS * 3
    assert value(final, "a6fast_calls_total", type="HTTPRespCall") == THREADS * RESP_CALLS
    assert value(final, "a6fast_extra_info_requests_total") == THREADS * ECHO_CALLS
    assert value(final, "a6fast_plugin_calls_total", plugin="stop") == THREADS * STOP_CALLS
    assert value(final, "a6fast_plugin_calls_total", plugin="raises") == THREADS * RAISES_CALLS
    assert value(final, "a6fast_plugin_calls_total", plugin="echo-vars") == \
        THREADS * (ECHO_CALLS + RESP_CALLS)
    assert value(final, "a6fast_plugin_calls_total", plugin="resp-header") == \
        THREADS * (ECHO_CALLS + RESP_CALLS)
    assert value(final, "a6fast_errors_total", code="SERVICE_UNAVAILABLE") == \
        THREADS * RAISES_CALLS
    assert value(final, "a6fast_errors_total", code="CONF_TOKEN_NOT_FOUND") == THREADS
    assert value(final, "a6fast_errors_total", code="BAD_REQUEST") == 0
    confs = value(final, "a6fast_confs")
    if workers == 1:
        assert confs == THREADS * 3
    else:  # the largest store: each connection's confs are on the worker that served it
        assert 3 <= confs <= THREADS * 3
    assert value(final, "a6fast_workers") == workers
    assert value(final, "a6fast_worker_restarts_total") == 0
    assert value(final, "a6fast_reloads_total") == 0
    assert value(final, "a6fast_plugin_threads_overdue") == 0
    assert 0 < value(final, "a6fast_start_time_seconds") <= time.time()

    # the latency histogram counts the sampled calls: each conf's first, then 1 in 8 (the echo
    # conf's calls are its HTTPReqCalls and HTTPRespCalls)
    per_conf = (STOP_CALLS, ECHO_CALLS + RESP_CALLS, RAISES_CALLS)
    timed = 0
    for rpc in ("HTTPReqCall", "HTTPRespCall"):
        buckets, count, total = histogram(final, rpc)
        counts = [n for _, n in buckets]
        assert counts == sorted(counts) and buckets[-1] == (float("inf"), count)
        assert buckets[0][0] == pytest.approx(1.024e-6) and buckets[-2][0] > 60
        assert (total > 0) == (count > 0)
        timed += count
    assert timed == THREADS * sum(-(-calls // 8) for calls in per_conf)


def test_a_restarted_worker_is_counted_and_its_calls_stay(tmp_path):
    runner, url = start(tmp_path, 2)
    try:
        with runner.gateway() as gw:
            token = gw.prepare(STOP, "route#restart")
            for i in range(30):
                gw.call(token, id=i)
        assert wait_until(lambda: current(url, "a6fast_plugin_calls_total", plugin="stop")
                          == 30, 10)
        victim = children(runner.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: current(url, "a6fast_worker_restarts_total") == 1, 10)
        assert wait_until(lambda: current(url, "a6fast_workers") == 2
                          and victim not in children(runner.proc.pid), 10)
        after = scrape(url)
    finally:
        assert runner.stop() == 0, runner.log()
    assert value(after, "a6fast_calls_total", type="HTTPReqCall") == 30
    assert value(after, "a6fast_plugin_calls_total", plugin="stop") == 30


def test_a_plugin_thread_past_its_deadline_is_counted(tmp_path):
    runner, url = start(tmp_path, 1, "--call-timeout", "0.2")
    try:
        with runner.gateway() as gw:
            token = gw.prepare([("sleeps", '{"seconds": 30}')], "route#sleeps")
            assert err_code(gw.call(token)) == SERVICE_UNAVAILABLE
        assert wait_until(lambda: current(url, "a6fast_plugin_threads_overdue") == 1, 10)
    finally:
        assert runner.stop() == 0, runner.log()


def _metrics_port_inode(port):
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":%04X" % port) and fields[3] == "0A":  # LISTEN
                return fields[9]
    return None


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc")
def test_workers_do_not_hold_the_metrics_port(tmp_path):
    runner, url = start(tmp_path, 2)
    try:
        with runner.gateway() as gw:  # a worker restarted while the metrics thread runs, too
            gw.prepare(STOP, "route#fork")
        os.kill(children(runner.proc.pid)[0], signal.SIGKILL)
        assert wait_until(lambda: current(url, "a6fast_worker_restarts_total") == 1, 10)
        assert wait_until(lambda: len(children(runner.proc.pid)) == 2, 10)
        inode = _metrics_port_inode(int(url.rsplit(":", 1)[1].split("/")[0]))
        assert inode is not None

        def holders():
            out = []
            for pid in [runner.proc.pid] + children(runner.proc.pid):
                for fd in os.listdir("/proc/%d/fd" % pid):
                    try:
                        if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                            out.append(pid)
                    except OSError:
                        pass
            return out
        assert holders() == [runner.proc.pid]
    finally:
        assert runner.stop() == 0, runner.log()


def test_only_the_metrics_path_is_served(tmp_path):
    runner, url = start(tmp_path, 1)
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=10)
        assert info.value.code == 404
    finally:
        assert runner.stop() == 0, runner.log()


def test_a_client_that_sends_nothing_holds_up_no_scrape_and_is_cut(tmp_path):
    runner, url = start(tmp_path, 1)
    host, port = url.split("/")[2].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=30) as idle:
            with runner.gateway() as gw:
                token = gw.prepare(STOP, "route#idle")
                assert gw.call(token)[0] == RPC_HTTP_REQ_CALL
            assert value(scrape(url), "a6fast_calls_total", type="HTTPReqCall") == 1
            assert idle.recv(1) == b""  # closed by the runner at its deadline
    finally:
        assert runner.stop() == 0, runner.log()


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_metrics_on_ipv6_loopback(tmp_path):
    runner = RunnerProcess(tmp_path, "--workers", "1", "--metrics", "[::1]:0")
    try:
        url = re.search(r"Prometheus metrics on (http://\S+)", runner.log()).group(1)
        assert url.startswith("http://[::1]:")
        assert value(scrape(url), "a6fast_workers") == 1
    finally:
        assert runner.stop() == 0, runner.log()


def test_metrics_and_stats_together_read_the_same_counts(tmp_path):
    from a6fast.server.stats import read_snapshot

    address = "unix:%s" % (tmp_path / "stats.sock")
    runner, url = start(tmp_path, 1, "--stats", address)
    try:
        with runner.gateway() as gw:
            token = gw.prepare(STOP, "route#both")
            for i in range(9):
                gw.call(token, id=i)
        snap = read_snapshot(address)
        samples = scrape(url)
    finally:
        assert runner.stop() == 0, runner.log()
    assert snap["calls"]["HTTPReqCall"] == 9 == value(samples, "a6fast_calls_total",
                                                      type="HTTPReqCall")
    assert snap["restarts"] == 0 and snap["reloads"] == 0


# ---------------------------------------------------------------------------------------------
# Start-up

@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_metrics_port_is_refused_at_start(tmp_path, workers):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        runner = RunnerProcess(tmp_path, "--workers", workers, "--metrics",
                               "127.0.0.1:%d" % taken.getsockname()[1], wait=False)
        try:
            assert runner.proc.wait(20) == 1
        finally:
            runner.kill()
    finally:
        taken.close()
    assert "cannot serve metrics on 127.0.0.1:" in runner.log()
    assert not os.path.exists(runner.path)


def _serve_cli(*args, env=None):
    full_env = dict(os.environ, PYTHONPATH=A6FAST_ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "a6fast", "serve", "--listen",
                           "unix:/nonexistent/never-bound.sock"] + list(args),
                          capture_output=True, text=True, timeout=30, env=full_env,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("address,says", [
    ("::1:9464", "an IPv6 address goes in brackets, such as [::1]:9464"),
    ("[::1:9464", "no ']'"),
    ("[::1]9464", "expected [IPv6]:PORT"),
    ("[not:v6]:9464", "is not an IPv6 address"),
    ("127.0.0.1:65536", "the port must be a number from 0 to 65535"),
    ("127.0.0.1:-1", "the port must be a number from 0 to 65535"),
    ("127.0.0.1:", "the port must be a number from 0 to 65535"),
    ("9464", "expected HOST:PORT"),
    (":9464", "expected HOST:PORT"),
    ("bad host:9464", "is not a host name or IPv4 address"),
    ("300.1.1.1:9464", "is not an IPv4 address"),
])
def test_a_bad_metrics_address_is_one_line_and_exit_2(address, says):
    out = _serve_cli("--metrics", address)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("a6fast serve: error: --metrics "), lines
    assert says in lines[0]


def test_metrics_without_prometheus_client_says_how_to_install(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "prometheus_client.py").write_text("raise ImportError('not installed here')\n")
    out = _serve_cli("--metrics", "127.0.0.1:9464",
                     env={"PYTHONPATH": os.pathsep.join([str(shadow), A6FAST_ROOT])})
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "a6fast serve: error: --metrics needs the prometheus_client package (not installed "
        "here): pip install 'a6fast[metrics]' (or pip install prometheus_client)"]


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9464", ("::1", 9464)),
    ("[::]:65535", ("::", 65535)),
    ("metrics.example.internal:80", ("metrics.example.internal", 80)),
])
def test_metrics_addresses_that_parse(text, expected):
    assert parse_metrics_address(text) == expected


# ---------------------------------------------------------------------------------------------
# Without a server

def test_families_follow_the_merged_snapshot_and_its_buckets():
    from prometheus_client import CollectorRegistry, generate_latest

    hist = [0] * BUCKETS
    hist[0] = 1      # 0 ns
    hist[11] = 3     # 1024..2047 ns
    hist[20] = 2     # ~0.5..1 ms
    hist[40] = 1     # past the last bucket: +Inf only
    snap = merge([{"pid": 1, "time": time.time(), "started": time.time() - 5, "confs": 4,
                   "calls": {"PrepareConf": 2, "HTTPReqCall": 50, "HTTPRespCall": 0,
                             "ExtraInfo": 0},
                   "errors": {"BAD_REQUEST": 1}, "plugins": {"stop": 50},
                   "histogram_ns": {"HTTPReqCall": hist, "HTTPRespCall": [0] * BUCKETS},
                   "histogram_sum_ns": {"HTTPReqCall": 7_000_000_000, "HTTPRespCall": 0}}])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics_mod.RunnerCollector(lambda: snap))
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    buckets, count, total = histogram(samples, "HTTPReqCall")
    le = dict(buckets)
    assert count == 7 and total == 7.0
    assert le[1.024e-06] == 1 and le[2.048e-06] == 4 and le[0.001048576] == 6
    assert le[68.719476736] == 6 and le[float("inf")] == 7
    assert value(samples, "a6fast_errors_total", code="BAD_REQUEST") == 1
    assert value(samples, "a6fast_errors_total", code="SERVICE_UNAVAILABLE") == 0
    assert value(samples, "a6fast_confs") == 4 and value(samples, "a6fast_workers") == 1


class _StuckLoop:
    """A loop that never runs what it is given (its one thread is busy in a hook)."""

    def call_soon_threadsafe(self, callback, *args):
        pass

    def in_loop_thread(self):
        return False


def test_a_snapshot_waits_for_the_loop_only_so_long(monkeypatch):
    from a6fast.server import stats

    monkeypatch.setattr(stats, "LOOP_ANSWER_SECONDS", 0.05)
    endpoint = StatsEndpoint(None, None, None)
    endpoint._snapshot = lambda: {"taken": "on the loop"}
    endpoint._loop = _StuckLoop()
    with pytest.raises(LoopBusy):
        endpoint.snapshot()
    endpoint.detach_worker()  # the worker stopped: read where asked
    assert endpoint.snapshot() == {"taken": "on the loop"}
