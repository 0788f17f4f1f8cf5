"""The example plugins of docs/plugins.md (examples/plugins/), loaded from their directory and
served over a real socket, as the document says they behave."""
import http.server
import os
import threading

import pytest

from a6fast import gateway
from a6fast.protocol import (ACTION_REWRITE, INFO_VAR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
                             RPC_HTTP_RESP_CALL, SERVICE_UNAVAILABLE)

from harness import RunnerProcess, err_code

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples", "plugins")


class AuthService(http.server.ThreadingHTTPServer):
    """Accepts "Bearer good" as alice; "Bearer wait" as bob once ``release`` is set; refuses
    anything else with 401, and "Bearer broken" with 500.  Keeps the headers it was sent."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), AuthHandler)
        self.seen = []
        self.release = threading.Event()
        self.waiting = threading.Event()

    @property
    def url(self):
        return "http://127.0.0.1:%d/check" % self.server_address[1]


class AuthHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        credentials = self.headers.get("Authorization")
        self.server.seen.append((credentials, self.headers.get("X-Real-IP")))
        if credentials == "Bearer wait":
            self.server.waiting.set()
            self.server.release.wait(10)
        status, body = {"Bearer good": (200, b"alice\n"), "Bearer wait": (200, b"bob"),
                        "Bearer broken": (500, b"oops")}.get(credentials, (401, b"no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def auth_service():
    service = AuthService()
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    yield service
    service.release.set()
    service.shutdown()
    service.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    proc = RunnerProcess(tmp_path_factory.mktemp("docs"), "--plugins", EXAMPLES, "--workers", "1",
                         env={"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"})
    yield proc
    status = proc.stop()
    assert status == 0, proc.log()


def req_answer(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_HTTP_REQ_CALL, (rpc_type, payload)
    return gateway.decode_http_req_call_resp(payload)


@pytest.fixture
def auth(runner, auth_service):
    """A gateway connection with the auth-header conf prepared: (gateway, token)."""
    auth_service.seen.clear()
    with runner.gateway(vars={"remote_addr": "10.0.0.5"}) as gw:
        yield gw, gw.prepare([("auth-header", '{"url": "%s", "timeout": 5}' % auth_service.url)],
                             "auth")


def test_auth_header_without_credentials_is_401_and_asks_nobody(auth, auth_service):
    gw, token = auth
    stop = req_answer(gw.call(token)).stop
    assert stop == gateway.Stop(401, [("www-authenticate", "Bearer")], b"credentials required\n")
    assert auth_service.seen == [] and gw.extra_info_asked == []


def test_auth_header_accepted_sets_the_user_and_drops_the_credentials(auth, auth_service):
    gw, token = auth
    answer = req_answer(gw.call(token, headers=[("Authorization", "Bearer good")]))
    assert answer.action_type == ACTION_REWRITE
    assert sorted(answer.rewrite.headers) == [("authorization", None), ("x-user", "alice")]
    assert auth_service.seen == [("Bearer good", "10.0.0.5")]
    assert gw.extra_info_asked == [(INFO_VAR, "remote_addr")]


def test_auth_header_refused_is_401(auth):
    gw, token = auth
    stop = req_answer(gw.call(token, headers=[("authorization", "Bearer bad")])).stop
    assert stop.status == 401 and stop.body == b"credentials refused\n"


def test_auth_header_with_the_service_failing_fails_closed(auth):
    gw, token = auth
    assert err_code(gw.call(token, headers=[("authorization", "Bearer broken")])) \
        == SERVICE_UNAVAILABLE


def test_auth_header_waiting_for_the_service_stalls_no_other_request(runner, auth,
                                                                      auth_service):
    gw, token = auth
    auth_service.release.clear()
    auth_service.waiting.clear()
    gw.send(gateway.encode_http_req_call_req(1, token, headers=[("authorization", "Bearer wait")]))
    rpc_type, payload = gw.read()
    assert rpc_type == RPC_EXTRA_INFO
    gw.answer_extra_info(payload)
    assert auth_service.waiting.wait(5)  # the plugin's thread now waits for the service
    with runner.gateway(vars={"remote_addr": "10.0.0.6"}) as other:
        hello = other.prepare([("say-hello", "{}")], "hello")
        for n in range(20):
            assert req_answer(other.call(hello, id=n)).stop.body == b"Hello, 10.0.0.6!"
    assert not auth_service.release.is_set()  # all of that happened while it waited
    auth_service.release.set()
    answer = req_answer(gw.read())
    assert answer.id == 1 and ("x-user", "bob") in answer.rewrite.headers


def test_add_response_header_keeps_the_upstream_headers(runner):
    conf = '{"headers": {"x-served-by": "a6fast"}, "timing": true}'
    upstream = [("Content-Type", "text/html"), ("Set-Cookie", "s=1"), ("x-served-by", "nginx")]
    with runner.gateway(vars={"upstream_response_time": "0.012"}) as gw:
        token = gw.prepare([("add-response-header", conf)], "resp")
        rpc_type, payload = gw.resp_call(token, id=3, status=502, headers=upstream)
    assert rpc_type == RPC_HTTP_RESP_CALL
    answer = gateway.decode_http_resp_call_resp(payload)
    assert (answer.id, answer.status, answer.body) == (3, 0, None)
    assert sorted(answer.headers) == sorted([
        ("Content-Type", "text/html"), ("Set-Cookie", "s=1"), ("x-served-by", "a6fast"),
        ("x-upstream-time", "0.012"), ("retry-after", "5")])
    assert gw.extra_info_asked == [(INFO_VAR, "upstream_response_time")]


def test_official_style_say_hello_runs_unchanged(runner):
    with runner.gateway(vars={"remote_addr": "10.0.0.7"}) as gw:
        token = gw.prepare([("say-hello", '{"greeting": "Hi"}')], "hi")
        stop = req_answer(gw.call(token)).stop
        passed = req_answer(gw.call(token, headers=[("x-pass", "1")]))
    assert stop == gateway.Stop(200, [("X-Resp-A6-Runner", "Python")], b"Hi, 10.0.0.7!")
    assert passed.action_type == ACTION_REWRITE
    assert passed.rewrite.headers == [("X-Greeted", "no")]
    assert gw.extra_info_asked == [(INFO_VAR, "remote_addr")]


def test_every_example_file_loads(runner):
    log = runner.log()
    assert "skipped" not in log and "defines no plugin" not in log, log
    for name in ("auth-header", "add-response-header", "say-hello"):
        assert name in log, log  # the startup line lists every plugin loaded
