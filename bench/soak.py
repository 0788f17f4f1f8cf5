"""Soak: `a6fast serve --workers 2` under a long, mixed, hostile load; does it stay up, answer
every call the way it should, and hold its memory and file descriptors?

Client processes (two by default) send, at the highest rate they can, a mix of

  good        a call to an inline plugin that stops with the path it was given
  extra-info  a call whose async plugin asks the gateway for a variable (ExtraInfo)
  raises      a call whose plugin raises                       -> Err SERVICE_UNAVAILABLE
  malformed   random, truncated-type, zero-length or corrupt-headers frames -> a type 0 Err
  disconnect  a connection closed mid-frame, mid-call (mid-ExtraInfo) or before reading
  churn       a connection opened for one call and closed

and a slower thread adds calls whose plugin hangs (a coroutine that never resumes, a thread that
sleeps past the deadline), each answered SERVICE_UNAVAILABLE at --call-timeout.  Every answer is
checked: an answer that is not the expected one counts as "WRONG", and a success answer to a bad
frame or a failed plugin counts as "FAIL-OPEN".

Reported: calls served, outcomes by kind, latency of the good calls, and RSS and open fds of the
runner's processes (parent and workers) at the start and end (and every --sample seconds), worker
restarts, log lines by level and how many the rate limiter suppressed, and the exit after SIGTERM.

    python bench/soak.py [--minutes 10] [--clients 2] [--json report.json]

Exit status 1 when anything was wrong or failed open, or the runner died.
"""
import argparse
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from a6fast import gateway  # noqa: E402
from a6fast.protocol import (BAD_REQUEST, ERR_NAMES, RPC_ERR, RPC_EXTRA_INFO,  # noqa: E402
                             RPC_HTTP_REQ_CALL, RPC_PREPARE_CONF, SERVICE_UNAVAILABLE)

PLUGINS = '''
import time

import a6fast
from a6fast.futures import Future


@a6fast.plugin("soak-echo", inline=True)
def echo(request, conf):
    request.stop(200, body=request.path or "")


@a6fast.plugin("soak-headers", inline=True)
def headers(request, conf):
    request.stop(200, body=str(len(request.headers.items())))


@a6fast.plugin("soak-var")
async def var(request, conf):
    request.stop(200, body=(await request.var("remote_addr")) or "")


@a6fast.plugin("soak-raises", inline=True)
def raises(request, conf):
    raise RuntimeError("soak: this plugin fails on purpose")


@a6fast.plugin("soak-hangs")
async def hangs(request, conf):
    await Future()


@a6fast.plugin("soak-sleeps")
def sleeps(request, conf):
    time.sleep(conf["seconds"])
'''

KINDS = ("good", "extra-info", "raises", "malformed", "disconnect", "churn")
WEIGHTS = (70, 10, 8, 7, 4, 1)
READ_TIMEOUT = 10.0


# The runner's processes ---------------------------------------------------------------------------

def family(pid):
    pids = [pid]
    try:
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return pids


def measure(pid):
    pids = family(pid)
    rss = fds = 0
    for p in pids:
        try:
            fds += len(os.listdir("/proc/%d/fd" % p))
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return {"pids": pids, "rss_kib": rss, "fds": fds}


# Clients --------------------------------------------------------------------------------------------

