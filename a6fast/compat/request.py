"""``apisix.runner.http.request``: the request as official-runner plugins see it.

Both eras in one class: seed plugins use the attributes (``request.headers[...] = ...``,
``request.path = ...``), 0.2 plugins the getters and setters (``req.set_header(...)``,
``req.get_var(...)``).  Headers and args are plain dicts as there (one value per name, the last
one sent).  When the plugin returns, the differences from what it was given become this
call's changes.  It runs in a worker thread, so ``get_var``/``get_body`` may block.
"""
import ipaddress

__all__ = ["Request"]


def _exploded(src_ip):
    if not src_ip:
        return ""
    return ipaddress.ip_address(src_ip).exploded


class Request:
    """The proxied request of an official-runner plugin (HTTPReqCall)."""

    def __init__(self, request):
        self._request = request  # the a6fast Request of this call
        self._headers = dict(request.headers.items())
        self._args = dict(request.args.items())
        self._headers_given = self._headers
        self._args_given = self._args
        self._headers_before = dict(self._headers)
        self._args_before = dict(self._args)
        self._path = self._path_before = request.path or ""
        self._method = request.method
        self._src_ip = _exploded(request.src_ip)
        self._id = request.id
        self._conf_token = request.conf_token
        self._vars = {}
        self._body = None

    # seed-era attributes ------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._id

    @property
    def conf_token(self) -> int:
        return self._conf_token

    @property
    def method(self) -> str:
        return self._method

    @property
    def src_ip(self) -> str:
        """The client address, exploded ("127.0.0.1", "0000:...:0001"); "" when absent."""
        return self._src_ip

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

    # 0.2-era getters and setters ----------------------------------------------------------------
    def get_id(self) -> int:
        return self._id

    def get_conf_token(self) -> int:
        return self._conf_token

    def get_method(self) -> str:
        return self._method

    def get_remote_addr(self) -> str:
        return self._src_ip

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
        """Set a header (None deletes it); False without a name."""
        if not key:
            return False
        self._headers[key] = value
        return True

    def get_headers(self) -> dict:
        return self._headers

    def set_headers(self, headers: dict) -> bool:
        if not headers:
            return False
        self._headers = headers
        return True

    def get_arg(self, key: str) -> str:
        return self._args.get(key)

    def set_arg(self, key: str, value: str) -> bool:
        """Set a query arg (None deletes it); False without a name."""
        if not key:
            return False
        self._args[key] = value
        return True

    def get_args(self) -> dict:
        return self._args

    def set_args(self, args: dict) -> bool:
        if not args:
            return False
        self._args = args
        return True

    def get_var(self, key: str) -> str:
        """A gateway variable as text ("" when the gateway has none); asked once per call."""
        value = self._vars.get(key)
        if value is None:
            value = self._request.get_var(key)
            value = self._vars[key] = "" if value is None else value
        return value

    def get_vars(self) -> dict:
        return self._vars

    def get_body(self) -> str:
        """The request body as text ("" when empty); asked once per call."""
        if self._body is None:
            body = self._request.get_body()
            self._body = "" if body is None else body.decode("utf-8", "surrogateescape")
        return self._body

    # what changed ------------------------------------------------------------------------------
    def _apply(self):
        """Hand this plugin's changes to the a6fast Request of the call."""
        request = self._request
        if self._path != self._path_before and self._path:
            request.set_path(str(self._path))
        _apply_dict(self._headers, self._headers_given, self._headers_before,
                    request.set_header, request.add_header)
        _apply_dict(self._args, self._args_given, self._args_before,
                    request.set_arg, request.add_arg)


def _apply_dict(now, given, before, set_one, add_one):
    # A dict swapped in with set_headers()/`.headers =` adds to the request; the given dict
    # edited in place also deletes what the plugin removed from it.
    if now is given:
        for name in before:
            if name not in now:
                set_one(name, None)
    for name, value in now.items():
        if name in before and before[name] == value:
            continue
        if isinstance(value, (list, tuple)):
            set_one(str(name), None)
            for item in value:
                add_one(str(name), str(item))
        else:
            set_one(str(name), None if value is None else str(value))
