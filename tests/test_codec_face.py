"""The codec's face: both implementations expose exactly the same public names, each with the
same signature, and ``a6fast.codec`` exports exactly those (plus ``IMPLEMENTATION`` and
``FALLBACK_REASON``).

Signatures come from ``inspect.signature``: Cython 3 binds ``def`` functions with their
signatures, and a ``cdef class`` gives its constructor's in the first line of its docstring
(``Name(args)`` then ``--``), which CPython turns into ``__text_signature__``."""
import inspect
import os
import subprocess
import sys

import pytest

from a6fast import _codec as compiled
from a6fast import _codec_py as pure
from a6fast import codec
from a6fast.errors import DecodeError, EncodeError, TooManyPlugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def public(obj):
    return {name for name in dir(obj) if not name.startswith("_")}


def test_both_implementations_expose_exactly_the_same_public_names():
    assert public(compiled) == public(pure)


@pytest.mark.parametrize("module", [compiled, pure], ids=["c", "py"])
def test_all_lists_every_public_name_and_nothing_else(module):
    assert sorted(module.__all__) == sorted(public(module))


@pytest.mark.parametrize("name", sorted(public(compiled) | public(pure)))
def test_each_name_is_callable_with_the_same_signature_in_both(name):
    assert hasattr(compiled, name) and hasattr(pure, name)
    c, py = getattr(compiled, name), getattr(pure, name)
    if isinstance(py, type) and issubclass(py, Exception):
        assert c is py  # one error hierarchy: an except clause matches either codec
        return
    assert callable(c) and callable(py)
    assert inspect.signature(c) == inspect.signature(py)
    if isinstance(py, type):
        assert public(c) == public(py)  # the decoded message's fields


def test_codec_exports_exactly_the_implementations_names_and_implementation():
    assert sorted(codec.__all__) == sorted(set(pure.__all__) | {"IMPLEMENTATION", "FALLBACK_REASON"})
    assert sorted(public(codec)) == sorted(codec.__all__)


def test_codec_names_are_the_selected_implementations_objects():
    chosen = compiled if codec.IMPLEMENTATION == "compiled" else pure
    for name in pure.__all__:
        assert getattr(codec, name) is getattr(chosen, name), name
    assert (codec.DecodeError, codec.EncodeError, codec.TooManyPlugins) == (
        DecodeError, EncodeError, TooManyPlugins)


_PROBE = ("import sys, a6fast.codec as c; "
          "print(c.IMPLEMENTATION, c.decode_header.__module__, c.HTTPReqCallReq.__module__)")


def _probe(env, prelude=""):
    env = dict(os.environ, PYTHONPATH=ROOT, **env)
    out = subprocess.run([sys.executable, "-c", prelude + _PROBE], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("value,expected", [("1", "pure"), ("yes", "pure"), ("0", "compiled"),
                                            ("", "compiled")])
def test_a6fast_no_extensions_picks_the_implementation(value, expected):
    module = "a6fast._codec" if expected == "compiled" else "a6fast._codec_py"
    assert _probe({"A6FAST_NO_EXTENSIONS": value}) == [expected, module, module]


def test_without_the_extension_the_pure_codec_is_used():
    # sys.modules[name] = None makes the import fail as a missing extension does
    prelude = "sys.modules['a6fast._codec'] = None; "
    assert _probe({"A6FAST_NO_EXTENSIONS": ""}, "import sys; " + prelude) == [
        "pure", "a6fast._codec_py", "a6fast._codec_py"]
