"""``apisix.runner.plugin.core``: the plugin base class of the official runner's 0.2 releases.

A plugin subclasses ``PluginBase`` (that registers it) and defines ``name(self)``,
``config(self, conf)`` (given the conf value's text; what it returns is ``filter``'s ``conf``)
and ``filter(self, conf, req, reply)``.  As there, each call gets a new instance and runs
``config()`` again; a plugin whose instances may serve concurrent calls sets
``a6fast_shared = True`` to get one instance and one ``config()`` per prepared conf instead.
"""
from typing import Any

__all__ = ["PluginBase", "PLUGINS"]

# name -> class, filled as classes are defined (the first class of a name stays, as there, unless
# it is the same class of a plugin file loaded again).  a6fast finds plugins in the files it
# loads, not here; this is for plugins that read it.
PLUGINS = {}


class PluginBase:
    """Base of 0.2-style plugins."""

    # Opt in to one instance (and one config()) per prepared conf, shared by concurrent calls.
    a6fast_shared = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # As there, name() is called on the class itself.
        try:
            name = cls.name(cls)
            first = PLUGINS.setdefault(name, cls)
            if (first is not cls and first.__module__ == cls.__module__
                    and first.__qualname__ == cls.__qualname__):
                PLUGINS[name] = cls
        except Exception:
            pass  # reported with file and line when a6fast loads the plugin

    def name(self) -> str:
        """The name the plugin is configured under (None: not a plugin itself)."""
        return None

    def config(self, conf: Any) -> Any:
        """Parse the conf value text; the result is ``filter``'s ``conf`` (None unless defined)."""
        return None

    def filter(self, conf: Any, req, reply) -> None:
        """Change ``req`` to rewrite the request; change ``reply`` to answer (stop) it."""
