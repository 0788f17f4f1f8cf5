"""Our runner against the floor: `a6fast serve` and a C runner that parses nothing, under a C
load generator shaped like the gateway.

The floor runner and the load generator are this project's own (bench/floor/floor_runner.c and
bench/floor/a6load.c, built with CC); the frames they send and answer are written here with
a6fast's own encoders: the request `a6fast bench` sends by default (GET, 10 headers, 5 args) to
the built-in `stop` example with conf {"body": "hi"}, and, for the floor, the very answer our
runner gives to it.  Both runners are loaded by the same load generator in the same run,
alternating round by round (the machine's noise then hits both alike), in two scenes:

  pinned    1 connection, runner and load generator on one CPU (CPU 0): the cost of one call
  16 conns  16 connections, nothing pinned: throughput with every core in use

Printed: each round's calls/s and p50, the median ratio ours/floor per scene, and each runner's
CPU time per call (utime+stime of the runner, its threads and every process below it, from
/proc, so a multi-worker server is counted whole).

    python bench/floor.py [--rounds 5] [--seconds 3] [--connections 16] [--bin DIR]

--bin DIR: take floor_runner and a6load already built there (`make floor` builds them in
build/floor); otherwise they are built in a temp dir.  Environment: CC (default cc),
A6FAST_SERVE_ARGS (extra arguments for `a6fast serve`, e.g. "--workers 1"), A6FAST_BENCH_TOOLS
(a directory holding an older pair of tools, ideal_runner.c and a6load.c with their frame
writers gen_frames.py and gen_responses.py: compare against those instead, for figures measured
with them).  The runner runs on the repo's .venv Python when there is one, else on this Python.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)   # a6fast's encoders, also when run by a Python it is not installed in

from a6fast import codec, gateway, loadgen  # noqa: E402

STOP_CONF = '{"body": "hi"}'
CALL_ID = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PIN_CPU = 0


def runner_python():
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


def compile_c(source, target):
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-o", target, source], check=True)


def token_offset(frame_a, frame_b):
    """Where two frames differing only in their conf_token differ: the token's byte offset."""
    diff = [i for i in range(len(frame_a)) if frame_a[i] != frame_b[i]]
    if len(frame_a) != len(frame_b) or diff != list(range(diff[0], diff[0] + 4)):
        raise SystemExit("cannot find the conf_token in the call frame: %r" % diff)
    return diff[0]


def write_frames(directory):
    """The frames of the floor scene: what the load generator sends and what the floor answers.

    Returns {name: path} and the conf_token's offset in the call frame."""
    spec = loadgen.LoadSpec(listen="", conf=[("stop", STOP_CONF)])
    call = loadgen.call_frame(spec, CALL_ID, 0)
    frames = {
        "prepare": gateway.encode_prepare_conf_req(spec.conf, spec.key),
        "call": call,
        "prepare_answer": codec.encode_prepare_conf_resp(1),
        # what `stop` with {"body": "hi"} answers (bench/test_floor.py checks it byte for byte)
        "call_answer": codec.encode_stop(CALL_ID, 200, None, b"hi"),
    }
    offset = token_offset(call, loadgen.call_frame(spec, CALL_ID, 0xFFFFFFFF))
    paths = {}
    for name, frame in frames.items():
        paths[name] = os.path.join(directory, name + ".bin")
        with open(paths[name], "wb") as f:
            f.write(frame)
    return paths, offset


