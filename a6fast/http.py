"""What plugin hooks receive: ``Request`` (HTTPReqCall) and ``Response`` (HTTPRespCall).

Both wrap the decoded codec object and build nothing until it is used: a plugin that reads only
the path never touches the headers.  Changes are recorded as made and turned into the answer
frame once the chain is done.  One object serves one call on one thread at a time (the loop, or
the worker running a plain ``def`` hook), so nothing here locks.
"""
import re
from socket import AF_INET, AF_INET6, inet_ntop
from threading import get_ident
from typing import Iterator, List, Optional, Tuple, Union

from .codec import (encode_http_resp_call_resp, encode_no_action, encode_rewrite,
                    encode_stop)
from .protocol import INFO_REQ_BODY, INFO_RESP_BODY, INFO_VAR, METHODS

__all__ = ["Request", "Response", "Headers", "Args"]

_BODY = object()  # the body's key in the per-call ExtraInfo cache

# What a plugin sends must be valid HTTP once the gateway writes it (RFC 9110).  A name is a
# token (5.1).  A value is a field-value (5.5): visible characters and obs-text (any non-ASCII
# text, sent as UTF-8; an escaped byte \udc80-\udcff goes back as that byte), with SP and HTAB
# inside only: HTTP/2 forbids them at either end.  Other lone surrogates cannot be encoded.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
_VCHAR = "[^\x00-\x20\x7f\ud800-\udc7f\udd00-\udfff]"
_FIELD_VALUE = re.compile("(?:%s(?:[^\x00-\x08\x0a-\x1f\x7f\ud800-\udc7f\udd00-\udfff]*%s)?)?"
                          % (_VCHAR, _VCHAR)).fullmatch
# Query args and the path are percent-encoded by the gateway; NUL, CR and LF are refused anyway.
_UNSAFE_TEXT = re.compile("[\x00\r\n\ud800-\udc7f\udd00-\udfff]").search

# Headers the gateway (nginx) writes itself, as it frames the body and owns the connection: one
# from a plugin would go out beside nginx's own (two Transfer-Encoding or Connection lines).
_GATEWAY_OWNED = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer",
                            "transfer-encoding", "upgrade"))
# Upstream's headers that are not sent back: the above, its Content-Length (the body may change
# and nginx counts what it sends) and the proxy authentication meant for the gateway itself.
_NOT_ECHOED = _GATEWAY_OWNED | {"content-length", "proxy-authenticate", "proxy-authorization"}
_FRAMING = _GATEWAY_OWNED | {"content-length"}

# Header names and values already found valid, so the usual ones cost a lookup instead of a
# regex match: plugins send the same few names, and mostly the same values, on every call.
# Each is emptied when full, so a plugin making up names or values cannot grow it.
_NAMES_SEEN = {}     # header name -> its lower-case key
_VALUES_SEEN = set()
_SEEN_MAX = 1024
_SEEN_VALUE_MAX = 128  # longer values are checked each time

Pairs = Union[dict, List[Tuple[str, Optional[str]]]]


def _text(value, what):
    # a str subclass is sent as the plain str it holds
    if isinstance(value, str):
        return str(value)
    raise TypeError("%s must be a str, not %s" % (what, type(value).__name__))


def _header_key(name):
    """The lower-case key of header name ``name``, which must be an HTTP token."""
    key = _NAMES_SEEN.get(name) if type(name) is str else None
    if key is None:
        if type(name) is not str:
            raise TypeError("a header name must be a str, not %r" % (name,))
        if _TOKEN(name) is None:
            raise ValueError("header name %r is not an HTTP token (RFC 9110 5.1)" % (name,))
        if len(_NAMES_SEEN) >= _SEEN_MAX:
            _NAMES_SEEN.clear()
        key = _NAMES_SEEN[name] = name.lower()
    return key


