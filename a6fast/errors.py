"""The one error hierarchy of a6fast, shared by the compiled and the pure codec."""


class A6Error(Exception):
    """Base class of every error a6fast raises on purpose."""


class DecodeError(A6Error, ValueError):
    """Bytes from the socket are not a well-formed message of the expected type."""


class EncodeError(A6Error, ValueError):
    """A value cannot be written as a protocol message (wrong type, too large for one frame)."""


class ConfError(A6Error):
    """A PrepareConf cannot be accepted: unknown plugin name or a conf the plugin rejects."""


class UnknownPlugin(ConfError):
    """A PrepareConf names a plugin that is not loaded."""

    def __init__(self, name):
        super().__init__("unknown plugin %r" % (name,))
        self.name = name


class PluginTimeout(A6Error):
    """A call did not finish before its deadline."""


class TooManyPlugins(DecodeError):
    """A PrepareConf lists more plugins than the reader was told to take; none of them was read.

    ``count`` is how many it lists, ``limit`` the most taken, ``key`` the PrepareConf's key."""

    def __init__(self, count, limit, key):
        super().__init__("PrepareConf lists %d plugins, more than %d" % (count, limit))
        self.count = count
        self.limit = limit
        self.key = key
