"""One runner process: the listening socket, its connections, the conf store and the plugin chains.

Every call is answered with its action or with a type 0 Err frame: a failure is never answered
with anything the gateway would read as success.
"""
import collections
import errno
import logging
import os

from .. import codec
from ..errors import ConfError, DecodeError, EncodeError, UnknownPlugin
from ..futures import CancelledError, Future, wait_from_thread
from ..protocol import (BAD_REQUEST, CONF_TOKEN_NOT_FOUND, ERR_NAMES, INFO_REQ_BODY,
                        INFO_RESP_BODY, INFO_VAR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
                        RPC_HTTP_RESP_CALL, RPC_NAMES, RPC_PREPARE_CONF, SERVICE_UNAVAILABLE)
from .loglimit import LogLimiter
from .loop import WRITE
from .stats import WorkerStats, clock_ns as _clock_ns

log = logging.getLogger("a6fast.server")

# below glibc's mmap threshold: a bigger recv() buffer costs an mmap/munmap per call
RECV_SIZE = 64 * 1024
# Past this much unsent output to one peer (it stopped reading), we stop reading from it and
# leave the frames already read for later: memory stays bounded and the loop serves the others.
# The gateway never has more than one answer outstanding, so only a misbehaving peer gets here.
MAX_BACKLOG = 256 * 1024
SWEEP_SECONDS = 10.0
STALLED_FRAME_SECONDS = 65
# A route's plugin list is a handful of entries; a PrepareConf listing more is refused before its
# chain is built (one 16 MiB frame can list 4 million, costing seconds and gigabytes to prepare).
MAX_CONF_PLUGINS = 1024
# Out of file descriptors: how long to leave the listener alone before trying again.
ACCEPT_PAUSE_SECONDS = 0.1

_read = os.read
_write = os.write
_decode_http_req_call = codec.decode_http_req_call
_decode_http_resp_call = codec.decode_http_resp_call
_ERR_FRAMES = {code: codec.encode_err(code) for code in ERR_NAMES}
_EXTRA_INFO_BODY = {INFO_REQ_BODY: codec.encode_extra_info_req_body(),
                    INFO_RESP_BODY: codec.encode_extra_info_resp_body()}


def _clip(text, limit=120):
    """A peer-chosen string as logged: repr'd, its first ``limit`` characters only."""
    if text is None or len(text) <= limit:
        return repr(text)
    return "%r... (%d characters)" % (text[:limit], len(text))


class Call:
    """One HTTPReqCall/HTTPRespCall that did not finish at once: the plugins' context for ExtraInfo."""

    __slots__ = ("conn", "rpc_type", "id", "task", "timer", "live", "started")

    def __init__(self, conn, rpc_type, call_id):
        self.conn = conn
        self.rpc_type = rpc_type
        self.id = call_id
        self.task = None
        self.timer = None
        self.live = True
        self.started = 0

    def extra_info(self, info_type, name=None):
        """Ask the gateway (loop thread): a Future of ExtraInfo.Resp.result (bytes or None)."""
        if not self.live:
            raise CancelledError()
        if info_type == INFO_VAR:
            frame = codec.encode_extra_info_var(name)
        else:
            frame = _EXTRA_INFO_BODY[info_type]
        return self.conn.ask(frame)

    def extra_info_blocking(self, info_type, name=None):
        """The same from a worker thread: waits for the answer (at most the call's deadline)."""
        runner = self.conn.runner
        if runner.loop.in_loop_thread():
            raise RuntimeError("get_var()/get_body() block; on the loop, await request.var()/body()")
        return wait_from_thread(runner.loop.call_soon_threadsafe,
                                lambda: self.extra_info(info_type, name), runner.call_timeout)


