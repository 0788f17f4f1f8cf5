"""Prometheus metrics: ``a6fast serve --metrics HOST:PORT`` serves ``http://HOST:PORT/metrics``.

Nothing is counted for it: at each scrape a collector turns the runner's merged stats snapshot
(stats.py: the one worker's live counters, read on its loop, or the sum of the workers' snapshot
files, read by the supervisor) into metric families, written out by prometheus_client.

The HTTP server runs on threads of the process that answers (the supervisor, or the one
worker): a few connections at a time, each cut ``REQUEST_SECONDS`` after it came, so a slow or
hostile client costs a thread for a while, never the loop.  Its sockets are closed in any child
forked meanwhile (a worker restarted by the supervisor), so no worker holds the port.
"""
import ipaddress
import logging
import os
import re
import select
import socket
import socketserver
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from ..protocol import ERR_NAMES
from .listener import ListenError
from .stats import BUCKETS, LoopBusy, SAMPLE_EVERY

__all__ = ["parse_metrics_address", "missing_client", "families", "MetricsServer", "INSTALL_HINT"]

log = logging.getLogger("a6fast.server")

INSTALL_HINT = "pip install 'a6fast[metrics]' (or pip install prometheus_client)"
# A connection is cut this long after it was accepted (a scrape takes milliseconds); at most
# this many are answered at once.
REQUEST_SECONDS = 5.0
MAX_CONNECTIONS = 4
# Latency buckets exposed, as power-of-two bucket indexes of stats.py's histogram: bucket b holds
# durations below 2**b ns, so its cumulative count is the calls that took < 2**b ns: from 2**10
# ns (1.02 µs) to 2**36 ns (68.7 s, past the gateway's 60 s read timeout).  (Prometheus reads
# ``le`` as "at most": a duration of exactly 2**b ns counts in the next bucket, 1 ns off.)
FIRST_BUCKET = 10
LAST_BUCKET = 36
CALL_TYPES = ("HTTPReqCall", "HTTPRespCall")

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


def parse_metrics_address(text: str) -> Tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> ``(host, port)``; ValueError says what is wrong in
    one line.  Port 0 asks for a free port (the one bound is logged)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("%r has no ']' after its IPv6 address" % text)
        host, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("%r: %r is not an IPv6 address" % (text, host)) from None
        if not rest.startswith(":"):
            raise ValueError("%r: expected [IPv6]:PORT, such as [::1]:9464" % text)
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError("%r: expected HOST:PORT, such as 127.0.0.1:9464" % text)
        if ":" in host:
            raise ValueError("%r: an IPv6 address goes in brackets, such as [%s]:%s"
                             % (text, host, port_text))
        labels = host.rstrip(".").split(".")
        if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
            raise ValueError("%r: %r is not a host name or IPv4 address" % (text, host))
        if all(label.isdigit() for label in labels):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError("%r: %r is not an IPv4 address" % (text, host)) from None
    if not _PORT.match(port_text) or int(port_text) > 65535:
        raise ValueError("%r: the port must be a number from 0 to 65535, not %r"
                         % (text, port_text))
    return host, int(port_text)


def missing_client() -> Optional[str]:
    """Why prometheus_client cannot be used here (one line), or None when it can."""
    try:
        import prometheus_client.exposition  # noqa: F401
        import prometheus_client.core  # noqa: F401
    except ImportError as exc:
        return "--metrics needs the prometheus_client package (%s): %s" % (exc, INSTALL_HINT)
    return None


# ---------------------------------------------------------------------------------------------
# Snapshot -> metric families

