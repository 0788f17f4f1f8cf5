"""Plugin files in the style of each official-runner release, served by a real a6fast server on
both codec paths, answering what the official runner of that release answered (worked out from
its source), except where that release had a defect (docs/migrating.md lists each difference).

The fixtures (tests/plugins/compat_*) were written for these tests from the official API:
compat_v010 for 0.1.0 (``Base``, ``self.stop()``/``self.rewrite()``), compat_v2021 for the
December 2021 ``Base`` format, compat_v2022 for the February 2022 ``PluginBase`` with attribute
access, compat_v020 for 0.2.0 (``PluginBase`` with getters and setters).
"""
import json
import os
import threading

import pytest

from a6fast import gateway
from a6fast.protocol import (ACTION_NONE, ACTION_REWRITE, ACTION_STOP, BAD_REQUEST,
                             INFO_REQ_BODY, INFO_VAR, RPC_HTTP_REQ_CALL, SERVICE_UNAVAILABLE)

from harness import PLUGINS, PrepareFailed, RunnerProcess, err_code

DIRS = [os.path.join(PLUGINS, name)
        for name in ("compat_v010", "compat_v2021", "compat_v2022", "compat_v020")]
REQ = dict(id=3, path="/p", src_ip="10.0.0.1")
HOST_AND_MULTI = [("host", "h"), ("x-m", "1"), ("x-m", "2")]


@pytest.fixture(scope="module",
                params=[pytest.param("compiled", marks=pytest.mark.compiled), "pure"])
def runner(request, tmp_path_factory):
    env = {"A6FAST_NO_EXTENSIONS": "1"} if request.param == "pure" else {}
    args = ["--workers", "1"]
    for directory in DIRS:
        args += ["--plugins", directory]
    proc = RunnerProcess(tmp_path_factory.mktemp("compat-" + request.param), *args, env=env)
    assert "%s codec" % request.param in proc.log()
    yield proc
    status = proc.stop()
    log = proc.log()
    assert status == 0, log
    assert "internal error" not in log, log


def call(runner, conf, vars=None, body=None, **req):
    """(rpc_type, payload) of one HTTPReqCall for ``conf`` on a fresh connection."""
    fields = dict(REQ)
    fields.update(req)
    with runner.gateway(vars=vars, req_body=body) as gw:
        return gw.call(gw.prepare(conf), **fields)


def answer(runner, conf, **kw):
    rpc_type, payload = call(runner, conf, **kw)
    assert rpc_type == RPC_HTTP_REQ_CALL, "expected an answer, got Err %r" % (
        gateway.decode_err(payload),)
    return gateway.decode_http_req_call_resp(payload)


def stop_of(runner, conf, **kw):
    resp = answer(runner, conf, **kw)
    assert resp.action_type == ACTION_STOP, resp
    return resp.stop


def rewrite_of(runner, conf, **kw):
    resp = answer(runner, conf, **kw)
    assert resp.action_type == ACTION_REWRITE, resp
    return resp.rewrite


def json_stop(runner, conf, **kw):
    stop = stop_of(runner, conf, **kw)
    return stop, json.loads(stop.body)


# ---------------------------------------------------------------------------------------------
# 0.1.0: Base, self.stop() / self.rewrite(), the response carries the rewrite

def test_v010_stop_answers_with_the_response_the_plugin_filled(runner):
    assert stop_of(runner, [("halt", "{}")], headers=HOST_AND_MULTI) == gateway.Stop(
        403, [("X-Halted-By", "Halt")], b"halted")


def test_v010_stop_with_the_request_headers_copied_into_the_answer(runner):
    # as the 0.1.0 example did: response.headers = request.headers (one value per name there)
    conf = [("Halt", '{"echo_request_headers": true, "status": 401, "body": "no"}')]
    assert stop_of(runner, conf, headers=HOST_AND_MULTI) == gateway.Stop(
        401, [("host", "h"), ("x-m", "2"), ("X-Halted-By", "Halt")], b"no")


def test_v010_stop_does_not_stick_to_the_plugin_for_later_requests(runner):
    # There the action stayed on the plugin instance: after one stop(), every later request of
    # the route was stopped with an empty 200.  Here a call that does not stop is let through.
    conf = [("halt", '{"only_without": "x-ok"}')]
    with runner.gateway() as gw:
        token = gw.prepare(conf)
        for headers, stopped in [([], True), ([("x-ok", "1")], False), ([], True),
                                 ([("x-ok", "1")], False)]:
            rpc_type, payload = gw.call(token, headers=headers, **REQ)
            resp = gateway.decode_http_req_call_resp(payload)
            if stopped:
                assert resp.stop == gateway.Stop(403, [("X-Halted-By", "Halt")], b"halted")
            else:
                assert resp.action_type == ACTION_NONE, resp


