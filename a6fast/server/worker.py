"""One worker process: its loop over the gateway's socket (or the supervisor's hand-over of
connections), until a stop (SIGTERM/SIGINT: drain, then leave) or, after a reload, until it has
handed every connection back."""
import logging
import os
import signal
import sys
import time

from .confstore import ConfStore
from .loop import Loop
from .plugins import (PluginCheck, PluginWatch, forget_plugin_modules, load_plugins,
                      log_refused_reload)
from .runner import Runner

log = logging.getLogger("a6fast.server")

# The gateway sends SIGTERM, waits about 1 s, then SIGKILL: drain within that.
DRAIN_SECONDS = 0.8


class EarlySignals:
    """Signals that come before a loop handles them: a SIGTERM/SIGINT still means a clean stop
    (never the default death), a SIGHUP a reload once serving.  Installed first thing, read by
    whoever starts serving."""

    def __init__(self):
        self.stop_asked = False
        self.reload_asked = False

    def install(self, reload=True):
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        signal.signal(signal.SIGHUP, self._reload if reload else signal.SIG_IGN)

    def _stop(self, signum, frame):
        self.stop_asked = True

    def _reload(self, signum, frame):
        self.reload_asked = True


class _Ending:
    """How a worker's loop ends: drained after a stop, or retired after a reload."""

    __slots__ = ("drain_until", "retire_until", "retired")

    def __init__(self):
        self.drain_until = None  # set by a stop
        self.retire_until = None  # set by a reload of several workers: hand everything back
        self.retired = False  # every connection handed back


def reload_in_place(options, runner, counts):
    """One worker, no supervisor: the new plugin code is checked apart first (a hanging import
    holds no call); if it loads, it is imported here and serves every conf prepared from now
    on, and the confs prepared before are dropped (the gateway, told CONF_TOKEN_NOT_FOUND,
    prepares them again with the new code)."""
    if getattr(runner, "plugin_check", None) is not None:
        return  # one under way already
    check = runner.plugin_check = PluginCheck(options)

    def poll():
        if not check.poll():
            runner.loop.call_later(0.02, poll)
            return
        runner.plugin_check = None
        errors = check.result["errors"]
        if not errors:
            forget_plugin_modules(options.plugin_dirs)
            registry = load_plugins(options, quiet=True)
            errors = registry.errors  # the files may have changed again since the check
        if errors:
            log_refused_reload(errors)
            log.error("reload refused: the running plugins keep serving")
            return
        runner.reload(registry)
        if counts is not None:
            counts.reloads += 1
        log.info("reloaded (plugins: %s)", ", ".join(registry.names()) or "none")
    poll()


def serve_worker(options, registry, sock, tokens, shared, early, on_stop=None, stats=None):
    """One process's loop over ``sock`` until SIGTERM/SIGINT and a drain; with several workers
    (``shared``), until SIGUSR1 (a reload) and every connection handed back."""
    confs = ConfStore(tokens, registry.prepare, options.conf_expire, options.max_confs,
                      clock=time.monotonic, shared=shared)
    loop = Loop(threads=options.threads)
    loop.watch_until = False  # stop() and retire() set it: only they can end the loop
    runner = Runner(loop, sock, registry, confs, options.call_timeout)
    if stats is not None:
        stats.attach_worker(runner, loop, serving=shared is None)
    ending = _Ending()

    def stop():
        if ending.drain_until is not None:
            return
        log.info("stopping: no new connections, finishing %d call(s) in flight", runner.busy())
        runner.stop_accepting()
        if on_stop is not None:
            on_stop()
        ending.drain_until = time.monotonic() + DRAIN_SECONDS
        loop.watch_until = True
        loop.call_later(DRAIN_SECONDS, lambda: None)  # wakes the loop by then, however idle

    loop.on_signal(signal.SIGTERM, stop)
    loop.on_signal(signal.SIGINT, stop)
    if early.stop_asked:
        stop()
    if shared is None:
        # one worker, no supervisor: a reload happens here
        counts = stats.counts if stats is not None else None
        loop.on_signal(signal.SIGHUP, lambda: reload_in_place(options, runner, counts))
        if early.reload_asked:
            loop.call_soon(reload_in_place, options, runner, counts)
        if options.reload_on_change:
            watch = PluginWatch(options.plugin_dirs)

            def poll():
                if watch.changed():
                    reload_in_place(options, runner, counts)
                loop.call_later(1.0, poll)
            loop.call_later(1.0, poll)
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor reloads

        def retire():  # a reload started a new generation: give the connections back, leave
            if ending.retire_until is None and ending.drain_until is None:
                ending.retire_until = time.monotonic() + options.call_timeout + 5.0
                loop.watch_until = True
                runner.retire(sock.give_back, lambda: setattr(ending, "retired", True))
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
        if ending.retired or (ending.retire_until is not None
                              and time.monotonic() >= ending.retire_until):
            return True  # every connection handed back (or the last ones stuck past a deadline)
        return ending.drain_until is not None and (
            runner.busy() == 0 or time.monotonic() >= ending.drain_until)

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
