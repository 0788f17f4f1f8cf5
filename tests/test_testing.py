"""a6fast.testing: plugins run without a gateway, through the server's own path."""
import os
import threading

import pytest

from a6fast import ConfError, UnknownPlugin
from a6fast.errors import PluginTimeout
from a6fast.protocol import ACTION_REWRITE
from a6fast.testing import CallFailed, Entries, PluginLoadError, PluginTester

from faultkit import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLKIT = os.path.join(HERE, "plugins", "toolkit")
OFFICIAL = os.path.join(HERE, "plugins", "official")
SEED = os.path.join(HERE, "plugins", "seed")
BROKEN = os.path.join(HERE, "plugins", "broken")


@pytest.fixture
def tester():
    with PluginTester(plugins_dir=TOOLKIT, call_timeout=5.0) as t:
        yield t


def test_the_readme_example_stops_a_bot(tester):
    r = tester.request("agent-block", {"agents": ["bot"]}, path="/x",
                       headers={"user-agent": "a bot"})
    assert r.stopped and r.status == 403 and r.body == b"no bots"
    assert r.action == "stop" and not r.rewritten and r.upstream is None


def test_no_action_leaves_the_request_unchanged(tester):
    r = tester.request("agent-block", {"agents": ["bot"]}, path="/x?a=1",
                       headers={"user-agent": "curl"})
    assert r.no_action and r.action is None and not r.stopped
    assert r.status is None and r.body is None and not r.headers
    assert r.upstream.path == "/x" and r.upstream.args == {"a": "1"}


def test_async_hook_reads_the_body_and_a_variable(tester):
    r = tester.request("body-guard", {"deny": ["drop table"]}, method="POST",
                       body=b"select 1", vars={"remote_addr": "10.1.2.3"})
    assert r.rewritten
    assert r.rewrite.headers["x-client"] == "10.1.2.3"
    assert r.rewrite.headers["x-body-sha1"] == "3232003928f9fe86a9cb634f450d5a53a4025819"  # sha1 of b"select 1"
    assert r.extra_info == [("req_body", None), ("var", "remote_addr")]
    assert r.vars_asked == ["remote_addr"]
    assert r.upstream.headers["X-Client"] == "10.1.2.3" and r.upstream.body == b"select 1"


def test_async_hook_stops_on_a_denied_body(tester):
    r = tester.request("body-guard", {"deny": ["drop table"]}, body="x; drop table users")
    assert r.stopped and r.status == 403 and r.text == "denied: drop table"
    assert r.headers == {"content-type": "text/plain"}


def test_remote_addr_defaults_to_the_source_ip(tester):
    r = tester.request("body-guard", {}, src_ip="192.0.2.9")
    assert r.rewrite.headers["x-client"] == "192.0.2.9"


def test_an_absent_body_reaches_the_plugin_as_none(tester):
    r = tester.request("body-guard", {}, body=b"")
    assert r.rewrite.headers["x-body-sha1"] == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def test_thread_hook_uses_the_blocking_getters_and_rewrites(tester):
    r = tester.request("route-tag", None, path="/api?debug=1&keep=yes",
                       vars={"route_id": "r7"})
    assert r.rewritten and r.rewrite.path == "/v2/api"
    assert r.rewrite.args.to_dict() == {"route": "r7", "debug": None}
    assert r.upstream.path == "/v2/api"
    assert r.upstream.args.items() == [("keep", "yes"), ("route", "r7")]
    assert r.extra_info == [("var", "route_id")]


def test_an_unknown_variable_is_absent(tester):
    r = tester.request("route-tag", None, path="/p")
    assert r.rewrite.args["route"] == "none"


def test_run_blocking_works(tester):
    r = tester.request("offload", {"n": 21})
    assert r.stopped and r.text == "42"


