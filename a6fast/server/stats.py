"""Live counters: what an operator can read from a running runner, at almost no cost per call.

Each worker process counts in plain ints on its own loop thread (no locks), on paths it takes
anyway:

- calls: each conf's ``calls`` (every HTTPReqCall/HTTPRespCall its plugins ran, counted where
  the conf is found for the call), summed over the confs (``ConfStore.calls``) and, per plugin,
  over the plugins of each chain; ``stats.resp_calls`` counts the HTTPRespCalls among them;
- latency: a conf's first call and every ``SAMPLE_EVERY``-th after it is timed (``perf_counter_ns``,
  from the start of the plugins' run to the answer) into a fixed histogram of power-of-two
  nanosecond buckets, one per phase, with the sum of the timed durations;
- PrepareConf, ExtraInfo asked and Err answers by code, on paths that are not hot.

``a6fast serve --stats unix:PATH`` serves a JSON snapshot on a second unix socket: whoever
connects gets it and the connection is closed (nothing is read from the client).  With one worker
that process answers from its live counters; with several, each worker writes its snapshot to a
small file in a private directory every second (and when it stops) and the supervisor answers with
their sum, so totals lag by at most a second and survive a worker's restart.

The same snapshots feed ``--metrics`` (metrics.py), read from its HTTP thread by ``snapshot()``.
Counts of the runner as a whole (workers restarted, reloads) are kept in ``RunnerCounts`` by the
process that starts the workers.
"""
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ..protocol import ERR_NAMES, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_NAMES

__all__ = ["WorkerStats", "RunnerCounts", "StatsEndpoint", "LoopBusy", "merge", "percentiles",
           "clock_ns", "SAMPLE_EVERY", "read_snapshot", "format_snapshot"]

log = logging.getLogger("a6fast.server")

clock_ns = time.perf_counter_ns
# The runner samples with ``conf.calls & 7 == 1`` (a literal there: a global costs more).
SAMPLE_EVERY = 8
# Bucket b holds durations d (ns) with d.bit_length() == b: 2**(b-1) <= d < 2**b.
BUCKETS = 64  # (WorkerStats.observe has it as a literal)
PUBLISH_SECONDS = 1.0
# How long a snapshot taken for another thread may wait for the one worker's loop.
LOOP_ANSWER_SECONDS = 3.0
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999))
_PHASES = (RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL)


class WorkerStats:
    """One worker's counters beside its confs' ``calls``.  Written by its loop thread
    only; read by ``snapshot()`` there."""

    __slots__ = ("hist", "resp_calls", "prepare_conf", "extra_info", "errors", "started")

    def __init__(self):
        # per phase: BUCKETS counts, then the sum (ns) of the timed durations at index BUCKETS
        self.hist = {phase: [0] * (BUCKETS + 1) for phase in _PHASES}
        self.resp_calls = 0
        self.prepare_conf = 0
        self.extra_info = 0
        self.errors = [0] * len(ERR_NAMES)
        self.started = time.time()

    def observe(self, rpc_type: int, started: int) -> None:
        """A timed call (started at ``started`` ns) was answered."""
        hist = self.hist.get(rpc_type)
        if hist is not None:
            took = clock_ns() - started
            # literals for BUCKETS - 1 and BUCKETS: a global costs more (cachegrind: the sum kept
            # in a dict of its own cost 800 instructions per timed call, here 340)
            hist[min(63, took.bit_length())] += 1
            hist[64] += took

    def prepared(self, answer: bytes) -> None:
        """A PrepareConf was answered with ``answer`` (a token or an Err frame)."""
        self.prepare_conf += 1
        code = _ERR_CODES.get(answer)
        if code is not None:
            self.errors[code] += 1

    def snapshot(self, runner) -> Dict[str, Any]:
        """This worker's counters (with its runner's) as JSON-able data; ``merge`` sums several."""
        confs = runner.confs
        calls = confs.calls()
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "started": self.started,
            "confs": len(confs),
            # plugin threads still running for calls already answered at their deadline
            "threads_overdue": runner.loop.threads_overdue(),
            "calls": {"PrepareConf": self.prepare_conf,
                      "HTTPReqCall": calls - self.resp_calls,
                      "HTTPRespCall": self.resp_calls,
                      "ExtraInfo": self.extra_info},
            "errors": {ERR_NAMES[code]: n for code, n in enumerate(self.errors)},
            "plugins": plugin_calls(confs),
            "histogram_ns": {RPC_NAMES[phase]: self.hist[phase][:BUCKETS] for phase in _PHASES},
            "histogram_sum_ns": {RPC_NAMES[phase]: self.hist[phase][BUCKETS]
                                 for phase in _PHASES},
        }


