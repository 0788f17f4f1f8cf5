"""``apisix.runner.plugin.core``: the 0.2-era plugin base class.

A plugin subclasses ``PluginBase`` (that registers it) and defines ``name(self)``,
``config(self, conf)`` (given the conf value's text; what it returns is handed to ``filter``)
and ``filter(self, conf, req, reply)``.
"""
from typing import Any

__all__ = ["PluginBase"]


class PluginBase:
    """Base of 0.2-style plugins: one instance per loaded plugin."""

    def name(self) -> str:
        """The name the plugin is configured under."""
        return None

    def config(self, conf: Any) -> Any:
        """Parse the conf value text once; the result is ``filter``'s ``conf``."""
        return conf

    def filter(self, conf: Any, req, reply) -> None:
        """Change ``req`` to rewrite the request; change ``reply`` to answer (stop) it."""
