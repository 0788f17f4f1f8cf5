"""One worker's server: the listening socket (or the supervisor's hand-over of connections),
the connections it accepted, the conf store and the plugin chains that PrepareConf makes.
"""
import errno
import logging

from .. import codec
from ..errors import ConfError, DecodeError, UnknownPlugin
from ..protocol import BAD_REQUEST, SERVICE_UNAVAILABLE
from .connection import ERR_FRAMES, Connection
from .loglimit import LogLimiter, clip
from .stats import WorkerStats
from .tokens import TokensExhausted

log = logging.getLogger("a6fast.server")

SWEEP_SECONDS = 10.0
STALLED_FRAME_SECONDS = 65
# A route's plugin list is a handful of entries; a PrepareConf listing more is refused before its
# chain is built (one 16 MiB frame can list 4 million, costing seconds and gigabytes to prepare).
MAX_CONF_PLUGINS = 1024
# Out of file descriptors: how long to leave the listener alone before trying again.
ACCEPT_PAUSE_SECONDS = 0.1


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
        self.stats = WorkerStats()
        self.peer_log = LogLimiter(log, "warnings about bad frames and connections",
                                   schedule=loop.call_later)
        self.plugin_log = LogLimiter(log, "errors about plugins and confs",
                                     schedule=loop.call_later)
        self.accept_paused = False
        self.plugin_check = None  # a reload's PluginCheck under way (one worker, in place)
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

    def prepare_conf(self, buf, start, end):
        """Answer one PrepareConf frame (its payload is ``buf[start:end]``): the token, or an
        Err frame."""
        try:
            # the plugin count is checked from the vector's length, before any entry is decoded
            req = codec.decode_prepare_conf_req(buf, MAX_CONF_PLUGINS, start, end)
            conf = req.conf
            key = req.key
        except codec.TooManyPlugins as exc:
            self.peer_log.warning("answering BAD_REQUEST: PrepareConf (key %s) lists %d plugins, "
                                  "more than %d", clip(exc.key), exc.count, exc.limit)
            return ERR_FRAMES[BAD_REQUEST]
        except DecodeError as exc:
            self.peer_log.warning("answering BAD_REQUEST: undecodable PrepareConf: %s", exc)
            return ERR_FRAMES[BAD_REQUEST]
        except Exception:  # noqa: B902  a MemoryError, say: still answered, never left waiting
            self.peer_log.error("answering BAD_REQUEST: PrepareConf could not be decoded",
                                exc_info=True)
            return ERR_FRAMES[BAD_REQUEST]
        try:
            token = self.confs.put(key, conf)
        except UnknownPlugin as exc:
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) names plugin %s, "
                                  "which is not loaded (loaded: %s)", clip(key), clip(exc.name),
                                  ", ".join(sorted(self.registry.names())))
            return ERR_FRAMES[BAD_REQUEST]
        except ConfError as exc:
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) rejected: %s",
                                  clip(key), exc)
            return ERR_FRAMES[BAD_REQUEST]
        except TokensExhausted as exc:
            log.error("answering SERVICE_UNAVAILABLE: %s", exc)
            return ERR_FRAMES[SERVICE_UNAVAILABLE]
        except BaseException:  # noqa: B902  a conf hook failing, even by sys.exit(), is a bad conf
            self.plugin_log.error("answering BAD_REQUEST: PrepareConf (key %s) failed",
                                  clip(key), exc_info=True)
            return ERR_FRAMES[BAD_REQUEST]
        log.debug("PrepareConf key %s -> conf_token %d", clip(key), token)
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
        nothing half-read or unsent); ``gone()`` once none is left, here or on its way."""
        if self.accepting:
            self.accepting = False
            self.loop.remove(self.listener.fileno())
        queue_empty = self._take_queued()
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
        if self.connections or not queue_empty:
            self.loop.call_later(0.005, lambda: self.retire(give_back, gone))
        else:
            gone()

    def _take_queued(self):
        """Take the connections dealt here before the reload (they are given back like the
        others): True once none is left on its way."""
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return True
            except OSError as exc:  # out of descriptors: the listener passed them back
                self.peer_log.error("while leaving: %s", exc)
                return False
            sock.setblocking(False)
            conn = Connection(self, sock)
            self.connections[conn.fd] = conn
            self.loop.add_reader(conn.fd, conn.on_events)
        return False

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