def families(snap: Dict[str, Any]) -> Iterator[Any]:
    """The metric families of one merged snapshot (stats.merge)."""
    from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                        HistogramMetricFamily)

    calls = CounterMetricFamily(
        "a6fast_calls", "Calls answered, by type (HTTPReqCall and HTTPRespCall: those whose conf "
        "was found, so that their plugins ran).", labels=["type"])
    for rpc in ("PrepareConf",) + CALL_TYPES:
        calls.add_metric([rpc], snap["calls"].get(rpc, 0))
    yield calls

    yield CounterMetricFamily(
        "a6fast_extra_info_requests", "ExtraInfo questions (vars, bodies) asked of the gateway.",
        value=snap["calls"].get("ExtraInfo", 0))

    errors = CounterMetricFamily("a6fast_errors", "Err frames answered, by code.",
                                 labels=["code"])
    for code in sorted(ERR_NAMES.values()):
        errors.add_metric([code], snap["errors"].get(code, 0))
    yield errors

    plugins = CounterMetricFamily(
        "a6fast_plugin_calls", "HTTPReqCall and HTTPRespCall calls of the confs that run the "
        "plugin.", labels=["plugin"])
    for name, n in sorted(snap["plugins"].items()):
        plugins.add_metric([name], n)
    yield plugins

    latency = HistogramMetricFamily(
        "a6fast_call_duration_seconds", "Time from the start of a call's plugins to its answer, "
        "of sampled calls: each conf's first call, then 1 in %d." % SAMPLE_EVERY,
        labels=["type"])
    sums = snap.get("histogram_sum_ns", {})
    for rpc in CALL_TYPES:
        hist = snap["histogram_ns"].get(rpc, [0] * BUCKETS)
        latency.add_metric([rpc], _buckets(hist), sum_value=sums.get(rpc, 0) / 1e9)
    yield latency

    yield GaugeMetricFamily("a6fast_confs", "Confs stored (the largest store of the workers).",
                            value=snap["confs"])
    yield GaugeMetricFamily("a6fast_workers", "Worker processes running.", value=snap["workers"])
    yield CounterMetricFamily("a6fast_worker_restarts",
                              "Workers started again after one died.",
                              value=snap.get("restarts", 0))
    yield GaugeMetricFamily(
        "a6fast_plugin_threads_overdue", "Plugin threads still running for calls answered at "
        "their deadline.", value=snap.get("threads_overdue", 0))
    yield CounterMetricFamily("a6fast_reloads", "Plugin reloads done.",
                              value=snap.get("reloads", 0))
    yield GaugeMetricFamily("a6fast_start_time_seconds",
                            "When the runner started, in seconds since the epoch.",
                            value=snap["time"] - snap["uptime_s"])


def _buckets(hist):
    """Cumulative ``(le, count)`` pairs in seconds from power-of-two ns buckets; ``+Inf`` last."""
    out = []
    seen = sum(hist[:FIRST_BUCKET])
    for b in range(FIRST_BUCKET, LAST_BUCKET + 1):
        seen += hist[b] if b < len(hist) else 0
        out.append((repr((1 << b) / 1e9), seen))
    out.append(("+Inf", sum(hist)))
    return out


class RunnerCollector:
    """A prometheus_client collector reading ``snapshot()`` at each scrape."""

    def __init__(self, snapshot: Callable[[], Dict[str, Any]]):
        self._snapshot = snapshot

    def describe(self):
        return []  # the families are only known from a snapshot: an unchecked collector

    def collect(self):
        return list(families(self._snapshot()))


# ---------------------------------------------------------------------------------------------
# Serving

