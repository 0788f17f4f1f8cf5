"""Finding plugins: plugin directories, the ``a6fast.plugins`` entry points and the built-in
examples; and preparing a conf (a PrepareConf's plugin list) into a ``Chain``.

Load order: plugin directories (in the order given, files by name), then entry points, then the
built-ins.  A name defined twice by plugin files or entry points is an error; a user plugin may
take a built-in example's name.  A file that fails to import is recorded in ``errors`` with
file:line (``a6fast serve`` then refuses to start; ``a6fast check`` lists them).
"""
import importlib
import importlib.util
import inspect
import logging
import os
import re
import stat
import sys
import traceback
from importlib.metadata import entry_points as _entry_points
from types import ModuleType
from typing import Iterable, List, Optional, Sequence, Tuple

from .chain import Chain
from .compat import CompatSpec, group_steps
from .errors import UnknownPlugin
from .plugin import PluginSpec, spec_of

__all__ = ["Registry", "ENTRY_POINT_GROUP", "plugin_files"]

log = logging.getLogger("a6fast.plugins")

ENTRY_POINT_GROUP = "a6fast.plugins"
_MODULE_PREFIX = "a6fast_plugin_"


class Registry:
    """The loaded plugins by name; ``prepare()`` makes the chain of a PrepareConf."""

    def __init__(self):
        self._plugins = {}
        self._folded = {}  # lower-cased name -> spec, for official-runner seed plugins
        self._sources = {}  # name -> where it was loaded from (file, entry point, builtin)
        self._compat = False  # official-runner plugins loaded: their runs in a conf share a call
        self.errors: List[Tuple[str, int, str]] = []

    @classmethod
    def load(cls, plugin_dirs: Sequence[str] = (), builtins: bool = True,
             entry_points: bool = True) -> "Registry":
        """Load every plugin: ``*.py`` files of ``plugin_dirs``, entry points, built-ins."""
        registry = cls()
        for directory in plugin_dirs:
            registry.load_dir(directory)
        if entry_points:
            registry.load_entry_points()
        if builtins:
            registry.load_builtins()
        return registry

    # what is loaded -----------------------------------------------------------------------------
    def names(self) -> List[str]:
        """The names of the loaded plugins, sorted."""
        return sorted(self._plugins)

    def get(self, name: str) -> Optional[PluginSpec]:
        """The plugin loaded as ``name``, or None."""
        spec = self._plugins.get(name)
        if spec is None:
            spec = self._folded.get(name.lower())
        return spec

    def source(self, name: str) -> Optional[str]:
        """Where the plugin loaded as ``name`` came from: a file path, an entry point, or
        "builtin <module>"; None if not loaded."""
        spec = self.get(name)
        return None if spec is None else self._sources.get(spec.name)

    def __contains__(self, name):
        return self.get(name) is not None

    def add(self, obj, source: Optional[str] = None) -> List[PluginSpec]:
        """Register the plugins ``obj`` defines (a PluginSpec, a Plugin subclass, a decorated
        function, an official-runner class, or a module: all of those it defines).  A name
        already loaded keeps its first plugin (and the second is an error)."""
        if isinstance(obj, PluginSpec):
            specs = [obj]
        elif isinstance(obj, ModuleType):
            specs = _specs_in_module(obj)
        else:
            spec = _spec_of(obj, None)
            if spec is None:
                raise TypeError("%r is not an a6fast or official-runner plugin" % (obj,))
            specs = [spec]
        added = []
        for spec in specs:
            if self._register(spec, source or spec.module):
                added.append(spec)
        return added

    def _register(self, spec, source):
        if spec.name in self._plugins:
            first = self._sources[spec.name]
            if str(source).startswith("builtin "):
                # a user plugin may take a built-in example's name on purpose
                log.info("built-in plugin %r not loaded: %s defines that name", spec.name, first)
                return False
            self._error(source, _spec_line(spec),
                        "plugin %r is defined twice: here and in %s" % (spec.name, first))
            return False
        self._plugins[spec.name] = spec
        self._sources[spec.name] = source
        if spec.fold_name:
            self._folded.setdefault(spec.name.lower(), spec)
        if isinstance(spec, CompatSpec):
            self._compat = True
            for alias in spec.aliases:
                self._folded.setdefault(alias.lower(), spec)
        log.debug("loaded plugin %r from %s", spec.name, source)
        return True

    def _error(self, file, line, message, exc=None):
        self.errors.append((file, line, message))
        log.error("%s:%d: %s; skipped", file, line, message,
                  exc_info=None if exc is None or not log.isEnabledFor(logging.DEBUG) else exc)

    # sources ------------------------------------------------------------------------------------
    def load_dir(self, directory: str) -> None:
        """Import every ``*.py`` file of ``directory`` (not ``_*``) and register its plugins."""
        from . import compat
        compat.install()
        directory = os.path.abspath(directory)
        try:
            files = plugin_files(directory)
        except OSError as exc:
            self._error(directory, 0, "cannot list plugin directory: %s" % exc.strerror, exc)
            return
        for path in files:
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError as exc:
                self._error(path, 0, "cannot read plugin file: %s" % exc.strerror, exc)
                continue
            if not regular:  # opening a FIFO would wait forever for a writer
                self._error(path, 0, "not a regular file")
                continue
            self.load_file(path)

    def load_file(self, path: str) -> None:
        """Import one plugin file (its directory first on sys.path meanwhile, for its
        helpers) and register its plugins; on failure, log and record it."""
        from . import compat
        compat.install()
        path = os.path.abspath(path)
        module_name = _module_name(path)
        directory = os.path.dirname(path)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, directory)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            sys.modules.pop(module_name, None)
            self._error(path, _line_of(exc, path), _describe(exc), exc)
            return
        finally:
            try:
                sys.path.remove(directory)
            except ValueError:
                pass

        def bad_plugin(obj, exc):
            self._error(path, _definition_line(obj) or _line_of(exc, path),
                        "%s: %s" % (getattr(obj, "__name__", obj), _describe(exc)), exc)
        specs = _specs_in_module(module, bad_plugin)
        if not specs:
            log.warning("%s defines no plugin", path)
        for plugin_spec in specs:
            self._register(plugin_spec, path)

    def load_entry_points(self) -> None:
        """Register what the ``a6fast.plugins`` entry points name (objects or modules)."""
        for ep in _entry_points(group=ENTRY_POINT_GROUP):
            where = "entry point %s = %s" % (ep.name, ep.value)
            try:
                obj = ep.load()
                if isinstance(obj, ModuleType):
                    specs = _specs_in_module(obj)
                else:
                    spec = _spec_of(obj, None)
                    if spec is None:
                        raise TypeError("%r is not a plugin" % (obj,))
                    specs = [spec]
            except (Exception, SystemExit) as exc:
                self._error(where, 0, _describe(exc), exc)
                continue
            for spec in specs:
                self._register(spec, where)

    def load_builtins(self) -> None:
        """Register the built-in examples (after user plugins, which win on a name clash)."""
        from .examples import BUILTIN_MODULES
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            for spec in _specs_in_module(module):
                self._register(spec, "builtin " + module_name)

    # preparing a conf ---------------------------------------------------------------------------
    def prepare(self, conf_entries: Iterable[Tuple[str, Optional[str]]],
                key: Optional[str] = None) -> Chain:
        """The chain of a PrepareConf: each ``(name, value text)`` resolved and its conf parsed
        once.  UnknownPlugin for a name not loaded, ConfError for a conf its plugin rejects."""
        steps = []
        for name, text in conf_entries:
            spec = self._plugins.get(name)
            if spec is None:
                spec = self._folded.get(name.lower()) if isinstance(name, str) else None
                if spec is None:
                    raise UnknownPlugin(name)
            steps.append((spec, spec.parse_conf(text)))
        if self._compat:
            steps = group_steps(steps)
        return Chain(steps, key)


