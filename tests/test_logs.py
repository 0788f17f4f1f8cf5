"""`a6fast serve --log-format json|text`: every line of a JSON log is one object with the fields
named in docs/operating.md, and a plugin's failure names its plugin in either format."""
import json
import logging
import os

import pytest

from a6fast.protocol import SERVICE_UNAVAILABLE

from faultkit import FAULT_PLUGINS, children, wait_until
from harness import RunnerProcess, err_code


def _fail_calls(runner, count):
    with runner.gateway() as gw:
        token = gw.prepare([("raises", "{}")], "route#raises")
        for i in range(count):
            assert err_code(gw.call(token, id=1000 + i)) == SERVICE_UNAVAILABLE


def _json_lines(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # fails on any line that is not JSON


@pytest.mark.parametrize("workers", ["1", "2"])
def test_json_log_is_one_object_a_line_with_the_plugin_failure_fields(tmp_path, workers):
    runner = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", workers,
                           "--log-format", "json")
    try:
        if workers != "1":
            assert wait_until(lambda: len(children(runner.proc.pid)) == 2, 10)
        _fail_calls(runner, 3)
        assert wait_until(lambda: runner.log().count('"plugin"') >= 3, 10)
    finally:
        assert runner.stop() == 0, runner.log()
    records = _json_lines(runner.log())
    for record in records:
        assert {"time", "level", "logger", "pid", "message"} <= set(record), record
        assert isinstance(record["pid"], int)
    assert any("a6fast listening on unix:" in r["message"] for r in records)
    failures = [r for r in records if "plugin" in r]
    assert [r["call_id"] for r in failures] == [1000, 1001, 1002]
    pids = {r["pid"] for r in records}
    for r in failures:
        assert r["plugin"] == "raises"
        assert r["err"] == "SERVICE_UNAVAILABLE"
        assert r["level"] == "ERROR" and r["logger"] == "a6fast.server"
        assert r["message"].startswith("HTTPReqCall id=%d: plugin 'raises' failed" % r["call_id"])
        assert "RuntimeError: raises: failed on purpose" in r["traceback"]
        assert "Traceback (most recent call last)" in r["traceback"]
    if workers != "1":
        assert len(pids) >= 2  # the supervisor's lines and a worker's, each with its own pid


def test_text_log_names_the_failing_plugin_on_the_first_line(tmp_path):
    runner = RunnerProcess(tmp_path, "--plugins", FAULT_PLUGINS, "--workers", "1")
    try:
        _fail_calls(runner, 1)
        assert wait_until(lambda: "failed on purpose" in runner.log(), 10)
    finally:
        assert runner.stop() == 0, runner.log()
    lines = runner.log().splitlines()
    first = [line for line in lines if "HTTPReqCall id=1000" in line]
    assert len(first) == 1, lines
    assert "plugin 'raises' failed; answering SERVICE_UNAVAILABLE" in first[0]
    assert " ERROR a6fast[" in first[0]
    # the traceback follows on the next lines, as before
    after = lines[lines.index(first[0]) + 1]
    assert after.startswith("Traceback (most recent call last)")


def test_log_format_is_checked(tmp_path):
    runner = RunnerProcess(tmp_path, "--log-format", "xml", wait=False)
    try:
        assert runner.proc.wait(30) == 2
    finally:
        runner.kill()
    assert "--log-format" in runner.log()


def test_json_formatter_keeps_a_multiline_message_on_one_line():
    from a6fast.logs import JsonFormatter

    record = logging.LogRecord("a6fast.server", logging.WARNING, __file__, 1,
                               "first\nsecond %s", ("\u00e9",), None)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["message"] == "first\nsecond \u00e9"
    assert data["level"] == "WARNING" and data["pid"] == os.getpid()
    assert data["time"].endswith("+00:00") and "T" in data["time"]
    assert "traceback" not in data and "plugin" not in data
