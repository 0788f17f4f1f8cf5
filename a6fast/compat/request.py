"""``apisix.runner.http.request``: the request as official-runner plugins see it.

One class for every release: the attributes of 0.1 (``request.headers[...] = ...``,
``request.path = ...``) and the getters and setters of 0.2 (``req.set_header(...)``,
``req.get_var(...)``).  Headers and args are plain dicts as there (one value per name, the last one
sent; a bare ``?flag`` has the value None).  When the plugins of a call are done, the differences
from what they were given become the call's changes, made through a6fast's own ``Request`` (so its
checks apply); names nobody touched keep every value they had.  It runs in a worker thread, so
``get_var``/``get_body`` may block.
"""
import ipaddress
import logging

from ..protocol import RPC_HTTP_REQ_CALL
from .response import pairs_of, text_of

__all__ = ["Request"]

# What 0.2's set_method() accepted.
_SETTABLE_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")


def _exploded(src_ip):
    if not src_ip:
        return ""
    return ipaddress.ip_address(src_ip).exploded


class _RPC:
    """What 0.2 plugins reach through ``req.r``: the runner's logger."""

    __slots__ = ("log",)

    def __init__(self):
        from .server import Logger
        self.log = Logger(logging.NOTSET)


class Request:
    """The proxied request of an official-runner plugin (HTTPReqCall)."""

    def __init__(self, request):
        self._request = request  # the a6fast Request of this call
        self._headers = self._headers_given = dict(request.headers.items())
        self._args = self._args_given = dict(request.args.items())
        self._headers_before = dict(self._headers)
        self._args_before = dict(self._args)
        self._path = self._path_before = request.path or ""
        self._method = request.method
        self._src_ip = _exploded(request.src_ip)
        self._id = request.id
        self._conf_token = request.conf_token
        self._rpc_type = RPC_HTTP_REQ_CALL
        self._configs = {}
        self._vars = {}
        self._body = ""
        self._err_code = 0
        self._r = None

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
    def id(self, req_id: int) -> None:
        self._id = req_id

    @property
    def conf_token(self) -> int:
        return self._conf_token

    @conf_token.setter
    def conf_token(self, conf_token: int) -> None:
        self._conf_token = conf_token

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, method: str) -> None:
        self._method = method

    @property
    def src_ip(self) -> str:
        """The client address, exploded ("127.0.0.1", "0000:...:0001"); "" when absent."""
        return self._src_ip

    @src_ip.setter
    def src_ip(self, src_ip: str) -> None:
        self._src_ip = src_ip

    @property
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, path: str) -> None:
        self._path = path

    @property
    def headers(self) -> dict:
        return self._headers

    @headers.setter
    def headers(self, headers: dict) -> None:
        self._headers = headers

    @property
    def args(self) -> dict:
        return self._args

    @args.setter
    def args(self, args: dict) -> None:
        self._args = args

    @property
    def configs(self) -> dict:
        """Empty during a call, as there (the runner filled it for PrepareConf only)."""
        return self._configs

    @configs.setter
    def configs(self, configs: dict) -> None:
        self._configs = configs

    @property
    def err_code(self) -> int:
        return self._err_code

    @err_code.setter
    def err_code(self, err_code: int) -> None:
        self._err_code = err_code

    # The same attribute was called ``code`` before 0.2.
    code = err_code

    @property
    def r(self):
        """0.2's handle on the runner; plugins use its ``log``."""
        if self._r is None:
            self._r = _RPC()
        return self._r

    def reset(self) -> None:
        """Empty every field, as there (the request itself is then left unchanged)."""
        self._headers = {}
        self._args = {}
        self._path = ""
        self._method = ""
        self._src_ip = ""
        self._id = 0
        self._conf_token = 0
        self._configs = {}

    # 0.2 getters and setters ---------------------------------------------------------------------
    def get_id(self) -> int:
        return self._id

    def set_id(self, req_id: int) -> bool:
        if req_id:
            self._id = req_id
            return True
        return False

    def get_conf_token(self) -> int:
        return self._conf_token

    def set_conf_token(self, conf_token: int) -> bool:
        if conf_token:
            self._conf_token = conf_token
            return True
        return False

    def get_method(self) -> str:
        return self._method

    def set_method(self, method: str) -> bool:
        """Change what ``get_method()`` says (the proxied method stays as it is)."""
        if method and method.upper() in _SETTABLE_METHODS:
            self._method = method
            return True
        return False

    def get_remote_addr(self) -> str:
        return self._src_ip

    def set_remote_addr(self, remote_addr: str) -> bool:
        if remote_addr:
            self._src_ip = remote_addr
            return True
        return False

    def get_uri(self) -> str:
        return self._path

    def set_uri(self, uri: str) -> bool:
        if uri and isinstance(uri, str) and uri.startswith("/"):
            self._path = uri
            return True
        return False

    def get_header(self, key: str) -> str:
        return self._headers.get(key)

    def set_header(self, key: str, value: str) -> bool:
        """Set a request header; ignored (False) without a name or with an empty value."""
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

    def get_arg(self, key: str) -> str:
        return self._args.get(key)

    def set_arg(self, key: str, value: str) -> bool:
        """Set a query arg; ignored (False) without a name or with an empty value."""
        if key and value:
            self._args[key] = value
            return True
        return False

    def get_args(self) -> dict:
        return self._args

    def set_args(self, args: dict) -> bool:
        if args:
            self._args = args
            return True
        return False

    def get_config(self, key: str):
        return self._configs.get(key)

    def set_config(self, key: str, value) -> bool:
        if key:
            self._configs[key] = value
            return True
        return False

    def get_configs(self) -> dict:
        """Empty during a call, as there; the plugin's conf is ``filter``'s ``conf``."""
        return self._configs

    def set_configs(self, configs: dict) -> bool:
        if configs:
            self._configs = configs
            return True
        return False

    def get_var(self, key: str) -> str:
        """A gateway variable as text ("" when the gateway has none)."""
        value = self._vars.get(key)
        if not value:
            # a6fast asks the gateway once per call; this returns its cached answer after that
            raw = self._request.get_var(key)
            value = "" if raw is None else raw
            self.set_var(key, value)
        return value

    def set_var(self, key: str, val: str) -> bool:
        """What ``get_var(key)`` answers from now on in this call (nothing is sent)."""
        if key and val:
            self._vars[key] = val
            return True
        return False

    def get_body(self) -> str:
        """The request body as text ("" when empty): UTF-8, any other byte kept as an escape."""
        if not self._body:
            body = self._request.get_body()
            self.set_body("" if body is None else body.decode("utf-8", "surrogateescape"))
        return self._body

    def set_body(self, body: str) -> bool:
        """What ``get_body()`` answers from now on in this call (the body sent upstream stays)."""
        if body:
            self._body = body
            return True
        return False

    def checked(self) -> bool:
        """True when there is a path, a header or an arg (what 0.2 checked before answering)."""
        return bool(self._path or self._headers or self._args)

    # what changed ------------------------------------------------------------------------------
    def _apply(self, reply=None):
        """Hand the changes to the a6fast Request of the call.  ``reply``: a 0.1.0 plugin that
        called ``self.rewrite()`` also rewrites with ``reply.headers``/``args``/``path``."""
        request = self._request
        path = self._path
        if reply is not None and reply.path:
            path = reply.path
        if path and path != self._path_before:
            request.set_path(text_of(path, "a path"))
        _apply_entries(self._headers, self._headers_given, self._headers_before,
                       reply.headers if reply is not None else None, "a request header",
                       request.set_header, request.add_header)
        _apply_entries(self._args, self._args_given, self._args_before,
                       reply.args if reply is not None else None, "a query arg",
                       request.set_arg, request.add_arg)


def _apply_entries(now, given, before, overlay, what, set_one, add_one):
    """Set every name whose value differs from what the plugin was given.

    The dict the plugin was given, edited in place, also deletes the names taken out of it; a dict
    swapped in (``set_headers()``, ``.headers = ...``) only sets its names, as there.  A None value
    deletes.  A list value sends each item.
    """
    final = {}
    for name, value in pairs_of(now, what):
        _merge(final, name, value)
    deleted = ()
    if now is given:
        deleted = [name for name in before if name not in now]
    if overlay:
        overlaid = {}
        for name, value in pairs_of(overlay, what):
            _merge(overlaid, name, value)
        final.update(overlaid)
    for name in deleted:
        if name not in final:
            set_one(name, None)
    for name, value in final.items():
        if name in before and before[name] == value:
            continue
        if isinstance(value, list):
            set_one(name, None)
            for item in value:
                add_one(name, "" if item is None else item)
        else:
            set_one(name, value)


def _merge(into, name, value):
    # pairs_of spreads a list value over pairs: gather them back per name
    if name in into:
        old = into[name]
        into[name] = (old if isinstance(old, list) else [old]) + [value]
    else:
        into[name] = value
