"""The response phase (HTTPRespCall) over a real socket: status, headers kept or changed or
deleted, the body replaced, a no-change answer, and ExtraInfo (variables, RespBody) mid-call."""
import os

import pytest

from a6fast import gateway
from a6fast.protocol import INFO_RESP_BODY, INFO_VAR, RPC_HTTP_RESP_CALL

from harness import PLUGINS, RunnerProcess

EXTRA = os.path.join(PLUGINS, "extra")

UPSTREAM = [("Content-Type", "application/json"), ("x-a", "0"), ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"), ("x-gone", "1")]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    proc = RunnerProcess(tmp_path_factory.mktemp("resp"), "--plugins", EXTRA, "--workers", "1")
    yield proc
    status = proc.stop()
    log = proc.log()
    assert status == 0, log
    assert "internal error" not in log, log


def resp_of(answer):
    rpc_type, payload = answer
    assert rpc_type == RPC_HTTP_RESP_CALL, (rpc_type, payload)
    return gateway.decode_http_resp_call_resp(payload)


def respond(runner, conf, key, headers=UPSTREAM, status=200, call_id=7, **tables):
    """One HTTPRespCall of ``conf``: (the decoded answer, the ExtraInfo the runner asked for)."""
    with runner.gateway(**tables) as gw:
        token = gw.prepare(conf, key)
        answer = resp_of(gw.resp_call(token, id=call_id, status=status, headers=headers))
    return answer, gw.extra_info_asked


def test_status_is_changed(runner):
    answer, _ = respond(runner, [("resp-header", '{"status": 418}')], "status")
    assert answer == gateway.HTTPRespCallResp(7, 418, None, None)


def test_one_header_changed_and_every_other_kept(runner):
    # The gateway sets only the headers it is sent: the answer carries the whole merged set.
    answer, _ = respond(runner, [("resp-header", '{"set": {"x-a": "1"}, "status": 0}')], "x-a")
    assert (answer.id, answer.status, answer.body) == (7, 0, None)
    assert sorted(answer.headers) == sorted(
        [("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
         ("x-gone", "1"), ("x-a", "1")])


def test_a_header_is_deleted_and_the_others_kept(runner):
    answer, _ = respond(runner, [("resp-header", '{"set": {"x-gone": null}}')], "gone")
    assert (answer.status, answer.body) == (0, None)
    assert sorted(answer.headers) == sorted(UPSTREAM[:4])


def test_body_is_replaced(runner):
    answer, _ = respond(runner, [("resp-body", '{"body": "repla\u00e7ed"}')], "body")
    assert answer == gateway.HTTPRespCallResp(7, 0, None, "repla\u00e7ed".encode())


@pytest.mark.parametrize("conf", [
    [("resp-header", '{"set": {}, "status": 0}')],
    [("resp-look", None)],
    [("echo-var", '{"name": "x"}')],  # a request-phase plugin only
])
def test_a_response_nothing_changed_goes_through_untouched(runner, conf):
    answer, _ = respond(runner, conf, "untouched#%s" % conf[0][0], call_id=0,
                        vars={"upstream_addr": "10.0.0.1:80"}, resp_body=b"upstream")
    assert answer == gateway.HTTPRespCallResp(0, 0, None, None)


def test_extra_info_in_the_response_phase_asks_for_the_response_body_and_vars(runner):
    body = bytes(range(256))
    answer, asked = respond(runner, [("resp-echo-body", None)], "echo",
                            vars={"upstream_addr": "10.0.0.1:80"}, req_body=b"request!",
                            resp_body=body)
    assert asked == [(INFO_RESP_BODY, None), (INFO_VAR, "upstream_addr")]
    assert answer.status == 0 and answer.body == body
    assert sorted(answer.headers) == sorted(UPSTREAM + [("x-upstream-addr", "10.0.0.1:80")])


@pytest.mark.parametrize("kind,body", [
    ("utf8", "h\u00e9llo \u2713".encode()), ("binary", bytes(range(256))), ("empty", b""),
    ("absent", None)])
def test_response_body_reaches_the_plugin_byte_exact(runner, kind, body):
    answer, asked = respond(runner, [("resp-echo-body", None)], "echo", headers=None,
                            resp_body=body)
    assert asked == [(INFO_RESP_BODY, None), (INFO_VAR, "upstream_addr")]
    assert answer.body == (b"(none)" if body is None else body)
    assert answer.headers == [("x-upstream-addr", "-")]


def test_ten_mib_response_body_comes_back_byte_exact(runner):
    body = os.urandom(10 << 20)
    answer, _ = respond(runner, [("resp-echo-body", None)], "echo", resp_body=body)
    assert answer.body == body


def test_every_response_plugin_of_the_chain_runs_in_order(runner):
    conf = [("resp-header", '{"set": {"x-a": "1"}, "status": 201}'), ("resp-echo-body", None),
            ("resp-body", '{"body": "last"}')]
    answer, _ = respond(runner, conf, "chain", vars={"upstream_addr": "u"}, resp_body=b"b")
    assert (answer.status, answer.body) == (201, b"last")
    assert sorted(answer.headers) == sorted(
        [h for h in UPSTREAM if h[0] != "x-a"] + [("x-a", "1"), ("x-upstream-addr", "u")])
