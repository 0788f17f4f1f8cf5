"""Our runner against the floor: `a6fast serve` and bench-tools' ideal_runner under a6load.

Both runners are loaded by the same C load generator in the same run, alternating round by
round (the machine's noise then hits both alike), in two scenes:

  pinned    1 connection, runner and a6load on one CPU (taskset -c 0): the cost of one call
  16 conns  16 connections, nothing pinned: throughput with every core in use

Printed: each round's calls/s and p50, the median ratio ours/ideal per scene, and our runner's
CPU time per call (utime+stime of the runner, its threads and every process
below it, from /proc, so a multi-worker server is counted whole).

    python bench/floor.py [--rounds 5] [--seconds 3]

Environment: A6FAST_BENCH_TOOLS (default: ../shared/bench-tools from the repo root), CC
(default cc), A6FAST_SERVE_ARGS (extra arguments for `a6fast serve`, e.g. "--workers 1").
The runner runs on the repo's .venv Python when there is one, else on this Python.
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
STOP_CONF = '{"body": "hi"}'
CLK_TCK = os.sysconf("SC_CLK_TCK")


def tools_dir():
    return os.path.abspath(os.environ.get("A6FAST_BENCH_TOOLS")
                           or os.path.join(REPO, "..", "shared", "bench-tools"))


def runner_python():
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


def build(tmp, tools):
    cc = os.environ.get("CC", "cc")
    for name in ("a6load", "ideal_runner"):
        subprocess.run([cc, "-O2", "-o", os.path.join(tmp, name),
                        os.path.join(tools, name + ".c")], check=True)
    frames = os.path.join(tmp, "frames")
    python = runner_python()  # it has flatbuffers and a6pluginprotos (the test extras)
    subprocess.run([python, os.path.join(tools, "gen_frames.py"), frames, "stop", STOP_CONF],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([python, os.path.join(tools, "gen_responses.py"), frames], check=True,
                   stdout=subprocess.DEVNULL)
    return frames


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
    """A runner process on its own socket; ``pin`` prefixes ``taskset -c 0``."""

    def __init__(self, name, tmp, argv, pin):
        self.name = name
        self.sock = os.path.join(tmp, "%s%s.sock" % (name, "-pinned" if pin else ""))
        self.log_path = self.sock + ".log"
        prefix = ["taskset", "-c", "0"] if pin else []
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(prefix + [a.replace("{sock}", self.sock) for a in argv],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
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


def a6load(tmp, frames, server, conns, seconds, pin):
    argv = [os.path.join(tmp, "a6load"), server.sock, os.path.join(frames, "prepare.bin"),
            os.path.join(frames, "call.bin"), str(conns), str(seconds)]
    if pin:
        argv = ["taskset", "-c", "0"] + argv
    out = subprocess.run(argv, capture_output=True, text=True)
    values = dict(re.findall(r"(\w+)=([\d.]+)", out.stdout))
    if out.returncode != 0 or "calls_per_s" not in values:
        raise SystemExit("a6load against %s failed (%d): %s%s" % (
            server.name, out.returncode, out.stdout, out.stderr))
    return {key: float(value) for key, value in values.items()}


def scene(title, tmp, frames, servers, conns, seconds, rounds, pin):
    print("\n== %s: %d connection(s), %s, %d x %g s" % (
        title, conns, "runner and a6load on CPU 0" if pin else "unpinned", rounds, seconds))
    ratios, lat_ratios, cps = [], [], {s.name: [] for s in servers}
    cpu_us = {s.name: [] for s in servers}
    for index in range(rounds):
        order = servers if index % 2 == 0 else servers[::-1]
        got = {}
        for server in order:
            before, _ = server.cpu_ticks()
            got[server.name] = result = a6load(tmp, frames, server, conns, seconds, pin)
            after, procs = server.cpu_ticks()
            cps[server.name].append(result["calls_per_s"])
            per_call = (after - before) / CLK_TCK / max(1.0, result["calls"]) * 1e6
            cpu_us[server.name].append(per_call)
            result["cpu_us"] = per_call
            result["procs"] = procs
        ours, ideal = got["a6fast"], got["ideal"]
        ratios.append(ours["calls_per_s"] / ideal["calls_per_s"])
        lat_ratios.append(ours["p50_us"] / ideal["p50_us"])
        print("  round %d: ideal %7.0f calls/s p50 %6.1f us | a6fast %7.0f calls/s p50 %6.1f us"
              " (%.2f us CPU/call, %d proc) | ours/ideal %.3f"
              % (index + 1, ideal["calls_per_s"], ideal["p50_us"], ours["calls_per_s"],
                 ours["p50_us"], ours["cpu_us"], ours["procs"], ratios[-1]))
    med = statistics.median
    print("  median: ideal %.0f calls/s, a6fast %.0f calls/s; ours/ideal calls/s %.3f, "
          "p50 latency ours/ideal %.2f"
          % (med(cps["ideal"]), med(cps["a6fast"]), med(ratios), med(lat_ratios)))
    print("  CPU per call (median): a6fast %.2f us (runner and all its processes), "
          "ideal_runner %.2f us" % (med(cpu_us["a6fast"]), med(cpu_us["ideal"])))
    return med(ratios)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    tools = tools_dir()
    if not os.path.isfile(os.path.join(tools, "a6load.c")):
        raise SystemExit("bench-tools not found at %s (set A6FAST_BENCH_TOOLS)" % tools)
    pinned = shutil.which("taskset") is not None
    tmp = tempfile.mkdtemp(prefix="a6fast-floor-")
    servers = []
    try:
        frames = build(tmp, tools)
        ideal_argv = [os.path.join(tmp, "ideal_runner"), "{sock}",
                      os.path.join(frames, "prep_resp.bin"), os.path.join(frames, "stop_resp.bin")]
        ours_argv = ([runner_python(), "-m", "a6fast", "serve", "--listen", "unix:{sock}",
                      "--log-level", "warning"]
                     + shlex.split(os.environ.get("A6FAST_SERVE_ARGS", "")))
        print("floor: %s, runner %s, %d CPU(s), tools %s" % (
            time.strftime("%Y-%m-%d %H:%M"), " ".join(ours_argv[:4]), os.cpu_count(), tools))
        results = {}
        if pinned:
            pair = [Server("ideal", tmp, ideal_argv, True), Server("a6fast", tmp, ours_argv, True)]
            servers += pair
            for server in pair:  # warm up: PrepareConf, first calls
                a6load(tmp, frames, server, 1, 0.5, True)
            results["pinned"] = scene("pinned", tmp, frames, pair, 1, args.seconds, args.rounds,
                                      True)
        else:
            print("taskset not found: skipping the pinned scene")
        pair = [Server("ideal", tmp, ideal_argv, False), Server("a6fast", tmp, ours_argv, False)]
        servers += pair
        for server in pair:
            a6load(tmp, frames, server, args.connections, 0.5, False)
        results["16"] = scene("%d conns" % args.connections, tmp, frames, pair, args.connections,
                              args.seconds, args.rounds, False)
        print("\nsummary: ours/ideal calls/s, median of %d rounds: %s" % (args.rounds, ", ".join(
            "%s %.3f" % ("1 conn pinned" if k == "pinned" else "%d conns" % args.connections, v)
            for k, v in results.items())))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
