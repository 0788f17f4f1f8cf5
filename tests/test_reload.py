"""Reloading the plugins (SIGHUP, --reload) while the gateway keeps calling: the new code is
checked first, and no connection or call is dropped."""
import os
import signal
import threading
import time

import pytest

from a6fast import gateway
from a6fast.protocol import (ACTION_STOP, CONF_TOKEN_NOT_FOUND, RPC_ERR, RPC_HTTP_REQ_CALL)

from faultkit import children, wait_until
from harness import Gateway, RunnerProcess

PLUGIN = '''import os

import a6fast

VERSION = %r
with open(os.path.join(os.path.dirname(__file__), os.pardir, "imported"), "a") as f:
    f.write("%%d\\n" %% os.getpid())  # this process has the plugins: start() waits for that


@a6fast.plugin("versioned", inline=True)
def versioned(request, conf):
    request.stop(200, body="%%s %%s" %% (VERSION, request.path))
'''


def write_plugin(directory, version):
    path = directory / "versioned.py"
    tmp = directory / ".versioned.tmp"
    tmp.write_text(PLUGIN % version)
    os.replace(tmp, path)


def start(tmp_path, workers, *args):
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    write_plugin(plugins, "v0")
    proc = RunnerProcess(tmp_path, "--plugins", str(plugins), "--workers", str(workers), *args)
    if workers > 1:
        # each worker imports the plugins after its fork: changed before that, the files would
        # give it other code than the supervisor checked
        imported = tmp_path / "imported"

        def all_imported():
            pids = children(proc.proc.pid)
            done = imported.read_text().split() if imported.exists() else []
            return len(pids) == workers and all(str(pid) in done for pid in pids)
        assert wait_until(all_imported, 20), proc.log()
    return proc, plugins


def call_until(proc, want, timeout=20):
    """Call (as APISIX does) until the answer's version is ``want``: the last answer."""
    deadline = time.monotonic() + timeout
    with proc.gateway() as gw:
        while time.monotonic() < deadline:
            rpc_type, payload = gw.call_like_apisix([("versioned", "")], key="route#v", path="/p")
            body = gateway.decode_http_req_call_resp(payload).stop.body.decode()
            if body.split()[0] == want:
                return body
            time.sleep(0.05)
    raise AssertionError("still not %s: %s\n%s" % (want, body, proc.log()))


class Load:
    """Gateway connections calling without pause, APISIX's way: a wrong answer or a dropped
    connection is recorded, CONF_TOKEN_NOT_FOUND is retried after preparing again."""

    def __init__(self, path, connections=6):
        self.path = path
        self.stop = threading.Event()
        self.calls = 0
        self.not_found = 0
        self.wrong = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(connections)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, index):
        try:
            with Gateway(self.path, timeout=30) as gw:
                token = None
                n = 0
                while not self.stop.is_set():
                    n += 1
                    if token is None:
                        token = gw.prepare([("versioned", "")], "route#v")
                    call_id = index * 10_000_000 + n
                    rpc_type, payload = gw.call(token, id=call_id, path="/c/%d" % call_id)
                    if rpc_type == RPC_ERR and gateway.decode_err(payload) == CONF_TOKEN_NOT_FOUND:
                        self.not_found += 1
                        token = None
                        continue
                    self.calls += 1
                    if rpc_type != RPC_HTTP_REQ_CALL:
                        self.wrong.append((call_id, rpc_type, payload[:20]))
                        continue
                    resp = gateway.decode_http_req_call_resp(payload)
                    if resp.id != call_id or resp.action_type != ACTION_STOP or \
                            resp.stop.body.split()[1] != b"/c/%d" % call_id:
                        self.wrong.append((call_id, resp.id, resp.stop.body))
        except Exception as exc:  # noqa: BLE001  a dropped connection is a failure to report
            self.wrong.append(("connection %d" % index, repr(exc)))


