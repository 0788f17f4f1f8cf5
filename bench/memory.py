"""RSS of a runner over many calls and many distinct confs: it must stay flat after warm-up.

    python bench/memory.py [--calls 1000000] [--prepares 100000]

Starts `a6fast serve --workers 1` on a temp socket; drives calls with `a6fast bench` (the stop
example, 8 connections) and PrepareConf frames with distinct keys over one connection; prints the
runner's RSS (from /proc) after warm-up and at the end of each phase.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from a6fast import gateway  # noqa: E402


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def load(path, calls_per_s_guess, calls):
    """Run `a6fast bench` long enough for about ``calls`` calls; the number it served."""
    seconds = max(1.0, calls / calls_per_s_guess)
    out = subprocess.run([sys.executable, "-m", "a6fast", "bench", "--listen", "unix:" + path,
                          "--plugin", "stop", "--conf", '{"body": "hi"}', "--connections", "8",
                          "--seconds", "%.1f" % seconds, "--json"],
                         capture_output=True, text=True, cwd=REPO, check=True)
    import json
    return json.loads(out.stdout)


def prepares(path, first, count):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        for i in range(first, first + count):
            sock.sendall(gateway.encode_prepare_conf_req([("stop", '{"status": %d}' % (200 + i % 300))],
                                                         "route#%d#ext-plugin-pre-req#1" % i))
            rpc_type, _ = gateway.read_frame(sock)
            assert rpc_type == 1, rpc_type


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--prepares", type=int, default=100_000)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="a6fast-mem-")
    path = os.path.join(tmp, "r.sock")
    proc = subprocess.Popen([sys.executable, "-m", "a6fast", "serve", "--listen", "unix:" + path,
                             "--workers", "1", "--log-level", "error"], cwd=REPO)
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        warm = load(path, 20000, 50_000)
        rate = max(1000.0, warm["calls_per_s"])
        start = rss_mb(proc.pid)
        print("calls: warm-up %d calls, RSS %.1f MB" % (warm["calls"], start))
        done = 0
        while done < args.calls:
            result = load(path, rate, min(250_000, args.calls - done))
            done += result["calls"]
            print("calls: %8d served, RSS %.1f MB (%+.1f)" % (done, rss_mb(proc.pid), rss_mb(proc.pid) - start))
        prepares(path, 0, 20_000)
        start = rss_mb(proc.pid)
        print("prepare: warm-up 20000 distinct keys, RSS %.1f MB" % start)
        done = 0
        while done < args.prepares:
            step = min(20_000, args.prepares - done)
            prepares(path, 20_000 + done, step)
            done += step
            print("prepare: %7d distinct keys, RSS %.1f MB (%+.1f)" % (done, rss_mb(proc.pid), rss_mb(proc.pid) - start))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
