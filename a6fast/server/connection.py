"""One gateway connection and its calls: exact framing, one call at a time, and an account of
every frame written, so that an answer can never reach another request.

Every call is answered with its action or with a type 0 Err frame: a failure is never answered
with anything the gateway would read as success.
"""
import collections
import logging
import os

from .. import codec
from ..chain import blamed_plugin
from ..errors import DecodeError, EncodeError
from ..futures import CancelledError, Future, wait_from_thread
from ..protocol import (BAD_REQUEST, CONF_TOKEN_NOT_FOUND, ERR_NAMES, INFO_REQ_BODY,
                        INFO_RESP_BODY, INFO_VAR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
                        RPC_HTTP_RESP_CALL, RPC_NAMES, RPC_PREPARE_CONF, SERVICE_UNAVAILABLE)
from .loop import WRITE
from .stats import clock_ns as _clock_ns

log = logging.getLogger("a6fast.server")

# below glibc's mmap threshold: a bigger recv() buffer costs an mmap/munmap per call
RECV_SIZE = 64 * 1024
# Past this much unsent output to one peer (it stopped reading), we stop reading from it and
# leave the frames already read for later: memory stays bounded and the loop serves the others.
# The gateway never has more than one answer outstanding, so only a misbehaving peer gets here.
MAX_BACKLOG = 256 * 1024

