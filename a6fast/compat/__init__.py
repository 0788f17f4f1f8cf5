"""Plugins written for the official Python runner (apache/apisix-python-plugin-runner), unchanged.

Their files import ``apisix.runner.plugin.base`` (0.1: ``Base`` with ``filter(request,
response)``) or ``apisix.runner.plugin.core`` (0.2: ``PluginBase`` with ``name``/``config``/
``filter(conf, req, reply)``), ``apisix.runner.http.request``/``response`` and a few helper
modules.  ``install()`` puts a meta-path finder first on ``sys.meta_path`` that serves those
modules from here; the registry calls it before loading plugin files (never ``import a6fast``
itself).  ``docs/migrating.md`` has the whole API, release by release.

A real ``apisix`` package installed beside a6fast is left alone: the finder serves a synthetic,
empty ``apisix`` only when no other finder can import one, and otherwise only adds the
``apisix.runner`` shims under it.

How a call runs, as the official runner ran it: the official plugins that follow each other in a
conf run together, in one worker thread, sharing one request and one response object.

- ``Base`` plugins keep one instance per prepared conf.  A plugin written for 0.1.0 (its code
  calls ``self.stop()`` or ``self.rewrite()`` or sets ``self.action``; or, in this call, it filled
  ``response.path``/``args``) gets 0.1.0's rule: the last plugin's action decides, Stop with
  ``response``, or Rewrite (the default) with ``response.headers``/``args``/``path`` and what
  the plugins changed on ``request``.  Otherwise (the later format) a changed ``response`` stops
  the request and a changed ``request`` rewrites it.  The action holds for one call (there it
  stuck to the instance for every later request).
- ``PluginBase`` plugins get a new instance and a new ``config(conf text)`` for each call (unless
  the class sets ``a6fast_shared = True``); the first one that changes the response stops the
  request, the others' request changes rewrite it.

A plugin that raises fails the call (Err, APISIX answers 503).  These plugins have no response
phase: an HTTPRespCall for a conf that holds one is answered with an Err, as there.
"""
import ast
import importlib
import inspect
import os
import sys
import textwrap
from importlib.machinery import ModuleSpec

from ..plugin import INLINE, THREAD, PluginSpec, parse_json_conf
from ..protocol import ACTION_NONE
from . import base as _base
from . import common as _common
from . import server as _server
from .base import Base
from .core import PluginBase
from .request import Request
from .response import PLUGIN_ACTION_REWRITE, PLUGIN_ACTION_STOP, Response

__all__ = ["install", "uninstall", "installed", "spec_of", "group_steps", "CompatSpec",
           "SHIMS", "SEED", "OFFICIAL"]

# Module served -> (a6fast module, the names it takes from there: None for its __all__), or None
# for a package.
SHIMS = {
    "apisix.runner": None,
    "apisix.runner.plugin": None,
    "apisix.runner.plugin.base": ("a6fast.compat.base", None),
    "apisix.runner.plugin.core": ("a6fast.compat.core", None),
    "apisix.runner.http": None,
    "apisix.runner.http.request": ("a6fast.compat.request", None),
    "apisix.runner.http.response": ("a6fast.compat.response", None),
    "apisix.runner.http.method": ("a6fast.compat.method", None),
    "apisix.runner.http.protocol": ("a6fast.compat.common", _common.PROTOCOL_NAMES),
    "apisix.runner.utils": None,
    "apisix.runner.utils.common": ("a6fast.compat.common", None),
    "apisix.runner.server": None,
    "apisix.runner.server.logger": ("a6fast.compat.server", _server.LOGGER_NAMES),
    "apisix.runner.server.response": ("a6fast.compat.server", _server.RESPONSE_NAMES),
    "apisix.runner.server.protocol": ("a6fast.compat.server", _server.PROTOCOL_NAMES),
}


def provided_names(module_name):
    """The public names a6fast serves in ``module_name`` (an ``apisix.runner`` module), or None
    when it does not serve that module."""
    if module_name not in SHIMS:
        return None
    target = SHIMS[module_name]
    prefix = module_name + "."
    children = {m[len(prefix):].split(".")[0] for m in SHIMS if m.startswith(prefix)}
    if target is None:
        return children
    source, names = target
    return set(names if names is not None else importlib.import_module(source).__all__)


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
        source_name, names = target
        source = importlib.import_module(source_name)
        names = list(names if names is not None else source.__all__)
        module.__doc__ = source.__doc__
        for name in names:
            setattr(module, name, getattr(source, name))
        module.__all__ = names

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


# Plugins -----------------------------------------------------------------------------------------

SEED, OFFICIAL = "seed", "official-0.2"


class CompatSpec(PluginSpec):
    """The PluginSpec of an official-runner plugin: ``style`` (SEED for ``Base``, OFFICIAL for
    ``PluginBase``), its class, and the other names it answers to (``aliases``)."""

    __slots__ = ("style", "cls", "aliases")

    def __init__(self, name, parse, style, cls, module, aliases=()):
        super().__init__(name, parse, request_hook=run_members, request_mode=THREAD,
                         response_hook=refuse_response, response_mode=INLINE, module=module,
                         fold_name=style == SEED)
        self.style = style
        self.cls = cls
        self.aliases = tuple(aliases)


class Member:
    """One official plugin of a prepared conf: its plugin (an instance, or the class when each
    call makes its own) and its conf (parsed, or the text ``config()`` gets per call).
    ``v010``: a ``Base`` plugin written for 0.1.0 (its code calls ``self.stop()``,
    ``self.rewrite()`` or sets ``self.action``)."""

    __slots__ = ("name", "style", "plugin", "conf", "per_call", "v010")

    def __init__(self, name, style, plugin, conf, per_call=False, v010=False):
        self.name = name
        self.style = style
        self.plugin = plugin
        self.conf = conf
        self.per_call = per_call
        self.v010 = v010

    def __repr__(self):
        return "<official plugin %r>" % self.name


