"""``a6fast bench``: load any ext-plugin runner the way the gateway does, and measure it.

Like APISIX: one PrepareConf on its own connection, then N connections kept open and reused, each
with one HTTPReqCall in flight at a time, for D seconds (or C calls); ExtraInfo requests from the
runner are answered in the middle of a call, from the variables and body given.  The request is
shaped at will (method, path, args, headers, source IP), so a plugin's success path can be loaded
as well as its refusals.  Reported: answered calls per second, latency (p50, p99, max, in
microseconds, from sending a call to reading its answer), answers by kind (Stop by status,
Rewrite, no change, Err by code), the ExtraInfo questions asked, and errors by kind.

Made to cost the runner's machine little: frames are encoded once per connection with the conf
token already in them, one process drives all its connections with one epoll loop over
non-blocking sockets, and an answer is decoded once per distinct frame (a connection's answers
repeat byte for byte when its plugins answer alike).  ``--processes P`` spreads the connections
over P such processes.
"""
import array
import gc
import ipaddress
import json
import multiprocessing
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import click

from . import gateway
from .codec import frame_end
from .errors import DecodeError, EncodeError
from .protocol import (ACTION_NONE, ACTION_REWRITE, ACTION_STOP, ERR_NAMES, INFO_REQ_BODY,
                       INFO_VAR, METHOD_VALUES, RPC_ERR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
                       RPC_NAMES, RPC_PREPARE_CONF)

__all__ = ["LoadSpec", "LoadResult", "LoadError", "run_load", "bench_command",
           "request_headers", "REQUEST_ARGS", "REQUEST_PATH", "answer_kind"]

