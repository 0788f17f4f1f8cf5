"""The runner's server: one selector loop per process serving the gateway's unix socket."""
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from typing import List, Optional

from .confstore import ConfStore, TokenSource
from .listener import DEFAULT_SOCKET_MODE, ListenError, bind_unix, parse_listen_address, remove_socket, socket_identity
from .loop import Loop
from .runner import Runner

__all__ = ["ServeOptions", "serve", "ListenError"]

log = logging.getLogger("a6fast.server")

# The gateway sends SIGTERM, waits about 1 s, then SIGKILL: drain within that.
DRAIN_SECONDS = 0.8


@dataclass
class ServeOptions:
    """Everything `a6fast serve` can be told."""

    listen: str
    plugin_dirs: List[str] = field(default_factory=list)
    conf_expire: float = 3600.0
    max_confs: int = 10000
    call_timeout: float = 30.0
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: Optional[str] = None
    state_file: Optional[str] = None
    threads: int = 32


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
        except (ValueError, OSError):
            pass


def serve(options, registry):
    """Serve until SIGTERM/SIGINT; returns the exit status (0 after a clean drain)."""
    from .. import codec

    _raise_fd_limit()
    path = parse_listen_address(options.listen)
    sock, path = bind_unix(path, options.socket_mode, options.socket_group)
    identity = socket_identity(path)
    state_file = options.state_file or path + ".tokens"
    confs = ConfStore(TokenSource(state_file), options.conf_expire, options.max_confs, clock=time.monotonic)
    loop = Loop(threads=options.threads)
    runner = Runner(loop, sock, registry, confs, options.call_timeout)
    stop_at = []

    def stop():
        if stop_at:
            return
        log.info("stopping: socket closed, finishing %d call(s) in flight", runner.busy())
        runner.stop_accepting()
        remove_socket(path, identity)
        stop_at.append(time.monotonic() + DRAIN_SECONDS)

    loop.on_signal(signal.SIGTERM, stop)
    loop.on_signal(signal.SIGINT, stop)
    log.info("a6fast listening on unix:%s (pid %d, %s codec, plugins: %s)", path, os.getpid(),
             codec.IMPLEMENTATION, ", ".join(sorted(registry.names())) or "none")

    def done():
        return bool(stop_at) and (runner.busy() == 0 or time.monotonic() >= stop_at[0])

    try:
        loop.run(done)
    finally:
        busy = runner.busy()
        if busy:
            log.warning("exiting with %d call(s) unanswered", busy)
        runner.stop_accepting()
        remove_socket(path, identity)
        runner.close_all()
        loop.close()
    log.info("stopped")
    return 0
