"""A gateway stand-in for server tests: starts a real runner process on a unix socket in a temp
dir, talks to it the way APISIX does, and stops it by its own pid."""
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import a6fast
from a6fast import gateway
from a6fast.protocol import (CONF_TOKEN_NOT_FOUND, INFO_REQ_BODY, INFO_RESP_BODY, INFO_VAR,
                             RPC_ERR, RPC_EXTRA_INFO, RPC_PREPARE_CONF)

HERE = os.path.dirname(os.path.abspath(__file__))
# the runner under test imports the same a6fast as these tests (source tree or installed)
A6FAST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(a6fast.__file__)))
PLUGINS = os.path.join(HERE, "plugins")


class RunnerProcess:
    """`a6fast serve` in a subprocess, its log in a file."""

    def __init__(self, tmp_path, *args, env=None, sock_name="runner.sock", wait=True, python=None):
        self.dir = str(tmp_path)
        self.path = os.path.join(self.dir, sock_name)
        self.log_path = os.path.join(self.dir, "runner-%d.log" % time.monotonic_ns())
        full_env = dict(os.environ)
        full_env.pop("APISIX_LISTEN_ADDRESS", None)
        full_env["PYTHONPATH"] = os.pathsep.join(
            [A6FAST_ROOT] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # conf token state in the test's own directory, never the machine's default
        full_env["XDG_STATE_HOME"] = os.path.join(self.dir, "state")
        full_env.update(env or {})
        cmd = list(python or [sys.executable]) + ["-m", "a6fast", "serve"]
        if "--listen" not in args and "--config" not in args and "APISIX_LISTEN_ADDRESS" not in (env or {}):
            cmd += ["--listen", "unix:" + self.path]
        cmd += list(args)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=self.dir)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("runner exited with %s:\n%s" % (self.proc.returncode, self.log()))
            # this runner's own word that it bound the socket: a probe alone could reach the
            # socket of a killed runner whose workers are still on their way out
            if "a6fast listening on unix:" in self.log():
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                        probe.connect(self.path)
                    return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError("runner did not listen within %ss:\n%s" % (timeout, self.log()))

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def stop(self, timeout=10.0):
        """SIGTERM by pid; the exit status."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def gateway(self, **kw):
        return Gateway(self.path, **kw)


class Gateway:
    """One gateway connection: sends frames, answers ExtraInfo from its tables, reads answers."""

    def __init__(self, path, vars=None, req_body=None, resp_body=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.vars = dict(vars or {})
        self.req_body = req_body
        self.resp_body = resp_body
        self.extra_info_asked = []
        self.confs = {}

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, frame):
        self.sock.sendall(frame)

    def hang_up(self):
        """Close this end and wait until the runner has closed its own (every process of it)."""
        self.sock.shutdown(socket.SHUT_WR)
        while self.sock.recv(65536):
            pass
        self.close()

    def read(self):
        return gateway.read_frame(self.sock)

    def answer_extra_info(self, payload):
        info_type, name = gateway.decode_extra_info_req(payload)
        self.extra_info_asked.append((info_type, name))
        if info_type == INFO_VAR:
            result = self.vars.get(name)
            if isinstance(result, str):
                result = result.encode()
        elif info_type == INFO_REQ_BODY:
            result = self.req_body
        elif info_type == INFO_RESP_BODY:
            result = self.resp_body
        else:
            raise AssertionError("unknown ExtraInfo type %d" % info_type)
        self.send(gateway.encode_extra_info_resp(result))

    def roundtrip(self, frame):
        """Send a frame; answer ExtraInfo requests until the answer comes: (rpc_type, payload)."""
        self.send(frame)
        while True:
            rpc_type, payload = self.read()
            if rpc_type != RPC_EXTRA_INFO:
                return rpc_type, payload
            self.answer_extra_info(payload)

    def prepare(self, conf, key=None):
        rpc_type, payload = self.roundtrip(gateway.encode_prepare_conf_req(conf, key))
        if rpc_type == RPC_ERR:
            raise PrepareFailed(gateway.decode_err(payload))
        assert rpc_type == RPC_PREPARE_CONF, rpc_type
        return gateway.decode_prepare_conf_resp(payload)

    def call(self, conf_token, **req):
        req.setdefault("id", 1)
        return self.roundtrip(gateway.encode_http_req_call_req(conf_token=conf_token, **req))

    def resp_call(self, conf_token, **req):
        req.setdefault("id", 1)
        return self.roundtrip(gateway.encode_http_resp_call_req(conf_token=conf_token, **req))

    def call_like_apisix(self, conf, key="route#1", **req):
        """Prepare on a miss, retry after CONF_TOKEN_NOT_FOUND: 3 tries in all, as APISIX does."""
        for _ in range(3):
            token = self.confs.get(key)
            if token is None:
                token = self.confs[key] = self.prepare(conf, key)
            rpc_type, payload = self.call(token, **req)
            if rpc_type == RPC_ERR and gateway.decode_err(payload) == CONF_TOKEN_NOT_FOUND:
                del self.confs[key]
                continue
            return rpc_type, payload
        return rpc_type, payload


class PrepareFailed(Exception):
    def __init__(self, code):
        super().__init__("PrepareConf answered Err %d" % code)
        self.code = code


def unread(sock):
    """Bytes sent on ``sock`` that the runner has not read yet (Linux: SIOCOUTQ of a unix socket);
    0 once it has read everything, e.g. a frame it now handles."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def err_code(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_ERR, "expected an Err frame, got type %d" % rpc_type
    return gateway.decode_err(payload)
