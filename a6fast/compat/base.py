"""``apisix.runner.plugin.base``: the plugin base class of the official runner's 0.1 releases.

A plugin subclasses ``Base``, calls ``super().__init__(name)`` and defines
``filter(self, request, response)``; ``self.config`` holds its conf decoded from JSON.  Two
formats were written against it:

- 0.1.0 (the official runner's first release): the plugin fills ``response`` and calls
  ``self.stop()``, or fills ``response.headers``/``args``/``path`` and calls ``self.rewrite()``;
- from the December 2021 refactor on: changing ``request`` rewrites the request, setting
  ``response`` fields stops it.

Which rule a plugin gets follows from what it does (does it call ``stop()``/``rewrite()``?): see
``a6fast.compat``.
"""
import threading

from .response import PLUGIN_ACTION_REWRITE, PLUGIN_ACTION_STOP

__all__ = ["Base", "PLUGIN_ACTION_STOP", "PLUGIN_ACTION_REWRITE"]

# The actions chosen in the call running on this thread: id(plugin) -> action.  There, the action
# was kept on the plugin instance and stayed for every later request; here it lasts one call.
_call = threading.local()


def calling(acted):
    """Record the ``stop()``/``rewrite()`` calls made on this thread into ``acted`` (a dict), or
    stop recording (None).  Returns what was recorded into before."""
    previous = getattr(_call, "acted", None)
    _call.acted = acted
    return previous


class Base:
    """Base of 0.1-style plugins: an instance per prepared conf, ``config`` set on it."""

    def __init__(self, name: str):
        self._name = name
        self._config = {}
        self._action = PLUGIN_ACTION_REWRITE

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = name

    @property
    def config(self) -> dict:
        """The conf (a JSON object); ``{}`` when the conf is absent or not an object."""
        return self._config

    @config.setter
    def config(self, config) -> None:
        self._config = config if isinstance(config, dict) and config else {}

    @property
    def action(self) -> int:
        """0.1.0: ``PLUGIN_ACTION_STOP`` or ``PLUGIN_ACTION_REWRITE`` (the default) for this call."""
        acted = getattr(_call, "acted", None)
        if acted is None:
            return getattr(self, "_action", PLUGIN_ACTION_REWRITE)
        return acted.get(id(self), PLUGIN_ACTION_REWRITE)

    @action.setter
    def action(self, action: int) -> None:
        self._action = action
        acted = getattr(_call, "acted", None)
        if acted is not None:
            acted[id(self)] = action

    def stop(self) -> None:
        """0.1.0: answer the client with ``response`` (status, headers, body)."""
        self.action = PLUGIN_ACTION_STOP

    def rewrite(self) -> None:
        """0.1.0: send the request upstream with ``response.headers``/``args``/``path``."""
        self.action = PLUGIN_ACTION_REWRITE

    # No default filter(): a plugin without one fails every call, as it did there.