class RunnerCounts:
    """Counts of the runner as a whole, kept by the process that starts the workers (the
    supervisor, or the one worker): plain ints written on its main thread, read by snapshots.

    ``restarts``: workers started again after one died.  ``reloads``: plugin reloads done; the
    reload code adds 1 for each (``supervisor.counts.reloads += 1``)."""

    __slots__ = ("restarts", "reloads")

    def __init__(self):
        self.restarts = 0
        self.reloads = 0


def plugin_calls(confs) -> Dict[str, int]:
    """Calls per plugin: the calls of every conf, stored or dropped, whose chain runs it."""
    return dict(sorted(confs.calls_by_plugin().items()))


def _err_frames():
    from .. import codec
    return {codec.encode_err(code): code for code in ERR_NAMES}


_ERR_CODES = _err_frames()


# ---------------------------------------------------------------------------------------------
# Summing and summarising

def percentiles(hist: List[int]) -> Dict[str, Any]:
    """Count and percentiles (µs) of a histogram; each is its bucket's upper bound, so a value
    reads "at most this" (within a factor of two)."""
    total = sum(hist)
    out: Dict[str, Any] = {"count": total}
    if not total:
        for key, _ in PERCENTILES:
            out[key] = None
        out["max"] = None
        return out
    for key, fraction in PERCENTILES:
        rank = max(1, int(fraction * total + 0.999999))
        seen = 0
        for bucket, n in enumerate(hist):
            seen += n
            if seen >= rank:
                out[key] = _upper_us(bucket)
                break
    top = max(b for b, n in enumerate(hist) if n)
    out["max"] = _upper_us(top)
    return out


def _upper_us(bucket: int) -> float:
    return round((1 << bucket) / 1000.0, 3)


