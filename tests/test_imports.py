"""Every module of a6fast imports on its own, first thing in a fresh interpreter (as multidict's
tests do): an import cycle, or a module that works only once another has been imported, fails
here instead of in whichever program happens to import it first."""
import concurrent.futures
import os
import pkgutil
import subprocess
import sys

import pytest

import a6fast

from harness import A6FAST_ROOT


def _modules():
    names = ["a6fast"]
    for info in pkgutil.walk_packages(a6fast.__path__, "a6fast."):
        if not info.name.endswith(".__main__"):  # importing that runs the command line
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_the_modules_are_found():
    assert {"a6fast.codec", "a6fast._codec_py", "a6fast.server", "a6fast.compat",
            "a6fast.examples.stop"} <= set(MODULES)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """{module: the failure's stderr, or None}: each imported alone, four at a time."""
    cwd = tmp_path_factory.mktemp("imports")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [A6FAST_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    def import_alone(module):
        # -W error: a warning at import (a deprecated API, say) fails too
        proc = subprocess.run([sys.executable, "-W", "error", "-c", "import %s" % module],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        return None if proc.returncode == 0 else proc.stderr

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(zip(MODULES, pool.map(import_alone, MODULES)))


@pytest.mark.parametrize("module", [
    pytest.param(name, marks=pytest.mark.compiled) if name == "a6fast._codec" else name
    for name in MODULES])
def test_module_imports_alone_in_a_fresh_interpreter(module, imported):
    assert imported[module] is None, imported[module]
