"""``apisix.runner.http.response``: the answer an official-runner plugin may give instead.

One class for every release: the attributes of 0.1 (``headers``, ``body``, ``status_code``, and
``path``/``args``/``action_type`` that a 0.1.0 plugin fills before ``self.rewrite()``) and the
getters and setters of 0.2.  Setting a header, the body or the status code is what "changed"
means: the request is then stopped with this answer (unless a 0.1.0 plugin called
``self.rewrite()``, see ``a6fast.compat``).
"""
from ..protocol import ACTION_REWRITE, ACTION_STOP, RPC_HTTP_REQ_CALL

__all__ = ["Response", "PLUGIN_ACTION_STOP", "PLUGIN_ACTION_REWRITE", "RESP_MAX_DATA_SIZE"]

PLUGIN_ACTION_STOP = ACTION_STOP
PLUGIN_ACTION_REWRITE = ACTION_REWRITE
# The value plugins saw there (meant as the 3-byte frame limit, it is one more).
RESP_MAX_DATA_SIZE = 2 << 23


def text_of(value, what):
    """A header/arg name or value as str: str as is, bytes decoded (any byte survives), numbers
    spelled out.  Anything else is a plugin bug: TypeError, so the call fails closed."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "surrogateescape")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError("%s must be a str, not %s" % (what, type(value).__name__))


def pairs_of(entries, what):
    """``(name, value)`` pairs of a headers/args dict (or list of pairs); a list value repeats
    the name; a None value is kept as None (the caller decides what it means)."""
    if isinstance(entries, dict):
        items = entries.items()
    elif isinstance(entries, (list, tuple)):
        items = entries
    else:
        raise TypeError("%s must be a dict, not %s" % (what, type(entries).__name__))
    pairs = []
    for item in items:
        name, value = item
        name = text_of(name, what + " name")
        if value is None:
            pairs.append((name, None))
        elif isinstance(value, (list, tuple)):
            pairs.extend((name, text_of(v, what + " value")) for v in value)
        else:
            pairs.append((name, text_of(value, what + " value")))
    return pairs


class Response:
    """The client answer of an official-runner plugin (a Stop once changed)."""

    def __init__(self, ty: int = RPC_HTTP_REQ_CALL):
        self._rpc_type = ty
        self._id = 0
        self._token = 0
        self._body = ""
        self._path = ""
        self._args = {}
        self._headers = {}
        self._status_code = 0
        self._error_code = 0
        self._action_type = 0

    @classmethod
    def _for_call(cls, call_id):
        reply = cls()
        reply._id = call_id
        return reply

    # 0.1 attributes ------------------------------------------------------------------------------
    @property
    def rpc_type(self) -> int:
        return self._rpc_type

    @rpc_type.setter
    def rpc_type(self, rpc_type: int) -> None:
        self._rpc_type = rpc_type

    @property
    def id(self) -> int:
        """The call's id (setting it does not change the id the answer carries)."""
        return self._id

    @id.setter
    def id(self, resp_id: int) -> None:
        self._id = resp_id

    @property
    def token(self) -> int:
        return self._token

    @token.setter
    def token(self, token: int) -> None:
        self._token = token

    @property
    def body(self):
        return self._body

    @body.setter
    def body(self, body) -> None:
        self._body = body

    @property
    def path(self) -> str:
        """0.1.0: the path a ``self.rewrite()`` plugin sends the request to."""
        return self._path

    @path.setter
    def path(self, path: str) -> None:
        self._path = path

    @property
    def args(self) -> dict:
        """0.1.0: query args a ``self.rewrite()`` plugin sets."""
        return self._args

    @args.setter
    def args(self, args: dict) -> None:
        self._args = args

    @property
    def headers(self) -> dict:
        return self._headers

    @headers.setter
    def headers(self, headers: dict) -> None:
        self._headers = headers

    @property
    def status_code(self) -> int:
        return self._status_code

    @status_code.setter
    def status_code(self, status_code: int) -> None:
        self._status_code = status_code

    @property
    def error_code(self) -> int:
        return self._error_code

    @error_code.setter
    def error_code(self, error_code: int = 0) -> None:
        self._error_code = error_code

    @property
    def action_type(self) -> int:
        """0.1.0: the action of the plugins run so far in this call (0 before any)."""
        return self._action_type

    @action_type.setter
    def action_type(self, action_type: int = 0) -> None:
        # As there: the runner, not this attribute, decides the action.
        self._action_type = action_type

    def reset(self) -> None:
        """Forget everything set so far."""
        call_id = self._id
        self.__init__(self._rpc_type)
        self._id = call_id

    # 0.2 getters and setters ---------------------------------------------------------------------
    def get_header(self, key: str) -> str:
        return self._headers.get(key)

    def set_header(self, key: str, value: str) -> bool:
        """Set a header of the answer; ignored (False) without a name or with an empty value."""
        if key and value:
            self._headers[key] = value
            return True
        return False

    def get_headers(self) -> dict:
        return self._headers

    def set_headers(self, headers: dict) -> bool:
        if headers:
            self._headers = headers
            return True
        return False

    def get_body(self) -> str:
        return self._body

    def set_body(self, body: str) -> bool:
        if body:
            self._body = body
            return True
        return False

    def get_status_code(self) -> int:
        """The status to answer with: 200 unless one was set."""
        return self._status_code or 200

    def set_status_code(self, status_code: int) -> bool:
        if status_code and 100 <= status_code <= 599:
            self._status_code = status_code
            return True
        return False

    def get_req_id(self) -> int:
        return self._id

    def set_req_id(self, req_id: int) -> bool:
        if req_id:
            self._id = req_id
            return True
        return False

    def changed(self) -> bool:
        """True once anything that makes an answer was set: the request is then stopped."""
        return bool(self._body or self._headers or self._status_code or self._token
                    or self._error_code)

    # the Stop ----------------------------------------------------------------------------------
    def _stop_args(self):
        """``(status, header pairs, body)`` for ``a6fast.Request.stop``: what was set, checked."""
        status = self._status_code or 200
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError("status_code must be an int, not %s" % type(status).__name__)
        pairs = None
        if self._headers:
            # A header without a value has nothing to send to the client.
            pairs = [(n, v) for n, v in pairs_of(self._headers, "a response header")
                     if v is not None] or None
        body = self._body
        if not body:
            body = None
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        elif isinstance(body, str):
            # text that get_body()/get_var() decoded goes back as the bytes it came from
            body = body.encode("utf-8", "surrogateescape")
        else:
            raise TypeError("a response body must be str or bytes, not %s"
                            % type(body).__name__)
        return status, pairs, body