def test_v010_rewrite_sends_the_response_headers_args_and_path(runner):
    # The body a rewrite plugin sets goes nowhere, as there; names the plugin did not change
    # keep every value (there they were sent back with the last value only).
    rewrite = rewrite_of(runner, [("redirect", '{"path": "/new", "body": "ignored"}')],
                         headers=HOST_AND_MULTI, args=[("a", "1"), ("flag", None)])
    assert rewrite == gateway.Rewrite("/new", [("X-Redirected", "yes")], [("via", "redirect")],
                                      None, None)


def test_v010_rewrite_to_the_same_path_leaves_the_path_alone(runner):
    rewrite = rewrite_of(runner, [("redirect", "{}")], headers=[("host", "h")])
    assert rewrite == gateway.Rewrite(None, [("X-Redirected", "yes")], [("via", "redirect")],
                                      None, None)


def test_v010_a_plugin_that_never_calls_stop_rewrites_by_default(runner):
    # There the path was also rewritten to "/" (the release's defect); here it stays.
    assert rewrite_of(runner, [("tag", '{"tag": "x"}')]) == gateway.Rewrite(
        None, [("X-Tag", "x")], [("tagged", "0")], None, None)


def test_v010_a_plugin_that_returns_before_stop_lets_the_request_through(runner):
    assert answer(runner, [("halt", '{"only_without": "x-ok"}')],
                  headers=[("x-ok", "")]).action_type == ACTION_NONE


def test_v010_the_last_plugin_of_the_conf_decides_the_action(runner):
    # halt stopped, then tag (rewrite by default) ran: rewrite with both plugins' response
    # headers; tag read halt's action from response.action_type
    assert rewrite_of(runner, [("halt", "{}"), ("tag", "{}")]) == gateway.Rewrite(
        None, [("X-Halted-By", "Halt"), ("X-Tag", "t")], [("tagged", "1")], None, None)
    assert stop_of(runner, [("tag", "{}"), ("halt", "{}")]) == gateway.Stop(
        403, [("X-Tag", "t"), ("X-Halted-By", "Halt")], b"halted")


@pytest.mark.parametrize("conf", ['{"k": [1]}', '{"k": [1], "set_action": true}'])
def test_v010_everything_a_plugin_reads(runner, conf):
    with runner.gateway() as gw:
        token = gw.prepare([("probe", conf)])
        rpc_type, payload = gw.call(token, id=9, method="PATCH", path="/p", src_ip="::1",
                                    headers=[("host", "h")], args=[("a", "1")])
    stop = gateway.decode_http_req_call_resp(payload).stop
    assert stop.status == 200 and stop.headers == [("content-type", "application/json")]
    assert json.loads(stop.body) == {
        "name": "Probe", "config": json.loads(conf), "action_before": 2, "action_after": 1,
        "id": 9, "conf_token": token, "method": "PATCH", "path": "/p",
        "src_ip": "0000:0000:0000:0000:0000:0000:0000:0001", "headers": {"host": "h"},
        "args": {"a": "1"}, "configs": {}, "rpc_type": 2,
        # 0.1.0 left response.id 0; here it is the call's id, as from December 2021 on
        "resp_id": 9, "resp_path": "", "resp_args": {}, "resp_token": 0,
        "resp_error_code": 0, "resp_action_type": 0, "resp_rpc_type": 2,
        "resp_changed": False, "patch": ["PATCH", 13, "PATCH", "POST", 14], "rpc": [0, 1, 2],
        "actions": [1, 2], "max": 16777216}


# ---------------------------------------------------------------------------------------------
# December 2021: Base, a changed response stops, a changed request rewrites

def test_v2021_setting_the_response_stops_the_request(runner):
    assert stop_of(runner, [("gate", "{}")], headers=[("host", "h")]) == gateway.Stop(
        401, [("WWW-Authenticate", "Key"), ("X-Gate", "denied")], b"key required")


def test_v2021_changing_the_request_rewrites_it(runner):
    conf = [("gate", '{"key": "k", "path": "/in", "drop_args": ["a"]}')]
    rewrite = rewrite_of(runner, conf, headers=[("host", "h"), ("x-key", "k"), ("x-m", "1"),
                                                ("x-m", "2")],
                         args=[("a", "1"), ("b", "2"), ("flag", None)])
    # what the plugin deleted from the dicts is deleted (there it was kept); x-m keeps both
    # values and the bare ?flag is fine (there the call failed on it)
    assert rewrite == gateway.Rewrite("/in", [("x-key", None), ("X-Gate", "passed")],
                                      [("a", None), ("gate", "1")], None, None)


