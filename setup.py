"""Build of the compiled codec.  A6FAST_NO_EXTENSIONS=1 builds the pure-Python package only."""
import os

from setuptools import setup

ext_modules = []
if os.environ.get("A6FAST_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("a6fast._codec", ["a6fast/_codec.pyx"])],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
