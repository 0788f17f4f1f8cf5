"""The plugins in the processes that serve them: imported by each worker itself (after it is
started, so that what a module starts at import lives where its hooks run), checked apart in a
throw-away process before start-up and before a reload, and watched for changes (--reload)."""
import ctypes
import json
import logging
import os
import resource
import select
import signal
import struct
import sys
import time

log = logging.getLogger("a6fast.server")


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


# How long the import of the plugins may take in a check before the check gives up.
CHECK_SECONDS = 60.0
_LENGTH = struct.Struct("!I")


class PluginCheck:
    """The plugins imported once in a throw-away child, which reports their names and load
    errors and exits.  Nothing waits on it blindly: ``poll()`` reads what has come (the report
    is length-prefixed, so a process a plugin forked at import, holding the pipe, delays
    nothing), and a child still importing at its deadline is killed.

    ``result``: ``{"names": [...], "errors": [(file, line, message), ...]}`` once ``done``."""

    def __init__(self, options, deadline=CHECK_SECONDS):
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _run_check_child(options, parent, write_end)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.pid = pid
        self.fd = read_end
        self.deadline = time.monotonic() + deadline
        self.done = False
        self.result = None
        self._buf = bytearray()

    def fileno(self):
        return self.fd

    def poll(self):
        """Read what the child sent; True once the check is over (``result`` is set)."""
        if self.done:
            return True
        eof = False
        try:
            while True:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    eof = True
                    break
                self._buf += chunk
        except BlockingIOError:
            pass
        if len(self._buf) >= _LENGTH.size:
            size = _LENGTH.unpack_from(self._buf)[0]
            if len(self._buf) >= _LENGTH.size + size:
                try:
                    report = json.loads(bytes(self._buf[_LENGTH.size:_LENGTH.size + size]))
                    report["errors"] = [tuple(error) for error in report["errors"]]
                except (ValueError, KeyError, TypeError):
                    report = _failed("the plugin check sent an unreadable report")
                return self._finish(report)
        if eof:
            return self._finish(_failed("checking the plugins failed (see the log above)"))
        if time.monotonic() >= self.deadline:
            return self._finish(_failed("importing the plugins took longer than %gs; a "
                                        "plugin module waits for something at import"
                                        % CHECK_SECONDS))
        return False

    def wait(self, stop_asked):
        """Block until the check is over or ``stop_asked()``: the result, or None if stopped."""
        while not self.poll():
            if stop_asked():
                self.kill()
                return None
            select.select([self.fd], [], [], 0.1)
        return self.result

    def _finish(self, report):
        self.result = report
        self.done = True
        self.kill()
        return True

    def kill(self):
        """End the child (it may be stuck in a plugin's import) and reap it."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass  # reaped by the supervisor's own waitpid already
            self.pid = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.done = True


def _failed(message):
    return {"names": [], "errors": [("(plugins)", 0, message)]}


def _run_check_child(options, parent, write_end):
    status = 1
    try:
        # the default death on SIGTERM, and with the process that asked
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        die_with_parent(parent)
        # the listener, the gateway's connections and the like: never kept open by an import
        # that hangs (stdin, stdout and stderr stay, for the log)
        os.closerange(3, write_end)
        os.closerange(write_end + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        registry = load_plugins(options, quiet=True)
        data = json.dumps({"names": registry.names(), "errors": registry.errors}).encode()
        data = _LENGTH.pack(len(data)) + data
        while data:
            data = data[os.write(write_end, data):]
        status = 0
    except BaseException:  # noqa: B902  the child must never return into the parent's code
        log.exception("checking the plugins failed")
    finally:
        logging.shutdown()
        os._exit(status)


def log_refused_reload(errors):
    """One line per load error of a reload that is refused (the running code keeps serving)."""
    for path, line, message in errors:
        log.error("reload refused: %s:%d: %s", path, line, message)


def check_plugins_apart(options, stop_asked=lambda: False):
    """The start-up check (blocking): ``PluginCheck(options).wait(stop_asked)``."""
    return PluginCheck(options).wait(stop_asked)


def die_with_parent(parent):
    """A child of the runner (``parent``, its pid before the fork) must not outlive it: the
    gateway SIGKILLs only the runner it started.  Linux tells a child when its parent dies;
    elsewhere workers poll their parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(0)


def forget_plugin_modules(directories):
    """Drop the modules imported from ``directories`` (plugin files and their helpers), so
    that an import in this process reads them anew (a reload of one worker in place)."""
    roots = tuple(os.path.join(os.path.abspath(d), "") for d in directories)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and os.path.abspath(path).startswith(roots):
            del sys.modules[name]


class PluginWatch:
    """``--reload``: notices a change of the plugin files (their names, sizes, mtimes), polled
    at most once a second."""

    def __init__(self, directories):
        self.directories = list(directories)
        self._seen = self._scan()
        self._next = time.monotonic() + 1.0

    def _scan(self):
        seen = {}
        for directory in self.directories:
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if name.endswith(".py"):
                    try:
                        st = os.stat(os.path.join(directory, name))
                    except OSError:
                        continue
                    seen[os.path.join(directory, name)] = (st.st_size, st.st_mtime_ns)
        return seen

    def changed(self):
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 1.0
        seen = self._scan()
        if seen == self._seen:
            return False
        self._seen = seen
        log.info("plugin files changed: reloading")
        return True