def test_v2021_a_call_with_id_0_is_answered(runner):
    # that release answered Err to a call whose id was 0
    assert rewrite_of(runner, [("Gate", '{"key": "k"}')], id=0,
                      headers=[("x-key", "k")]).headers == [("x-key", None),
                                                             ("X-Gate", "passed")]


def test_v2021_every_plugin_of_the_conf_runs_and_a_changed_response_wins(runner):
    # stamp runs after gate stopped, and its response header joins the answer
    assert stop_of(runner, [("gate", "{}"), ("stamp", '{"stamp": "1"}')]) == gateway.Stop(
        401, [("WWW-Authenticate", "Key"), ("X-Gate", "denied"), ("X-Stamp", "1")],
        b"key required")
    assert rewrite_of(runner, [("stamp", "{}"), ("gate", '{"key": "k"}')],
                      headers=[("x-key", "k")]) == gateway.Rewrite(
        None, [("x-key", None), ("X-Stamp", "s"), ("X-Gate", "passed")], [("gate", "1")],
        None, None)


def test_v2021_everything_a_plugin_reads(runner):
    stop, seen = json_stop(runner, [("mirror", '{"k": 1}')], method="OPTIONS",
                           headers=[("host", "h")], args=[("a", "1")])
    assert stop.status == 200 and stop.headers is None
    assert seen == {"name": "Mirror", "config": {"k": 1}, "id": 3, "method": "OPTIONS",
                    "path": "/p", "src_ip": "10.0.0.1", "headers": {"host": "h"},
                    "args": {"a": "1"}, "configs": {}, "checked": True, "err_code": 0,
                    "rpc_type": True, "changed_before": False, "resp_id": 3,
                    "methods": ["OPTIONS", 1, "TRACE", 1]}


def test_v2021_reset_empties_the_objects_and_changes_nothing(runner):
    # there response.reset() also lost the call's id and request.reset() the path, so the call
    # got an Err; here the answer set after reset() is sent, and the request is left as it is
    stop, seen = json_stop(runner, [("mirror", '{"reset": true}')], headers=[("host", "h")])
    assert seen["after_reset"] == ["", {}, {}]
    assert stop.headers is None  # the header set before response.reset() is gone


# ---------------------------------------------------------------------------------------------
# February 2022: PluginBase, request and response attributes

def test_v2022_attribute_plugin_stops(runner):
    assert stop_of(runner, [("attr-gate", '{"token": "t"}')], method="POST") == gateway.Stop(
        403, [("X-Reason", "token")], b"denied for POST /p")


def test_v2022_attribute_plugin_rewrites(runner):
    rewrite = rewrite_of(runner, [("attr-gate", '{"token": "t", "path": "/ok"}')],
                         src_ip="10.0.0.9", headers=[("x-token", "t")], args=[("q", "1")])
    assert rewrite == gateway.Rewrite("/ok", [("X-Checked", "1")], [("checked", "10.0.0.9")],
                                      None, None)


# ---------------------------------------------------------------------------------------------
# 0.2.0: PluginBase, getters and setters, variables and the body

def test_v020_plugin_changing_the_request_rewrites_it(runner):
    with runner.gateway(vars={"remote_addr": "10.0.0.1"}, req_body=b"B") as gw:
        token = gw.prepare([("agent", "{}")])
        rpc_type, payload = gw.call(token, headers=HOST_AND_MULTI,
                                    args=[("a", "1"), ("flag", None)], **REQ)
        asked = gw.extra_info_asked
    rewrite = gateway.decode_http_req_call_resp(payload).rewrite
    # get_configs() is empty during a call, as there
    assert rewrite == gateway.Rewrite(None, [("X-Agent-Seen", "0")], [("agent", "1")],
                                      None, None)
    assert asked == [(INFO_VAR, "remote_addr"), (INFO_REQ_BODY, None)]


def test_v020_set_uri_rewrites_the_path(runner):
    assert rewrite_of(runner, [("agent", '{"uri": "/moved"}')]).path == "/moved"