def _add(into: Dict[str, Any], other: Dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict):
            _add(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


def merge(workers: List[Dict[str, Any]], alive: Callable[[int], bool] = lambda pid: True,
          started: Optional[float] = None,
          counts: Optional[RunnerCounts] = None) -> Dict[str, Any]:
    """One snapshot of the whole runner from its workers' snapshots.  A worker that is gone
    still counts in the totals; only live workers count for ``confs``."""
    now = time.time()
    calls: Dict[str, int] = {"PrepareConf": 0, "HTTPReqCall": 0, "HTTPRespCall": 0,
                             "ExtraInfo": 0}
    errors: Dict[str, int] = {name: 0 for name in ERR_NAMES.values()}
    plugins: Dict[str, int] = {}
    hists = {RPC_NAMES[phase]: [0] * BUCKETS for phase in _PHASES}
    sums = {RPC_NAMES[phase]: 0 for phase in _PHASES}
    per_worker = []
    confs = 0
    overdue = 0
    for snap in workers:
        live = alive(snap["pid"])
        _add(calls, snap["calls"])
        _add(errors, snap["errors"])
        _add(plugins, snap["plugins"])
        for phase, hist in snap["histogram_ns"].items():
            into = hists.setdefault(phase, [0] * BUCKETS)
            for bucket, n in enumerate(hist[:BUCKETS]):
                into[bucket] += n
        _add(sums, snap.get("histogram_sum_ns", {}))
        if live:
            confs = max(confs, snap["confs"])
            overdue += snap.get("threads_overdue", 0)
        per_worker.append({"pid": snap["pid"], "alive": live, "confs": snap["confs"],
                           "age_s": round(max(0.0, now - snap["time"]), 3),
                           "calls": snap["calls"], "errors": snap["errors"]})
    if started is None:
        started = min((snap["started"] for snap in workers), default=now)
    return {
        "time": now,
        "uptime_s": round(now - started, 3),
        "workers": sum(1 for w in per_worker if w["alive"]),
        "restarts": counts.restarts if counts is not None else 0,
        "reloads": counts.reloads if counts is not None else 0,
        "confs": confs,
        "threads_overdue": overdue,
        "calls": calls,
        "errors": errors,
        "plugins": plugins,
        "latency_us": {phase: percentiles(hist) for phase, hist in hists.items()},
        "latency_sampling": "each conf's first call, then 1 in %d" % SAMPLE_EVERY,
        "histogram_ns": hists,
        "histogram_sum_ns": sums,
        "per_worker": sorted(per_worker, key=lambda w: (not w["alive"], w["pid"])),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# Serving snapshots

class LoopBusy(Exception):
    """The one worker's loop did not take a snapshot in time (a hook blocking it)."""


class StatsEndpoint:
    """The runner's snapshots: the ``--stats`` socket (if any) and, with several workers, the
    directory of their snapshot files.

    ``attach_worker`` is called in each worker once its runner exists; ``serve`` answers every
    pending connection (the serving process's loop or select calls it when the socket is
    readable); ``snapshot`` gives the merged snapshot to any thread (the metrics server's).
    """

    def __init__(self, sock: Optional[socket.socket], path: Optional[str],
                 directory: Optional[str]):
        from .listener import socket_identity

        self.sock = sock
        self.path = path
        self.identity = socket_identity(path) if path is not None else None
        self.dir = directory
        self.started = time.time()
        self.counts = RunnerCounts()
        self._snapshot: Optional[Callable[[], Dict[str, Any]]] = None
        self._publish = None  # (runner, loop) of a worker writing files
        self._loop = None  # the one worker's loop, while it runs
        self._lock = threading.Lock()

    @classmethod
    def open(cls, address: Optional[str], mode: int, group=None,
             workers: int = 1) -> "StatsEndpoint":
        """``address``: the ``--stats`` socket, or None for snapshots without one (--metrics)."""
        from .listener import bind_unix, parse_listen_address

        sock = path = None
        if address is not None:
            sock, path = bind_unix(parse_listen_address(address), mode, group, backlog=16)
        directory = None
        if workers > 1:
            base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            directory = tempfile.mkdtemp(prefix="a6fast-stats-", dir=base)
        return cls(sock, path, directory)

    def fileno(self) -> int:
        """The socket's fd; -1 (never ready) without one."""
        return self.sock.fileno() if self.sock is not None else -1

    # in a worker -----------------------------------------------------------------------------
    def attach_worker(self, runner, loop, serving: bool) -> None:
        """``serving``: this worker is the only one and answers the socket from its loop;
        otherwise it publishes its snapshot to the directory every second."""
        if serving:
            self._snapshot = lambda: merge([runner.stats.snapshot(runner)], started=self.started,
                                           counts=self.counts)
            if self.sock is not None:
                loop.add_reader(self.sock.fileno(), lambda events: self.serve())
            with self._lock:
                self._loop = loop
            return
        if self.sock is not None:
            self.sock.close()  # the supervisor's; this process never answers it
        self._publish = (runner, loop)
        self._write(runner)

        def tick():
            self._write(runner)
            loop.call_later(PUBLISH_SECONDS, tick)
        loop.call_later(PUBLISH_SECONDS, tick)

    def detach_worker(self) -> None:
        """The worker stops: its last snapshot is written (its counts stay in the totals)."""
        with self._lock:
            self._loop = None  # no thread may wake a loop about to be closed
        if self._publish is not None:
            self._write(self._publish[0])
            self._publish = None

    def _write(self, runner) -> None:
        path = os.path.join(self.dir, "worker-%d.json" % os.getpid())
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(runner.stats.snapshot(runner), f)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write stats to %s: %s", path, exc)

    # in the supervisor -----------------------------------------------------------------------
    def use_worker_files(self) -> None:
        """Answer with the sum of the workers' published snapshots (the supervisor's side)."""
        self._snapshot = self._from_files

    def _from_files(self) -> Dict[str, Any]:
        snaps = []
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            names = []
        for name in names:
            if not (name.startswith("worker-") and name.endswith(".json")):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    snaps.append(json.load(f))
            except (OSError, ValueError):
                continue  # replaced or half-written this instant: next time
        return merge(snaps, alive=_pid_alive, started=self.started, counts=self.counts)

    # serving ---------------------------------------------------------------------------------
    def serve(self) -> None:
        """Answer every pending connection with one JSON snapshot, then close it."""
        for _ in range(16):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("stats socket: cannot accept: %s", exc)
                return
            try:
                data = self.snapshot_bytes()
                # a reader that does not read stalls its server at most this long
                conn.settimeout(0.5)
                conn.sendall(data)
            except (OSError, ValueError) as exc:
                log.warning("stats socket: cannot answer: %s", exc)
            except Exception:  # noqa: BLE001  the stats must never take the runner down
                log.exception("stats socket: snapshot failed")
            finally:
                conn.close()

    def snapshot_bytes(self) -> bytes:
        return (json.dumps(self._take(), sort_keys=True) + "\n").encode()

    def _take(self) -> Dict[str, Any]:
        take = self._snapshot
        if take is None:
            return merge([], started=self.started, counts=self.counts)
        return take()

    def snapshot(self) -> Dict[str, Any]:
        """The merged snapshot, from any thread.  The one worker's live counters change on its
        loop without locks, so they are read there (within ``LOOP_ANSWER_SECONDS``, else
        LoopBusy); the workers' files are read by the calling thread."""
        with self._lock:
            loop = self._loop
            if loop is None or loop.in_loop_thread():
                loop = None
            else:
                done = threading.Event()
                box: Dict[str, Any] = {}

                def take():
                    try:
                        box["snapshot"] = self._take()
                    except BaseException as exc:  # noqa: B902  raised in the asking thread
                        box["error"] = exc
                    finally:
                        done.set()
                loop.call_soon_threadsafe(take)
        if loop is None:
            return self._take()
        if not done.wait(LOOP_ANSWER_SECONDS):
            raise LoopBusy("the worker's loop took no snapshot within %g s"
                           % LOOP_ANSWER_SECONDS)
        if "error" in box:
            raise box["error"]
        return box["snapshot"]

    def close(self) -> None:
        """Close and remove the socket (if it is still ours) and the snapshot directory."""
        from .listener import remove_socket

        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            remove_socket(self.path, self.identity)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def read_snapshot(address: str, timeout: float = 5.0) -> Dict[str, Any]:
    """Connect to a ``--stats`` socket and read its JSON snapshot."""
    from .listener import parse_listen_address

    path = parse_listen_address(address)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))