class Client:
    """One client process: a kept-alive connection plus the odd fresh one, a weighted mix."""

    def __init__(self, path, tokens, seed):
        self.path = path
        self.tokens = tokens
        self.rnd = random.Random(seed)
        self.counts = {}
        self.latencies = []  # of good calls, a reservoir sample
        self.seen_good = 0
        self.next_id = 0
        self.conn = None

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(self.path)
        return sock

    def call_frame(self, token, path="/soak", headers=None):
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        return self.next_id, gateway.encode_http_req_call_req(self.next_id, token, path=path,
                                                              headers=headers)

    def run(self, deadline):
        self.conn = self.connect()
        kinds = self.rnd.choices(KINDS, WEIGHTS, k=4096)
        i = 0
        while time.monotonic() < deadline:
            kind = kinds[i & 4095]
            i += 1
            try:
                getattr(self, "do_" + kind.replace("-", "_"))()
            except (OSError, EOFError) as exc:
                self.count("connection error during %s: %s" % (kind, type(exc).__name__))
                self.reconnect()
        self.conn.close()

    def reconnect(self):
        try:
            self.conn.close()
        finally:
            self.conn = self.connect()

    def expect_err(self, kind, answer, codes):
        rpc_type, payload = answer
        if rpc_type == RPC_ERR:
            code = gateway.decode_err(payload)
            self.count("%s: Err %s" % (kind, ERR_NAMES.get(code, code)))
            if code not in codes:
                self.count("WRONG")
        elif rpc_type in (RPC_HTTP_REQ_CALL, RPC_PREPARE_CONF):
            self.count("%s: FAIL-OPEN" % kind)
        else:
            self.count("%s: WRONG answer type %d" % (kind, rpc_type))
            self.count("WRONG")

    def do_good(self):
        call_id, frame = self.call_frame(self.tokens["soak-echo"], "/g")
        start = time.perf_counter()
        self.conn.sendall(frame)
        rpc_type, payload = gateway.read_frame(self.conn)
        took = time.perf_counter() - start
        if rpc_type == RPC_HTTP_REQ_CALL:
            resp = gateway.decode_http_req_call_resp(payload)
            if resp.id == call_id and resp.stop is not None and resp.stop.body == b"/g":
                self.count("good: answered")
                self.seen_good += 1
                if len(self.latencies) < 20000:
                    self.latencies.append(took)
                else:
                    slot = self.rnd.randrange(self.seen_good)
                    if slot < 20000:
                        self.latencies[slot] = took
                return
        self.count("good: WRONG answer")
        self.count("WRONG")

    def do_extra_info(self):
        call_id, frame = self.call_frame(self.tokens["soak-var"])
        self.conn.sendall(frame)
        rpc_type, payload = gateway.read_frame(self.conn)
        if rpc_type != RPC_EXTRA_INFO:
            self.count("extra-info: no ExtraInfo asked")
            self.count("WRONG")
            return
        self.conn.sendall(gateway.encode_extra_info_resp(b"10.1.2.3"))
        rpc_type, payload = gateway.read_frame(self.conn)
        if rpc_type == RPC_HTTP_REQ_CALL:
            resp = gateway.decode_http_req_call_resp(payload)
            if resp.id == call_id and resp.stop.body == b"10.1.2.3":
                self.count("extra-info: answered")
                return
        self.count("extra-info: WRONG answer")
        self.count("WRONG")

    def do_raises(self):
        _, frame = self.call_frame(self.tokens["soak-raises"])
        self.conn.sendall(frame)
        self.expect_err("raises", gateway.read_frame(self.conn), (SERVICE_UNAVAILABLE,))

    def malformed_frame(self):
        how = self.rnd.randrange(5)
        if how == 0:  # random bytes under a call type
            payload = bytes(self.rnd.randrange(256) for _ in range(self.rnd.randrange(1, 120)))
            return "random", bytes([RPC_HTTP_REQ_CALL]) + len(payload).to_bytes(3, "big") + payload
        if how == 1:
            return "zero-length", bytes([RPC_HTTP_REQ_CALL, 0, 0, 0])
        if how == 2:
            return "unknown type", bytes([self.rnd.randrange(5, 256), 0, 0, 4]) + b"junk"
        if how == 3:  # a PrepareConf payload under the call type
            frame = gateway.encode_prepare_conf_req([("soak-echo", "{}")], "route#x")
            return "other payload", bytes([RPC_HTTP_REQ_CALL]) + frame[1:]
        # a valid call whose headers vector claims 2^31 - 1 entries, to a plugin reading them
        _, frame = self.call_frame(self.tokens["soak-headers"], headers=[("a", "1")])
        payload = bytearray(frame[4:])
        root = struct.unpack_from("<I", payload, 0)[0]
        vtable = root - struct.unpack_from("<i", payload, root)[0]
        at = root + struct.unpack_from("<H", payload, vtable + 4 + 2 * 5)[0]
        vector = at + struct.unpack_from("<I", payload, at)[0]
        struct.pack_into("<I", payload, vector, 0x7FFFFFFF)
        return "corrupt headers", frame[:4] + bytes(payload)

    def do_malformed(self):
        what, frame = self.malformed_frame()
        self.conn.sendall(frame)
        codes = (BAD_REQUEST,) if what != "random" else tuple(ERR_NAMES)
        self.expect_err("malformed (%s)" % what, gateway.read_frame(self.conn), codes)

    def do_disconnect(self):
        how = self.rnd.randrange(3)
        _, frame = self.call_frame(self.tokens["soak-var" if how == 1 else "soak-echo"])
        if how == 0:
            self.conn.sendall(frame[:self.rnd.randrange(1, len(frame))])
            self.count("disconnect: mid-frame")
        elif how == 1:
            self.conn.sendall(frame)
            rpc_type, _ = gateway.read_frame(self.conn)
            self.count("disconnect: mid-ExtraInfo" if rpc_type == RPC_EXTRA_INFO
                       else "disconnect: WRONG answer")
        else:
            self.conn.sendall(frame)
            self.count("disconnect: before reading")
        self.reconnect()

    def do_churn(self):
        with self.connect() as sock:
            call_id, frame = self.call_frame(self.tokens["soak-echo"], "/c")
            sock.sendall(frame)
            rpc_type, payload = gateway.read_frame(sock)
        if rpc_type == RPC_HTTP_REQ_CALL and gateway.decode_http_req_call_resp(payload).id == call_id:
            self.count("churn: answered")
        else:
            self.count("churn: WRONG answer")
            self.count("WRONG")


