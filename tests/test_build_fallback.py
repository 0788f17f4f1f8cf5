"""Building from source without a C compiler: the build falls back to the pure codec with one
loud warning, and the install serves; with A6FAST_REQUIRE_EXTENSIONS=1 the same build fails;
with the compiler, the same sdist builds the compiled codec.

The compiler is taken away with CC=/bin/false (setuptools then compiles and links with it), so
the build really runs and really fails to compile; builds use this environment's setuptools and
Cython (--no-isolation), nothing is downloaded."""
import glob
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

from a6fast import gateway
from a6fast.protocol import ACTION_STOP, RPC_HTTP_REQ_CALL

from harness import RunnerProcess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(HERE)
IN_SOURCE_TREE = os.path.exists(os.path.join(SOURCE_ROOT, "setup.py"))
WARNING_LINE = "a6fast: the compiled codec was not built"

pytestmark = pytest.mark.skipif(not IN_SOURCE_TREE or not os.path.exists("/bin/false"),
                                reason="needs the source tree and /bin/false")


def _build(outdir, *args, env):
    pytest.importorskip("build")
    pytest.importorskip("Cython")
    full_env = dict(os.environ, CC="/bin/false", **env)
    for name in ("A6FAST_NO_EXTENSIONS", "A6FAST_REQUIRE_EXTENSIONS"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "build", "--no-isolation",
                           "--skip-dependency-check", "--outdir", str(outdir)] + list(args),
                          capture_output=True, text=True, timeout=600, env=full_env,
                          cwd=str(outdir))


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    """The sdist, and the wheel built from it without a compiler: (dir, build output)."""
    out = tmp_path_factory.mktemp("no-compiler")
    built = _build(out, SOURCE_ROOT, env={})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out, built.stdout + built.stderr


def test_build_without_a_compiler_warns_once_and_makes_a_pure_wheel(fallback):
    out, output = fallback
    assert output.count(WARNING_LINE) == 1, output[-3000:]
    assert "A6FAST_REQUIRE_EXTENSIONS=1" in output
    (whl,) = glob.glob(str(out / "a6fast-*.whl"))
    # nothing compiled in it, so it says so: not a cp3xx-linux wheel holding only Python
    assert whl.endswith("-py3-none-any.whl"), whl
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        wheel_meta = z.read([n for n in names if n.endswith(".dist-info/WHEEL")][0]).decode()
    assert "Root-Is-Purelib: true" in wheel_meta
    assert "a6fast/_codec_py.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c", ".pyx"))]


def test_require_extensions_makes_the_same_build_fail(fallback, tmp_path):
    out, _ = fallback
    (sdist,) = glob.glob(str(out / "a6fast-*.tar.gz"))
    built = _build(tmp_path, "--wheel", sdist, env={"A6FAST_REQUIRE_EXTENSIONS": "1"})
    output = built.stdout + built.stderr
    assert built.returncode != 0, output[-3000:]
    assert "could not be built and A6FAST_REQUIRE_EXTENSIONS=1" in output, output[-3000:]
    assert not glob.glob(str(tmp_path / "*.whl"))


def test_with_a_compiler_the_same_sdist_builds_the_compiled_codec(fallback, tmp_path):
    """...and a build without one after the source changed, in the same tree, does not ship the
    out-of-date binary left in build/."""
    out, _ = fallback
    (sdist,) = glob.glob(str(out / "a6fast-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = glob.glob(str(tmp_path / "a6fast-*"))
    env = dict(os.environ, A6FAST_REQUIRE_EXTENSIONS="1")
    for name in ("CC", "A6FAST_NO_EXTENSIONS"):
        env.pop(name, None)

    def wheel(outdir, env):
        built = subprocess.run([sys.executable, "-m", "build", "--no-isolation",
                                "--skip-dependency-check", "--wheel", "--outdir", outdir, tree],
                               capture_output=True, text=True, timeout=600, env=env, cwd=tree)
        output = built.stdout + built.stderr
        assert built.returncode == 0, output[-3000:]
        (whl,) = glob.glob(os.path.join(outdir, "a6fast-*.whl"))
        with zipfile.ZipFile(whl) as z:
            return whl, output, [n for n in z.namelist() if n.endswith((".so", ".pyd"))]

    whl, output, binaries = wheel(str(tmp_path / "with"), env)
    assert WARNING_LINE not in output
    assert not whl.endswith("-py3-none-any.whl"), whl
    assert [n for n in binaries if n.startswith("a6fast/_codec.")], binaries

    # the codec's source changed since: the binary in build/ is out of date, the build without
    # a compiler fails to replace it, and must not ship it
    pyx = os.path.join(tree, "a6fast", "_codec.pyx")
    later = os.stat(pyx).st_mtime + 3600
    os.utime(pyx, (later, later))
    env.pop("A6FAST_REQUIRE_EXTENSIONS")
    env["CC"] = "/bin/false"
    whl, output, binaries = wheel(str(tmp_path / "without"), env)
    assert WARNING_LINE in output
    assert whl.endswith("-py3-none-any.whl") and binaries == [], (whl, binaries)


def test_the_fallback_install_serves_on_the_pure_codec_and_says_so(fallback, tmp_path):
    out, _ = fallback
    (whl,) = glob.glob(str(out / "a6fast-*.whl"))
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                                "--target", str(site), whl],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    # the installed copy first; -S leaves out the .pth files, so an editable install of a6fast
    # in this environment cannot lend its compiled codec (the dependencies come from PYTHONPATH)
    paths = sysconfig.get_paths()
    # (and the pure codec not asked for, also in make test's A6FAST_NO_EXTENSIONS=1 pass)
    env = {"PYTHONPATH": os.pathsep.join([str(site), paths["purelib"], paths["platlib"]]),
           "A6FAST_NO_EXTENSIONS": ""}
    python = [sys.executable, "-S"]
    where = subprocess.run(
        python + ["-c", "import a6fast, a6fast.codec as c; "
                        "print(a6fast.__file__, c.IMPLEMENTATION, c.FALLBACK_REASON)"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, **env), cwd=str(tmp_path))
    assert where.returncode == 0, where.stderr
    file, implementation, reason = where.stdout.split(" ", 2)
    assert file.startswith(str(site)), file
    assert implementation == "pure" and reason.startswith("no _codec.") and str(site) in reason

    runner = RunnerProcess(tmp_path, "--workers", "1", env=env, python=python)
    try:
        log = runner.log()
        assert "pure codec" in log and "the compiled codec is not in use (no _codec." in log, log
        with runner.gateway() as gw:
            token = gw.prepare([("stop", '{"status": 403, "body": "no"}')])
            rpc_type, payload = gw.call(token, id=7, method="GET", path="/")
        assert rpc_type == RPC_HTTP_REQ_CALL
        answer = gateway.decode_http_req_call_resp(payload)
        assert (answer.id, answer.action_type, answer.stop.status, answer.stop.body) == \
            (7, ACTION_STOP, 403, b"no")
    finally:
        assert runner.stop() == 0, runner.log()
