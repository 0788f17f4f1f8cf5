"""How a plugin is written: ``@a6fast.plugin(...)`` on a function, or a ``Plugin`` subclass.

Every plugin becomes a ``PluginSpec``: its name, how its conf is parsed (once, at PrepareConf)
and its hooks, each with how it runs:

- ``async def`` hooks run on the loop and may await ``request.var()``, ``request.body()`` and
  ``a6fast.run_blocking()``;
- plain ``def`` hooks run in a worker thread (they may block and use ``request.get_var()``);
- plain ``def`` hooks declared ``inline=True`` run directly on the loop: the fastest path, for
  hooks that never block.
"""
import inspect
import json
from typing import Any, Callable, Optional, TypeVar

from .errors import ConfError

__all__ = ["Plugin", "plugin", "PluginSpec", "spec_of", "INLINE", "ASYNC", "THREAD"]

# How a hook runs.
INLINE, ASYNC, THREAD = 0, 1, 2
MODE_NAMES = {INLINE: "inline", ASYNC: "async", THREAD: "thread"}

_PHASES = ("request", "response")

F = TypeVar("F", bound=Callable[..., Any])


def hook_mode(fn, inline):
    """INLINE, ASYNC or THREAD for ``fn``, decided once when the plugin is loaded."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)):
        return ASYNC
    return INLINE if inline else THREAD


def parse_json_conf(text):
    """The conf value's JSON text decoded; None when absent or blank.  ConfError if invalid."""
    if text is None:
        return None
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "surrogateescape")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfError("conf is not valid JSON: %s" % exc) from exc


class PluginSpec:
    """A loaded plugin: name, conf parser and resolved hooks (what the registry and chain use)."""

    __slots__ = ("name", "module", "parse", "request_hook", "request_mode", "response_hook",
                 "response_mode", "fold_name")

    def __init__(self, name, parse, request_hook=None, request_mode=INLINE, response_hook=None,
                 response_mode=INLINE, module=None, fold_name=False):
        if not isinstance(name, str) or not name:
            raise TypeError("a plugin name must be a non-empty str, not %r" % (name,))
        if request_hook is None and response_hook is None:
            raise TypeError("plugin %r has neither a request nor a response hook" % name)
        self.name = name
        self.parse = parse
        self.request_hook = request_hook
        self.request_mode = request_mode
        self.response_hook = response_hook
        self.response_mode = response_mode
        self.module = module  # the defining module: a plugin counts only where defined
        # Official-runner plugins were matched case-insensitively.
        self.fold_name = fold_name

    def parse_conf(self, text):
        """Run the plugin's conf parser on the value text; any failure becomes ConfError."""
        try:
            return self.parse(text)
        except ConfError as exc:
            if not str(exc).startswith("plugin "):
                raise ConfError("plugin %r: %s" % (self.name, exc)) from exc
            raise
        except Exception as exc:
            raise ConfError("plugin %r rejected its conf: %s: %s"
                            % (self.name, type(exc).__name__, exc)) from exc

    def __repr__(self):
        phases = []
        if self.request_hook is not None:
            phases.append("request=%s" % MODE_NAMES[self.request_mode])
        if self.response_hook is not None:
            phases.append("response=%s" % MODE_NAMES[self.response_mode])
        return "<PluginSpec %r %s>" % (self.name, " ".join(phases))


def _conf_parser(transform, json_conf):
    if json_conf:
        if transform is None:
            return parse_json_conf

        def parse(text):
            return transform(parse_json_conf(text))
        return parse
    if transform is None:
        return _raw_text
    return transform


def _raw_text(text):
    return text


class Plugin:
    """Base class of class-style plugins: one instance serves every route that uses it.

    Set ``name``; define ``on_request(self, request, conf)`` and/or
    ``on_response(self, response, conf)`` (plain or ``async def``).  ``parse_conf`` turns the
    JSON-decoded conf value into what the hooks receive as ``conf``; it runs once per
    PrepareConf, so validate and precompute there (raise to reject the conf).

    ``inline = True`` runs plain ``def`` hooks on the loop instead of a worker thread: only for
    hooks that never block.  ``json_conf = False`` hands ``parse_conf`` the raw value text.
    """

    name: Optional[str] = None
    inline: bool = False
    json_conf: bool = True

    def parse_conf(self, conf: Any) -> Any:
        """Validate/transform the conf once; the default returns it unchanged."""
        return conf


def _spec_from_class(cls, module):
    name = cls.name
    instance = cls()
    inline = bool(getattr(cls, "inline", False))
    req = getattr(instance, "on_request", None)
    resp = getattr(instance, "on_response", None)
    return PluginSpec(
        name, _conf_parser(instance.parse_conf, getattr(cls, "json_conf", True)),
        request_hook=req, request_mode=hook_mode(req, inline) if req else INLINE,
        response_hook=resp, response_mode=hook_mode(resp, inline) if resp else INLINE,
        module=module or cls.__module__)


def plugin(name: str, *, phase: str = "request", inline: bool = False,
           conf: Optional[Callable[[Any], Any]] = None,
           json_conf: bool = True) -> Callable[[F], F]:
    """Make a function a plugin hook: ``fn(request, conf)`` (or ``fn(response, conf)``).

    ``phase``: "request" (HTTPReqCall, the default) or "response" (HTTPRespCall).
    ``inline``: run a plain ``def`` on the loop instead of a worker thread (must not block).
    ``conf``: called once per PrepareConf with the JSON-decoded conf value (None when absent);
    its result is what the hook receives; raise to reject the conf.
    ``json_conf=False``: ``conf`` (or the hook) gets the raw value text instead.

    The function is returned unchanged, so it can still be called directly in tests.
    """
    if phase not in _PHASES:
        raise ValueError("phase must be 'request' or 'response', not %r" % (phase,))
    if not isinstance(name, str) or not name:
        raise TypeError("a plugin name must be a non-empty str, not %r" % (name,))
    if conf is not None and not callable(conf):
        raise TypeError("conf must be a callable, not %r" % (conf,))

    def decorate(fn):
        if not callable(fn):
            raise TypeError("@a6fast.plugin decorates a function, not %r" % (fn,))
        mode = hook_mode(fn, inline)
        parse = _conf_parser(conf, json_conf)
        module = getattr(fn, "__module__", None)
        if phase == "request":
            spec = PluginSpec(name, parse, request_hook=fn, request_mode=mode, module=module)
        else:
            spec = PluginSpec(name, parse, response_hook=fn, response_mode=mode, module=module)
        fn.__a6fast_plugin__ = spec
        return fn
    return decorate


def spec_of(obj, module_name=None):
    """The PluginSpec that ``obj`` defines, or None if it is not an a6fast plugin.

    With ``module_name``, only objects defined in that module count (not ones it imported).
    """
    if isinstance(obj, type):
        if not issubclass(obj, Plugin) or obj is Plugin:
            return None
        if module_name is not None and obj.__module__ != module_name:
            return None
        if obj.name is None:
            return None  # an abstract base of other plugins
        return _spec_from_class(obj, module_name)
    try:
        spec = getattr(obj, "__a6fast_plugin__", None)
    except Exception:  # a lazy proxy object at module level: not ours
        return None
    if not isinstance(spec, PluginSpec):
        return None
    if module_name is not None and spec.module != module_name:
        return None
    return spec
