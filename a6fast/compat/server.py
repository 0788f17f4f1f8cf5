"""``apisix.runner.server.logger``, ``.response`` and ``.protocol``: the parts of the official
runner's server package a plugin may use (its logger, status numbers and frame header helper).

The runner itself (``server.server``, ``server.handle``, ``server.config``, ``plugin.cache``) is
a6fast's own; ``a6fast check`` points at a plugin that imports those.
"""
import logging

from ..protocol import BAD_REQUEST, CONF_TOKEN_NOT_FOUND, SERVICE_UNAVAILABLE

__all__ = ["Logger", "Response", "Protocol", "RESP_STATUS_CODE_OK", "RESP_STATUS_MESSAGE_OK",
           "RESP_STATUS_CODE_BAD_REQUEST", "RESP_STATUS_MESSAGE_BAD_REQUEST",
           "RESP_STATUS_CODE_SERVICE_UNAVAILABLE", "RESP_STATUS_CODE_CONF_TOKEN_NOT_FOUND",
           "RUNNER_SUCCESS_CODE", "RUNNER_SUCCESS_MESSAGE", "RUNNER_ERROR_CODE",
           "RUNNER_ERROR_MESSAGE", "errorCodes"]

LOGGER_NAMES = ("Logger",)
PROTOCOL_NAMES = ("Protocol",)
RESPONSE_NAMES = tuple(name for name in __all__ if name not in ("Logger", "Protocol"))

RESP_STATUS_CODE_OK = 200
RESP_STATUS_MESSAGE_OK = "OK"
RESP_STATUS_CODE_BAD_REQUEST = BAD_REQUEST
RESP_STATUS_MESSAGE_BAD_REQUEST = "Bad Request"
RESP_STATUS_CODE_SERVICE_UNAVAILABLE = SERVICE_UNAVAILABLE
RESP_STATUS_CODE_CONF_TOKEN_NOT_FOUND = CONF_TOKEN_NOT_FOUND
# The same numbers under their names before the first release.
RUNNER_SUCCESS_CODE = 200
RUNNER_SUCCESS_MESSAGE = "OK"
RUNNER_ERROR_CODE = 500
RUNNER_ERROR_MESSAGE = "ERR"
errorCodes = [CONF_TOKEN_NOT_FOUND, BAD_REQUEST, SERVICE_UNAVAILABLE]

_plugin_log = logging.getLogger("a6fast.plugins.official")


class Logger:
    """The official runner's logger: ``info/error/debug/warn(message, *objs)`` with
    ``message.format(*objs)``.  Here it writes to a6fast's log (logger
    ``a6fast.plugins.official``); the level is a6fast's, not the one given."""

    def __init__(self, level: int = logging.NOTSET):
        # That logger added a handler to the root logger each time one was made; a6fast's logging
        # is set up once by the server.
        self.logger = _plugin_log
        self.level = level

    def set_level(self, level: int) -> None:
        self.level = level

    def info(self, message: str, *objs) -> None:
        self.logger.info(message.format(*objs))

    def error(self, message: str, *objs) -> None:
        self.logger.error(message.format(*objs))

    def debug(self, message: str, *objs) -> None:
        self.logger.debug(message.format(*objs))

    def warn(self, message: str, *objs) -> None:
        self.logger.warning(message.format(*objs))


class Response:
    """A result of the runner's own steps: ``code``, ``message``, ``data``, ``type``."""

    def __init__(self, code: int = 0, message: str = "", data: bytes = b"", ty: int = 0):
        self._code = code
        self._message = message
        self._data = data
        self._type = ty

    def __eq__(self, other) -> bool:
        return (isinstance(other, Response) and self.code == other.code
                and self.message == other.message and self.data == other.data
                and self.type == other.type)

    __hash__ = None

    @property
    def code(self) -> int:
        return self._code

    @property
    def message(self) -> str:
        return self._message

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def type(self) -> int:
        return self._type


class Protocol:
    """The 4-byte frame header: ``encode()`` puts it before ``buffer``, ``decode()`` reads
    ``type`` and ``length`` from a 4-byte ``buffer``; each returns a ``Response`` (code 200 when
    it worked)."""

    def __init__(self, buffer: bytes = b"", ty: int = 0):
        self._buffer = buffer
        self._type = ty
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    @property
    def type(self) -> int:
        return self._type

    @property
    def buffer(self) -> bytes:
        return self._buffer

    def encode(self) -> Response:
        size = len(self._buffer)
        if size == 0:
            return Response(RESP_STATUS_CODE_BAD_REQUEST, "send buffer is empty")
        if size >= 1 << 24:
            return Response(RESP_STATUS_CODE_BAD_REQUEST, "send buffer is larger than a frame")
        self._buffer = bytes([self._type & 0xFF]) + size.to_bytes(3, "big") + self._buffer
        self._length = len(self._buffer)
        return Response(RESP_STATUS_CODE_OK, RESP_STATUS_MESSAGE_OK)

    def decode(self) -> Response:
        size = len(self._buffer)
        if size == 0:
            return Response(RESP_STATUS_CODE_BAD_REQUEST, "recv buffer is empty")
        if size != 4:
            return Response(RESP_STATUS_CODE_BAD_REQUEST,
                            "recv protocol type length is 4, got %d" % size)
        self._type = self._buffer[0]
        self._length = int.from_bytes(self._buffer[1:4], "big")
        return Response(RESP_STATUS_CODE_OK, RESP_STATUS_MESSAGE_OK)