def test_request_fields_and_derived_variables_reach_the_plugin(tester):
    r = tester.request("echo-json", None, method="PUT", path="/p/a?q=1&flag&e=",
                       args=[("q", "2")], src_ip="2001:db8::1",
                       headers=[("Host", "example.com:8080"), ("Cookie", "a=1; session=s3")])
    seen = r.json()
    assert seen["method"] == "PUT" and seen["path"] == "/p/a" and seen["src_ip"] == "2001:db8::1"
    assert seen["args"] == [["q", "1"], ["flag", None], ["e", ""], ["q", "2"]]
    assert seen["headers"] == [["Host", "example.com:8080"], ["Cookie", "a=1; session=s3"]]
    assert seen["cookie"] == "s3" and seen["host"] == "example.com" and seen["arg_q"] == "1"
    assert seen["uri"] == "/p/a?q=1&flag&e=&q=2"


def test_an_explicit_none_variable_hides_a_derived_one(tester):
    r = tester.request("echo-json", None, headers={"host": "h"}, vars={"host": None})
    assert r.json()["host"] is None


def test_response_phase_reads_and_replaces_the_body(tester):
    r = tester.response("redact", {"secret": "hunter2"}, status=200,
                        headers={"content-type": "text/plain", "x-up": "1"},
                        body="password: hunter2")
    assert r.changed and r.status_changed and r.body_changed and r.headers_changed
    assert r.status == 203 and r.body == b"password: ***"
    assert r.headers == [("content-type", "text/plain"), ("x-up", "1"), ("x-redacted", "1")]
    assert r.extra_info == [("resp_body", None)]


def test_response_phase_without_changes_passes_the_upstream_response(tester):
    r = tester.response("redact", {"secret": "hunter2"}, status=404, headers={"a": "b"},
                        body="nothing here")
    assert not r.changed
    assert r.status == 404 and r.headers == {"a": "b"} and r.body == b"nothing here"


def test_deleting_every_response_header_leaves_the_client_none():
    import a6fast

    @a6fast.plugin("strip-all", phase="response", inline=True)
    def strip_all(response, conf):
        for name in set(response.headers):
            response.del_header(name)

    with PluginTester(plugins=[strip_all], builtins=False) as t:
        r = t.response("strip-all", headers={"a": "b", "content-type": "text/plain"})
    assert r.headers_changed and r.headers.items() == []


def test_a_prepared_conf_keeps_state_across_calls(tester):
    conf = tester.prepare("counter")
    assert [conf.request().rewrite.headers["x-call"] for _ in range(3)] == ["1", "2", "3"]
    assert tester.request("counter").rewrite.headers["x-call"] == "1"  # a new conf


def test_several_plugins_run_in_order_and_a_stop_ends_the_chain(tester):
    r = tester.request([("counter", None), ("agent-block", {"agents": ["bot"]}),
                        ("route-tag", None)], headers={"user-agent": "bot"})
    assert r.stopped and r.status == 403
    r = tester.request({"counter": None, "route-tag": None})
    assert r.rewrite.headers["x-call"] == "1" and r.rewrite.path == "/v2/"
    assert r.answer.action_type == ACTION_REWRITE


def test_conf_is_parsed_and_a_bad_one_is_refused(tester):
    with pytest.raises(ConfError, match="deny must be a list"):
        tester.request("body-guard", {"deny": "everything"})
    with pytest.raises(UnknownPlugin):
        tester.request("no-such-plugin")


def test_a_plugin_exception_is_raised_with_the_plugin_named(tester):
    with pytest.raises(RuntimeError, match="plugin bug") as info:
        tester.request("explode")
    assert any("explode" in note for note in getattr(info.value, "__notes__", []))


def test_raise_errors_off_reports_the_err_answer():
    with PluginTester(plugins_dir=TOOLKIT, raise_errors=False) as t:
        r = t.request("explode")
    assert r.failed and r.err == "SERVICE_UNAVAILABLE" and not r.stopped
    assert isinstance(r.exception, RuntimeError)
    assert r.frame[0] == 0  # an Err frame, as the server answers
    with pytest.raises(CallFailed, match="SERVICE_UNAVAILABLE"):
        r.raise_for_err()