_frame_end = codec.frame_end
_read = os.read
_write = os.write
_decode_http_req_call = codec.decode_http_req_call
_decode_http_resp_call = codec.decode_http_resp_call
ERR_FRAMES = {code: codec.encode_err(code) for code in ERR_NAMES}
_EXTRA_INFO_BODY = {INFO_REQ_BODY: codec.encode_extra_info_req_body(),
                    INFO_RESP_BODY: codec.encode_extra_info_resp_body()}


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
        if self.rbuf or self.call is not None or self.in_read or _frame_end(data) != len(data):
            self.last_read = self.runner.loop.now
            self.rbuf += data
            self.process()
            return
        # the common case: exactly one whole frame, decoded where it lies (no buffering, no copy)
        self.in_read = True
        try:
            self.on_frame(data[0], data, 4, len(data))
        finally:
            self.in_read = False
        if self.call is not None or self.wbuf or not self.reading:
            if not self.closed:
                self.update_events()

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
                end = _frame_end(rbuf, pos)
                if end < 0:
                    break
                start = pos
                pos = end
                self.on_frame(rbuf[start], rbuf, start + 4, end)
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
    def on_frame(self, rpc_type, buf, start, end):
        """The frame whose payload is ``buf[start:end]``, decoded there (the decoders copy out of
        a receive buffer that is reused, never out of a frame read whole).

        An HTTPReqCall or HTTPRespCall runs its conf's plugins: a call whose plugins all run
        inline is answered here and now, with no context (the hot path); run_call gives the
        others one."""
        if rpc_type == RPC_EXTRA_INFO:
            self.on_extra_info(buf, start, end)
            return
        if self.call is not None or self.questions:
            self.close("protocol error: %s frame while %s" % (
                RPC_NAMES.get(rpc_type, "type %d" % rpc_type),
                "ExtraInfo answers are due" if self.questions else "a call is running"))
            return
        self.owed = True
        runner = self.runner
        try:
            if rpc_type == RPC_HTTP_REQ_CALL:
                req = _decode_http_req_call(buf, start, end)
            elif rpc_type == RPC_HTTP_RESP_CALL:
                req = _decode_http_resp_call(buf, start, end)
            elif rpc_type == RPC_PREPARE_CONF:
                answer = runner.prepare_conf(buf, start, end)
                runner.stats.prepared(answer)
                self.send(answer)
                return
            else:
                self.fail(BAD_REQUEST, "unexpected frame of %s (%d bytes)",
                          RPC_NAMES.get(rpc_type, "unknown type %d" % rpc_type), end - start)
                return
            conf = runner.confs.find(req.conf_token)
            if conf is None:
                # another worker's conf (loaded from the shared store), or an unknown token
                conf = runner.confs.load(req.conf_token, runner.loop.now)
                if conf is None:
                    self.token_not_found(rpc_type, req.conf_token)
                    return
            elif runner.loop.now > conf.touch_after:
                runner.confs.touch(conf, runner.loop.now)
            calls = conf.calls = conf.calls + 1
            chain = conf.chain
            if rpc_type == RPC_HTTP_REQ_CALL:
                inline = chain.request_inline
            else:
                runner.stats.resp_calls += 1
                inline = chain.response_inline
            if not inline:
                self.run_call(rpc_type, req, chain, calls)
                return
            # live counters: a conf's first call and every 8th after it is timed (SAMPLE_EVERY)
            started = _clock_ns() if calls & 7 == 1 else 0
            try:
                if rpc_type == RPC_HTTP_REQ_CALL:
                    answer = chain.call_request(req, None)
                else:
                    answer = chain.call_response(req, None)
            except BaseException as exc:  # noqa: B902  any failure is an Err frame, never success
                self.call_failed(rpc_type, req.id, exc)
            else:
                if answer.__class__ is bytes:
                    self.send(answer)
                else:
                    self.answer(rpc_type, req.id, answer)
            if started:
                runner.stats.observe(rpc_type, started)
        except DecodeError as exc:
            # only a decoder raises it here: the plugins' failures are answered as they happen
            if not self.owed or self.call is not None or self.closed:
                raise
            self.fail(BAD_REQUEST, "undecodable %s: %s", RPC_NAMES[rpc_type], exc)
        except BaseException as exc:  # noqa: B902  (MemoryError included) still answered
            if not self.owed or self.call is not None or self.closed:
                raise
            runner.stats.errors[SERVICE_UNAVAILABLE] += 1
            log.error("%s frame of %d bytes could not be handled; answering SERVICE_UNAVAILABLE",
                      RPC_NAMES.get(rpc_type, "type %d" % rpc_type), end - start,
                      exc_info=(type(exc), exc, exc.__traceback__))
            self.send(ERR_FRAMES[SERVICE_UNAVAILABLE])
            if not isinstance(exc, Exception):
                raise

    def token_not_found(self, rpc_type, conf_token):
        if conf_token == 0:
            # Never issued (tokens skip 0): not a token the gateway should prepare again, but no
            # call at all, such as another message's payload under this type.
            self.fail(BAD_REQUEST, "%s without a conf_token", RPC_NAMES[rpc_type])
        else:
            self.fail(CONF_TOKEN_NOT_FOUND, None)

    def run_call(self, rpc_type, req, chain, calls):
        """A call whose plugins may wait (ExtraInfo, a thread): they get a Call as context."""
        runner = self.runner
        started = _clock_ns() if calls & 7 == 1 else 0
        call = Call(self, rpc_type, req.id)
        try:
            if rpc_type == RPC_HTTP_REQ_CALL:
                answer = chain.call_request(req, call)
            else:
                answer = chain.call_response(req, call)
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
            RPC_NAMES[call.rpc_type], call.id, self.runner.call_timeout,
            extra={"call_id": call.id, "err": "SERVICE_UNAVAILABLE"})
        self.runner.stats.errors[SERVICE_UNAVAILABLE] += 1
        self.abandon(call)
        self.send(ERR_FRAMES[SERVICE_UNAVAILABLE])
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
            plugin = blamed_plugin(exc)
            self.runner.plugin_log.error(
                "%s id=%d: %s failed; answering SERVICE_UNAVAILABLE", name, call_id,
                "the plugins" if plugin is None else "plugin %r" % (plugin,),
                exc_info=(type(exc), exc, exc.__traceback__),
                extra={"plugin": plugin, "call_id": call_id, "err": "SERVICE_UNAVAILABLE"})
            self.send(ERR_FRAMES[SERVICE_UNAVAILABLE])

    def on_extra_info(self, buf, start, end):
        if not self.questions:
            self.close("protocol error: an ExtraInfo answer nobody asked for")
            return
        future = self.questions.popleft()
        if future.done():
            return  # the answer to a question of a call that has ended
        try:
            result = codec.decode_extra_info_resp(buf, start, end)
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
        self.send(ERR_FRAMES[code])

    # output -------------------------------------------------------------------------------------
    def ask(self, frame):
        """Send an ExtraInfo question of the running call: the Future of its answer, which must
        be read even though a call is running."""
        future = Future()
        self.questions.append(future)
        self.runner.stats.extra_info += 1
        self.send(frame, answer=False)
        if not self.in_read:
            self.update_events()
        return future

    def send(self, frame, answer=True):
        """Write the answer to the request frame read last (the only way an answer goes out),
        or, with ``answer=False``, an ExtraInfo question of the running call (``ask``)."""
        if answer:
            if not self.owed:
                # a bug, never a peer's doing: better no answer (the gateway's call fails on the
                # closed connection) than one the gateway would take for its next call
                log.error("internal error: an answer with no request to answer on connection "
                          "%d; closing it", self.fd)
                self.close(None)
                return
            self.owed = False
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
            try:
                self.wbuf += memoryview(frame)[sent:]
            except MemoryError:
                # half a frame is on the wire: only closing keeps the next answer from shifting
                self.close("out of memory buffering an answer")
                return
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
