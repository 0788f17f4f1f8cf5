"""Testing a plugin without APISIX: run with `python -m pytest examples/tests`."""
import os

import pytest

from a6fast import ConfError
from a6fast.testing import PluginTester

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins")


@pytest.fixture(scope="module")
def tester():
    with PluginTester(plugins_dir=PLUGINS) as t:
        yield t


def test_a_bot_is_refused(tester):
    r = tester.request("block-bots", {"agents": ["bot"]}, path="/x",
                       headers={"user-agent": "FriendlyBot/1.0"})
    assert r.stopped and r.status == 403
    assert r.text == "bots are not welcome"
    assert r.vars_asked == []  # refused before asking the gateway anything


def test_a_browser_goes_upstream_tagged_with_its_address(tester):
    r = tester.request("block-bots", {"agents": ["bot"]}, path="/x?page=2",
                       headers={"user-agent": "Mozilla/5.0"}, src_ip="203.0.113.5")
    assert not r.stopped and r.rewritten
    assert r.upstream.headers["x-client-addr"] == "203.0.113.5"
    assert r.upstream.path == "/x" and r.upstream.args["page"] == "2"


def test_the_status_is_configurable(tester):
    r = tester.request("block-bots", {"agents": ["crawler"], "status": 429},
                       headers={"user-agent": "crawler"})
    assert r.status == 429


def test_a_bad_conf_is_refused(tester):
    with pytest.raises(ConfError, match="4xx"):
        tester.request("block-bots", {"status": 200})
