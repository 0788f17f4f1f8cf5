"""The unix socket: created with the mode and group asked for and never world-writable; a path
that is not a socket (nor a symlink to anything) is never deleted; a live runner's socket is
never taken; a stale one is replaced."""
import grp
import os
import socket
import stat

import pytest

from a6fast import gateway
from a6fast.protocol import ACTION_STOP, RPC_HTTP_REQ_CALL

from faultkit import FAULT_PLUGINS, children, wait_until
from harness import RunnerProcess


def start(tmp_path, *args, **kw):
    return RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1", *args, **kw)


def refused(tmp_path, *args, listen=None):
    """Start a runner that must refuse to start: (exit status, its log)."""
    extra = ("--listen", "unix:" + listen) if listen else ()
    if "--workers" not in args:
        extra += ("--workers", "1")
    proc = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, *extra, *args, wait=False)
    status = proc.proc.wait(15)
    log = proc.log()
    proc.stop()
    return status, log


def serves(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(gateway.encode_prepare_conf_req([("echo", "{}")], "route#probe"))
        rpc_type, payload = gateway.read_frame(sock)
        token = gateway.decode_prepare_conf_resp(payload)
        sock.sendall(gateway.encode_http_req_call_req(3, token, path="/here"))
        rpc_type, payload = gateway.read_frame(sock)
    assert rpc_type == RPC_HTTP_REQ_CALL
    resp = gateway.decode_http_req_call_resp(payload)
    return resp.action_type == ACTION_STOP and resp.stop.body == b"/here"


# Mode and group ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [None, "0600", "0o640"])
def test_socket_gets_the_mode_asked_for_and_0660_by_default(tmp_path, mode):
    proc = start(tmp_path, *(("--socket-mode", mode) if mode else ()))
    try:
        st = os.lstat(proc.path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == int(mode or "0660", 8)
        assert serves(proc.path)
    finally:
        assert proc.stop() == 0


def _other_group():
    """A group this process may give the socket to that it would not get anyway."""
    for gid in os.getgroups():
        if gid != os.getgid():
            return grp.getgrgid(gid).gr_name
    if os.geteuid() == 0:
        for entry in grp.getgrall():
            if entry.gr_gid != os.getgid():
                return entry.gr_name
    return None


@pytest.mark.parametrize("which", ["current gid", "another group by name"])
def test_socket_group_is_applied(tmp_path, which):
    if which == "current gid":
        group, gid = str(os.getgid()), os.getgid()
    else:
        name = _other_group()
        if name is None:
            pytest.skip("no second group to hand the socket to")
        group, gid = name, grp.getgrnam(name).gr_gid
    proc = start(tmp_path, "--socket-group", group)
    try:
        st = os.lstat(proc.path)
        assert st.st_gid == gid
        assert stat.S_IMODE(st.st_mode) == 0o660
    finally:
        assert proc.stop() == 0


def test_unknown_socket_group_is_refused_and_leaves_no_socket(tmp_path):
    status, log = refused(tmp_path, "--socket-group", "no-such-group-a6fast")
    assert status != 0
    assert "cannot set owner/mode" in log
    assert not os.path.lexists(tmp_path / "runner.sock")


@pytest.mark.parametrize("mode", ["0666", "0602", "1777"])
def test_world_writable_mode_is_refused(tmp_path, mode):
    status, log = refused(tmp_path, "--socket-mode", mode)
    assert status != 0
    assert "world-writable" in log
    assert not os.path.lexists(tmp_path / "runner.sock")


def test_mode_that_is_not_octal_is_refused(tmp_path):
    status, log = refused(tmp_path, "--socket-mode", "rw-rw----")
    assert status != 0 and "not an octal mode" in log


# What is already at the path --------------------------------------------------------------------

def _regular_file(tmp_path, path):
    path.write_text("precious")
    return lambda: path.read_text() == "precious"


def _directory(tmp_path, path):
    path.mkdir()
    (path / "inside").write_text("kept")
    return lambda: (path / "inside").read_text() == "kept"


def _fifo(tmp_path, path):
    os.mkfifo(path)
    return lambda: stat.S_ISFIFO(os.lstat(path).st_mode)


def _symlink_to_file(tmp_path, path):
    target = tmp_path / "target.txt"
    target.write_text("precious")
    os.symlink(target, path)
    return lambda: os.path.islink(path) and target.read_text() == "precious"


def _dangling_symlink(tmp_path, path):
    os.symlink(tmp_path / "nowhere.sock", path)
    return lambda: os.path.islink(path) and not os.path.lexists(tmp_path / "nowhere.sock")


def _symlink_to_stale_socket(tmp_path, path):
    target = str(tmp_path / "stale-target.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(target)  # a socket file no one listens on
    os.symlink(target, path)
    return lambda: os.path.islink(path) and stat.S_ISSOCK(os.lstat(target).st_mode)


@pytest.mark.parametrize("make", [_regular_file, _directory, _fifo, _symlink_to_file,
                                  _dangling_symlink, _symlink_to_stale_socket],
                         ids=lambda make: make.__name__.strip("_"))
def test_path_that_is_not_a_socket_is_never_deleted(tmp_path, make):
    path = tmp_path / "busy.sock"
    intact = make(tmp_path, path)
    status, log = refused(tmp_path, listen=str(path))
    assert status != 0
    assert "is not a socket; refusing to replace it" in log
    assert intact()


def test_symlink_to_a_live_runners_socket_is_never_deleted(tmp_path):
    live = start(tmp_path)
    try:
        link = tmp_path / "link.sock"
        os.symlink(live.path, link)
        status, log = refused(tmp_path, listen=str(link))
        assert status != 0 and "is not a socket" in log
        assert os.path.islink(link)
        assert serves(live.path)
    finally:
        assert live.stop() == 0


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "runner.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)  # left behind by a runner that is gone
    proc = start(tmp_path)
    try:
        assert "replacing stale socket" in proc.log()
        assert serves(proc.path)
    finally:
        assert proc.stop() == 0


@pytest.mark.parametrize("live_workers,new_workers", [("1", "1"), ("2", "2")])
def test_live_runners_socket_is_never_taken(tmp_path, live_workers, new_workers):
    live = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", live_workers)
    try:
        if live_workers == "2":
            assert wait_until(lambda: len(children(live.proc.pid)) == 2, 10)
        identity = os.lstat(live.path).st_ino
        status, log = refused(tmp_path, "--workers", new_workers, listen=live.path)
        assert status != 0
        assert "another runner is serving" in log
        assert os.lstat(live.path).st_ino == identity  # the same socket file, never re-bound
        assert serves(live.path)
    finally:
        assert live.stop() == 0
