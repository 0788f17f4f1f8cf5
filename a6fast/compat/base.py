"""``apisix.runner.plugin.base``: the seed-era plugin base class.

A plugin subclasses ``Base``, calls ``super().__init__(name)`` and defines
``filter(self, request, response)``; ``self.config`` holds its conf decoded from JSON.
"""

__all__ = ["Base"]


class Base:
    """Base of seed-style plugins: a fresh instance per prepared conf, ``config`` set on it."""

    def __init__(self, name: str):
        self._name = name
        self._config = {}

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

    def filter(self, request, response):
        """Override: read/modify ``request`` (rewrite) or set ``response`` fields (stop)."""
