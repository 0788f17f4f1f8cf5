"""Creating the unix socket the gateway connects to, safely.

A stale socket file (its runner was killed) is replaced; a live one (another runner answers on it)
is left alone, and so is any path that is not a socket at all.
"""
import errno
import grp
import logging
import os
import socket
import stat
import time

log = logging.getLogger("a6fast.server")

DEFAULT_SOCKET_MODE = 0o660


class ListenError(Exception):
    """The socket cannot be created; the message says why."""


def parse_listen_address(address):
    """``unix:/abs/path.sock`` (as APISIX_LISTEN_ADDRESS gives it) or a bare path -> the path."""
    if not address:
        raise ListenError("no listen address: set APISIX_LISTEN_ADDRESS or pass --listen unix:/path.sock")
    path = address[5:] if address.startswith("unix:") else address
    if not path:
        raise ListenError("empty socket path in listen address %r" % (address,))
    return path


def _listening(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise ListenError("cannot check existing socket %s: %s" % (path, exc)) from exc
    finally:
        probe.close()


def _remove_stale(path, checks=5, interval=0.2):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError("%s exists and is not a socket; refusing to replace it" % path)
    # a runner that was just killed may take a moment to close its listener; a live one never does
    for attempt in range(checks):
        if not _listening(path):
            log.info("replacing stale socket %s", path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        if attempt + 1 < checks:
            time.sleep(interval)
    raise ListenError("another runner is serving %s; not taking its socket" % path)


def bind_unix(path, mode=DEFAULT_SOCKET_MODE, group=None, backlog=1024):
    """A listening, non-blocking socket at ``path`` with file mode ``mode`` and optional group."""
    path = os.path.abspath(path)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bind under a tight umask, so the file is never reachable more widely than asked for
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ListenError("cannot bind %s: %s" % (path, exc)) from exc
    finally:
        os.umask(old_umask)
    try:
        if group is not None:
            gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except (OSError, KeyError) as exc:
        sock.close()
        os.unlink(path)
        raise ListenError("cannot set owner/mode of %s: %s" % (path, exc)) from exc
    sock.listen(backlog)
    sock.setblocking(False)
    return sock, path


def socket_identity(path):
    """(device, inode) of the socket file, to recognise it as ours at shutdown."""
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def remove_socket(path, identity):
    """Remove the socket file, only if it is still the one we bound (not a successor's)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == identity:
        try:
            os.unlink(path)
        except OSError:
            pass