def client_main(path, tokens, seed, deadline, out):
    client = Client(path, tokens, seed)
    try:
        client.run(deadline)
    except Exception as exc:  # noqa: BLE001  reported, the soak goes on with the others
        client.count("client crashed: %r" % (exc,))
    out.put({"counts": client.counts, "latencies": client.latencies})


def hang_main(path, tokens, deadline, counts, call_timeout):
    """A slow stream of calls whose plugins never answer in time."""
    n = 0
    while time.monotonic() < deadline:
        n += 1
        plugin = "soak-hangs" if n % 2 else "soak-sleeps"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(READ_TIMEOUT)
                sock.connect(path)
                started = time.monotonic()
                sock.sendall(gateway.encode_http_req_call_req(n, tokens[plugin]))
                rpc_type, payload = gateway.read_frame(sock)
                waited = time.monotonic() - started
            if rpc_type == RPC_ERR and gateway.decode_err(payload) == SERVICE_UNAVAILABLE:
                key = "hangs: Err SERVICE_UNAVAILABLE"
                if waited > call_timeout + 1.0:
                    key = "hangs: answered late"
            elif rpc_type == RPC_HTTP_REQ_CALL:
                key = "hangs: FAIL-OPEN"
            else:
                key = "hangs: WRONG answer"
        except (OSError, EOFError) as exc:
            key = "hangs: connection error %s" % type(exc).__name__
        counts[key] = counts.get(key, 0) + 1
        time.sleep(0.5)


# The soak ---------------------------------------------------------------------------------------------

