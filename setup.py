"""Build of the compiled codec.

A6FAST_NO_EXTENSIONS=1 builds the pure-Python package only.  Otherwise the Cython codec is built;
when that fails (no C compiler, no Python headers, no Cython) the build goes on without it, says
so in one loud warning and makes a py3-none-any wheel: a6fast then runs on its pure-Python codec,
as MarkupSafe and PyYAML do without a compiler.  A6FAST_REQUIRE_EXTENSIONS=1 (`make setup`, the
wheel builds, CI) makes that failure an error instead, so no release or test run can end up on
the pure codec without saying so.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


WARNING = """
********************************************************************************
a6fast: the compiled codec was not built: %s

a6fast is installed with its pure-Python codec instead. It behaves the same, but
each call costs several times more CPU. To get the compiled codec, install a C
compiler and the Python headers (Debian/Ubuntu: apt-get install gcc python3-dev)
and install a6fast again from source (pip: --no-cache-dir --force-reinstall).
Set A6FAST_REQUIRE_EXTENSIONS=1 to make this an error instead of a warning.
********************************************************************************
"""


class build_ext_or_fall_back(build_ext):
    """Cythonizes at build time (so an sdist needs no Cython) and turns a failed build into a
    pure-Python install with a warning, unless A6FAST_REQUIRE_EXTENSIONS=1."""

    def run(self):
        try:
            from Cython.Build import cythonize
        except ImportError as exc:
            self._fall_back("Cython is not installed (%s)" % exc, exc)
            self.extensions = []
            return
        # the generated C replaces the .pyx in the same Extension objects: setuptools has
        # already finalized them for the build
        generated = cythonize(self.extensions, compiler_directives={"language_level": "3"},
                              quiet=True)
        for ext, done in zip(self.extensions, generated, strict=True):
            ext.sources = done.sources
        try:
            super().run()
        except PlatformError as exc:   # no compiler for this platform at all
            self._fall_back("%s: %s" % (type(exc).__name__, exc), exc)

    def build_extensions(self):
        # one at a time, keeping only those built: the in-place copy and the outputs listed to
        # the wheel then name no file that was never made
        self.check_extensions_list(self.extensions)
        built = []
        for ext in self.extensions:
            try:
                self.build_extension(ext)
            except (PlatformError, CCompilerError, ExecError, OSError, ValueError) as exc:
                self._fall_back("%s: %s" % (type(exc).__name__, exc), exc)
                # a binary left in build/ by an earlier build would otherwise ship in its place
                stale = self.get_ext_fullpath(ext.name)
                if os.path.exists(stale):
                    os.remove(stale)
            else:
                built.append(ext)
        self.extensions = built

    def _fall_back(self, reason, exc):
        if _flag("A6FAST_REQUIRE_EXTENSIONS"):
            raise SystemExit("a6fast: the compiled codec could not be built and "
                             "A6FAST_REQUIRE_EXTENSIONS=1: %s" % reason) from exc
        if getattr(self.distribution, "a6fast_fell_back", None) is None:
            sys.stderr.write(WARNING % reason)
            sys.stderr.flush()
        self.distribution.a6fast_fell_back = reason


class bdist_wheel_tagged(bdist_wheel):
    """A wheel whose extension could not be built holds only Python: tag it py3-none-any."""

    def get_tag(self):
        if getattr(self.distribution, "a6fast_fell_back", None) is not None:
            self.root_is_pure = True
        return super().get_tag()


ext_modules = []
if not _flag("A6FAST_NO_EXTENSIONS"):
    ext_modules = [Extension("a6fast._codec", ["a6fast/_codec.pyx"])]

setup(ext_modules=ext_modules,
      cmdclass={"build_ext": build_ext_or_fall_back, "bdist_wheel": bdist_wheel_tagged})
