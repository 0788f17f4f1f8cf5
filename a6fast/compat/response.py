"""``apisix.runner.http.response``: the answer an official-runner plugin may give instead.

Setting anything on it (headers, body, status code) stops the request: the gateway answers the
client with it and later plugins do not run.  Seed plugins set the attributes, 0.2 plugins
call the setters; both are here.
"""

__all__ = ["Response"]


class Response:
    """The client answer of an official-runner plugin (an HTTPReqCall Stop once changed)."""

    def __init__(self, req_id: int = 0):
        self._headers = {}
        self._body = ""
        self._status_code = 0
        self._req_id = req_id

    # seed-era attributes ------------------------------------------------------------------------
    @property
    def headers(self) -> dict:
        return self._headers

    @headers.setter
    def headers(self, headers: dict) -> None:
        self._headers = headers

    @property
    def body(self):
        return self._body

    @body.setter
    def body(self, body) -> None:
        self._body = body

    @property
    def status_code(self) -> int:
        return self._status_code

    @status_code.setter
    def status_code(self, status_code: int) -> None:
        self._status_code = status_code

    # 0.2-era getters and setters ----------------------------------------------------------------
    def get_header(self, key: str) -> str:
        return self._headers.get(key)

    def set_header(self, key: str, value: str) -> bool:
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
        return self._req_id

    def set_req_id(self, req_id: int) -> bool:
        if req_id:
            self._req_id = req_id
            return True
        return False

    def changed(self) -> bool:
        """True once anything was set: the request is then stopped with this answer."""
        return bool(self._body or self._headers or self._status_code)

    # the Stop ----------------------------------------------------------------------------------
    def _stop_args(self):
        """``(status, header pairs, body bytes)`` for ``a6fast.Request.stop``."""
        pairs = []
        for name, value in (self._headers or {}).items():
            if isinstance(value, (list, tuple)):
                pairs.extend((str(name), str(item)) for item in value)
            elif value is not None:
                pairs.append((str(name), str(value)))
        body = self._body
        if not body:
            body = None
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
        else:
            # get_body()/get_var() text of undecodable bytes goes back as those bytes
            body = str(body).encode("utf-8", "surrogateescape")
        return int(self._status_code or 200), pairs or None, body