def _file_stem(module_name):
    path = getattr(sys.modules.get(module_name or ""), "__file__", None) or ""
    stem, ext = os.path.splitext(os.path.basename(path))
    return stem if ext == ".py" else ""


_V010_ATTRS = frozenset(("stop", "rewrite", "action"))


def written_for_010(cls):
    """True when a ``Base`` class's own code (or a base class's, short of ``Base``) uses
    ``self.stop()``, ``self.rewrite()`` or ``self.action``: only 0.1.0 had them, and there a
    plugin that did not call ``stop()`` in a call rewrote the request with ``response``."""
    # A class with a stop() (or rewrite) of its own means something else by self.stop().
    own = {name for name in _V010_ATTRS
           if inspect.getattr_static(cls, name, None) is not inspect.getattr_static(Base, name)}
    for klass in cls.__mro__:
        if klass is Base or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or node.attr not in _V010_ATTRS:
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id == "self" and node.attr not in own:
                return True
            if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                    and value.func.id == "super"):
                return True
    return False


def _seed_spec(cls, module):
    cls()  # fail at load time, not at the first PrepareConf, if it cannot be made
    name = cls.__name__.lower()
    v010 = written_for_010(cls)

    def parse(text):
        plugin = cls()
        plugin.config = parse_json_conf(text)
        return (Member(name, SEED, plugin, None, v010=v010),)
    # There the conf name was matched against the file's name (before 0.1.0) or its class's.
    stem = _file_stem(module).lower()
    aliases = (stem,) if stem and stem != name else ()
    return CompatSpec(name, parse, SEED, cls, module, aliases)


def _official_spec(cls, module):
    name = cls.name(cls)  # as there: on the class, when it is defined
    if name is None:
        return None  # an abstract base of other plugins
    if not isinstance(name, str) or not name:
        raise TypeError("%s.name() must return a non-empty str, not %r" % (cls.__name__, name))
    if getattr(cls, "a6fast_shared", False):
        plugin = cls()

        def parse(text):
            return (Member(name, OFFICIAL, plugin, plugin.config("" if text is None else text)),)
    else:
        def parse(text):
            # As there: a new instance and config() for each call.
            return (Member(name, OFFICIAL, cls, "" if text is None else text, per_call=True),)
    return CompatSpec(name, parse, OFFICIAL, cls, module)


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


def group_steps(steps):
    """The steps of a prepared conf with each run of official plugins of one style merged into
    one step: they run as one call there (one request and response object, one thread)."""
    out = []
    for spec, conf in steps:
        prev = out[-1] if out else None
        if (isinstance(spec, CompatSpec) and prev is not None
                and isinstance(prev[0], CompatSpec) and prev[0].style == spec.style):
            members = prev[1] + conf
            names = ", ".join(m.name for m in members)
            out[-1] = (CompatSpec(names, None, spec.style, None, prev[0].module), members)
        else:
            out.append((spec, conf))
    return out


# Running them ------------------------------------------------------------------------------------

def run_members(request, members):
    """The request phase of a run of official plugins (in a worker thread)."""
    req = Request(request)
    reply = Response._for_call(request.id)
    if members[0].style == SEED:
        _run_seed(request, req, reply, members)
    else:
        _run_official(request, req, reply, members)


def _blame(exc, member, members):
    # The chain names the whole run; say which of several it was.
    if len(members) > 1:
        exc.add_note("a6fast: raised by official plugin %r" % member.name)


def _run_official(request, req, reply, members):
    for member in members:
        try:
            if member.per_call:
                plugin = member.plugin()
                conf = plugin.config(member.conf)
            else:
                plugin, conf = member.plugin, member.conf
            plugin.filter(conf, req, reply)
        except Exception as exc:
            _blame(exc, member, members)
            raise
        if reply.changed():
            request.stop(*reply._stop_args())
            return
    req._apply()


def _run_seed(request, req, reply, members):
    actions = []
    acted = {}
    previous = _base.calling(acted)
    try:
        for member in members:
            try:
                member.plugin.filter(req, reply)
            except Exception as exc:
                _blame(exc, member, members)
                raise
            action = acted.pop(id(member.plugin), None)
            actions.append(action)
            # what the next plugin reads there: the action so far, rewrite by default
            reply.action_type = PLUGIN_ACTION_REWRITE if action is None else action
    finally:
        _base.calling(previous)
    if (any(a is not None for a in actions) or any(m.v010 for m in members) or reply.path
            or reply.args):
        # 0.1.0: the last plugin's action (rewrite unless it called stop()) decides.
        action = actions[-1] if actions[-1] is not None else PLUGIN_ACTION_REWRITE
        if action == PLUGIN_ACTION_STOP:
            request.stop(*reply._stop_args())
        elif action == PLUGIN_ACTION_REWRITE:
            req._apply(reply)
        elif action != ACTION_NONE:
            raise ValueError("plugin action must be PLUGIN_ACTION_STOP or "
                             "PLUGIN_ACTION_REWRITE, not %r" % (action,))
    elif reply.changed():
        request.stop(*reply._stop_args())
    else:
        req._apply()


def refuse_response(response, members):
    """The response phase: the official runner had none and answered HTTPRespCall with an Err."""
    raise RuntimeError("official-runner plugins act on requests only (ext-plugin-pre-req); "
                       "the official runner answered an Err to a response-phase call too")
