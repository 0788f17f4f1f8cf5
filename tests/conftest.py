import importlib
import os

import pytest

# As a6fast.codec reads it: the pure codec only, so the tests naming the compiled one are left out
# (the default run, without it, still fails when the extension is missing).
NO_EXTENSIONS = os.environ.get("A6FAST_NO_EXTENSIONS", "") not in ("", "0")


def pytest_configure(config):
    # here rather than in pyproject.toml: the wheel tests run a copy of tests/ without it
    config.addinivalue_line("markers", "perf: asserts a time, CPU or memory bound; left out unless "
                                       "-m names perf (make perf)")
    config.addinivalue_line("markers", "compiled: exercises the compiled codec by name; left out "
                                       "when A6FAST_NO_EXTENSIONS=1")


def pytest_collection_modifyitems(config, items):
    def leave_out(marker):
        out = [item for item in items if item.get_closest_marker(marker)]
        if out:
            config.hook.pytest_deselected(items=out)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
    # a busy machine must not fail the default run: bounds on time and memory only when asked for
    if "perf" not in (config.option.markexpr or ""):
        leave_out("perf")
    if NO_EXTENSIONS:
        leave_out("compiled")


@pytest.fixture(params=[pytest.param("c", marks=pytest.mark.compiled), "py"])
def codec(request):
    """Each codec implementation, imported directly: a missing extension fails, never falls back."""
    name = "a6fast._codec" if request.param == "c" else "a6fast._codec_py"
    return importlib.import_module(name)


@pytest.fixture(params=[pytest.param(False, id="behaviour"),
                        pytest.param(True, id="perf", marks=pytest.mark.perf)])
def perf(request):
    """False in the default run, which asserts what happened; True in the ``perf`` copy of the
    same test (``make perf``), which also asserts how fast, how much CPU or how much memory."""
    return request.param