# The request gen_frames.py (bench-tools) sends, so that `a6fast bench` and a6load compare.
REQUEST_PATH = "/api/v1/users/12345/orders"
REQUEST_HEADERS = (
    ("host", "api.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) load/1.0"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-US,en;q=0.9"),
    ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
    ("x-request-id", "7f3c2a9e-5b1d-4c8e-9f00-123456789abc"),
    ("x-forwarded-for", "203.0.113.7"),
    ("content-type", "application/json"),
    ("connection", "keep-alive"),
)
REQUEST_ARGS = (("page", "2"), ("limit", "50"), ("sort", "created_at"), ("filter", "status:open"),
                ("q", "hello world"))
REQUEST_SRC_IP = "10.0.0.7"

DEFAULT_KEY = "route#a6fast-bench#ext-plugin-pre-req#1"
CONNECT_TIMEOUT = 1.0   # the gateway's
RECV_SIZE = 64 * 1024     # below malloc's mmap threshold: no mmap/munmap per recv
_KINDS_CACHED = 4096    # distinct answer frames whose decoding is kept, each of at most:
_KIND_FRAME_MAX = 4096  # bytes (a runner's large answers are decoded each time, not hoarded)

_EV_IN, _EV_OUT = select.POLLIN, select.POLLOUT


def request_headers(count, cookie=0):
    """``count`` headers (the 10 of gen_frames.py first, then ``x-extra-N``), plus, when
    ``cookie`` is non-zero, a ``cookie: s=aaa...`` header with ``cookie`` a's (as gen_frames.py)."""
    headers = list(REQUEST_HEADERS[:count])
    extra = 0
    while len(headers) < count:
        headers.append(("x-extra-%d" % extra, "value-%d" % extra))
        extra += 1
    if cookie:
        headers.append(("cookie", "s=" + "a" * cookie))
    return headers


def request_args(count):
    """``count`` query args: the 5 of gen_frames.py first, then ``arg-N=value-N``."""
    args = list(REQUEST_ARGS[:count])
    while len(args) < count:
        args.append(("arg-%d" % len(args), "value-%d" % len(args)))
    return args


class LoadError(Exception):
    """The load cannot run at all (no socket, PrepareConf refused); the message says why."""


@dataclass
class LoadSpec:
    """What to send, where, and for how long."""

    listen: str
    conf: List[Tuple[str, str]] = field(default_factory=list)
    key: Optional[str] = DEFAULT_KEY
    conf_token: Optional[int] = None   # given: no PrepareConf, calls carry this token
    connections: int = 16
    seconds: Optional[float] = 5.0     # None: no time limit (``calls`` must then be given)
    calls: Optional[int] = None        # calls to send in all; None: as many as time allows
    processes: int = 1
    method: str = "GET"
    path: Optional[str] = REQUEST_PATH
    headers: int = 10                  # how many of the browser-like set, unless header_list
    cookie: int = 0
    args: int = 5                      # how many generated args, unless arg_list
    header_list: Optional[List[Tuple[str, str]]] = None   # exactly these headers
    arg_list: Optional[List[Tuple[str, Optional[str]]]] = None   # exactly these args
    src_ip: Optional[str] = REQUEST_SRC_IP
    vars: Dict[str, bytes] = field(default_factory=dict)
    req_body: Optional[bytes] = None
    timeout: float = 10.0
    verify: bool = False


# Error kinds that are answers (the call was answered, wrongly), unlike closed connections.
_ANSWER_ERRORS = ("Err ", "answer type", "bad answer")


@dataclass
class LoadResult:
    """What one run measured; latencies in nanoseconds, sorted."""

    conf_token: int
    connections: int
    processes: int
    seconds: float                   # from the first call sent to the last answer read
    answered: int                    # answers of any type, Err included
    errors: Counter                  # kind -> count
    extra_info: int                  # ExtraInfo exchanges answered in the middle of calls
    answers: Counter                 # answer kind (answer_kind) -> count
    questions: Counter               # ExtraInfo question ("var NAME", "request body") -> count
    latencies: array.array
    cpu_seconds: float               # CPU time of the load generator itself
    frame_size: int

    @property
    def ok(self):
        """Calls answered with an HTTPReqCall answer (and, with --verify, a well-formed one)."""
        return self.answered - sum(count for kind, count in self.errors.items()
                                   if kind.startswith(_ANSWER_ERRORS))

    @property
    def calls_per_s(self):
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def percentile_us(self, fraction):
        lat = self.latencies
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(len(lat) * fraction))] / 1000.0

    @property
    def max_us(self):
        return self.latencies[-1] / 1000.0 if self.latencies else 0.0

    @property
    def error_count(self):
        return sum(self.errors.values())

    def as_dict(self):
        return {
            "conf_token": self.conf_token, "connections": self.connections,
            "processes": self.processes, "seconds": round(self.seconds, 3),
            "calls": self.answered, "ok": self.ok, "calls_per_s": round(self.calls_per_s, 1),
            "p50_us": round(self.percentile_us(0.5), 1),
            "p99_us": round(self.percentile_us(0.99), 1),
            "max_us": round(self.max_us, 1), "errors": dict(self.errors),
            "answers": dict(self.answers), "extra_info": self.extra_info,
            "extra_info_questions": dict(self.questions), "frame_size": self.frame_size,
            "loadgen_cpu_us_per_call": round(self.cpu_seconds * 1e6 / max(1, self.answered), 2),
        }


# ---------------------------------------------------------------------------------------------
# Talking to the runner

def socket_path(listen):
    """``unix:/path.sock`` or a bare path -> the path."""
    path = listen[5:] if listen.startswith("unix:") else listen
    if not path:
        raise LoadError("empty socket path in %r" % listen)
    return path


