"""Never answer the wrong request: conf tokens across workers and restarts, the state kept for
them, ExtraInfo answers that come after their call ended, abandoned work, plugins' own threads.

Each test here drives a real runner over its socket and checks every answer against the request
(or conf) that caused it, through a marker only that request carries."""
import fcntl
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from a6fast import gateway
from a6fast.protocol import (ACTION_STOP, CONF_TOKEN_NOT_FOUND, INFO_VAR, RPC_ERR, RPC_EXTRA_INFO,
                             RPC_HTTP_REQ_CALL, SERVICE_UNAVAILABLE)

from faultkit import children, wait_until
from harness import A6FAST_ROOT, PLUGINS, Gateway, RunnerProcess, err_code

TRUST_PLUGINS = os.path.join(PLUGINS, "trust")
IMPORT_THREAD_PLUGINS = os.path.join(PLUGINS, "import_thread")


def start(tmp_path, *args, env=None, plugins=TRUST_PLUGINS):
    env = dict(env or {})
    # a state directory of the test's own unless the test says otherwise
    env.setdefault("XDG_STATE_HOME", str(tmp_path / "state"))
    proc = RunnerProcess(tmp_path, "--plugins", plugins, *args, env=env)
    if "--workers" in args:
        workers = int(args[args.index("--workers") + 1])
        if workers > 1:
            assert wait_until(lambda: len(children(proc.proc.pid)) == workers, 10), proc.log()
    return proc


def stopped(proc):
    status = proc.stop()
    assert status == 0, proc.log()


def stop_body(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_HTTP_REQ_CALL, (rpc_type, payload)
    resp = gateway.decode_http_req_call_resp(payload)
    assert resp.action_type == ACTION_STOP, resp.action_type
    return resp.id, resp.stop.status, resp.stop.body


def run_cli(*args, env=None):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = A6FAST_ROOT
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "a6fast"] + list(args), capture_output=True,
                          text=True, env=full_env, timeout=60)


# Conf tokens ------------------------------------------------------------------------------------

def prepare_markers(gateways, count):
    """``count`` confs, each a marker of its own, prepared in turn on each gateway connection
    (so on every worker): {token: marker}."""
    tokens = {}
    for i in range(count):
        gw = gateways[i % len(gateways)]
        marker = "conf-%d" % i
        token = gw.prepare([("marker", marker)], "route#%d" % i)
        assert token not in tokens, "conf_token %d handed out twice: %s and %s" % (
            token, tokens[token], marker)
        tokens[token] = marker
    return tokens


def assert_every_token_answers_its_own_conf(gateways, tokens):
    wrong = []
    for gw in gateways:
        for token, marker in tokens.items():
            answer = gw.call(token, id=token & 0xFFFF)
            if answer[0] == RPC_ERR:
                continue  # CONF_TOKEN_NOT_FOUND is safe: the gateway prepares again
            body = stop_body(answer)[2].decode()
            if body != marker:
                wrong.append((token, marker, body))
    assert not wrong, "%d calls answered with another conf's plugins, e.g. %s" % (
        len(wrong), wrong[:3])


def test_two_workers_never_hand_out_one_token_for_two_confs_even_without_usable_state(tmp_path):
    # No usable state anywhere: the default state directory is a file, and (for runners that
    # kept their state beside the socket) so is that path's directory entry.
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / ".a6fast-tokens").mkdir()
    proc = start(tmp_path, "--workers", "2", env={"XDG_STATE_HOME": str(tmp_path / "not-a-dir")})
    try:
        gateways = [proc.gateway() for _ in range(4)]
        try:
            # interleaved on connections dealt to both workers, with time passing between
            tokens = {}
            for round_ in range(4):
                tokens.update(prepare_markers(gateways, 60))
                time.sleep(0.01)
            assert len(tokens) >= 60
            assert_every_token_answers_its_own_conf(gateways, tokens)
        finally:
            for gw in gateways:
                gw.close()
    finally:
        stopped(proc)


def test_tokens_are_never_reused_across_a_restart(tmp_path):
    proc = start(tmp_path, "--workers", "2")
    try:
        with proc.gateway() as one, proc.gateway() as two:
            before = prepare_markers([one, two], 40)
    finally:
        stopped(proc)
    proc = start(tmp_path, "--workers", "2")
    try:
        with proc.gateway() as one, proc.gateway() as two:
            for token in before:
                assert err_code(one.call(token)) == CONF_TOKEN_NOT_FOUND
            after = {}
            for i in range(40):
                gw = (one, two)[i % 2]
                after[gw.prepare([("marker", "new-%d" % i)], "route#%d" % i)] = i
            assert not set(after) & set(before)
    finally:
        stopped(proc)


