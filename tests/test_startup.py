"""Strict start-up: `a6fast serve` refuses to start on plugins that do not load, with the lines
`a6fast check` prints, exit status 2, and no socket left behind."""
import os
import subprocess
import sys

import pytest

from harness import A6FAST_ROOT, PLUGINS

BROKEN = os.path.join(PLUGINS, "broken")


def run(*args, env=None):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = A6FAST_ROOT
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "a6fast"] + list(args), capture_output=True,
                          text=True, env=full_env, timeout=60)


def error_lines(text):
    """The lines of an "errors:" list (as `a6fast check` prints it, and serve when refusing)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.endswith(("errors:", "error(s):")):
            inside = True
        elif inside and line.startswith("  "):
            lines.append(line.strip())
        else:
            inside = False
    return lines


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_broken_plugins_with_the_lines_check_prints(tmp_path, workers):
    sock = tmp_path / "r.sock"
    served = run("serve", "--plugins", BROKEN, "--listen", "unix:%s" % sock, "--workers", workers,
                 env={"XDG_STATE_HOME": str(tmp_path / "state")})
    checked = run("check", BROKEN)
    assert served.returncode == 2, served.stderr
    assert checked.returncode == 1
    assert "Traceback" not in served.stderr
    refused = error_lines(served.stderr)
    assert refused and refused == error_lines(checked.stdout), (served.stderr, checked.stdout)
    assert any("syntax_error.py:" in line for line in refused)
    assert not sock.exists()


def test_serve_refuses_a_missing_plugin_directory(tmp_path):
    missing = tmp_path / "nowhere"
    served = run("serve", "--plugins", str(missing), "--listen", "unix:%s" % (tmp_path / "s"),
                 env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert served.returncode == 2, served.stderr
    assert str(missing) in served.stderr
    assert run("check", str(missing)).returncode == 1


@pytest.mark.parametrize("listen", ["tcp:127.0.0.1:9999", "unix:"])
def test_serve_refuses_what_it_cannot_listen_on(tmp_path, listen):
    served = run("serve", "--listen", listen, env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert served.returncode == 2, served.stderr
    assert "Traceback" not in served.stderr
    assert listen in served.stderr


@pytest.mark.parametrize("option", [("--workers", "0"), ("--workers", "1000"),
                                    ("--max-confs", "0"), ("--call-timeout", "0"),
                                    ("--call-timeout", "-1"), ("--conf-expire", "0"),
                                    ("--threads", "0"), ("--call-timeout", "nan"),
                                    ("--conf-expire", "nan")])
def test_serve_refuses_options_out_of_range(tmp_path, option):
    served = run("serve", "--listen", "unix:%s" % (tmp_path / "s"), *option)
    assert served.returncode == 2, served.stderr
    assert option[0] in served.stderr
    assert not (tmp_path / "s").exists()


def test_a_name_defined_twice_is_refused_by_serve_and_check(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in ("a.py", "b.py"):
        (plugins / name).write_text(
            "import a6fast\n\n\n@a6fast.plugin('twin', inline=True)\n"
            "def twin(request, conf):\n    request.stop(200)\n")
    served = run("serve", "--plugins", str(plugins), "--listen", "unix:%s" % (tmp_path / "s"),
                 "--workers", "1", env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert served.returncode == 2, served.stderr
    assert "b.py:4: plugin 'twin' is defined twice" in served.stderr, served.stderr
    checked = run("check", str(plugins))
    assert checked.returncode == 1 and "defined twice" in checked.stdout


def test_a_plugin_may_take_a_builtin_examples_name(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mine.py").write_text(
        "import a6fast\n\n\n@a6fast.plugin('stop', inline=True)\n"
        "def stop(request, conf):\n    request.stop(299)\n")
    assert run("check", "--builtins", str(plugins)).returncode == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_while_plugins_are_still_importing_stops_cleanly(tmp_path, workers):
    import signal
    import time

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    started = tmp_path / "importing"
    (plugins / "slow.py").write_text(
        "import time, a6fast\nopen(%r, 'a').write('x')\ntime.sleep(3)\n\n"
        "@a6fast.plugin('slow', inline=True)\ndef slow(request, conf):\n    request.stop(200)\n"
        % str(started))
    env = dict(os.environ, PYTHONPATH=A6FAST_ROOT, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "a6fast", "serve", "--plugins", str(plugins),
                             "--listen", "unix:%s" % (tmp_path / "s"), "--workers", workers],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (tmp_path / "s").exists()


def test_workers_still_importing_die_with_a_killed_supervisor(tmp_path):
    import signal
    import time

    from faultkit import alive, children

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    checked = tmp_path / "checked"
    # the start-up check imports it at once; the workers then take long
    (plugins / "slow.py").write_text(
        "import os, time, a6fast\n"
        "if os.path.exists(%r):\n    time.sleep(30)\n"
        "open(%r, 'w').close()\n\n"
        "@a6fast.plugin('slow', inline=True)\ndef slow(request, conf):\n    request.stop(200)\n"
        % (str(checked), str(checked)))
    env = dict(os.environ, PYTHONPATH=A6FAST_ROOT, XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "a6fast", "serve", "--plugins", str(plugins),
                             "--listen", "unix:%s" % (tmp_path / "s"), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = children(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in workers), "workers outlived their supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
