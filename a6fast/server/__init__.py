"""The runner's server: a selector loop per process serving the gateway's unix socket, and a
supervisor when there are several worker processes."""
import logging
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Union

from .confstore import ConfStore
from .listener import (DEFAULT_SOCKET_MODE, ListenError, bind_unix, parse_listen_address,
                       remove_socket, socket_identity)
from .loop import Loop
from .runner import Runner
from .shared import SharedConfs
from .tokens import MAX_WORKERS, StateError, open_lanes

__all__ = ["ServeOptions", "serve", "ListenError", "StateError", "default_workers", "MAX_WORKERS"]

log = logging.getLogger("a6fast.server")

_early_stop = []


# The gateway sends SIGTERM, waits about 1 s, then SIGKILL: drain within that.
DRAIN_SECONDS = 0.8


def default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover  (macOS)
        return os.cpu_count() or 1


@dataclass
class ServeOptions:
    """Everything `a6fast serve` can be told."""

    listen: str
    plugin_dirs: List[str] = field(default_factory=list)
    workers: int = 1
    conf_expire: float = 3600.0
    max_confs: int = 10000
    call_timeout: float = 30.0
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: Optional[Union[str, int]] = None
    state_file: Optional[str] = None  # default: tokens.default_state_dir()
    threads: int = 32
    stats: Optional[str] = None  # unix:PATH of the live counters socket (a6fast stats)


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def load_plugins(options):
    """The plugins the options name, imported in the calling process."""
    from ..registry import Registry

    return Registry.load(plugin_dirs=options.plugin_dirs)


def serve(options, registry=None):
    """Serve until SIGTERM/SIGINT; returns the exit status (0 after a clean drain).

    Without ``registry``, the plugins of ``options.plugin_dirs`` are imported by each process
    that serves calls, after it is started: a thread or connection a plugin module makes at
    import then lives in the process that uses it.  (A ready ``registry`` is used as is.)
    """
    from .. import codec

    _raise_fd_limit()
    # a SIGTERM that comes before the loop is up still means a clean stop, never a default death
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, f: _early_stop.append(s))
    signal.signal(signal.SIGHUP, _ignore_sighup)
    lanes = open_lanes(options.state_file)  # StateError before anything is bound
    path = parse_listen_address(options.listen)
    try:
        sock, path = bind_unix(path, options.socket_mode, options.socket_group)
    except ListenError:
        lanes.close()
        raise
    identity = socket_identity(path)
    stats = None
    if options.stats:
        from .stats import StatsEndpoint

        try:
            stats = StatsEndpoint.open(options.stats, options.socket_mode, options.socket_group,
                                       options.workers)
        except ListenError:
            sock.close()
            remove_socket(path, identity)
            lanes.close()
            raise
        log.info("live counters on unix:%s (a6fast stats --listen unix:%s)", stats.path,
                 stats.path)
    if options.workers <= 1:
        if registry is None:
            registry = load_plugins(options)
        _log_listening(path, options, codec, registry.names())
        try:
            return run_worker(options, registry, sock, lanes.source(0, reserve=True), None,
                              on_stop=lambda: remove_socket(path, identity), stats=stats)
        finally:
            remove_socket(path, identity)
            lanes.close()
            if stats is not None:
                stats.close()
    from .supervisor import Supervisor, check_plugins_apart

    names = registry.names() if registry is not None else check_plugins_apart(options)
    _log_listening(path, options, codec, names)
    shared = SharedConfs.create()
    try:
        return Supervisor(options, registry, sock, lanes, shared, stats=stats).run()
    finally:
        remove_socket(path, identity)
        shared.remove()
        lanes.close()
        if stats is not None:
            stats.close()


def _ignore_sighup(signum, frame):
    # nginx and gunicorn reload on SIGHUP; its default action would kill the runner and leave
    # its socket behind
    log.warning("SIGHUP ignored: a6fast does not reload plugins on SIGHUP; restart it instead")


def _log_listening(path, options, codec, names):
    log.info("a6fast listening on unix:%s (pid %d, %d worker(s), %s codec, plugins: %s)", path,
             os.getpid(), options.workers, codec.IMPLEMENTATION,
             ", ".join(sorted(names)) if names is not None else "unknown (see above)")
    if codec.FALLBACK_REASON is not None:
        log.warning("the compiled codec is not in use (%s): running on the pure-Python codec, "
                    "several times slower per call; install a C compiler and Python headers and "
                    "reinstall a6fast from source", codec.FALLBACK_REASON)


def run_worker(options, registry, sock, tokens, shared, on_stop=None, stats=None):
    """One process's loop over the listening socket, until SIGTERM/SIGINT and a drain."""
    confs = ConfStore(tokens, registry.prepare, options.conf_expire, options.max_confs,
                      clock=time.monotonic, shared=shared)
    loop = Loop(threads=options.threads)
    runner = Runner(loop, sock, registry, confs, options.call_timeout)
    if stats is not None:
        stats.attach_worker(runner, loop, serving=shared is None)
    stop_at = []

    def stop():
        if stop_at:
            return
        log.info("stopping: no new connections, finishing %d call(s) in flight", runner.busy())
        runner.stop_accepting()
        if on_stop is not None:
            on_stop()
        stop_at.append(time.monotonic() + DRAIN_SECONDS)
        loop.call_later(DRAIN_SECONDS, lambda: None)  # wakes the loop by then, however idle

    loop.on_signal(signal.SIGTERM, stop)
    loop.on_signal(signal.SIGINT, stop)
    if _early_stop:
        stop()
    signal.signal(signal.SIGHUP, signal.SIG_IGN if shared is not None else _ignore_sighup)
    if shared is not None and not sys.platform.startswith("linux"):
        parent = os.getppid()

        def watch_parent():  # where there is no PR_SET_PDEATHSIG
            if os.getppid() != parent:
                stop()
            else:
                loop.call_later(0.5, watch_parent)
        loop.call_later(0.5, watch_parent)

    def done():
        return bool(stop_at) and (runner.busy() == 0 or time.monotonic() >= stop_at[0])

    try:
        loop.run(done)
    finally:
        busy = runner.busy()
        if busy:
            log.warning("exiting with %d call(s) unanswered", busy)
        runner.stop_accepting()
        runner.close_all()
        if stats is not None:
            stats.detach_worker()
        loop.close()
    log.info("stopped")
    return 0