def test_a_call_past_its_deadline_raises_plugin_timeout_while_the_plugin_still_runs():
    import a6fast

    release = threading.Event()
    ended = []

    @a6fast.plugin("stall-until-released")
    def stall(request, conf):  # a def hook: in a thread of the tester's pool
        ended.append("released" if release.wait(30) else "gave up")

    with PluginTester(plugins=[stall], builtins=False, call_timeout=0.3) as t:
        with pytest.raises(PluginTimeout):
            t.request("stall-until-released")
        # raised at the deadline, not once the plugin returned: it is waiting still
        assert ended == []
        release.set()
        assert wait_until(lambda: ended, 10) == ["released"]


def test_official_runner_plugin_in_a_worker_thread():
    with PluginTester(plugins_dir=TOOLKIT) as t:
        r = t.request("official-guard", {"token": "s3cret"}, path="/api",
                      headers={"x-token": "wrong"}, body="payload",
                      vars={"remote_addr": "10.9.8.7"})
        assert r.stopped and r.status == 401
        assert r.headers["www-authenticate"] == "Token"
        assert r.json() == {"addr": "10.9.8.7", "body": "payload"}
        r = t.request("official-guard", {"token": "s3cret"}, path="/api",
                      headers={"x-token": "s3cret"})
        assert r.rewritten and r.upstream.path == "/checked/api"
        assert r.upstream.headers["x-checked-by"] == "official-guard"


def test_the_repository_official_and_seed_plugins():
    # one tester each: both directories define "stop" and "rewrite" (loaded together, an error)
    with PluginTester(plugins_dir=OFFICIAL) as t:
        r = t.request("fetch", {"k": 1}, path="/p?x=1", headers={"host": "h"}, body=b"B",
                      vars={"remote_addr": "10.0.0.1"})
        seen = r.json()
        assert seen["remote_addr"] == "10.0.0.1" and seen["body"] == "B"
        assert seen["uri"] == "/p" and seen["args"] == {"x": "1"}
    with PluginTester(plugins_dir=SEED) as t:
        r = t.request("inspectrequest", {"c": 2}, method="POST", path="/s")
        assert r.stopped and r.json()["method"] == "POST" and r.json()["config"] == {"c": 2}


def test_plugin_objects_can_be_given_directly():
    import a6fast

    @a6fast.plugin("inline-teapot", inline=True)
    def teapot(request, conf):
        request.stop(418)

    with PluginTester(plugins=[teapot], builtins=False) as t:
        assert t.request("inline-teapot").status == 418
        assert t.registry.names() == ["inline-teapot"]


def test_builtin_examples_are_there_by_default():
    with PluginTester() as t:
        r = t.request("stop", {"status": 451, "body": "gone"})
        assert r.status == 451 and r.text == "gone"


def test_a_broken_plugin_directory_raises_with_file_and_line():
    with pytest.raises(PluginLoadError) as info:
        PluginTester(plugins_dir=BROKEN)
    text = str(info.value)
    assert "syntax_error.py:5" in text and "import_error.py:3" in text
    with PluginTester(plugins_dir=BROKEN, allow_load_errors=True) as t:
        assert t.request("still-loads").status == 204


def test_entries_compare_case_insensitively_and_keep_repeats():
    e = Entries([("Set-Cookie", "a"), ("set-cookie", "b"), ("X", None)])
    assert e["set-cookie"] == "a" and e.getall("SET-COOKIE") == ["a", "b"]
    assert "x" in e and e.get("missing", 1) == 1 and len(e) == 3
    assert e.to_dict() == {"Set-Cookie": "a", "set-cookie": "b", "X": None}
    args = Entries([("a", "1")], case_insensitive=False)
    assert "A" not in args and args == [("a", "1")]