def _header_value(name, value):
    """``value`` for header ``name``, which must be an HTTP field value (a plain str)."""
    if type(value) is not str:
        value = _text(value, "header %r value" % (name,))
        if value in _VALUES_SEEN:
            return value
    if _FIELD_VALUE(value) is None:
        raise ValueError("header %r value %r is not an HTTP field value: control characters "
                         "(CR, LF, NUL ...) are not allowed, nor SP/HTAB at either end"
                         % (name, value))
    if len(value) <= _SEEN_VALUE_MAX:
        if len(_VALUES_SEEN) >= _SEEN_MAX:
            _VALUES_SEEN.clear()
        _VALUES_SEEN.add(value)
    return value


def _check_header(name, value):
    """``value`` for header ``name``, both checked as valid HTTP (ValueError naming the field)."""
    if type(name) is not str or name not in _NAMES_SEEN:
        _header_key(name)
    if type(value) is not str or value not in _VALUES_SEEN:
        value = _header_value(name, value)
    return value


def _check_arg_name(name):
    if type(name) is not str:
        raise TypeError("an arg name must be a str, not %r" % (name,))
    if not name or _UNSAFE_TEXT(name) is not None:
        raise ValueError("arg name %r is empty or holds NUL, CR or LF" % (name,))


def _check_arg(name, value):
    if type(name) is not str or not name or _UNSAFE_TEXT(name) is not None:
        _check_arg_name(name)
    if type(value) is not str:
        value = _text(value, "arg %r value" % (name,))
    if _UNSAFE_TEXT(value) is not None:
        raise ValueError("arg %r value %r holds NUL, CR or LF" % (name, value))
    return value


def _bad_status(status, zero):
    if zero:
        raise ValueError("status must be 0 (the gateway's default) or an int in 100..599, not %r"
                         % (status,))
    raise ValueError("status must be an int in 100..599, not %r" % (status,))


def _gateway_owned(name):
    raise ValueError("header %r is the gateway's own (it frames the body and owns the "
                     "connection): a plugin cannot set it" % (name,))


def _check_resp_header(name, value):
    """A Rewrite resp_header: no body goes with it, so no Content-Length can agree with one."""
    value = _check_header(name, value)
    if _header_key(name) in _FRAMING:
        _gateway_owned(name)
    return value


def _check_content_length(values, body, what):
    """A Content-Length a plugin set must be the one length of the body the gateway sends."""
    if (len(values) != 1 or not values[0].isascii() or not values[0].isdigit()
            or int(values[0]) != len(body)):
        raise ValueError("header 'Content-Length' %r disagrees with %s (%d bytes): leave "
                         "Content-Length to the gateway" % (values, what, len(body)))


def _stop_headers(headers, body):
    """Stop's headers as a new list of checked pairs: a list or dict the plugin changes after
    ``stop()`` is not what is sent."""
    if isinstance(headers, dict):
        items = []
        for name, value in headers.items():
            if isinstance(value, (list, tuple)):
                for item in value:
                    items.append((name, item))
            else:
                items.append((name, value))
    else:
        items = headers
    pairs = []
    lengths = None
    for name, value in items:
        key = _NAMES_SEEN.get(name) if type(name) is str else None
        if key is None:
            key = _header_key(name)
        if value is not None:   # no value: the gateway clears the header
            if type(value) is not str or value not in _VALUES_SEEN:
                value = _header_value(name, value)
            if key in _FRAMING:
                if key != "content-length":
                    _gateway_owned(name)
                if lengths is None:
                    lengths = []
                lengths.append(value)
        pairs.append((name, value))
    if lengths is not None:
        if not body:
            raise ValueError("header 'Content-Length' %r in a Stop without a body: the gateway "
                             "answers with a page of its own" % (lengths,))
        _check_content_length(lengths, body, "the Stop body")
    return pairs


