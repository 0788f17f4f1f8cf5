"""The command line: every command's --help on its own, `a6fast check`, `a6fast stats` errors."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import a6fast
from a6fast.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.join(HERE, "plugins")
A6FAST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(a6fast.__file__)))


def run_cli(*args, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([A6FAST_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-m", "a6fast"] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_top_level_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for command in ("serve", "check", "stats", "bench"):
        assert command in out.stdout


@pytest.mark.parametrize("command", sorted(main.commands))
def test_each_command_help_completes_on_its_own(command):
    out = run_cli(command, "--help", timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage:") and "--help" in out.stdout
    assert out.stderr == ""


def test_check_lists_every_plugin_with_style_and_source():
    result = CliRunner().invoke(main, ["check", os.path.join(PLUGINS, "toolkit"),
                                       os.path.join(PLUGINS, "seed")])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]
             if line.startswith("  ") and len(line.split()) == 5}
    assert lines["agent-block"][1:4] == ["function", "inline", "-"]
    assert lines["body-guard"][1:4] == ["function", "async", "-"]
    assert lines["route-tag"][1:4] == ["function", "thread", "-"]
    assert lines["redact"][1:4] == ["class", "-", "async"]
    assert lines["counter"][1:4] == ["class", "inline", "-"]
    assert lines["official-guard"][1:4] == ["official-0.2", "thread", "-"]
    assert lines["inspectrequest"][1:4] == ["seed", "thread", "-"]
    assert lines["official-guard"][4].endswith("official_guard.py:9")
    assert "0 error(s)" in result.output.splitlines()[0]


def test_check_reports_load_errors_with_file_and_line_and_fails():
    result = CliRunner().invoke(main, ["check", os.path.join(PLUGINS, "broken")])
    assert result.exit_code == 1
    out = result.output
    assert "syntax_error.py:5: SyntaxError" in out
    assert "import_error.py:3: ModuleNotFoundError" in out
    assert "bad_definition.py:4: NoHooks: TypeError" in out
    assert "still-loads" in out  # the good file next to them still loads


def test_check_json_report():
    result = CliRunner().invoke(main, ["check", "--json", os.path.join(PLUGINS, "broken")])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [p["name"] for p in report["plugins"]] == ["still-loads"]
    errors = {os.path.basename(e["file"]): e["line"] for e in report["errors"]}
    assert errors == {"bad_definition.py": 4, "import_error.py": 3, "syntax_error.py": 5}


def test_check_with_builtins_lists_the_examples(tmp_path):
    result = CliRunner().invoke(main, ["check", "--builtins", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "builtin a6fast.examples.stop" in result.output


def test_check_of_a_missing_directory_fails(tmp_path):
    out = run_cli("check", str(tmp_path / "nope"))
    assert out.returncode != 0


def test_stats_without_a_runner_says_so(tmp_path):
    out = run_cli("stats", "--listen", "unix:%s" % (tmp_path / "none.sock"), "--timeout", "1")
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "a6fast stats: no runner's stats at unix:%s: no such socket (start the runner with "
        "--stats unix:%s)" % (tmp_path / "none.sock", tmp_path / "none.sock")]


def test_stats_at_a_wrong_path_says_no_runner_is_there():
    out = run_cli("stats", "--listen", "unix:/wrong/path")
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1
    assert out.stderr.startswith("a6fast stats: no runner's stats at unix:/wrong/path: ")


def test_stats_at_a_file_that_is_not_a_socket_says_so(tmp_path):
    path = tmp_path / "plain-file"
    path.write_text("")
    out = run_cli("stats", "--listen", "unix:%s" % path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "a6fast stats: no runner's stats at unix:%s: nothing accepts connections there (the "
        "runner has stopped, or it is not a socket)" % path]