def runner_python():
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def start_runner(workdir, args):
    plugin_dir = os.path.join(workdir, "plugins")
    os.mkdir(plugin_dir)
    with open(os.path.join(plugin_dir, "soak_plugins.py"), "w") as f:
        f.write(PLUGINS)
    path = os.path.join(workdir, "soak.sock")
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("APISIX_LISTEN_ADDRESS", None)
    log = open(os.path.join(workdir, "runner.log"), "wb")
    proc = subprocess.Popen([runner_python(), "-m", "a6fast", "serve", "--listen", "unix:" + path,
                             "--plugins", plugin_dir, "--workers", str(args.workers),
                             "--call-timeout", str(args.call_timeout)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the runner exited at start:\n" + open(log.name).read())
        if len(family(proc.pid)) > args.workers or args.workers == 1:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(path)
                break
            except OSError:
                pass
        time.sleep(0.05)
    return proc, path, log


def prepare_all(path):
    tokens = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(READ_TIMEOUT)
        sock.connect(path)
        for name, conf in (("soak-echo", "{}"), ("soak-headers", "{}"), ("soak-var", "{}"),
                           ("soak-raises", "{}"), ("soak-hangs", "{}"),
                           ("soak-sleeps", '{"seconds": 2.0}')):
            sock.sendall(gateway.encode_prepare_conf_req([(name, conf)], "route#" + name))
            rpc_type, payload = gateway.read_frame(sock)
            assert rpc_type == RPC_PREPARE_CONF, (name, rpc_type)
            tokens[name] = gateway.decode_prepare_conf_resp(payload)
    return tokens


def log_summary(text):
    levels = {}
    for level in re.findall(r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) a6fast\[", text):
        levels[level] = levels.get(level, 0) + 1
    suppressed = sum(int(n) for n in re.findall(r"(\d+) more (?:warnings|errors) about", text))
    return {"lines": text.count("\n"), "by_level": levels, "suppressed": suppressed,
            "tracebacks": text.count("Traceback"), "bytes": len(text)}


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--call-timeout", type=float, default=0.5)
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="a6fast-soak-")
    proc, path, log = start_runner(workdir, args)
    report = {"minutes": args.minutes, "clients": args.clients, "workers": args.workers,
              "call_timeout": args.call_timeout, "workdir": workdir}
    try:
        tokens = prepare_all(path)
        time.sleep(0.5)
        report["start"] = measure(proc.pid)
        print("soak: %s minute(s), %d client process(es) against `a6fast serve --workers %d`"
              " (pid %d), log in %s" % (args.minutes, args.clients, args.workers, proc.pid,
                                          log.name), flush=True)
        print("start: RSS %(rss_kib)d KiB, %(fds)d fds, processes %(pids)s" % report["start"],
              flush=True)
        started = time.monotonic()
        deadline = started + args.minutes * 60
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        clients = [ctx.Process(target=client_main, args=(path, tokens, 1000 + i, deadline, out))
                   for i in range(args.clients)]
        for client in clients:
            client.start()
        hang_counts = {}
        hanger = threading.Thread(target=hang_main, daemon=True,
                                  args=(path, tokens, deadline, hang_counts, args.call_timeout))
        hanger.start()
        samples = []
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(min(args.sample, max(0.0, deadline - time.monotonic())))
            sample = measure(proc.pid)
            sample["t"] = round(time.monotonic() - started)
            samples.append(sample)
            print("t=%(t)ds: RSS %(rss_kib)d KiB, %(fds)d fds, processes %(pids)s" % sample,
                  flush=True)
        results = [out.get(timeout=60) for _ in clients]
        for client in clients:
            client.join(30)
        hanger.join(30)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # closed connections are released
        report["end"] = measure(proc.pid)
        report["samples"] = samples
        counts = dict(hang_counts)
        latencies = []
        for result in results:
            for key, value in result["counts"].items():
                counts[key] = counts.get(key, 0) + value
            latencies += result["latencies"]
        answered = sum(v for k, v in counts.items()
                       if k.endswith(": answered") or ": Err " in k)
        report["counts"] = dict(sorted(counts.items()))
        report["calls_answered"] = answered
        report["calls_per_s"] = round(answered / elapsed)
        report["good_latency_ms"] = {
            "p50": percentile(latencies, 0.5) * 1e3 if latencies else None,
            "p99": percentile(latencies, 0.99) * 1e3 if latencies else None,
            "max_sampled": max(latencies) * 1e3 if latencies else None}
        restarted = sorted(set(report["start"]["pids"][1:]) - set(report["end"]["pids"][1:]))
        report["workers_replaced"] = restarted
    finally:
        stop_started = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
        else:
            status = "died: %s" % proc.returncode
        report["exit"] = {"status": status, "seconds_after_sigterm":
                          round(time.monotonic() - stop_started, 3)}
        log.close()
        with open(log.name) as f:
            report["log"] = log_summary(f.read())

    bad = {k: v for k, v in report["counts"].items()
           if "FAIL-OPEN" in k or "WRONG" in k or "crashed" in k or "late" in k}
    report["problems"] = bad
    print()
    print("answered %d calls in %.0f s (%d/s); good-call latency p50 %.2f ms, p99 %.2f ms"
          % (report["calls_answered"], elapsed, report["calls_per_s"],
             report["good_latency_ms"]["p50"] or 0, report["good_latency_ms"]["p99"] or 0))
    for key, value in report["counts"].items():
        print("  %-52s %10d" % (key, value))
    for when in ("start", "end"):
        print("%-5s RSS %8d KiB   fds %5d   processes %s" % (
            when, report[when]["rss_kib"], report[when]["fds"], report[when]["pids"]))
    print("workers replaced: %s" % (report["workers_replaced"] or "none"))
    print("runner log: %(lines)d lines, %(bytes)d bytes, by level %(by_level)s, %(suppressed)d "
          "more suppressed by the rate limiter, %(tracebacks)d tracebacks" % report["log"])
    print("exit after SIGTERM: status %(status)s in %(seconds_after_sigterm).3f s" % report["exit"])
    print("problems: %s" % (bad or "none"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    return 1 if bad or report["exit"]["status"] != 0 or report["workers_replaced"] else 0


if __name__ == "__main__":
    sys.exit(main())
