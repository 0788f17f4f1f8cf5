"""a6fast: a fast, fail-closed Python plugin runner for Apache APISIX."""

__version__ = "0.1.0"  # the only place the version is written (pyproject.toml reads it)

from .errors import (A6Error, ConfError, DecodeError, EncodeError, PluginTimeout,  # noqa: E402
                     UnknownPlugin)
from .futures import run_blocking  # noqa: E402
from .http import Request, Response  # noqa: E402
from .plugin import Plugin, plugin  # noqa: E402

__all__ = [
    "__version__", "A6Error", "ConfError", "DecodeError", "EncodeError", "PluginTimeout",
    "UnknownPlugin",
    "Plugin", "plugin", "Request", "Response", "run_blocking",
]
