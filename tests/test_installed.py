"""What is imported is what was meant to ship: the compiled codec of an installed wheel
(A6FAST_EXPECT_COMPILED=1, set by `make testinstalled` and cibuildwheel's test command), the pure
one of the py3-none-any wheel (A6FAST_EXPECT_PURE=1); and, from a source tree, what the sdist and
the pure wheel contain."""
import glob
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

import a6fast
from a6fast import codec

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(HERE)
IN_SOURCE_TREE = os.path.exists(os.path.join(SOURCE_ROOT, "pyproject.toml")) and \
    os.path.exists(os.path.join(SOURCE_ROOT, "a6fast", "_codec.pyx"))


def _site_dirs():
    paths = sysconfig.get_paths()
    return {os.path.realpath(paths[key]) for key in ("purelib", "platlib")}


def _inside(path, directory):
    path = os.path.realpath(path)
    return path == directory or path.startswith(directory + os.sep)


@pytest.mark.skipif(os.environ.get("A6FAST_EXPECT_COMPILED") != "1",
                    reason="only where the compiled codec must be in use (A6FAST_EXPECT_COMPILED=1)")
def test_the_installed_compiled_codec_is_in_use():
    import a6fast._codec as compiled

    assert codec.IMPLEMENTATION == "compiled"
    assert compiled.__file__.endswith((".so", ".pyd")), compiled.__file__
    assert any(_inside(compiled.__file__, d) for d in _site_dirs()), \
        "%s is not in site-packages %s" % (compiled.__file__, _site_dirs())
    package_dir = os.path.realpath(os.path.dirname(a6fast.__file__))
    assert package_dir != os.path.realpath(os.path.join(SOURCE_ROOT, "a6fast")), \
        "a6fast imported from the tree beside the tests: %s" % package_dir


@pytest.mark.skipif(os.environ.get("A6FAST_EXPECT_PURE") != "1",
                    reason="only for the pure wheel (A6FAST_EXPECT_PURE=1)")
def test_the_pure_wheel_runs_the_pure_codec():
    assert codec.IMPLEMENTATION == "pure"
    assert not glob.glob(os.path.join(os.path.dirname(a6fast.__file__), "_codec*.so"))


@pytest.mark.skipif(os.environ.get("A6FAST_NO_EXTENSIONS", "") not in ("", "0")
                    or os.environ.get("A6FAST_EXPECT_PURE") == "1",
                    reason="the pure codec was asked for")
def test_the_compiled_codec_is_in_use_unless_the_pure_one_was_asked_for():
    # a build whose extension failed installs and runs on the pure codec: the suite must fail
    # on it rather than pass on the fallback
    assert codec.FALLBACK_REASON is None, codec.FALLBACK_REASON
    assert codec.IMPLEMENTATION == "compiled"
@pytest.mark.skipif(not IN_SOURCE_TREE, reason="reads the source tree's pyproject.toml")
def test_pyproject_takes_the_version_from_the_package():
    import tomllib

    with open(os.path.join(SOURCE_ROOT, "pyproject.toml"), "rb") as f:
        pyproject = tomllib.load(f)
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "a6fast.__version__"}


def test_the_installed_version_is_the_packages():
    from importlib import metadata

    try:
        installed = metadata.version("a6fast")
    except metadata.PackageNotFoundError:
        pytest.skip("a6fast is imported from a tree, not installed")
    assert installed == a6fast.__version__


def test_the_package_is_typed():
    assert os.path.exists(os.path.join(os.path.dirname(a6fast.__file__), "py.typed"))


def test_every_subpackage_is_importable():
    import importlib
    import pkgutil

    names = [m.name for m in pkgutil.walk_packages(a6fast.__path__, "a6fast.") if m.ispkg]
    assert {"a6fast.compat", "a6fast.examples", "a6fast.server"} <= set(names)
    for name in names:
        importlib.import_module(name)


def _build(tmp_path, *args, env=None):
    try:
        from build import ProjectBuilder  # noqa: F401  (not a stray build/ directory)
    except ImportError:
        pytest.skip("needs the build package (the test extra)")
    pytest.importorskip("setuptools")
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
                          "--outdir", str(tmp_path)] + list(args) + [SOURCE_ROOT],
                         capture_output=True, text=True, timeout=300, env=full_env,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.skipif(not IN_SOURCE_TREE, reason="needs the source tree")
def test_sdist_carries_the_cython_source_and_the_tests_but_no_generated_c(tmp_path):
    _build(tmp_path, "--sdist", env={"A6FAST_NO_EXTENSIONS": "1"})
    (sdist,) = glob.glob(str(tmp_path / "a6fast-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"a6fast/_codec.pyx", "a6fast/py.typed", "setup.py", "pyproject.toml", "MANIFEST.in",
            "tests/conftest.py", "tests/harness.py", "tests/test_codec.py",
            "tests/reference/ext-plugin.fbs", "tests/plugins/toolkit/guards.py",
            "examples/tests/test_block_bots.py", "docs/shipping.md",
            "bench/floor/floor_runner.c", "bench/floor/a6load.c"} <= names
    # the only C is the floor tools' source: no generated codec C, nothing built
    assert not [n for n in names if n.endswith((".c", ".so", ".pyc"))
                and not n.startswith("bench/floor/")]


@pytest.mark.skipif(not IN_SOURCE_TREE, reason="needs the source tree")
def test_pure_wheel_is_py3_none_any_with_py_typed_and_no_sources(tmp_path):
    pytest.importorskip("wheel")
    _build(tmp_path, "--wheel", env={"A6FAST_NO_EXTENSIONS": "1"})
    (whl,) = glob.glob(str(tmp_path / "a6fast-*.whl"))
    assert whl.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        wheel_meta = z.read([n for n in names if n.endswith(".dist-info/WHEEL")][0]).decode()
    assert "Root-Is-Purelib: true" in wheel_meta
    assert "a6fast/py.typed" in names and "a6fast/testing.py" in names
    for package in ("a6fast/compat/", "a6fast/examples/", "a6fast/server/"):
        assert package + "__init__.py" in names
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".so", ".html"))]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