@pytest.mark.parametrize("workers", [1, 2])
def test_ten_reloads_under_load_drop_no_connection_and_no_call(tmp_path, workers):
    proc, plugins = start(tmp_path, workers)
    try:
        with Load(proc.path) as load:
            assert wait_until(lambda: load.calls > 200, 20)
            for version in range(1, 11):
                write_plugin(plugins, "v%d" % version)
                before = load.calls
                proc.signal(signal.SIGHUP)
                assert wait_until(lambda: proc.log().count("reloaded (plugins") >= version, 20), \
                    proc.log()
                assert wait_until(lambda: load.calls > before + 100, 20)
            assert not load.wrong, load.wrong[:5]
        print("%d calls, %d CONF_TOKEN_NOT_FOUND, 0 wrong, 10 reloads"
              % (load.calls, load.not_found))
        assert load.calls > 1000
        call_until(proc, "v10")
        if workers > 1:  # the old generations have left
            assert wait_until(lambda: len(children(proc.proc.pid)) == workers, 40), proc.log()
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_with_broken_code_keeps_the_running_plugins(tmp_path, workers):
    proc, plugins = start(tmp_path, workers)
    try:
        call_until(proc, "v0")
        (plugins / "versioned.py").write_text("import a6fast\nthis is not python\n")
        proc.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in proc.log(), 20), proc.log()
        assert "versioned.py:2" in proc.log()
        assert call_until(proc, "v0").startswith("v0")
        write_plugin(plugins, "v1")
        proc.signal(signal.SIGHUP)
        call_until(proc, "v1")
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_reload_follows_the_plugin_files(tmp_path, workers):
    proc, plugins = start(tmp_path, workers, "--reload")
    try:
        call_until(proc, "v0")
        write_plugin(plugins, "v1")
        call_until(proc, "v1")
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_reload_whose_import_hangs_holds_up_no_call_and_no_stop(tmp_path, workers):
    proc, plugins = start(tmp_path, workers)
    try:
        call_until(proc, "v0")
        (plugins / "versioned.py").write_text("import time\ntime.sleep(600)\n")
        proc.signal(signal.SIGHUP)
        # the check's child is there, importing (and stuck): one more child than workers serving
        serving = workers if workers > 1 else 0
        assert wait_until(lambda: len(children(proc.proc.pid)) == serving + 1, 20)
        with proc.gateway(timeout=10) as gw:  # a new connection is served meanwhile
            rpc_type, payload = gw.call_like_apisix([("versioned", "")], key="route#v", path="/p")
            assert gateway.decode_http_req_call_resp(payload).stop.body.startswith(b"v0")
    finally:
        assert proc.stop(timeout=10) == 0, proc.log()


def test_a_reload_whose_workers_fail_to_load_keeps_the_old_generation(tmp_path):
    proc, plugins = start(tmp_path, 2)
    try:
        call_until(proc, "v0")
        marker = tmp_path / "imported-once"
        # loads in the check (the first import), fails in every worker after it
        (plugins / "versioned.py").write_text(
            "import os\nif os.path.exists(%r):\n    raise RuntimeError('half-copied')\n"
            "open(%r, 'w').close()\n" % (str(marker), str(marker)) + PLUGIN % "v1")
        proc.signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in proc.log(), 30), proc.log()
        assert "half-copied" in proc.log()
        assert call_until(proc, "v0").startswith("v0")
        assert wait_until(lambda: len(children(proc.proc.pid)) == 2, 20)
    finally:
        assert proc.stop() == 0, proc.log()


def test_a_reload_of_one_worker_reads_the_plugins_helper_modules_anew(tmp_path):
    proc, plugins = start(tmp_path, 1)
    try:
        (plugins / "_helper.py").write_text("VERSION = 'h1'\n")
        (plugins / "versioned.py").write_text(
            "import a6fast\nimport _helper\n\n\n@a6fast.plugin('versioned', inline=True)\n"
            "def versioned(request, conf):\n"
            "    request.stop(200, body='%s %s' % (_helper.VERSION, request.path))\n")
        proc.signal(signal.SIGHUP)
        call_until(proc, "h1")
        (plugins / "_helper.py").write_text("VERSION = 'h2'\n")
        proc.signal(signal.SIGHUP)
        call_until(proc, "h2")
    finally:
        assert proc.stop() == 0, proc.log()
