"""Plugins written for the official Python runner (apache/apisix-python-plugin-runner), unchanged.

Their files import ``apisix.runner.plugin.base`` (seed era: ``Base`` with
``filter(request, response)``) or ``apisix.runner.plugin.core`` (0.2: ``PluginBase`` with
``name``/``config``/``filter(conf, req, reply)``) and ``apisix.runner.http.request``/``response``.
``install()`` puts a meta-path finder first on ``sys.meta_path`` that serves those modules from
here; the registry calls it before loading plugin files (never ``import a6fast`` itself).

A real ``apisix`` package installed beside a6fast is left alone: the finder serves a synthetic,
empty ``apisix`` only when no other finder can import one, and otherwise only adds the
``apisix.runner`` shims under it.

These plugins are sync and may block in ``get_var()``/``get_body()``, so they always run in a
worker thread.
"""
import importlib
import sys
from importlib.machinery import ModuleSpec

from ..plugin import THREAD, PluginSpec, parse_json_conf
from .base import Base
from .core import PluginBase
from .request import Request
from .response import Response

__all__ = ["install", "uninstall", "installed", "spec_of", "SHIMS"]

# Module served -> a6fast module whose public names it re-exports (None: an empty package).
SHIMS = {
    "apisix.runner": None,
    "apisix.runner.plugin": None,
    "apisix.runner.plugin.base": "a6fast.compat.base",
    "apisix.runner.plugin.core": "a6fast.compat.core",
    "apisix.runner.http": None,
    "apisix.runner.http.request": "a6fast.compat.request",
    "apisix.runner.http.response": "a6fast.compat.response",
}


class ShimFinder:
    """Meta-path finder and loader of the ``apisix.runner`` shims (and, if needed, ``apisix``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in SHIMS:
            return ModuleSpec(fullname, self, is_package=SHIMS[fullname] is None)
        if fullname == "apisix" and not self._real_apisix():
            return ModuleSpec(fullname, self, is_package=True)
        return None

    def _real_apisix(self):
        for finder in sys.meta_path:
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is not None and find_spec("apisix", None) is not None:
                return True
        return False

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        target = SHIMS.get(module.__name__)
        if target is None:
            module.__doc__ = "a6fast compatibility package for official-runner plugins"
            return
        source = importlib.import_module(target)
        module.__doc__ = source.__doc__
        for name in source.__all__:
            setattr(module, name, getattr(source, name))
        module.__all__ = list(source.__all__)

    def __repr__(self):
        return "<a6fast.compat.ShimFinder>"


_finder = ShimFinder()


def install():
    """Serve the ``apisix.runner`` modules to plugin files (idempotent)."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def installed():
    return _finder in sys.meta_path


def uninstall():
    """Remove the finder and every module it served (a real ``apisix`` stays)."""
    while _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in list(sys.modules):
        module = sys.modules[name]
        if getattr(getattr(module, "__spec__", None), "loader", None) is _finder:
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent and getattr(sys.modules.get(parent), child, None) is module:
                delattr(sys.modules[parent], child)


# Running the plugins -----------------------------------------------------------------------------

def _finish(request, req, reply):
    if reply.changed():
        request.stop(*reply._stop_args())
    else:
        req._apply()


def _run_seed(request, plugin):
    # Runs in a worker thread; ``plugin`` is the instance made for this conf.
    req = Request(request)
    reply = Response(request.id)
    plugin.filter(req, reply)
    _finish(request, req, reply)


def _seed_spec(cls, module):
    cls()  # fail at load time, not at the first PrepareConf, if it cannot be made

    def parse(text):
        plugin = cls()
        plugin.config = parse_json_conf(text)
        return plugin
    return PluginSpec(cls.__name__.lower(), parse, request_hook=_run_seed,
                      request_mode=THREAD, module=module, fold_name=True)


def _official_spec(cls, module):
    plugin = cls()
    name = plugin.name()
    if name is None:
        return None  # an abstract base of other plugins
    if not isinstance(name, str) or not name:
        raise TypeError("%s.name() must return a non-empty str, not %r" % (cls.__name__, name))

    def parse(text):
        # That runner hands config() the value text as received.
        return plugin.config("" if text is None else text)

    def run(request, conf):
        req = Request(request)
        reply = Response(request.id)
        plugin.filter(conf, req, reply)
        _finish(request, req, reply)
    run.__qualname__ = "%s.filter" % cls.__qualname__
    return PluginSpec(name, parse, request_hook=run, request_mode=THREAD, module=module)


def spec_of(obj, module_name=None):
    """The PluginSpec of an official-runner plugin class, or None if ``obj`` is not one.

    With ``module_name``, only classes defined in that module count (not ones it imported).
    """
    if not isinstance(obj, type) or obj in (Base, PluginBase):
        return None
    if module_name is not None and obj.__module__ != module_name:
        return None
    if issubclass(obj, PluginBase):
        return _official_spec(obj, module_name or obj.__module__)
    if issubclass(obj, Base):
        return _seed_spec(obj, module_name or obj.__module__)
    return None
