"""The runner's server: a selector loop per process serving the gateway's unix socket, and a
supervisor when there are several worker processes."""
import grp
import logging
import os
import pwd
import resource
import stat
from dataclasses import dataclass, field
from typing import List, Optional, Union

from .listener import (DEFAULT_SOCKET_MODE, ListenError, bind_unix, parse_listen_address,
                       remove_socket, socket_identity)
from .plugins import PluginsFailed, check_plugins_apart, load_plugins
from .shared import SharedConfs
from .supervisor import Supervisor
from .tokens import MAX_WORKERS, StateError, open_lanes
from .worker import EarlySignals, serve_worker

__all__ = ["ServeOptions", "serve", "ListenError", "StateError", "PluginsFailed",
           "default_workers", "MAX_WORKERS"]

log = logging.getLogger("a6fast.server")

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
    early = EarlySignals()
    early.install()
    path = parse_listen_address(options.listen)
    if options.workers <= 1:
        if registry is None:
            registry = load_plugins(options, quiet=True)
        if registry.errors:
            raise PluginsFailed(registry.errors)
        names = registry.names()
    else:
        if registry is None:
            report = check_plugins_apart(options, lambda: early.stop_asked)
            if report is None:
                return 0  # stopped (SIGTERM/SIGINT) while the plugins were checked
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
            return serve_worker(options, registry, sock, lanes.source(0, reserve=True), None,
                                early, on_stop=lambda: remove_socket(path, identity),
                                stats=stats)
        finally:
            remove_socket(path, identity)
            lanes.close()
            if metrics is not None:
                metrics.close()
            if stats is not None:
                stats.close()
    shared = SharedConfs.create()
    try:
        return Supervisor(options, registry, sock, lanes, shared, early, stats=stats).run()
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
    if codec.FALLBACK_REASON is not None:
        log.warning("the compiled codec is not in use (%s): running on the pure-Python codec, "
                    "several times slower per call; install a C compiler and Python headers and "
                    "reinstall a6fast from source", codec.FALLBACK_REASON)