class Connection:
    """One gateway connection: exact framing, one call at a time, non-blocking writes.

    What is written is accounted for, so that no answer can shift onto another request: one
    answer per frame the gateway sent (``owed``), and ExtraInfo questions only for a call still
    running, each remembered in order (``questions``) until the gateway answers it, also when
    its call has ended meanwhile (that answer is then dropped).  A frame that does not fit this
    account closes the connection: the gateway retries on a new one, and nothing is answered
    that it did not ask."""

    __slots__ = ("runner", "sock", "fd", "rbuf", "wbuf", "call", "questions", "owed", "closed",
                 "reading", "writing", "in_read", "last_read")

    def __init__(self, runner, sock):
        self.runner = runner
        self.sock = sock
        self.fd = sock.fileno()
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.call = None
        self.questions = collections.deque()  # Futures of the ExtraInfo answers not yet read
        self.owed = False  # a request frame was read and is not answered yet
        self.closed = False
        self.reading = True
        self.writing = False
        self.in_read = False
        self.last_read = runner.loop.now

    # events -------------------------------------------------------------------------------------
    def on_events(self, events):
        if events & WRITE:
            self.flush()
            if self.closed or not events & ~WRITE:
                return
        try:
            data = _read(self.fd, RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close("read failed: %s" % exc)
            return
        if not data:
            if self.rbuf or self.call is not None:
                self.close("peer closed the connection mid-%s" % ("frame" if self.rbuf else "call"))
            else:
                self.close(None)
            return
        self.last_read = self.runner.loop.now
        size = len(data)
        if size >= 4 and not self.rbuf and self.call is None and not self.in_read \
                and size == 4 + ((data[1] << 16) | (data[2] << 8) | data[3]):
            # the common case: exactly one whole frame, so no buffering and no second copy
            self.in_read = True
            try:
                self.on_frame(data[0], data[4:])
            finally:
                self.in_read = False
            if self.call is not None or self.wbuf or not self.reading:
                if not self.closed:
                    self.update_events()
            return
        self.rbuf += data
        self.process()

    def process(self):
        """Handle every complete frame in the buffer, in order, one call at a time.

        Not re-entered: a call finishing inside it (an ExtraInfo answer resumed its plugin) lets
        this loop go on with the next frame."""
        if self.in_read:
            return
        self.in_read = True
        rbuf = self.rbuf
        pos = 0
        try:
            size = len(rbuf)
            while size - pos >= 4 and not self.closed and len(self.wbuf) < MAX_BACKLOG:
                if self.call is not None and not self.questions:
                    break  # the call runs on; later frames wait for its answer
                rpc_type = rbuf[pos]
                end = pos + 4 + ((rbuf[pos + 1] << 16) | (rbuf[pos + 2] << 8) | rbuf[pos + 3])
                if end > size:
                    break
                payload = bytes(rbuf[pos + 4:end])
                pos = end
                self.on_frame(rpc_type, payload)
        finally:
            if pos:
                del rbuf[:pos]
            self.in_read = False
        if not self.closed:
            self.update_events()

    def update_events(self):
        reading = (self.call is None or bool(self.questions)) and len(self.wbuf) < MAX_BACKLOG
        writing = bool(self.wbuf)
        if reading != self.reading or writing != self.writing:
            self.reading, self.writing = reading, writing
            self.runner.loop.set_events(self.fd, reading, writing)

    # frames -------------------------------------------------------------------------------------
    def on_frame(self, rpc_type, payload):
        if rpc_type == RPC_EXTRA_INFO:
            self.on_extra_info(payload)
            return
        if self.call is not None or self.questions:
            self.close("protocol error: %s frame while %s" % (
                RPC_NAMES.get(rpc_type, "type %d" % rpc_type),
                "ExtraInfo answers are due" if self.questions else "a call is running"))
            return
        self.owed = True
        try:
            self.on_request(rpc_type, payload)
        except BaseException as exc:  # noqa: B902  (MemoryError included) still answered
            if not self.owed or self.call is not None or self.closed:
                raise
            self.runner.stats.errors[SERVICE_UNAVAILABLE] += 1
            log.error("%s frame of %d bytes could not be handled; answering SERVICE_UNAVAILABLE",
                      RPC_NAMES.get(rpc_type, "type %d" % rpc_type), len(payload),
                      exc_info=(type(exc), exc, exc.__traceback__))
            self.send(_ERR_FRAMES[SERVICE_UNAVAILABLE])
            if not isinstance(exc, Exception):
                raise

    def on_request(self, rpc_type, payload):
        runner = self.runner
        if rpc_type == RPC_HTTP_REQ_CALL:
            try:
                req = _decode_http_req_call(payload)
            except DecodeError as exc:
                self.fail(BAD_REQUEST, "undecodable HTTPReqCall: %s", exc)
                return
            chain = runner.confs.get(req.conf_token, runner.loop.now)
            if chain is None:
                self.token_not_found(RPC_HTTP_REQ_CALL, req.conf_token)
                return
            if chain.request_inline:
                self.run_inline(RPC_HTTP_REQ_CALL, req, chain.call_request)
            else:
                self.run_call(RPC_HTTP_REQ_CALL, req, chain.call_request)
        elif rpc_type == RPC_PREPARE_CONF:
            answer = runner.prepare_conf(payload)
            runner.stats.prepared(answer)
            self.send(answer)
        elif rpc_type == RPC_HTTP_RESP_CALL:
            try:
                req = _decode_http_resp_call(payload)
            except DecodeError as exc:
                self.fail(BAD_REQUEST, "undecodable HTTPRespCall: %s", exc)
                return
            chain = runner.confs.get(req.conf_token, runner.loop.now)
            if chain is None:
                self.token_not_found(RPC_HTTP_RESP_CALL, req.conf_token)
                return
            runner.stats.resp_calls += 1
            if chain.response_inline:
                self.run_inline(RPC_HTTP_RESP_CALL, req, chain.call_response)
            else:
                self.run_call(RPC_HTTP_RESP_CALL, req, chain.call_response)
        else:
            self.fail(BAD_REQUEST, "unexpected frame of %s (%d bytes)",
                      RPC_NAMES.get(rpc_type, "unknown type %d" % rpc_type), len(payload))

    def token_not_found(self, rpc_type, conf_token):
        if conf_token == 0:
            # Never issued (tokens skip 0): not a token the gateway should prepare again, but no
            # call at all, such as another message's payload under this type.
            self.fail(BAD_REQUEST, "%s without a conf_token", RPC_NAMES[rpc_type])
        else:
            self.fail(CONF_TOKEN_NOT_FOUND, None)

    def run_inline(self, rpc_type, req, run):
        """A call whose plugins all run inline: answered now, and no context is needed.
        (The hot path, kept apart from run_call: about 3% fewer instructions per call.)"""
        runner = self.runner
        runner.stats_calls += 1
        started = _clock_ns() if runner.stats_calls & 7 == 1 else 0
        try:
            answer = run(req, None)
        except BaseException as exc:  # noqa: B902  any failure is an Err frame, never success
            self.call_failed(rpc_type, req.id, exc)
        else:
            if answer.__class__ is bytes:
                self.send(answer)
            else:
                self.answer(rpc_type, req.id, answer)
        if started:
            runner.stats.observe(rpc_type, started)

    def run_call(self, rpc_type, req, run):
        """A call whose plugins may wait (ExtraInfo, a thread): they get a Call as context."""
        runner = self.runner
        runner.stats_calls += 1
        # live counters: the first call and every 8th after it is timed (stats.SAMPLE_EVERY)
        started = _clock_ns() if runner.stats_calls & 7 == 1 else 0
        call = Call(self, rpc_type, req.id)
        try:
            answer = run(req, call)
        except BaseException as exc:  # noqa: B902  any failure is an Err frame, never success
            self.call_failed(rpc_type, req.id, exc)
        else:
            if isinstance(answer, Future):
                # the call waits: it owns the connection until it is answered
                self.call = call
                call.started = started
                call.task = answer
                call.timer = runner.loop.call_later(runner.call_timeout,
                                                    lambda: self.call_timed_out(call))
                answer.add_done_callback(lambda done: self.call_done(call, done))
                return
            self.answer(rpc_type, req.id, answer)
        self.finish(call)
        if started:
            runner.stats.observe(rpc_type, started)

    def answer(self, rpc_type, call_id, answer):
        """Send the plugins' answer frame; anything else they produced is a failure."""
        if answer.__class__ is bytes:
            self.send(answer)
        else:
            self.call_failed(rpc_type, call_id,
                             TypeError("plugin chain returned %r" % (type(answer),)))

    def call_done(self, call, done):
        if not call.live:
            return
        self.finish(call)
        if done.cancelled():
            self.call_failed(call.rpc_type, call.id, CancelledError())
        elif done.exception() is not None:
            self.call_failed(call.rpc_type, call.id, done.exception())
        else:
            self.answer(call.rpc_type, call.id, done.result())
        if not self.in_read and not self.closed:
            self.process()

    def call_timed_out(self, call):
        if not call.live:
            return
        self.runner.plugin_log.error(
            "%s id=%d: plugins did not answer within %.1fs; answering SERVICE_UNAVAILABLE",
            RPC_NAMES[call.rpc_type], call.id, self.runner.call_timeout)
        self.runner.stats.errors[SERVICE_UNAVAILABLE] += 1
        self.abandon(call)
        self.send(_ERR_FRAMES[SERVICE_UNAVAILABLE])
        if not self.closed and not self.in_read:
            self.process()

    def finish(self, call):
        """The call is over: what it still waits for is cancelled (a thread blocked in
        get_var()/get_body() gets CancelledError now); answers to its questions that come
        later are read and dropped."""
        if call.live and call.started:
            self.runner.stats.observe(call.rpc_type, call.started)
        call.live = False
        if call.timer is not None:
            call.timer.cancel()
        if self.call is call:
            self.call = None
        for future in self.questions:
            future.cancel()

    def abandon(self, call):
        """Give up on a call that will not be answered by its plugins."""
        self.finish(call)
        if call.task is not None:
            call.task.cancel()

    def call_failed(self, rpc_type, call_id, exc):
        name = RPC_NAMES[rpc_type]
        if isinstance(exc, DecodeError):
            self.fail(BAD_REQUEST, "%s id=%d: corrupt field: %s", name, call_id, exc)
        elif isinstance(exc, EncodeError):
            self.fail(SERVICE_UNAVAILABLE, "%s id=%d: the plugins' answer cannot be sent: %s",
                      name, call_id, exc)
        elif isinstance(exc, CancelledError):
            self.fail(SERVICE_UNAVAILABLE, "%s id=%d: call abandoned", name, call_id)
        else:
            self.runner.stats.errors[SERVICE_UNAVAILABLE] += 1
            self.runner.plugin_log.error("%s id=%d: plugin failed; answering SERVICE_UNAVAILABLE",
                                         name, call_id,
                                         exc_info=(type(exc), exc, exc.__traceback__))
            self.send(_ERR_FRAMES[SERVICE_UNAVAILABLE])

    def on_extra_info(self, payload):
        if not self.questions:
            self.close("protocol error: an ExtraInfo answer nobody asked for")
            return
        future = self.questions.popleft()
        if future.done():
            return  # the answer to a question of a call that has ended
        try:
            result = codec.decode_extra_info_resp(payload)
        except DecodeError as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def fail(self, code, reason, *args):
        self.runner.stats.errors[code] += 1
        if reason is not None:
            # A peer can cause one of these per frame, a broken plugin one per call: rate-limited.
            limiter = self.runner.peer_log if code == BAD_REQUEST else self.runner.plugin_log
            limiter.warning("answering %s: " + reason, ERR_NAMES[code], *args)
        self.send(_ERR_FRAMES[code])

    # output -------------------------------------------------------------------------------------
    def ask(self, frame):
        """Send an ExtraInfo question of the running call: the Future of its answer, which must
        be read even though a call is running."""
        future = Future()
        self.questions.append(future)
        self.runner.stats.extra_info += 1
        self.write(frame)
        if not self.in_read:
            self.update_events()
        return future

    def send(self, frame):
        """Send the answer to the request frame read last (the only way an answer goes out)."""
        if not self.owed:
            # a bug, never a peer's doing: better no answer (the gateway's call fails on the
            # closed connection) than one the gateway would take for its next call
            log.error("internal error: an answer with no request to answer on connection %d; "
                      "closing it", self.fd)
            self.close(None)
            return
        self.owed = False
        self.write(frame)

    def write(self, frame):
        if self.closed:
            return
        if self.wbuf:
            self.wbuf += frame
            return
        try:
            sent = _write(self.fd, frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.close("write failed: %s" % exc)
            return
        if sent < len(frame):
            self.wbuf += memoryview(frame)[sent:]
            if not self.in_read:
                self.update_events()

    def flush(self):
        try:
            sent = self.sock.send(self.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close("write failed: %s" % exc)
            return
        del self.wbuf[:sent]
        if not self.in_read:
            self.process()  # reading may resume

    def idle(self):
        """Between two calls, with nothing half-read, unanswered, asked or unsent."""
        return (self.call is None and not self.owed and not self.questions and not self.rbuf
                and not self.wbuf and not self.closed)

    def detach(self):
        """Stop serving this connection here (it was given to another process)."""
        self.closed = True
        self.runner.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self, reason):
        if self.closed:
            return
        if reason:
            self.runner.peer_log.warning("closing connection %d: %s", self.fd, reason)
        self.closed = True
        call = self.call
        if call is not None:
            self.abandon(call)
        self.runner.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass


class Runner:
    """Serves the gateway on one listening socket with one loop."""

    def __init__(self, loop, listener, registry, confs, call_timeout=30.0):
        self.loop = loop
        self.listener = listener
        self.registry = registry
        self.confs = confs
        self.call_timeout = call_timeout
        self.connections = {}
        self.accepting = True
        self.stats_calls = 0
        self.stats = WorkerStats()
        self.peer_log = LogLimiter(log, "warnings about bad frames and connections",
                                   schedule=loop.call_later)
        self.plugin_log = LogLimiter(log, "errors about plugins and confs",
                                     schedule=loop.call_later)
        self.accept_paused = False
        # the gateway's socket, or (with several workers) the supervisor's hand-off of it
        loop.add_reader(listener.fileno(), self.on_accept)
        loop.call_later(SWEEP_SECONDS, self.sweep)

    def on_accept(self, events):
        accept = self.listener.accept
        for _ in range(64):
            try:
                sock, _ = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.peer_log.error("cannot accept a connection: %s; not accepting for %gs",
                                        exc, ACCEPT_PAUSE_SECONDS)
                    self.pause_accepting()
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue  # that peer gave up; the next one may be there
                raise
            sock.setblocking(False)
            conn = Connection(self, sock)
            self.connections[conn.fd] = conn
            self.loop.add_reader(conn.fd, conn.on_events)

    def pause_accepting(self):
        # The waiting connections keep the listener readable: watched now, the loop would spin.
        if self.accepting and not self.accept_paused:
            self.accept_paused = True
            self.loop.remove(self.listener.fileno())
            self.loop.call_later(ACCEPT_PAUSE_SECONDS, self.resume_accepting)

    def resume_accepting(self):
        if self.accept_paused:
            self.accept_paused = False
            if self.accepting:
                self.loop.add_reader(self.listener.fileno(), self.on_accept)
                # a worker's hand-over is readable only once it has told the supervisor it has
                # room again (handoff.py): try now rather than wait for a connection to come
                self.on_accept(0)

    def forget(self, conn):
        if self.connections.get(conn.fd) is conn:
            del self.connections[conn.fd]
            self.loop.remove(conn.fd)

    def prepare_conf(self, payload):
        """Answer one PrepareConf frame: the token, or an Err frame."""
        try:
            req = codec.decode_prepare_conf_req(payload)
            conf = req.conf
            key = req.key
        except DecodeError as exc:
            self.peer_log.warning("answering BAD_REQUEST: undecodable PrepareConf: %s", exc)
            return _ERR_FRAMES[BAD_REQUEST]
        if len(conf) > MAX_CONF_PLUGINS:
            self.peer_log.warning("answering BAD_REQUEST: PrepareConf (key %s) lists %d plugins, "
                                  "more than %d", _clip(key), len(conf), MAX_CONF_PLUGINS)
            return _ERR_FRAMES[BAD_REQUEST]
        try:
            token = self.confs.put(key, conf)
        except UnknownPlugin as exc:
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) names plugin %s, "
                                  "which is not loaded (loaded: %s)", _clip(key), _clip(exc.name),
                                  ", ".join(sorted(self.registry.names())))
            return _ERR_FRAMES[BAD_REQUEST]
        except ConfError as exc:
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) rejected: %s",
                                  _clip(key), exc)
            return _ERR_FRAMES[BAD_REQUEST]
        except BaseException:  # noqa: B902  a conf hook failing, even by sys.exit(), is a bad conf
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) failed",
                                  _clip(key), exc_info=True)
            return _ERR_FRAMES[BAD_REQUEST]
        log.debug("PrepareConf key %s -> conf_token %d", _clip(key), token)
        return codec.encode_prepare_conf_resp(token)

    def sweep(self):
        self.confs.sweep()
        # the gateway gives up on a send after 60 s: a frame still incomplete after that never ends
        limit = self.loop.now - STALLED_FRAME_SECONDS
        for conn in list(self.connections.values()):
            if conn.rbuf and conn.call is None and conn.last_read < limit:
                conn.close("no byte of an incomplete frame for %ds" % STALLED_FRAME_SECONDS)
        self.loop.call_later(SWEEP_SECONDS, self.sweep)

    def reload(self, registry):
        """Serve with ``registry`` from now on (one worker, reloaded in place): confs prepared
        before are dropped, so the gateway prepares them again with the new plugins."""
        self.registry = registry
        self.confs.replace_all(registry.prepare)

    def retire(self, give_back, gone):
        """Leave after a reload: take nothing new; hand each connection to ``give_back(sock)``
        as soon as it is idle between two calls (nothing read and not answered, nothing asked,
        nothing half-read or unsent); ``gone()`` once none is left."""
        if self.accepting:
            self.on_accept(0)  # what was dealt here before the reload is served, not lost
            self.accepting = False
            self.loop.remove(self.listener.fileno())
        for conn in list(self.connections.values()):
            if conn.idle():
                try:
                    give_back(conn.sock)
                except BlockingIOError:
                    break  # the supervisor's queue is full: the rest on the next turn
                except OSError as exc:
                    conn.close("cannot give the connection back: %s" % exc)
                    continue
                conn.detach()
        if self.connections:
            self.loop.call_later(0.005, lambda: self.retire(give_back, gone))
        else:
            gone()

    def busy(self):
        """How many calls are waiting for plugins (ExtraInfo, threads)."""
        return sum(1 for conn in self.connections.values() if conn.call is not None)

    def stop_accepting(self):
        if self.accepting:
            self.accepting = False
            self.loop.remove(self.listener.fileno())
            self.listener.close()

    def close_all(self):
        for conn in list(self.connections.values()):
            conn.close(None)