def plugin_files(directory: str) -> List[str]:
    """The plugin files of ``directory`` in load order: ``*.py``, not ``_*`` or ``.*``.
    OSError if it cannot be listed."""
    directory = os.path.abspath(directory)
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name.endswith(".py") and not name.startswith(("_", "."))]


def _spec_of(obj, module_name):
    spec = spec_of(obj, module_name)
    if spec is None and isinstance(obj, type):
        from . import compat
        spec = compat.spec_of(obj, module_name)
    return spec


def _specs_in_module(module, on_error=None):
    """The plugins a module defines (not those it merely imports), in definition order.

    A broken one raises, or with ``on_error(obj, exc)`` is reported and left out."""
    specs = []
    for obj in list(vars(module).values()):
        try:
            spec = _spec_of(obj, module.__name__)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(obj, exc)
            continue
        if spec is not None:
            specs.append(spec)
    return specs


def _spec_line(spec):
    """The line where a plugin is defined: its class (official-runner plugins) or hook."""
    owner = getattr(spec, "cls", None)
    if owner is None:
        hook = spec.request_hook or spec.response_hook
        owner = getattr(hook, "__func__", hook)
    return _definition_line(owner)


def _definition_line(obj):
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 0


def _module_name(path):
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = _MODULE_PREFIX + stem
    taken = sys.modules.get(name)
    count = 1
    while taken is not None and getattr(taken, "__file__", None) != path:
        count += 1
        name = "%s%s_%d" % (_MODULE_PREFIX, stem, count)
        taken = sys.modules.get(name)
    return name


def _line_of(exc, path):
    if isinstance(exc, SyntaxError) and exc.filename and os.path.abspath(exc.filename) == path:
        return exc.lineno or 0
    line = 0
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if os.path.abspath(frame.f_code.co_filename) == path:
            line = lineno
    return line


def _describe(exc):
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__