class _EntryView:
    """A read-only multi-valued view of headers or args, reflecting this call's changes.

    ``v[name]`` is the first value (KeyError if absent), ``get(name, default)``,
    ``getall(name)`` every value (``[]`` if absent), ``name in v``, ``len(v)`` (number of
    values), iteration over names (repeated for multi-valued ones) and ``items()`` (all pairs).
    """

    __slots__ = ("_src", "_attr", "_changes")

    def __init__(self, src, attr):
        # The codec object's list is fetched (and decoded) only by what needs every entry.
        self._src = src
        self._attr = attr
        self._changes = None  # key -> (name as given, [values]); [] means deleted

    # reading ------------------------------------------------------------------------------------
    def _key(self, name):
        return name

    def _original(self):
        return getattr(self._src, self._attr)

    def _values(self, name):
        k = self._key(name)
        changes = self._changes
        if changes is not None:
            change = changes.get(k)
            if change is not None:
                return change[1]
        # one name: found by the codec in the encoded entries, none of the others decoded
        return self._find(name)

    def __getitem__(self, name: str) -> Optional[str]:
        values = self._values(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def get(self, name: str, default=None) -> Optional[str]:
        """The first value of ``name``, or ``default`` when absent."""
        values = self._values(name)
        return values[0] if values else default

    def getall(self, name: str) -> List[Optional[str]]:
        """Every value of ``name`` in order; ``[]`` when absent."""
        return list(self._values(name))

    def __contains__(self, name) -> bool:
        return bool(self._values(name))

    def items(self) -> List[Tuple[str, Optional[str]]]:
        """All ``(name, value)`` pairs: the untouched originals, then the changed names."""
        changes = self._changes
        if not changes:
            return [(name, value) for name, value in self._original()]
        key = self._key
        pairs = [(name, value) for name, value in self._original() if key(name) not in changes]
        for name, values in changes.values():
            for value in values:
                pairs.append((name, value))
        return pairs

    def keys(self) -> List[str]:
        return [name for name, _ in self.items()]

    def values(self) -> List[Optional[str]]:
        return [value for _, value in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items())

    def __repr__(self):
        return "<%s %r>" % (type(self).__name__, self.items())

    # changing (through Request/Response methods) --------------------------------------------------
    def _change(self, name, values):
        changes = self._changes
        if changes is None:
            changes = self._changes = {}
        changes[self._key(name)] = (name, values)

    def _set(self, name, value):
        if value is None:
            self._check_name(name)
            self._change(name, [])
        else:
            self._change(name, [self._check(name, value)])

    def _add(self, name, value):
        value = self._check(name, value)
        self._change(name, list(self._values(name)) + [value])

    def _delete(self, name):
        self._check_name(name)
        self._change(name, [])

    def _rewrite_entries(self):
        """Rewrite's entries for the touched names: their final values, or (name, None)."""
        changes = self._changes
        if not changes:
            return None
        entries = []
        for name, values in changes.values():
            if not values:
                entries.append((name, None))
            elif len(values) == 1:
                entries.append((name, values[0]))
            else:
                # A valueless entry would delete: a bare original ?flag kept beside new
                # values is sent as empty.
                for value in values:
                    entries.append((name, "" if value is None else value))
        return entries


class Headers(_EntryView):
    """Headers: names are case-insensitive."""

    __slots__ = ()

    def _key(self, name):
        return name.lower()

    def _find(self, name):
        return self._src.header_values(name)

    _check_name = staticmethod(_header_key)
    _check = staticmethod(_check_header)


class Args(_EntryView):
    """Query args: names are case-sensitive; a bare ``?flag`` has value None, ``?y=`` has ""."""

    __slots__ = ()

    def _find(self, name):
        # a name that is no str names no arg (the codec's lookup would raise TypeError)
        return self._src.arg_values(name) if isinstance(name, str) else ()

    _check_name = staticmethod(_check_arg_name)
    _check = staticmethod(_check_arg)


def _as_bytes(body):
    if type(body) is bytes:
        return body
    if isinstance(body, str):
        # the escapes var() made of undecodable bytes turn back into those bytes
        return body.encode("utf-8", "surrogateescape")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise TypeError("a body must be str or bytes, not %s" % type(body).__name__)


class _Phase:
    """What both phases share: the codec object, the call's context, cached ExtraInfo."""

    # _thread is the loop's (calls start there): the blocking getters refuse to run on it.  An
    # inline call has no context (ctx None) and runs on the loop: it cannot wait at all.
    __slots__ = ("_req", "_ctx", "_thread", "_cache")

    @property
    def id(self) -> int:
        """The call's id (0 is a legal id)."""
        return self._req.id

    @property
    def conf_token(self) -> int:
        return self._req.conf_token

    async def _extra(self, info_type, key, name):
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        elif key in cache:
            return cache[key]
        raw = await self._ctx.extra_info(info_type, name)
        cache[key] = raw
        return raw

    def _extra_blocking(self, info_type, key, name, what):
        if self._ctx is None or get_ident() == self._thread:
            instead = "request.var(name)" if info_type == INFO_VAR else "request.body()"
            raise RuntimeError(
                "%s() waits for the gateway and would stall every call on the loop: use "
                "'await %s' in an async def hook, or a plain def hook (which runs in a worker "
                "thread)" % (what, instead))
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        elif key in cache:
            return cache[key]
        raw = self._ctx.extra_info_blocking(info_type, name)
        cache[key] = raw
        return raw

    async def var(self, name: str) -> Optional[str]:
        """A gateway variable (``remote_addr``, ``route_id``, ``http_x`` ...); None if unknown.

        Asks the gateway once per call and name (ExtraInfo); await it in an async def hook.
        """
        raw = await self._extra(INFO_VAR, name, name)
        return None if raw is None else raw.decode("utf-8", "surrogateescape")

    def get_var(self, name: str) -> Optional[str]:
        """``var()`` for plain def hooks (worker threads): blocks until the gateway answers."""
        raw = self._extra_blocking(INFO_VAR, name, name, "get_var")
        return None if raw is None else raw.decode("utf-8", "surrogateescape")


class Request(_Phase):
    """The proxied request, in the request phase (HTTPReqCall).

    Read: ``id``, ``conf_token``, ``method``, ``path``, ``src_ip``, ``headers``, ``args`` (views
    showing this call's changes so far, from earlier plugins too).  Act: ``stop()`` answers the
    client and ends the chain; ``set_path``/``set_header``/``set_arg``/``set_resp_header``/
    ``set_body`` (and friends) rewrite the request before it is proxied.
    """

    __slots__ = ("_headers", "_args", "_path", "_stop", "_resp_headers", "_body")

    def __init__(self, req, ctx):
        self._req = req
        self._ctx = ctx
        self._thread = None if ctx is None else get_ident()
        self._cache = None
        self._headers = None
        self._args = None
        self._path = None
        self._stop = None
        self._resp_headers = None
        self._body = None

    # reading ------------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """The HTTP method, e.g. "GET"."""
        return METHODS[self._req.method]

    @property
    def path(self) -> Optional[str]:
        """The path without its query (as rewritten by ``set_path`` if it was)."""
        path = self._path
        return self._req.path if path is None else path

    @property
    def src_ip(self) -> Optional[str]:
        """The client address as text ("10.0.0.7", "::1"); None when absent."""
        ip = self._req.src_ip
        if ip is None:
            return None
        size = len(ip)
        if size == 4:
            return inet_ntop(AF_INET, ip)
        if size == 16:
            return inet_ntop(AF_INET6, ip)
        return None

    @property
    def headers(self) -> Headers:
        """Request headers (case-insensitive names), with this call's changes."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(self._req, "headers")
        return headers

    @property
    def args(self) -> Args:
        """Query args (case-sensitive names), with this call's changes."""
        args = self._args
        if args is None:
            args = self._args = Args(self._req, "args")
        return args

    async def body(self) -> Optional[bytes]:
        """The request body as sent (never decoded); None when empty.  Asked once per call."""
        return await self._extra(INFO_REQ_BODY, _BODY, None)

    def get_body(self) -> Optional[bytes]:
        """``body()`` for plain def hooks (worker threads): blocks until the gateway answers."""
        return self._extra_blocking(INFO_REQ_BODY, _BODY, None, "get_body")

    @property
    def stopped(self) -> bool:
        """True once a plugin called ``stop()``."""
        return self._stop is not None

    # acting -------------------------------------------------------------------------------------
    def stop(self, status: int = 200, headers: Optional[Pairs] = None,
             body: Union[str, bytes, None] = None) -> None:
        """Answer the client now; later plugins do not run and no rewrite is applied.

        ``status``: 100..599, or 0 for the gateway's default (200).  ``headers``: a dict (a list
        value repeats the name) or ``(name, value)`` pairs, valid HTTP fields; a Content-Length
        must be the body's length.  ``body``: bytes, or str sent as UTF-8.  Return from the hook
        after calling it.
        """
        # The checks inline: stop() is on the hot path of every denying plugin.
        if type(status) is not int or not (100 <= status <= 599 or status == 0):
            _bad_status(status, True)
        if body is not None and type(body) is not bytes:
            body = _as_bytes(body)
        if headers is not None:
            headers = _stop_headers(headers, body)
        self._stop = (status, headers, body)

    def set_path(self, path: str) -> None:
        """Proxy to ``path`` instead (the query is kept)."""
        if type(path) is not str or not path.startswith("/"):
            raise ValueError("a path must be a str starting with '/', not %r" % (path,))
        if _UNSAFE_TEXT(path) is not None:
            raise ValueError("path %r holds NUL, CR or LF" % (path,))
        self._path = path

    def set_header(self, name: str, value: Optional[str]) -> None:
        """Set request header ``name`` to this single value; None deletes it."""
        self.headers._set(name, value)

    def add_header(self, name: str, value: str) -> None:
        """Add a value to request header ``name``, keeping the ones it has."""
        self.headers._add(name, value)

    def del_header(self, name: str) -> None:
        """Delete request header ``name``."""
        self.headers._delete(name)

    def set_arg(self, name: str, value: Optional[str]) -> None:
        """Set query arg ``name`` to this single value; None deletes it."""
        self.args._set(name, value)

    def add_arg(self, name: str, value: str) -> None:
        """Add a value to query arg ``name``."""
        self.args._add(name, value)

    def del_arg(self, name: str) -> None:
        """Delete query arg ``name``."""
        self.args._delete(name)

    def set_resp_header(self, name: str, value: Optional[str]) -> None:
        """Set a header on the response the client will get (replacing earlier ones here)."""
        if value is None:
            _header_key(name)
        else:
            value = _check_resp_header(name, value)
        entries = self._resp_headers
        if entries is None:
            entries = self._resp_headers = []
        else:
            lname = name.lower()
            entries[:] = [e for e in entries if e[0].lower() != lname]
        entries.append((name, value))

    def add_resp_header(self, name: str, value: str) -> None:
        """Add a header value on the response the client will get."""
        value = _check_resp_header(name, value)
        if self._resp_headers is None:
            self._resp_headers = []
        self._resp_headers.append((name, value))

    def set_body(self, body: Union[str, bytes]) -> None:
        """Replace the request body sent upstream (str is sent as UTF-8)."""
        self._body = _as_bytes(body)

    # the answer ---------------------------------------------------------------------------------
    def _answer(self):
        """The HTTPReqCall.Resp frame: Stop, Rewrite of the changes, or no action."""
        stop = self._stop
        if stop is not None:
            return encode_stop(self._req.id, stop[0], stop[1], stop[2])
        headers = self._headers
        args = self._args
        headers = None if headers is None else headers._rewrite_entries()
        args = None if args is None else args._rewrite_entries()
        if (headers is None and args is None and self._path is None and self._body is None
                and self._resp_headers is None):
            return encode_no_action(self._req.id)
        return encode_rewrite(self._req.id, self._path, headers, args, self._resp_headers,
                              self._body)

    def __repr__(self):
        return "<Request id=%d %s %s>" % (self.id, self.method, self.path)


class Response(_Phase):
    """The upstream's response, in the response phase (HTTPRespCall).

    Read: ``id``, ``conf_token``, ``status``, ``headers`` (with changes).  Act: ``set_status``,
    ``set_header``/``add_header``/``del_header``, ``set_body``.  Every plugin of the chain runs.
    """

    __slots__ = ("_headers", "_status", "_body")
    _stop = None  # the response phase has no stop: the chain always runs to its end

    def __init__(self, req, ctx):
        self._req = req
        self._ctx = ctx
        self._thread = None if ctx is None else get_ident()
        self._cache = None
        self._headers = None
        self._status = None
        self._body = None

    @property
    def status(self) -> int:
        """The response status (the upstream's, or as set by ``set_status``)."""
        status = self._status
        return self._req.status if status is None else status

    @property
    def headers(self) -> Headers:
        """Response headers (case-insensitive names), with this call's changes."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(self._req, "headers")
        return headers

    async def body(self) -> Optional[bytes]:
        """The upstream response body (never decoded); None when empty.  Asked once per call."""
        return await self._extra(INFO_RESP_BODY, _BODY, None)

    def get_body(self) -> Optional[bytes]:
        """``body()`` for plain def hooks (worker threads): blocks until the gateway answers."""
        return self._extra_blocking(INFO_RESP_BODY, _BODY, None, "get_body")

    def set_status(self, status: int) -> None:
        """Send the client this status (100..599) instead."""
        if type(status) is not int or not 100 <= status <= 599:
            _bad_status(status, False)
        self._status = status

    def set_header(self, name: str, value: Optional[str]) -> None:
        """Set response header ``name`` to this single value; None deletes it."""
        if value is not None and _header_key(name) in _GATEWAY_OWNED:
            _gateway_owned(name)
        self.headers._set(name, value)

    def add_header(self, name: str, value: str) -> None:
        """Add a value to response header ``name``."""
        if _header_key(name) in _GATEWAY_OWNED:
            _gateway_owned(name)
        self.headers._add(name, value)

    def del_header(self, name: str) -> None:
        """Delete response header ``name``."""
        self.headers._delete(name)

    def set_body(self, body: Union[str, bytes]) -> None:
        """Replace the response body (str is sent as UTF-8)."""
        self._body = _as_bytes(body)

    def _upstream_body(self):
        """The upstream body if a plugin read it (b"" when empty), else None."""
        cache = self._cache
        if cache is None or _BODY not in cache:
            return None
        return cache[_BODY] or b""

    def _answer(self):
        """The HTTPRespCall.Resp frame."""
        body = self._body
        if body is not None and not body and self._upstream_body() != b"":
            # The gateway reads an empty body as "unchanged" and sends upstream's instead.
            raise ValueError("an empty response body cannot be sent: the gateway would send "
                             "the upstream's body instead")
        headers = self._headers
        if headers is not None and headers._changes:
            headers = self._header_set(headers, body)
        else:
            headers = None  # the gateway then sets upstream's headers, less its own list
        status = self._status
        return encode_http_resp_call_resp(self._req.id, 0 if status is None else status,
                                          headers, body)

    def _header_set(self, headers, body):
        """The changed headers as the whole set the client gets: the gateway sets only the
        headers it is sent, one by one, beside the framing it writes itself."""
        changes = headers._changes
        pairs = []
        hop = None
        for name, value in headers._original():
            key = name.lower()
            if key in changes or key in _NOT_ECHOED:
                if key == "connection" and value:
                    # RFC 9110 7.6.1: the names upstream's Connection lists are for this hop only
                    for option in value.split(","):
                        option = option.strip().lower()
                        if option not in _NOT_ECHOED:
                            if hop is None:
                                hop = set()
                            hop.add(option)
                continue
            pairs.append((name, value))
        if hop is not None:
            pairs = [(name, value) for name, value in pairs if name.lower() not in hop]
        deleted = []
        for key, (name, values) in changes.items():
            if not values:
                deleted.append((name, None))
                continue
            if key == "content-length":
                if body is not None:
                    _check_content_length(values, body, "the body set")
                else:
                    upstream = self._upstream_body()
                    if upstream is None:
                        raise ValueError("header 'Content-Length' %r cannot be checked against "
                                         "the upstream body, which no plugin read: leave "
                                         "Content-Length to the gateway" % (values,))
                    _check_content_length(values, upstream, "the upstream body")
            for value in values:
                pairs.append((name, value))
        # An empty list reads as "no change" to the gateway; a name sent without a value
        # clears that header, so deleting every header still reaches the client.
        return pairs or deleted

    def __repr__(self):
        return "<Response id=%d status=%d>" % (self.id, self.status)