class MetricsServer:
    """``/metrics`` over HTTP; ``close`` stops it.

    One thread accepts and keeps the deadlines; each connection is answered on a thread of its
    own, at most ``MAX_CONNECTIONS`` at once (more wait in the listen backlog), and is cut
    (shut down) ``REQUEST_SECONDS`` after it was accepted, however slowly its client trickles
    bytes: a stalled or hostile client holds a thread for that long at most, never the loop."""

    def __init__(self, server, url):
        self.server = server
        self.url = url
        self._active = {}  # connection -> deadline (monotonic)
        self._lock = threading.Lock()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._serve, name="a6fast-metrics", daemon=True)
        os.register_at_fork(after_in_child=self._in_child)

    @classmethod
    def start(cls, address: str, snapshot: Callable[[], Dict[str, Any]]) -> "MetricsServer":
        """Bind ``address`` (HOST:PORT) and serve the metrics of ``snapshot()``; ListenError if
        the address cannot be bound."""
        try:
            host, port = parse_metrics_address(address)
        except ValueError as exc:
            raise ListenError("--metrics %s" % exc) from None
        try:
            server = _make_server(host, port, _app(snapshot))
        except OSError as exc:
            raise ListenError("cannot serve metrics on %s: %s" % (address, exc)) from None
        bound_host, bound_port = server.server_address[:2]
        shown = "[%s]" % bound_host if ":" in bound_host else bound_host
        self = cls(server, "http://%s:%d/metrics" % (shown, bound_port))
        self._thread.start()
        log.info("Prometheus metrics on %s", self.url)
        return self

    def _serve(self):
        listener = self.server.socket
        cut = set()
        while True:
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                busy = len(self._active)
                deadlines = []
                for conn, deadline in self._active.items():
                    if conn in cut:
                        continue
                    if deadline <= now:
                        cut.add(conn)
                        _cut(conn)  # its thread's read or write ends now
                    else:
                        deadlines.append(deadline)
                cut &= set(self._active)
            readers = [self._wake_r] if busy >= MAX_CONNECTIONS else [self._wake_r, listener]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return  # closed under us at exit
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except OSError:
                    pass
            if listener in ready:
                try:
                    conn, client = self.server.get_request()
                except OSError:
                    continue  # gone before accepted (or out of fds): the next one
                with self._lock:
                    if self._closed:
                        conn.close()
                        return
                    self._active[conn] = time.monotonic() + REQUEST_SECONDS
                threading.Thread(target=self._answer, args=(conn, client), daemon=True,
                                 name="a6fast-metrics-request").start()

    def _answer(self, conn, client):
        try:
            self.server.finish_request(conn, client)
        except Exception:  # noqa: BLE001  one bad request must not stop the metrics
            self.server.handle_error(conn, client)
        finally:
            self.server.shutdown_request(conn)
            with self._lock:
                self._active.pop(conn, None)
                if not self._closed:
                    _wake(self._wake_w)

    def close(self):
        """Stop serving and close the port (a request still being answered is cut)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _wake(self._wake_w)
            for conn in self._active:
                _cut(conn)
        self._thread.join(1.0)
        if not self._thread.is_alive():
            self.server.server_close()
            with self._lock:
                # no thread writes to the pipe once _closed is set (under the lock)
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _in_child(self):
        # A forked worker must not keep the port (or a scrape's connection) open.  The other
        # threads are gone in the child: no lock is taken.
        if self._closed:
            return
        self._closed = True
        for sock in [self.server.socket] + list(self._active):
            try:
                sock.close()
            except OSError:
                pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _cut(conn):
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _wake(fd):
    try:
        os.write(fd, b"\0")
    except OSError:
        pass  # full of wake-ups already


def _app(snapshot):
    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunnerCollector(snapshot))
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            return _plain(start_response, "404 Not Found", "a6fast: the metrics are at /metrics\n")
        try:
            return metrics(environ, start_response)
        except LoopBusy as exc:
            return _plain(start_response, "503 Service Unavailable", "a6fast: %s\n" % exc)
        except Exception:  # noqa: BLE001  the scrape fails; the runner goes on
            log.exception("metrics: cannot collect")
            return _plain(start_response, "500 Internal Server Error",
                          "a6fast: cannot collect the metrics (see the runner's log)\n")
    return app


def _plain(start_response, status, text):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


class _DebugLog:
    """A stream whose lines go to the log at debug level (never raw onto stderr)."""

    def write(self, text):
        if text.strip():
            log.debug("metrics: %s", text.rstrip())

    def flush(self):
        pass


def _make_server(host, port, app):
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]

    class Handler(WSGIRequestHandler):
        timeout = REQUEST_SECONDS  # (the server cuts it by then anyway)

        def log_message(self, format, *args):
            pass  # no line per scrape

        def get_stderr(self):
            return _DebugLog()  # wsgiref writes a failed answer's traceback here

    class Server(WSGIServer):
        address_family = family
        request_queue_size = 16

        def server_bind(self):
            # as HTTPServer.server_bind without its reverse DNS lookup of the host
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]
            self.setup_environ()

        def handle_error(self, request, client_address):
            log.debug("metrics: a request from %s failed", client_address, exc_info=True)

    server = Server(sockaddr[:2] if family == socket.AF_INET else sockaddr, Handler)
    server.socket.setblocking(False)  # accept only when select said so; never wait in it
    server.set_app(app)
    return server