class OwnTools:
    """bench/floor/floor_runner.c and bench/floor/a6load.c."""

    floor_name = "floor_runner"

    def __init__(self, tmp, bin_dir=None):
        if bin_dir is None:
            bin_dir = tmp
            for name in ("floor_runner", "a6load"):
                compile_c(os.path.join(REPO, "bench", "floor", name + ".c"),
                          os.path.join(bin_dir, name))
        self.floor_runner = os.path.join(bin_dir, "floor_runner")
        self.a6load = os.path.join(bin_dir, "a6load")
        for program in (self.floor_runner, self.a6load):
            if not os.access(program, os.X_OK):
                raise SystemExit("%s is not built (make floor builds it)" % program)
        self.frames, self.offset = write_frames(tmp)
        self.where = os.path.relpath(os.path.join(REPO, "bench", "floor"))

    def floor_argv(self):
        return [self.floor_runner, "{sock}", self.frames["prepare_answer"],
                self.frames["call_answer"]]

    def load_argv(self, sock, conns, seconds):
        return [self.a6load, sock, self.frames["prepare"], self.frames["call"], str(self.offset),
                str(conns), str(seconds)]


class BenchTools:
    """An older pair of tools (ideal_runner.c, a6load.c) with their own frame writers."""

    floor_name = "ideal_runner"

    def __init__(self, tmp, tools):
        if not os.path.isfile(os.path.join(tools, "a6load.c")):
            raise SystemExit("no a6load.c in A6FAST_BENCH_TOOLS=%s" % tools)
        for name in ("a6load", "ideal_runner"):
            compile_c(os.path.join(tools, name + ".c"), os.path.join(tmp, name))
        self.tmp = tmp
        self.frames = os.path.join(tmp, "frames")
        python = runner_python()  # it has flatbuffers and a6pluginprotos (the test extras)
        subprocess.run([python, os.path.join(tools, "gen_frames.py"), self.frames, "stop",
                        STOP_CONF], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([python, os.path.join(tools, "gen_responses.py"), self.frames],
                       check=True, stdout=subprocess.DEVNULL)
        self.where = tools

    def floor_argv(self):
        return [os.path.join(self.tmp, "ideal_runner"), "{sock}",
                os.path.join(self.frames, "prep_resp.bin"),
                os.path.join(self.frames, "stop_resp.bin")]

    def load_argv(self, sock, conns, seconds):
        return [os.path.join(self.tmp, "a6load"), sock, os.path.join(self.frames, "prepare.bin"),
                os.path.join(self.frames, "call.bin"), str(conns), str(seconds)]


def pinned_to_cpu0():
    os.sched_setaffinity(0, {PIN_CPU})


def wait_listening(path, proc, log_path, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise SystemExit("%s exited with %s:\n%s" % (path, proc.returncode, f.read()))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listens on %s after %ss" % (path, timeout))


class Server:
    """A runner process on its own socket; ``pin`` runs it on CPU 0 only."""

    def __init__(self, name, tmp, argv, pin):
        self.name = name
        self.sock = os.path.join(tmp, "%s%s.sock" % (name, "-pinned" if pin else ""))
        self.log_path = self.sock + ".log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([a.replace("{sock}", self.sock) for a in argv],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                     preexec_fn=pinned_to_cpu0 if pin else None)
        wait_listening(self.sock, self.proc, self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def cpu_ticks(self):
        """utime+stime (+ reaped children's) of this process and every process below it."""
        parents = {}
        stats = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    raw = f.read()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
            pid = int(entry)
            parents[pid] = int(fields[1])
            # utime, stime, cutime, cstime: fields 14..17 of stat, 12..15 after comm
            stats[pid] = sum(int(x) for x in fields[11:15])
        tree, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo.extend(child for child, parent in parents.items()
                        if parent == pid and child not in tree)
        return sum(stats.get(pid, 0) for pid in tree), len(tree)


def load(tools, server, conns, seconds, pin):
    out = subprocess.run(tools.load_argv(server.sock, conns, seconds), capture_output=True,
                         text=True, preexec_fn=pinned_to_cpu0 if pin else None)
    values = dict(re.findall(r"(\w+)=([\d.]+)", out.stdout))
    if out.returncode != 0 or "calls_per_s" not in values:
        raise SystemExit("the load generator against %s failed (%d): %s%s" % (
            server.name, out.returncode, out.stdout, out.stderr))
    return {key: float(value) for key, value in values.items()}


def scene(title, tools, servers, conns, seconds, rounds, pin):
    print("\n== %s: %d connection(s), %s, %d x %g s" % (
        title, conns, "runner and load generator on CPU %d" % PIN_CPU if pin else "unpinned",
        rounds, seconds))
    ratios, lat_ratios, cps = [], [], {s.name: [] for s in servers}
    cpu_us = {s.name: [] for s in servers}
    for index in range(rounds):
        order = servers if index % 2 == 0 else servers[::-1]
        got = {}
        for server in order:
            before, _ = server.cpu_ticks()
            got[server.name] = result = load(tools, server, conns, seconds, pin)
            after, procs = server.cpu_ticks()
            cps[server.name].append(result["calls_per_s"])
            per_call = (after - before) / CLK_TCK / max(1.0, result["calls"]) * 1e6
            cpu_us[server.name].append(per_call)
            result["cpu_us"] = per_call
            result["procs"] = procs
        ours, floor = got["a6fast"], got["floor"]
        ratios.append(ours["calls_per_s"] / floor["calls_per_s"])
        lat_ratios.append(ours["p50_us"] / floor["p50_us"])
        print("  round %d: floor %7.0f calls/s p50 %6.1f us | a6fast %7.0f calls/s p50 %6.1f us"
              " (%.2f us CPU/call, %d proc) | ours/floor %.3f"
              % (index + 1, floor["calls_per_s"], floor["p50_us"], ours["calls_per_s"],
                 ours["p50_us"], ours["cpu_us"], ours["procs"], ratios[-1]))
    med = statistics.median
    print("  median: floor %.0f calls/s, a6fast %.0f calls/s; ours/floor calls/s %.3f, "
          "p50 latency ours/floor %.2f"
          % (med(cps["floor"]), med(cps["a6fast"]), med(ratios), med(lat_ratios)))
    print("  CPU per call (median): a6fast %.2f us (runner and all its processes), "
          "%s %.2f us" % (med(cpu_us["a6fast"]), tools.floor_name, med(cpu_us["floor"])))
    return med(ratios)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--bin", help="floor_runner and a6load already built here")
    args = parser.parse_args()

    pinned = hasattr(os, "sched_setaffinity") and PIN_CPU in os.sched_getaffinity(0)
    tmp = tempfile.mkdtemp(prefix="a6fast-floor-")
    servers = []
    try:
        older = os.environ.get("A6FAST_BENCH_TOOLS")
        tools = BenchTools(tmp, os.path.abspath(older)) if older else OwnTools(tmp, args.bin)
        ours_argv = ([runner_python(), "-m", "a6fast", "serve", "--listen", "unix:{sock}",
                      "--log-level", "warning"]
                     + shlex.split(os.environ.get("A6FAST_SERVE_ARGS", "")))
        print("floor: %s, runner %s, %d CPU(s), floor runner and load generator from %s" % (
            time.strftime("%Y-%m-%d %H:%M"), " ".join(ours_argv[:4]), os.cpu_count(),
            tools.where))
        results = {}
        if pinned:
            pair = [Server("floor", tmp, tools.floor_argv(), True),
                    Server("a6fast", tmp, ours_argv, True)]
            servers += pair
            for server in pair:  # warm up: PrepareConf, first calls
                load(tools, server, 1, 0.5, True)
            results["pinned"] = scene("pinned", tools, pair, 1, args.seconds, args.rounds, True)
        else:
            print("no CPU affinity here: skipping the pinned scene")
        pair = [Server("floor", tmp, tools.floor_argv(), False),
                Server("a6fast", tmp, ours_argv, False)]
        servers += pair
        for server in pair:
            load(tools, server, args.connections, 0.5, False)
        results["unpinned"] = scene("%d conns" % args.connections, tools, pair,
                                    args.connections, args.seconds, args.rounds, False)
        print("\nsummary: ours/floor calls/s, median of %d rounds: %s" % (args.rounds, ", ".join(
            "%s %.3f" % ("1 conn pinned" if k == "pinned" else "%d conns" % args.connections, v)
            for k, v in results.items())))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