def test_v020_every_getter_and_setter(runner):
    conf = '{"report": true, "setters": true, "status": 202}'
    resp = answer(runner, [("agent", conf)], method="PUT", src_ip="::1", headers=[("host", "h")],
                  args=[("a", "1")], vars={"remote_addr": "::1"}, body=b"B")
    stop, seen = resp.stop, json.loads(resp.stop.body)
    # set_req_id(77) changes what get_req_id() says, not the answer's id (there it did)
    assert resp.id == REQ["id"]
    assert stop.status == 202
    # set_headers() replaced the draft; the plugin's headers are what is sent
    assert stop.headers == [("X-Draft", "1"), ("Content-Type", "application/json")]
    assert seen.pop("reply") == ["1", {"X-Draft": "1"}, "", False, True, 77]
    assert seen == {
        "conf": json.loads(conf), "configs": {"k": "v"}, "config": None, "id": 3, "method": "PUT",
        "uri": "/p", "remote_addr": "0000:0000:0000:0000:0000:0000:0000:0001",
        "conf_token_set": True, "headers": {"host": "h"}, "args": {"a": "1"}, "host": "h",
        "missing": None, "a": "1", "checked": True, "var": "::1", "body": "B",
        "set": [True, False, {"k": "v"},
                True, "from-plugin",
                True, "replaced",
                False, True, 99,
                False, True, "post",
                False, True, "192.0.2.1",
                False, True, 5,
                False, False, "/p",
                False, False,     # set_header with "" or None: ignored
                False, False,     # set_arg with "" or None: ignored
                False, False,     # set_headers({}), set_args({})
                False, False, False,
                200, False, True]}


def test_v020_variables_and_bodies_are_utf8_text(runner):
    # there each byte became one character ("é" arrived as "Ã©")
    stop, seen = json_stop(runner, [("agent", '{"report": true, "var": "x"}')],
                           vars={"x": "h\u00e9".encode()}, body="\u00e9t\u00e9".encode())
    assert seen["var"] == "h\u00e9" and seen["body"] == "\u00e9t\u00e9"


def test_v020_get_method_names_every_method(runner):
    # there get_method() was "" for methods its set_method() did not accept (TRACE, MKCOL...)
    for method in ("TRACE", "MKCOL", "PROPFIND", "GET"):
        assert json_stop(runner, [("agent", '{"report": true}')],
                         method=method)[1]["method"] == method


def test_v020_plugin_names_are_matched_exactly(runner):
    # there an unknown name failed each call; here the PrepareConf is refused
    with pytest.raises(PrepareFailed) as info:
        call(runner, [("Agent", "{}")])
    assert info.value.code == BAD_REQUEST


def test_v020_plugin_without_config_gets_none_and_is_registered(runner):
    assert stop_of(runner, [("plain", '{"x": 1}')]) == gateway.Stop(
        200, None, b"plain conf=None registered=True err=1")


def test_v020_plugin_raising_fails_the_call_closed(runner):
    # there the body set before raising was dropped too: Err, never a half answer
    assert err_code(call(runner, [("failing", "")])) == SERVICE_UNAVAILABLE
    assert err_code(call(runner, [("failing", ""), ("plain", "")])) == SERVICE_UNAVAILABLE
    # the first plugin that answers ends the run, as there
    assert stop_of(runner, [("plain", ""), ("failing", "")]).body.startswith(b"plain")


def test_v020_official_plugins_have_no_response_phase(runner):
    # there an HTTPRespCall was answered with an Err; a6fast does not let it pass unnoticed
    with runner.gateway() as gw:
        token = gw.prepare([("agent", "{}")])
        assert err_code(gw.resp_call(token, status=200)) == SERVICE_UNAVAILABLE


def test_v020_per_request_state_on_self_does_not_leak_between_concurrent_calls(runner):
    # tally keeps the request's marker on self, then waits until all the calls are inside
    # filter(): one instance shared by the calls would answer each with the last marker.
    calls = 8
    conf = [("tally", str(calls))]
    answers = {}

    def one(marker):
        with runner.gateway() as gw:
            token = gw.prepare(conf)
            rpc_type, payload = gw.call(token, headers=[("x-marker", marker)], **REQ)
            answers[marker] = gateway.decode_http_req_call_resp(payload).stop

    threads = [threading.Thread(target=one, args=("m%d" % i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == sorted("m%d" % i for i in range(calls))
    for marker, stop in answers.items():
        assert stop == gateway.Stop(200, [("X-Marker", marker)], marker.encode())


def test_v020_plugin_opting_in_to_sharing_has_its_config_once_per_conf(runner):
    with runner.gateway() as gw:
        token = gw.prepare([("shared", "abc")])
        for _ in range(3):
            resp = gateway.decode_http_req_call_resp(gw.call(token, **REQ)[1])
            assert resp.rewrite.headers == [("X-Conf", "ABC"), ("X-Configs", "1")]