@pytest.mark.parametrize("trap", ["missing-dir", "group-writable-dir", "symlink", "fifo",
                                  "other-owner"])
def test_an_unsafe_state_file_is_refused_at_start_with_one_clear_line(tmp_path, trap):
    state_dir = tmp_path / "private"
    state_dir.mkdir(mode=0o700)
    state = state_dir / "tokens"
    if trap == "missing-dir":
        state = tmp_path / "missing" / "tokens"
    elif trap == "group-writable-dir":
        state_dir.chmod(0o770)
    elif trap == "symlink":
        (tmp_path / "elsewhere").write_text("5\n")
        state.symlink_to(tmp_path / "elsewhere")
    elif trap == "fifo":
        os.mkfifo(state)
    elif trap == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file to another user")
        state.write_text("5\n")
        os.chown(state, 65534, 65534)
    sock = tmp_path / "r.sock"
    result = run_cli("serve", "--plugins", TRUST_PLUGINS, "--listen", "unix:%s" % sock,
                     "--workers", "2", "--state-file", str(state))
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert "state" in result.stderr and str(state) in result.stderr, result.stderr
    assert not sock.exists()


def test_a_state_file_locked_by_another_process_stalls_nothing(tmp_path):
    # Any local user could hold a lock on a file they can open; the runner never waits on one.
    state_dir = tmp_path / "private"
    state_dir.mkdir(mode=0o700)
    state = state_dir / "tokens"
    state.write_text("")
    state.chmod(0o600)
    fd = os.open(state, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = start(tmp_path, "--workers", "1", "--state-file", str(state))
        try:
            with proc.gateway(timeout=10) as gw:
                token = gw.prepare([("marker", "m")], "route#1")
                assert stop_body(gw.call(token))[2] == b"m"
        finally:
            stopped(proc)
    finally:
        os.close(fd)


def test_the_default_state_lives_in_a_private_directory_of_the_runners_user(tmp_path):
    proc = start(tmp_path, "--workers", "2")
    try:
        with proc.gateway() as gw:
            gw.prepare([("marker", "m")], "route#1")
    finally:
        stopped(proc)
    state_dir = tmp_path / "state" / "a6fast"
    st = os.lstat(state_dir)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert st.st_mode & 0o077 == 0
    assert not any("token" in p.name for p in tmp_path.iterdir()), list(tmp_path.iterdir())


# ExtraInfo answers that come late ---------------------------------------------------------------

def frames_until_answer(gw):
    """Read frames up to the call's answer, holding back every ExtraInfo question: a list."""
    frames = []
    while True:
        rpc_type, payload = gw.read()
        frames.append((rpc_type, payload))
        if rpc_type != RPC_EXTRA_INFO:
            return frames


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_answer_to_a_question_of_a_finished_call_shifts_no_answer(tmp_path, workers):
    proc = start(tmp_path, "--workers", workers)
    try:
        with proc.gateway() as gw:
            deny = gw.prepare([("ask-then-deny", "denied")], "route#deny")
            echo = gw.prepare([("echo-marker", "")], "route#echo")
            for i in range(5):
                gw.send(gateway.encode_http_req_call_req(100 + i, deny, path="/deny"))
                frames = frames_until_answer(gw)
                questions = [f for f in frames if f[0] == RPC_EXTRA_INFO]
                assert len(questions) == 1, frames
                assert stop_body(frames[-1]) == (100 + i, 403, b"denied")
                # the gateway answers the question only now, then sends its next call
                gw.answer_extra_info(questions[0][1])
                answer = gw.call(echo, id=200 + i, path="/next-%d" % i)
                assert stop_body(answer) == (200 + i, 200, b"/next-%d" % i)
    finally:
        stopped(proc)


def test_an_extra_info_answer_nobody_asked_for_closes_the_connection_silently(tmp_path):
    proc = start(tmp_path, "--workers", "1")
    try:
        with proc.gateway() as gw:
            echo = gw.prepare([("echo-marker", "")], "route#echo")
            gw.send(gateway.encode_extra_info_resp(b"unasked"))
            assert gw.sock.recv(64) == b"", "the runner wrote a frame nobody asked for"
        with proc.gateway() as gw:  # the others are served as before
            assert stop_body(gw.call(echo, id=1, path="/ok")) == (1, 200, b"/ok")
    finally:
        stopped(proc)


def test_a_call_abandoned_at_its_deadline_with_questions_pending_shifts_no_answer(tmp_path):
    proc = start(tmp_path, "--workers", "1", "--call-timeout", "0.3")
    try:
        with proc.gateway() as gw:
            slow = gw.prepare([("thread-marker", "")], "route#slow")
            echo = gw.prepare([("echo-marker", "")], "route#echo")
            gw.send(gateway.encode_http_req_call_req(1, slow, path="/slow",
                                                     headers=[("x-var", "late")]))
            frames = frames_until_answer(gw)
            assert [f[0] for f in frames] == [RPC_EXTRA_INFO, RPC_ERR]
            assert gateway.decode_err(frames[-1][1]) == SERVICE_UNAVAILABLE
            gw.answer_extra_info(frames[0][1])
            assert stop_body(gw.call(echo, id=2, path="/after")) == (2, 200, b"/after")
    finally:
        stopped(proc)


# Abandoned work ---------------------------------------------------------------------------------

def test_hooks_of_calls_abandoned_at_the_deadline_never_run_later(tmp_path):
    release = tmp_path / "downstream-is-back"
    proc = start(tmp_path, "--workers", "1", "--threads", "2", "--call-timeout", "0.3")
    try:
        gateways = [proc.gateway() for _ in range(6)]
        try:
            token = gateways[0].prepare([("hang-until", str(release))], "route#hang")
            for i, gw in enumerate(gateways):
                gw.send(gateway.encode_http_req_call_req(i, token, path="/c%d" % i))
            for gw in gateways:
                assert err_code((gw.read())) == SERVICE_UNAVAILABLE
            # the two threads are still stuck in the downstream: counted, visible
            started = tmp_path / "downstream-is-back.started"
            assert wait_until(lambda: started.exists()
                              and len(started.read_text().split()) == 2, 10)
            release.write_text("")
            # a good call makes a round through the pool after the hung hooks returned
            ok = gateways[0].prepare([("sleepy", "")], "route#ok")
            for gw in gateways:
                assert stop_body(gw.call(ok, id=9, path="/ok"))[2] == b"/ok"
            assert len(started.read_text().split()) == 2, started.read_text()
        finally:
            for gw in gateways:
                gw.close()
    finally:
        stopped(proc)


def test_threads_past_their_deadline_are_counted_in_stats(tmp_path):
    release = tmp_path / "back"
    stats_sock = tmp_path / "stats.sock"
    proc = start(tmp_path, "--workers", "1", "--threads", "4", "--call-timeout", "0.3",
                 "--stats", "unix:%s" % stats_sock)
    try:
        with proc.gateway() as one, proc.gateway() as two:
            token = one.prepare([("hang-until", str(release))], "route#hang")
            for gw in (one, two):
                assert err_code(gw.call(token)) == SERVICE_UNAVAILABLE

            def overdue():
                result = run_cli("stats", "--json", "--listen", "unix:%s" % stats_sock)
                import json
                return json.loads(result.stdout).get("threads_overdue")
            assert wait_until(lambda: overdue() == 2, 10), overdue()
            release.write_text("")
            assert wait_until(lambda: overdue() == 0, 10), overdue()
    finally:
        stopped(proc)


# Plugins' own threads ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_each_worker_imports_its_plugins_itself(tmp_path, workers):
    proc = start(tmp_path, "--workers", workers, plugins=IMPORT_THREAD_PLUGINS)
    try:
        seen = []
        for _ in range(4):
            with proc.gateway() as gw:
                token = gw.call_like_apisix([("refresher", "")], key="route#r")
                same_process, alive, ticks = stop_body(token)[2].decode().split()
                seen.append((same_process, alive, int(ticks)))
        assert all(s[:2] == ("True", "True") for s in seen), seen
    finally:
        stopped(proc)


# Signals, plugin files, configuration -----------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_does_not_kill_the_runner(tmp_path, workers):
    import signal

    proc = start(tmp_path, "--workers", workers)
    try:
        proc.signal(signal.SIGHUP)
        with proc.gateway() as gw:
            token = gw.prepare([("marker", "m")], "route#1")
            assert stop_body(gw.call(token))[2] == b"m"
        assert proc.proc.poll() is None
    finally:
        stopped(proc)


def test_a_fifo_in_the_plugin_directory_is_skipped_not_waited_on(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "good.py").write_text(
        "import a6fast\n\n@a6fast.plugin('good', inline=True)\n"
        "def good(request, conf):\n    request.stop(200, body='good')\n")
    os.mkfifo(plugins / "x.py")
    result = run_cli("check", str(plugins))
    assert "x.py" in result.stdout + result.stderr
    assert "not a regular file" in result.stdout + result.stderr


@pytest.mark.parametrize("config, needle", [
    ("socket: /tmp/x.sock\n", "socket"),
    ("socket: {file: [1, 2\n", "config"),
    ("- a\n- b\n", "mapping"),
])
def test_a_wrong_config_file_is_one_line_and_exit_2(tmp_path, config, needle):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = run_cli("serve", "--config", str(path), "--listen", "unix:%s" % (tmp_path / "s"))
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert needle in result.stderr, result.stderr


@pytest.mark.parametrize("env", [{"APISIX_CONF_EXPIRE_TIME": "soon"},
                                 {"APISIX_CONF_EXPIRE_TIME": "-5"}])
def test_a_wrong_environment_value_is_one_line_and_exit_2(tmp_path, env):
    result = run_cli("serve", "--listen", "unix:%s" % (tmp_path / "s"), env=env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "APISIX_CONF_EXPIRE_TIME" in result.stderr


# Stress: every answer checked against the request that caused it ---------------------------------

STRESS_KINDS = [
    # (plugin, conf, headers, what the answer must be: a function of the call id)
    ("echo-marker", "", [], lambda i: (200, b"/m/%d" % i)),
    ("thread-marker", "", [("x-var", "who")], lambda i: (200, b"/m/%d v-%d" % (i, i))),
    ("async-marker", "", [("x-var", "who")], lambda i: (200, b"/m/%d v-%d b-%d" % (i, i, i))),
    ("thread-marker", "", [], lambda i: (200, b"/m/%d" % i)),
    ("ask-then-deny", "denied", [], lambda i: (403, b"denied")),
    ("prefetch-then-deny", "denied", [("x-wait", "0")], lambda i: (403, b"denied")),
    ("sleepy", "", [("x-sleep", "0.001")], lambda i: (200, b"/m/%d" % i)),
]
# one call in this many hangs past the deadline and must get SERVICE_UNAVAILABLE
STRESS_HANG_EVERY = 250


def _stress_connection(path, first_id, count, results):
    """One gateway connection: ``count`` calls, ExtraInfo answered as APISIX does, with values
    that name the call they were asked for; mismatches are collected in ``results``."""
    mismatches = []
    answered = 0
    with Gateway(path, timeout=30) as gw:
        tokens = {}
        for plugin, conf, _, _ in STRESS_KINDS + [("sleepy", "", [], None)]:
            tokens[plugin, conf] = gw.prepare([(plugin, conf)], "route#%s#%s" % (plugin, conf))
        for n in range(count):
            call_id = first_id + n
            if call_id % STRESS_HANG_EVERY == 0:
                plugin, conf, headers, expect = ("sleepy", "", [("x-sleep", "0.8")], None)
            else:
                plugin, conf, headers, expect = STRESS_KINDS[call_id % len(STRESS_KINDS)]
            gw.send(gateway.encode_http_req_call_req(call_id, tokens[plugin, conf],
                                                     path="/m/%d" % call_id, headers=headers))
            while True:
                rpc_type, payload = gw.read()
                if rpc_type != RPC_EXTRA_INFO:
                    break
                info_type, _ = gateway.decode_extra_info_req(payload)
                value = (b"v-%d" if info_type == INFO_VAR else b"b-%d") % call_id
                gw.send(gateway.encode_extra_info_resp(value))
            answered += 1
            if expect is None:
                if rpc_type != RPC_ERR or gateway.decode_err(payload) != SERVICE_UNAVAILABLE:
                    mismatches.append((call_id, plugin, rpc_type, payload[:40]))
                continue
            if rpc_type != RPC_HTTP_REQ_CALL:
                mismatches.append((call_id, plugin, rpc_type, payload[:40]))
                continue
            resp = gateway.decode_http_req_call_resp(payload)
            got = (resp.id, resp.stop.status, resp.stop.body) if resp.action_type == ACTION_STOP \
                else (resp.id, resp.action_type, None)
            if got != (call_id,) + expect(call_id):
                mismatches.append((call_id, plugin, got))
    results.append((answered, mismatches))


def test_stress_twenty_thousand_mixed_calls_each_answer_reaches_its_own_request(tmp_path):
    proc = start(tmp_path, "--workers", "2", "--call-timeout", "0.5", "--threads", "32")
    connections, per_connection = 8, 2500
    results = []
    try:
        threads = [threading.Thread(target=_stress_connection,
                                    args=(proc.path, 1 + c * per_connection, per_connection,
                                          results))
                   for c in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        stopped(proc)
    assert len(results) == connections, "a connection failed: see the log above"
    answered = sum(r[0] for r in results)
    mismatches = [m for r in results for m in r[1]]
    print("stress: %d calls answered, %d mismatches" % (answered, len(mismatches)))
    assert answered == connections * per_connection
    assert not mismatches, mismatches[:5]
