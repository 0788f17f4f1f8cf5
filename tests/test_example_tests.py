"""The example test file of docs/shipping.md (examples/tests/) passes as a plugin author runs it."""
import os
import subprocess
import sys

import pytest

import a6fast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_TESTS = os.path.join(ROOT, "examples", "tests")
A6FAST_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(a6fast.__file__)))


@pytest.mark.skipif(not os.path.isdir(EXAMPLE_TESTS), reason="examples/ is not beside tests/")
def test_the_example_plugin_tests_pass(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [A6FAST_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), EXAMPLE_TESTS],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 passed" in out.stdout
