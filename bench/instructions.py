"""User-space instructions per call of the runner, counted by valgrind (cachegrind): a count,
not a time, so the same on a busy machine as on a quiet one.

`a6fast serve --workers 1` runs under cachegrind twice, once loaded with FEW calls and once with
MANY (one connection, the request `a6fast bench` sends by default to the `stop` example with conf
{"body": "hi"}, as in `make floor`); start-up and shut-down cost the same in both, so

    (instructions of the MANY run - instructions of the FEW run) / (MANY - FEW)

is what one call costs the runner.  Each pair is run ROUNDS times and the median printed.

    python bench/instructions.py [--few 2000] [--many 12000] [--rounds 3] [--read-header]
        [--bench-arg ARG ...]

--allocations runs callgrind instead and also prints the memory blocks the runner allocates per
call (calls of CPython's object allocator, _PyObject_Malloc and _PyObject_Calloc, through which
every Python object and bytes buffer is made).  --read-header runs bench/plugins/read_header.py (one header read, then a Stop) instead of the
`stop` example; --bench-arg passes an argument to `a6fast bench`, e.g. --bench-arg=--headers=60
--bench-arg=--cookie=1024 for a request of 60 headers and a 1 KiB cookie.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_CONF = '{"body": "hi"}'


def runner_bin(name):
    venv = os.path.join(REPO, ".venv", "bin", name)
    return venv if os.access(venv, os.X_OK) else name


def wait_listening(path, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the runner exited with %s" % proc.returncode)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(path)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("nothing listens on %s after %ss" % (path, timeout))


ALLOCATORS = ("_PyObject_Malloc", "_PyObject_Calloc")


def allocator_calls(text):
    """Calls of the ALLOCATORS in a callgrind file (its ``cfn=`` / ``calls=`` lines)."""
    names = {}
    callee = None
    total = 0
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            # a function's name is given once, with its id, on whichever line names it first
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if match.group(2):
                names[match.group(1)] = match.group(2)
            if line.startswith("cfn="):
                callee = names.get(match.group(1))
        elif line.startswith("calls=") and callee in ALLOCATORS:
            total += int(line[6:].split()[0])
    return total


def count(tmp, calls, read_header, extra_bench_args, tool="cachegrind"):
    """Instructions the runner executed, start to exit, serving ``calls`` calls, and (with
    callgrind) how many blocks it allocated."""
    sock = os.path.join(tmp, "runner.sock")
    out = os.path.join(tmp, "%s.%d.out" % (tool, calls))
    serve = [runner_bin("a6fast"), "serve", "--workers", "1", "--listen", "unix:" + sock]
    plugin = ["--plugin", "stop", "--conf", STOP_CONF]
    if read_header:
        serve += ["--plugins", os.path.join(REPO, "bench", "plugins")]
        plugin = ["--plugin", "read-header"]
    proc = subprocess.Popen(
        ["valgrind", "--tool=" + tool, "--%s-out-file=%s" % (tool, out)]
        + (["--cache-sim=no"] if tool == "cachegrind" else []) + serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_listening(sock, proc)
        subprocess.run([runner_bin("a6fast"), "bench", "--listen", "unix:" + sock] + plugin
                       + ["--connections", "1", "--calls", str(calls), "--expect", "Stop 200"]
                       + extra_bench_args, check=True, stdout=subprocess.DEVNULL)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(120)
    with open(out) as f:
        text = f.read()
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if match is None:
        raise SystemExit("no summary line in %s" % out)
    return int(match.group(1)), (allocator_calls(text) if tool == "callgrind" else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--few", type=int, default=2000)
    parser.add_argument("--many", type=int, default=12000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--read-header", action="store_true")
    parser.add_argument("--allocations", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="write the cachegrind files there")
    parser.add_argument("--bench-arg", action="append", default=[],
                        help="an argument for `a6fast bench` (repeatable), e.g. --bench-arg=--header"
                             " --bench-arg='cookie: ...'")
    args = parser.parse_args()
    tool = "callgrind" if args.allocations else "cachegrind"
    per_call = []
    blocks = []
    with tempfile.TemporaryDirectory(prefix="a6fast-instr-") as tmp:
        if args.keep:
            tmp = args.keep
        for round_no in range(1, args.rounds + 1):
            few, few_blocks = count(tmp, args.few, args.read_header, args.bench_arg, tool)
            many, many_blocks = count(tmp, args.many, args.read_header, args.bench_arg, tool)
            calls = args.many - args.few
            per_call.append((many - few) / calls)
            blocks.append((many_blocks - few_blocks) / calls)
            print("  round %d: %d calls %d instructions, %d calls %d instructions: %.0f per call%s"
                  % (round_no, args.few, few, args.many, many, per_call[-1],
                     ", %.1f blocks allocated per call" % blocks[-1] if args.allocations else ""),
                  flush=True)
    print("instructions per call (median of %d): %.0f" % (args.rounds, statistics.median(per_call)))
    if args.allocations:
        print("blocks allocated per call (median of %d): %.1f"
              % (args.rounds, statistics.median(blocks)))


if __name__ == "__main__":
    sys.exit(main())