def _connect(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock


def prepare_conf(path, conf, key, timeout=10.0):
    """Send one PrepareConf on its own connection, as the gateway does: the conf token."""
    try:
        sock = _connect(path)
    except OSError as exc:
        raise LoadError("cannot connect to %s: %s" % (path, exc)) from None
    try:
        sock.settimeout(timeout)
        sock.sendall(gateway.encode_prepare_conf_req(conf, key))
        rpc_type, payload = gateway.read_frame(sock)
    except (OSError, EOFError, DecodeError) as exc:
        raise LoadError("PrepareConf failed: %s" % (exc,)) from None
    finally:
        sock.close()
    if rpc_type == RPC_ERR:
        code = gateway.decode_err(payload)
        raise LoadError("PrepareConf answered Err %s: is every plugin (%s) loaded in the runner, "
                        "and is each conf valid JSON it accepts? The runner's log says which."
                        % (ERR_NAMES.get(code, code), ", ".join(name for name, _ in conf)))
    if rpc_type != RPC_PREPARE_CONF:
        raise LoadError("PrepareConf answered with a %s frame"
                        % RPC_NAMES.get(rpc_type, "type %d" % rpc_type))
    return gateway.decode_prepare_conf_resp(payload)


def call_frame(spec, call_id, conf_token):
    """The HTTPReqCall frame one connection sends again and again."""
    if spec.header_list is not None:
        headers = list(spec.header_list)
        if spec.cookie:
            headers.append(("cookie", "s=" + "a" * spec.cookie))
    else:
        headers = request_headers(spec.headers, spec.cookie)
    args = list(spec.arg_list) if spec.arg_list is not None else request_args(spec.args)
    return gateway.encode_http_req_call_req(
        id=call_id, conf_token=conf_token, method=spec.method, path=spec.path,
        src_ip=spec.src_ip, args=args, headers=headers)


def answer_kind(rpc_type, payload):
    """What an answer to an HTTPReqCall is: ``(kind, id or None, error kind or None)``.

    Kinds: ``Stop <status>``, ``Rewrite``, ``no change``, ``Err <CODE>``; anything else is also
    an error (another frame type, an undecodable answer, an unknown action)."""
    if rpc_type == RPC_ERR:
        try:
            code = gateway.decode_err(payload)
        except DecodeError:
            return "bad answer (undecodable Err)", None, "bad answer (undecodable Err)"
        kind = "Err %s" % ERR_NAMES.get(code, code)
        return kind, None, kind
    if rpc_type != RPC_HTTP_REQ_CALL:
        kind = "answer type %d (%s)" % (rpc_type, RPC_NAMES.get(rpc_type, "unknown"))
        return kind, None, kind
    try:
        resp = gateway.decode_http_req_call_resp(payload)
    except DecodeError:
        return "bad answer (undecodable)", None, "bad answer (undecodable)"
    if resp.action_type == ACTION_STOP:
        return "Stop %d" % resp.stop.status, resp.id, None
    if resp.action_type == ACTION_REWRITE:
        return "Rewrite", resp.id, None
    if resp.action_type == ACTION_NONE:
        return "no change", resp.id, None
    kind = "bad answer (action type %d)" % resp.action_type
    return kind, resp.id, kind


# ---------------------------------------------------------------------------------------------
# One process's share of the connections

class _Poller:
    """epoll where there is one, poll() elsewhere; timeouts in seconds either way."""

    def __init__(self):
        if hasattr(select, "epoll"):
            self._p = select.epoll()
            self.poll = self._p.poll
        else:  # pragma: no cover
            self._p = select.poll()
            self.poll = lambda timeout: self._p.poll(timeout * 1000.0)
        self.register = self._p.register
        self.modify = self._p.modify
        self.unregister = self._p.unregister

    def close(self):
        if hasattr(self._p, "close"):
            self._p.close()


class _Conn:
    __slots__ = ("sock", "fd", "recv", "frame", "call_id", "t0", "rbuf", "out")

    def __init__(self, sock, frame, call_id):
        self.sock = sock
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.frame = frame
        self.call_id = call_id
        self.t0 = 0
        self.rbuf = b""
        self.out = b""


class _Driver:
    """Keeps its connections busy with one call each until ``seconds`` have passed."""

    def __init__(self, path, frames, seconds, calls, timeout, vars, req_body):
        self.path = path
        self.frames = frames            # [(call_id, frame)], one per connection
        self.seconds = seconds          # None: until ``calls`` are answered
        self.to_send = calls            # calls left to send; None: no limit
        self.timeout_ns = int(timeout * 1e9)
        self.vars = vars
        self.req_body = req_body
        self.errors = Counter()
        self.answers = Counter()
        self.questions = Counter()
        self.extra_info = 0
        self.lat = array.array("q")
        self.poller = _Poller()
        self.conns = {}
        self._extra_answers = {}
        self._kinds = {}                # answer frame -> answer_kind(...)

    # connections ------------------------------------------------------------------------------
    def open(self, call_id, frame):
        sock = _connect(self.path)
        sock.setblocking(False)
        conn = _Conn(sock, frame, call_id)
        self.conns[conn.fd] = conn
        self.poller.register(conn.fd, _EV_IN)
        return conn

    def drop(self, conn):
        if self.conns.pop(conn.fd, None) is conn:
            try:
                self.poller.unregister(conn.fd)
            except (OSError, ValueError):
                pass
            conn.sock.close()

    def take_call(self):
        """One more call may be sent (the count left goes down): False once all were sent."""
        if self.to_send is None:
            return True
        if self.to_send <= 0:
            return False
        self.to_send -= 1
        return True

    def reopen(self, conn, now, end):
        """The runner closed ``conn``: as the gateway would, use a new connection (in time)."""
        self.drop(conn)
        if now >= end or not self.take_call():
            return None
        try:
            fresh = self.open(conn.call_id, conn.frame)
        except OSError:
            self.errors["connect failed"] += 1
            return None
        fresh.t0 = time.perf_counter_ns()
        if not self.send(fresh, fresh.frame):
            return None
        return fresh

    def send(self, conn, data):
        """Send (or queue) ``data``; False when the connection broke (it is dropped)."""
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.errors["connection closed by the runner"] += 1
            self.drop(conn)
            return False
        if sent < len(data):
            conn.out = data[sent:]
            self.poller.modify(conn.fd, _EV_IN | _EV_OUT)
        return True

    def flush(self, conn):
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.errors["connection closed by the runner"] += 1
            self.drop(conn)
            return False
        conn.out = conn.out[sent:]
        if not conn.out:
            self.poller.modify(conn.fd, _EV_IN)
        return True

    # answers that are not the end of a call ---------------------------------------------------
    def answer_extra_info(self, conn, payload):
        """The runner asks for a variable or a body in the middle of a call: answer it."""
        self.extra_info += 1
        try:
            info_type, name = gateway.decode_extra_info_req(payload)
        except DecodeError:
            self.errors["bad ExtraInfo request"] += 1
            self.questions["undecodable question"] += 1
            return self.send(conn, gateway.encode_extra_info_resp(None))
        known = self._extra_answers.get((info_type, name))
        if known is None:
            if info_type == INFO_VAR:
                result = self.vars.get(name)
                question = "var %s" % name
                missing = "no --var %s=...: answered absent" % name
            elif info_type == INFO_REQ_BODY:
                result = self.req_body
                question, missing = "request body", "no --body: answered absent"
            else:   # no response body in the request phase
                result = None
                question, missing = "ExtraInfo type %d" % info_type, "answered absent"
            if result is None:
                question = "%s (%s)" % (question, missing)
            known = self._extra_answers[(info_type, name)] = (
                gateway.encode_extra_info_resp(result), question)
        self.questions[known[1]] += 1
        return self.send(conn, known[0])

    def count_answer(self, conn, frame):
        """Count one answer (the whole frame) by kind, and as an error where it is one."""
        known = self._kinds.get(frame)
        if known is None:
            known = answer_kind(frame[0], frame[4:])
            if len(frame) <= _KIND_FRAME_MAX and len(self._kinds) < _KINDS_CACHED:
                self._kinds[frame] = known
        kind, answer_id, error = known
        self.answers[kind] += 1
        if error is not None:
            self.errors[error] += 1
        elif answer_id != conn.call_id:
            self.errors["bad answer (id %d for call %d)" % (answer_id, conn.call_id)] += 1

    # the loop ---------------------------------------------------------------------------------
    def connect_all(self):
        for call_id, frame in self.frames:
            self.open(call_id, frame)

    def run(self):
        """Drive the load; returns (first send ns, last answer ns, cpu seconds)."""
        clock = time.perf_counter_ns
        conns = self.conns
        lat = self.lat
        record = lat.append
        poll = self.poller.poll
        count_answer = self.count_answer
        take_call = self.take_call
        cpu0 = time.process_time()
        start = clock()
        end = start + int(self.seconds * 1e9) if self.seconds is not None else float("inf")
        for conn in list(conns.values()):
            if not take_call():
                self.drop(conn)
                continue
            conn.t0 = clock()
            self.send(conn, conn.frame)
        last = start
        next_scan = start + 100_000_000
        while conns:
            events = poll(0.1)
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is None:
                    continue
                if ev & _EV_OUT and conn.out and not self.flush(conn):
                    continue
                try:
                    data = conn.recv(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.errors["connection closed by the runner"] += 1
                    self.reopen(conn, clock(), end)
                    continue
                if conn.rbuf:
                    data = conn.rbuf + data
                    conn.rbuf = b""
                size = len(data)
                pos = 0
                while size - pos >= 4:
                    stop = frame_end(data, pos)
                    if stop < 0:
                        break
                    rpc_type = data[pos]
                    if rpc_type == RPC_EXTRA_INFO:
                        if not self.answer_extra_info(conn, data[pos + 4:stop]):
                            break
                        pos = stop
                        continue
                    now = clock()
                    record(now - conn.t0)
                    last = now
                    count_answer(conn, data[pos:stop])
                    pos = stop
                    if now >= end or not take_call():
                        self.drop(conn)
                        break
                    conn.t0 = now
                    if not self.send(conn, conn.frame):
                        break
                else:
                    if pos < size:
                        conn.rbuf = data[pos:]
                    continue
                if pos < size and conn.fd in conns:
                    conn.rbuf = data[pos:]
            now = clock()
            if now >= next_scan:
                next_scan = now + 100_000_000
                self.expire(now, end)
        return start, last, time.process_time() - cpu0

    def expire(self, now, end):
        """Calls older than the timeout are given up, as the gateway gives up after its read
        timeout: counted, and the connection replaced (or closed, after the end)."""
        limit = now - self.timeout_ns
        for conn in list(self.conns.values()):
            if conn.t0 < limit:
                self.errors["no answer within %gs" % (self.timeout_ns / 1e9)] += 1
                self.reopen(conn, now, end)

    def close(self):
        for conn in list(self.conns.values()):
            self.drop(conn)
        self.poller.close()


def _drive(path, frames, spec, calls, barrier=None):
    """Run one process's connections (``calls`` of them in all, None: no limit); a plain dict,
    so it can cross a process boundary."""
    driver = _Driver(path, frames, spec.seconds, calls, spec.timeout, spec.vars, spec.req_body)
    try:
        try:
            driver.connect_all()
        except OSError as exc:
            if barrier is not None:
                barrier.abort()
            raise LoadError("cannot connect to %s: %s" % (path, exc)) from None
        if barrier is not None:
            barrier.wait()
        # The loop makes no reference cycles; collections would only add latency spikes.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start, last, cpu = driver.run()
        finally:
            if gc_was_enabled:
                gc.enable()
    finally:
        driver.close()
    return {"start": start, "last": last, "cpu": cpu, "errors": dict(driver.errors),
            "answers": dict(driver.answers), "questions": dict(driver.questions),
            "extra_info": driver.extra_info, "lat": driver.lat.tobytes()}


def _child(conn, path, frames, spec, calls, barrier):
    try:
        conn.send(("ok", _drive(path, frames, spec, calls, barrier)))
    except BaseException as exc:  # noqa: B902  reported to the parent, which exits non-zero
        conn.send(("error", "%s: %s" % (type(exc).__name__, exc)))
    finally:
        conn.close()


def run_load(spec):
    """PrepareConf (unless ``spec.conf_token`` is given), then the load: a ``LoadResult``."""
    if spec.connections < 1 or spec.processes < 1:
        raise LoadError("connections and processes must be >= 1")
    if spec.seconds is None and spec.calls is None:
        raise LoadError("give seconds or calls (or both)")
    if (spec.seconds is not None and spec.seconds <= 0) or (spec.calls is not None
                                                             and spec.calls < 1):
        raise LoadError("seconds must be > 0 and calls >= 1")
    path = socket_path(spec.listen)
    if spec.conf_token is None:
        if not spec.conf:
            raise LoadError("no plugin given: pass --plugin NAME (and --conf JSON)")
        token = prepare_conf(path, spec.conf, spec.key)
    else:
        token = spec.conf_token
    connections = spec.connections if spec.calls is None else min(spec.connections, spec.calls)
    try:
        frames = [(index, call_frame(spec, index, token)) for index in range(connections)]
    except EncodeError as exc:
        raise LoadError("the request cannot be encoded: %s" % exc) from None
    processes = min(spec.processes, connections)
    if processes == 1:
        parts = [_drive(path, frames, spec, calls=spec.calls)]
    else:
        parts = _drive_in_processes(path, frames, spec, processes)
    lat = array.array("q")
    errors, answers, questions = Counter(), Counter(), Counter()
    for part in parts:
        part_lat = array.array("q")
        part_lat.frombytes(part["lat"])
        lat.extend(part_lat)
        errors.update(part["errors"])
        answers.update(part["answers"])
        questions.update(part["questions"])
    lat = array.array("q", sorted(lat))
    seconds = (max(p["last"] for p in parts) - min(p["start"] for p in parts)) / 1e9
    return LoadResult(conf_token=token, connections=connections, processes=processes,
                      seconds=seconds, answered=len(lat), errors=errors,
                      extra_info=sum(p["extra_info"] for p in parts), answers=answers,
                      questions=questions, latencies=lat,
                      cpu_seconds=sum(p["cpu"] for p in parts), frame_size=len(frames[0][1]))


def _drive_in_processes(path, frames, spec, processes):
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    barrier = ctx.Barrier(processes)
    children = []
    for index in range(processes):
        share = frames[index::processes]
        calls = None
        if spec.calls is not None:   # the calls shared out like the connections
            calls = spec.calls // processes + (1 if index < spec.calls % processes else 0)
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(sender, path, share, spec, calls, barrier),
                           daemon=True)
        proc.start()
        sender.close()
        children.append((proc, receiver))
    parts, failures = [], []
    # a run limited by calls alone is bounded by the calls' timeouts
    limit = spec.seconds if spec.seconds is not None else spec.calls * spec.timeout
    deadline = time.monotonic() + limit + spec.timeout + 30.0
    for proc, receiver in children:
        try:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                failures.append("a load process did not report in time")
                continue
            status, value = receiver.recv()
        except EOFError:
            failures.append("a load process died (exit status %s)" % proc.exitcode)
            continue
        finally:
            receiver.close()
        (parts if status == "ok" else failures).append(value)
    for proc, _ in children:
        proc.join(5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
    if failures:
        raise LoadError("; ".join(sorted(set(failures))))
    return parts


# ---------------------------------------------------------------------------------------------
# The command

def _describe(spec, result, plugins):
    lines = []
    what = ", ".join(plugins) if plugins else "conf_token %d" % result.conf_token
    limits = []
    if spec.calls is not None:
        limits.append("%d calls" % spec.calls)
    if spec.seconds is not None:
        limits.append("%.1f s" % spec.seconds)
    lines.append("a6fast bench: %s, %s: %d connection(s) in %d process(es), %s"
                 % (spec.listen, what, result.connections, result.processes,
                    " or ".join(limits)))
    if spec.header_list is not None:
        headers = "%d header(s) given" % len(spec.header_list)
    else:
        headers = "%d headers" % spec.headers
    args = ("%d arg(s) given" % len(spec.arg_list) if spec.arg_list is not None
            else "%d args" % spec.args)
    lines.append("  request    %s %s from %s, %s%s, %s: %d-byte frame, conf_token %d"
                 % (spec.method, spec.path, spec.src_ip or "no source IP", headers,
                    " + %d-byte cookie" % spec.cookie if spec.cookie else "", args,
                    result.frame_size, result.conf_token))
    lines.append("  calls      %d answered in %.2f s: %.0f calls/s (%d ok)"
                 % (result.answered, result.seconds, result.calls_per_s, result.ok))
    lines.append("  latency    p50 %.1f us, p99 %.1f us, max %.1f us"
                 % (result.percentile_us(0.5), result.percentile_us(0.99), result.max_us))
    lines.append("  answers")
    for kind, count in sorted(result.answers.items(), key=lambda item: (-item[1], item[0])):
        lines.append("    %-50s %d" % (kind, count))
    if result.extra_info:
        lines.append("  extra info %d ExtraInfo questions answered" % result.extra_info)
        for question, count in sorted(result.questions.items(),
                                      key=lambda item: (-item[1], item[0])):
            lines.append("    %-50s %d" % (question, count))
    if result.errors:
        lines.append("  errors     %d" % result.error_count)
        for kind, count in sorted(result.errors.items(), key=lambda item: (-item[1], item[0])):
            lines.append("    %-50s %d" % (kind, count))
    else:
        lines.append("  errors     none")
    cpu_share = result.cpu_seconds / result.seconds / result.processes if result.seconds else 0.0
    lines.append("  loadgen    %.2f us CPU per call, %.0f%% of %d core(s)%s"
                 % (result.cpu_seconds * 1e6 / max(1, result.answered), 100 * cpu_share,
                    result.processes,
                    "  (near saturation: try --processes)" if cpu_share > 0.9 else ""))
    return "\n".join(lines)


def _parse_var(ctx, param, values):
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter("expected NAME=VALUE, got %r" % item)
        out[name] = value.encode("utf-8")
    return out


def _parse_headers(ctx, param, values):
    if not values:
        return None
    out = []
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter("expected NAME:VALUE, got %r" % item)
        out.append((name.strip(), value.lstrip()))   # "name: value", as curl -H takes it
    return out


def _parse_args(ctx, param, values):
    if not values:
        return None
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not name:
            raise click.BadParameter("expected NAME=VALUE or NAME, got %r" % item)
        out.append((name, value if sep else None))   # a bare ?flag has no value
    return out


def _parse_src_ip(ctx, param, value):
    if value in (None, ""):
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise click.BadParameter("%r is not an IPv4 or IPv6 address" % value) from None


def _parse_body(ctx, param, value):
    if value is None:
        return None
    if value.startswith("@"):
        try:
            with open(value[1:], "rb") as f:
                return f.read()
        except OSError as exc:
            raise click.BadParameter("cannot read %s: %s" % (value[1:], exc.strerror)) from None
    return value.encode("utf-8")


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", metavar="unix:PATH", envvar="APISIX_LISTEN_ADDRESS",
              default="unix:/tmp/a6fast.sock", show_default=True,
              help="The runner's socket. Default: $APISIX_LISTEN_ADDRESS, else the path shown.")
@click.option("--plugin", "plugins", multiple=True, metavar="NAME",
              help="A plugin to run, in order (repeatable).")
@click.option("--conf", "confs", multiple=True, metavar="JSON",
              help="The conf of the plugin given at the same position (repeatable; "
                   "missing ones are '{}').")
@click.option("--key", default=DEFAULT_KEY, show_default=True,
              help="PrepareConf key (the runner may de-duplicate confs by it).")
@click.option("--token", "conf_token", type=click.IntRange(0, 0xFFFFFFFF), default=None,
              metavar="N",
              help="Skip PrepareConf and send this conf_token (e.g. one the runner does not "
                   "know, to measure its CONF_TOKEN_NOT_FOUND path).")
@click.option("-c", "--connections", type=click.IntRange(1, 100000), default=16,
              show_default=True, help="Connections, each with one call in flight.")
@click.option("-d", "--seconds", type=click.FloatRange(0, min_open=True), default=None,
              help="How long to send calls. Default: 5, or no limit with --calls.")
@click.option("-n", "--calls", type=click.IntRange(1, None), default=None,
              help="Send this many calls in all, then stop (with --seconds: whichever ends "
                   "first).")
@click.option("-p", "--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Load processes the connections are spread over.")
@click.option("--method", type=click.Choice(sorted(METHOD_VALUES, key=METHOD_VALUES.get),
              case_sensitive=False), default="GET", show_default=True)
@click.option("--path", "req_path", default=REQUEST_PATH, show_default=True,
              help="The request path (without its query).")
@click.option("--header", "header_list", multiple=True, metavar="NAME:VALUE",
              callback=_parse_headers,
              help="A request header (repeatable, in order). Given any, the request carries "
                   "exactly these instead of the browser-like set of --headers.")
@click.option("--headers", type=click.IntRange(0, 100000), default=None,
              help="Request headers to send (a browser-like set, then x-extra-N). "
                   "Default: 10, or none beside those of --header.")
@click.option("--cookie", type=click.IntRange(0, 1 << 23), default=0, metavar="BYTES",
              help="Add a cookie header 's=' + this many bytes.")
@click.option("--arg", "arg_list", multiple=True, metavar="NAME=VALUE", callback=_parse_args,
              help="A query arg (repeatable, in order; a bare NAME has no value). Given any, "
                   "the request carries exactly these instead of the generated --args.")
@click.option("--args", "nargs", type=click.IntRange(0, 100000), default=None,
              help="Query args to send (generated). Default: 5, or none beside those of --arg.")
@click.option("--src-ip", default=REQUEST_SRC_IP, show_default=True, callback=_parse_src_ip,
              help="The client's address (IPv4 or IPv6); '' sends none.")
@click.option("--var", "vars", multiple=True, metavar="NAME=VALUE", callback=_parse_var,
              help="Answer to an ExtraInfo request for this variable (repeatable); "
                   "unknown ones are answered absent, like the gateway does.")
@click.option("--body", default=None, metavar="TEXT|@FILE", callback=_parse_body,
              help="Request body answered to ExtraInfo request-body questions (@FILE: the "
                   "file's bytes). Without it the body is answered absent.")
@click.option("--expect", "expected", multiple=True, metavar="KIND",
              help="An answer kind every call should get, as reported ('Stop 401', 'Rewrite', "
                   "'no change', 'Err BAD_REQUEST'; repeatable): any other is an error.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds a call may wait for its answer before it counts "
                                      "as an error and its connection is replaced.")
@click.option("--verify", is_flag=True, hidden=True,
              help="No longer needed: every answer is checked (kept for old command lines).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench(listen, plugins, confs, key, conf_token, connections, seconds, calls, processes, method,
          req_path, header_list, headers, cookie, arg_list, nargs, src_ip, vars, body, expected,
          timeout, verify, as_json):
    """Load a runner the way APISIX does and report calls/s, latency, answers and errors.

    One PrepareConf with the given plugins, then CONNECTIONS connections kept open, each with
    one HTTPReqCall in flight, for SECONDS (or CALLS calls); ExtraInfo requests are answered like
    the gateway answers them, from --var and --body. Answers are counted by kind: Stop by status,
    Rewrite, no change, Err by code. Errors are counted by kind: Err answers, answers of another
    type or for another call, connections the runner closed, calls left unanswered, and, with
    --expect, answers of any other kind. Exits 1 if there was any error.

    \b
    Examples:
      a6fast bench --listen unix:/tmp/a6fast.sock --plugin stop --conf '{"body":"hi"}' \
          --connections 16 --seconds 5
      a6fast bench --plugin auth --header 'authorization: Bearer good-token' \
          --var remote_addr=203.0.113.7 --expect Rewrite --calls 10000
    """
    if len(confs) > len(plugins):
        raise click.UsageError("more --conf than --plugin values; they pair by position")
    if not plugins and conf_token is None:
        raise click.UsageError("pass --plugin NAME [--conf JSON] (or --token N)")
    if header_list is not None and headers is not None:
        raise click.UsageError("--header and --headers do not mix: give the headers or a count")
    if arg_list is not None and nargs is not None:
        raise click.UsageError("--arg and --args do not mix: give the args or a count")
    if seconds is None and calls is None:
        seconds = 5.0
    conf = [(name, confs[index] if index < len(confs) else "{}")
            for index, name in enumerate(plugins)]
    spec = LoadSpec(listen=listen, conf=conf, key=key, conf_token=conf_token,
                    connections=connections, seconds=seconds, calls=calls, processes=processes,
                    method=method.upper(), path=req_path,
                    headers=10 if headers is None else headers, header_list=header_list,
                    cookie=cookie, args=5 if nargs is None else nargs, arg_list=arg_list,
                    src_ip=src_ip, vars=vars, req_body=body, timeout=timeout)
    try:
        result = run_load(spec)
    except LoadError as exc:
        raise click.ClickException(str(exc)) from None
    if expected:
        for kind, count in result.answers.items():
            if kind not in expected:
                result.errors["unexpected answer: %s" % kind] += count
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    else:
        click.echo(_describe(spec, result, plugins))
    sys.exit(1 if result.errors else 0)


bench_command = bench