def _num(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return "%.0f" % value
    return ("%.3g" % value) if value >= 1 else "%.3f" % value


def format_snapshot(snap: Dict[str, Any]) -> str:
    """A snapshot as a few small tables for a terminal."""
    lines = ["a6fast: %d worker(s), up %.1f s, %d conf(s) stored"
             % (snap["workers"], snap["uptime_s"], snap["confs"])]
    if snap.get("restarts") or snap.get("reloads"):
        lines.append("runner   %d worker restart(s), %d reload(s)"
                     % (snap.get("restarts", 0), snap.get("reloads", 0)))
    calls = snap["calls"]
    lines.append("calls    PrepareConf %d  HTTPReqCall %d  HTTPRespCall %d  ExtraInfo asked %d"
                 % (calls["PrepareConf"], calls["HTTPReqCall"], calls["HTTPRespCall"],
                    calls["ExtraInfo"]))
    if snap.get("threads_overdue"):
        lines.append("threads  %d plugin thread(s) still running for calls answered at their "
                     "deadline" % snap["threads_overdue"])
    lines.append("errors   " + "  ".join("%s %d" % item for item in sorted(snap["errors"].items())))
    lines.append("latency (µs, at most; %s)" % snap.get("latency_sampling", "sampled"))
    rows = [("", "timed", "p50", "p90", "p99", "p99.9", "max")]
    for phase, lat in sorted(snap["latency_us"].items()):
        rows.append((phase, str(lat["count"]), _num(lat["p50"]), _num(lat["p90"]),
                     _num(lat["p99"]), _num(lat["p999"]), _num(lat["max"])))
    lines.extend(_table(rows))
    if snap["plugins"]:
        lines.append("calls per plugin (HTTPReqCall and HTTPRespCall of the confs that run it)")
        rows = [("", "calls")]
        for name, calls in sorted(snap["plugins"].items()):
            rows.append((name, str(calls)))
        lines.extend(_table(rows))
    if len(snap["per_worker"]) > 1 or any(not w["alive"] for w in snap["per_worker"]):
        lines.append("workers")
        rows = [("pid", "state", "confs", "HTTPReqCall", "HTTPRespCall", "updated")]
        for w in snap["per_worker"]:
            rows.append((str(w["pid"]), "running" if w["alive"] else "gone", str(w["confs"]),
                         str(w["calls"]["HTTPReqCall"]), str(w["calls"]["HTTPRespCall"]),
                         "%.1f s ago" % w["age_s"]))
        lines.extend(_table(rows))
    return "\n".join(lines)


def _table(rows: List[tuple]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        out.append("  " + "  ".join(cells).rstrip())
    return out
