"""The runner's server: a selector loop per process serving the gateway's unix socket, and a
supervisor when there are several worker processes."""
import grp
import logging
import os
import pwd
import resource
import signal
import stat
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

__all__ = ["ServeOptions", "serve", "ListenError", "StateError", "PluginsFailed",
           "default_workers", "MAX_WORKERS"]

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
    metrics: Optional[str] = None  # HOST:PORT of the Prometheus /metrics endpoint
    reload_on_change: bool = False  # --reload: reload when a plugin file changes


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


class PluginsFailed(Exception):
    """Plugins that do not load: ``errors`` lists ``(file, line, message)``; nothing started."""

    def __init__(self, errors):
        super().__init__("%d plugin load error(s)" % len(errors))
        self.errors = list(errors)


def load_plugins(options, quiet=False):
    """The plugins the options name, imported in the calling process.  ``quiet``: load errors
    are only recorded in ``registry.errors``, not logged (the caller reports them)."""
    from ..registry import Registry

    plugins_log = logging.getLogger("a6fast.plugins")
    saved = plugins_log.disabled
    plugins_log.disabled = quiet or saved
    try:
        return Registry.load(plugin_dirs=options.plugin_dirs)
    finally:
        plugins_log.disabled = saved


def serve(options, registry=None):
    """Serve until SIGTERM/SIGINT; returns the exit status (0 after a clean drain).

    Without ``registry``, the plugins of ``options.plugin_dirs`` are imported by each process
    that serves calls, after it is started: a thread or connection a plugin module makes at
    import then lives in the process that uses it.  (A ready ``registry`` is used as is.)
    Plugins that do not load raise PluginsFailed, and an unsafe --state-file StateError, before
    the socket is made.
    """
    from .. import codec

    _raise_fd_limit()
    # a SIGTERM that comes before the loop is up still means a clean stop, never a default death
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, f: _early_stop.append(s))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until it can reload
    path = parse_listen_address(options.listen)
    if options.workers <= 1:
        if registry is None:
            registry = load_plugins(options, quiet=True)
        if registry.errors:
            raise PluginsFailed(registry.errors)
        names = registry.names()
    else:
        from .supervisor import check_plugins_apart

        if registry is None:
            report = check_plugins_apart(options)
            if report is None:
                raise PluginsFailed([("(plugins)", 0, "checking the plugins failed; see above")])
            if report["errors"]:
                raise PluginsFailed(report["errors"])
            names = report["names"]
        else:
            names = registry.names()
    lanes = open_lanes(options.state_file)  # StateError before anything is bound
    try:
        sock, path = bind_unix(path, options.socket_mode, options.socket_group)
    except ListenError:
        lanes.close()
        raise
    identity = socket_identity(path)
    stats = metrics = None
    if options.stats or options.metrics:
        # the snapshots behind both: a socket for the one, a thread reading them for the other
        from .stats import StatsEndpoint

        try:
            stats = StatsEndpoint.open(options.stats, options.socket_mode, options.socket_group,
                                       options.workers)
            if options.metrics:
                from .metrics import MetricsServer

                metrics = MetricsServer.start(options.metrics, stats.snapshot)
        except ListenError:
            if stats is not None:
                stats.close()
            sock.close()
            remove_socket(path, identity)
            lanes.close()
            raise
        if options.stats:
            log.info("live counters on unix:%s (a6fast stats --listen unix:%s)", stats.path,
                     stats.path)
    _log_listening(path, options, codec, names)
    if options.workers <= 1:
        try:
            return run_worker(options, registry, sock, lanes.source(0, reserve=True), None,
                              on_stop=lambda: remove_socket(path, identity), stats=stats)
        finally:
            remove_socket(path, identity)
            lanes.close()
            if metrics is not None:
                metrics.close()
            if stats is not None:
                stats.close()
    from .supervisor import Supervisor

    shared = SharedConfs.create()
    try:
        return Supervisor(options, registry, sock, lanes, shared, stats=stats).run()
    finally:
        remove_socket(path, identity)
        shared.remove()
        lanes.close()
        if metrics is not None:
            metrics.close()
        if stats is not None:
            stats.close()


def _log_listening(path, options, codec, names):
    st = os.stat(path)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    log.info("a6fast listening on unix:%s (owner %s, group %s, mode %04o; pid %d, %d worker(s), "
             "%s codec, plugins: %s)", path, owner, group, stat.S_IMODE(st.st_mode), os.getpid(),
             options.workers, codec.IMPLEMENTATION, ", ".join(sorted(names)) or "none")
    if st.st_uid == 0 and st.st_gid == 0 and not st.st_mode & 0o006:
        log.warning("the socket belongs to root:root with mode %04o: nginx workers running as "
                    "another user (nobody, nginx, apisix) cannot connect; give their group with "
                    "--socket-group", stat.S_IMODE(st.st_mode))


def _reload_in_place(options, runner, stats):
    """One worker, no supervisor: the new plugin code is loaded here and checked; if it loads,
    it serves every conf prepared from now on, and the confs prepared before are dropped (the
    gateway, told CONF_TOKEN_NOT_FOUND, prepares them again with the new code)."""
    registry = load_plugins(options, quiet=True)
    if registry.errors:
        for path, line, message in registry.errors:
            log.error("reload refused: %s:%d: %s", path, line, message)
        log.error("reload refused: the running plugins keep serving")
        return False
    runner.reload(registry)
    if stats is not None:
        stats.counts.reloads += 1
    log.info("reloaded (plugins: %s)", ", ".join(registry.names()) or "none")
    return True


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
    retired = []
    if shared is None:
        # one worker, no supervisor: a reload happens here
        loop.on_signal(signal.SIGHUP, lambda: _reload_in_place(options, runner, stats))
        if options.reload_on_change:
            from .supervisor import PluginWatch

            watch = PluginWatch(options.plugin_dirs)

            def poll():
                if watch.changed():
                    _reload_in_place(options, runner, stats)
                loop.call_later(1.0, poll)
            loop.call_later(1.0, poll)
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor reloads

        def retire():  # a reload started a new generation: give the connections back, leave
            if not retired and not stop_at:
                retired.append(time.monotonic() + options.call_timeout + 5.0)
                runner.retire(sock.give_back, lambda: retired.append(True))
        loop.on_signal(signal.SIGUSR1, retire)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    if shared is not None and not sys.platform.startswith("linux"):
        parent = os.getppid()

        def watch_parent():  # where there is no PR_SET_PDEATHSIG
            if os.getppid() != parent:
                stop()
            else:
                loop.call_later(0.5, watch_parent)
        loop.call_later(0.5, watch_parent)

    def done():
        if retired and (len(retired) > 1 or time.monotonic() >= retired[0]):
            return True  # every connection given back (or the last ones stuck past a deadline)
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
