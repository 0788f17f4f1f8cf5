"""Testing plugins without a gateway: ``PluginTester`` runs them the way ``a6fast serve`` does.

::

    from a6fast.testing import PluginTester

    def test_bots_are_refused():
        t = PluginTester(plugins_dir="plugins")
        r = t.request("block-bots", {"agents": ["bot"]}, path="/x", headers={"user-agent": "bot"})
        assert r.stopped and r.status == 403

Every call takes the server's own path.  The conf goes out as the gateway's PrepareConf frame, is
decoded by the runner's codec and prepared by the ``Registry`` (so the plugins' conf parsing
runs); the HTTPReqCall/HTTPRespCall is encoded as the gateway sends it, decoded by the codec and
handed to the chain; the plugins' ExtraInfo questions (variables, bodies) are encoded, answered
from what the test gave and decoded again; ``def`` hooks run in a thread pool, ``async def`` hooks
and ``a6fast.run_blocking()`` work; the answer frame is decoded with ``a6fast.gateway`` into a
result object.  A plugin that raises makes the call raise (the server would answer Err
SERVICE_UNAVAILABLE); ``raise_errors=False`` reports it on the result instead.
"""
import concurrent.futures
import json as _json
import os
import queue
import threading
import time
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    Union)
from urllib.parse import unquote

from . import codec, futures, gateway
from .errors import A6Error, DecodeError, PluginTimeout
from .futures import CancelledError, Future, run_in_pool, wait_from_thread
from .protocol import (ACTION_REWRITE, ACTION_STOP, ERR_NAMES, INFO_REQ_BODY, INFO_RESP_BODY,
                       INFO_VAR, METHODS, RPC_ERR, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL,
                       SERVICE_UNAVAILABLE, BAD_REQUEST)
from .registry import Registry

__all__ = ["PluginTester", "PreparedConf", "RequestResult", "ResponseResult", "Rewrite",
           "UpstreamRequest", "Entries", "PluginLoadError", "CallFailed"]

PathLike = Union[str, "os.PathLike[str]"]
#: headers or args: a dict (a list value repeats the name, None is a bare ``?flag``) or pairs
EntriesIn = Union[Mapping[str, Union[str, None, Sequence[Optional[str]]]],
                  Iterable[Tuple[str, Optional[str]]]]
#: what runs: a plugin name (with ``conf``), ``{name: conf}`` in order, or ``[(name, conf)]``
PluginsIn = Union[str, Mapping[str, Any], Sequence[Union[str, Tuple[str, Any]]]]
Bytes = Union[str, bytes, None]

_INFO_KINDS = {INFO_VAR: "var", INFO_REQ_BODY: "req_body", INFO_RESP_BODY: "resp_body"}


class PluginLoadError(A6Error):
    """A plugin file did not import or a plugin did not define: ``errors`` lists
    ``(file, line, message)``, as ``a6fast check`` shows them."""

    def __init__(self, errors: List[Tuple[str, int, str]]):
        self.errors = list(errors)
        super().__init__("plugins failed to load:\n" + "\n".join(
            "  %s:%d: %s" % error for error in self.errors))


class CallFailed(A6Error):
    """The runner would answer this call with an Err frame (``code``: "SERVICE_UNAVAILABLE",
    "BAD_REQUEST"); raised by ``result.raise_for_err()``."""

    def __init__(self, err: str, exception: Optional[BaseException]):
        self.err = err
        self.exception = exception
        super().__init__("the runner answers Err %s%s" % (
            err, "" if exception is None else ": %s: %s" % (type(exception).__name__, exception)))


# ---------------------------------------------------------------------------------------------
# Results

class Entries:
    """Headers or args as the gateway would see them: ``e[name]`` (first value, KeyError if
    absent), ``get``, ``getall``, ``in``, ``len`` (values), ``items()`` (pairs in order),
    ``to_dict()`` (name -> value, or a list for a repeated name).  Header names are
    case-insensitive; arg names are not.  A value is None for a bare ``?flag`` or, in a Rewrite,
    for a deletion."""

    __slots__ = ("_pairs", "_fold")

    def __init__(self, pairs: Optional[Iterable[Tuple[str, Optional[str]]]] = None,
                 case_insensitive: bool = True):
        self._pairs = [(name, value) for name, value in (pairs or ())]
        self._fold = case_insensitive

    def _same(self, a: str, b: str) -> bool:
        return a.lower() == b.lower() if self._fold else a == b

    def getall(self, name: str) -> List[Optional[str]]:
        """Every value of ``name``, in order; ``[]`` if absent."""
        return [value for key, value in self._pairs if self._same(key, name)]

    def get(self, name: str, default: Any = None) -> Any:
        """The first value of ``name``, or ``default``."""
        for key, value in self._pairs:
            if self._same(key, name):
                return value
        return default

    def __getitem__(self, name: str) -> Optional[str]:
        for key, value in self._pairs:
            if self._same(key, name):
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(self._same(key, name) for key, _ in self._pairs)

    def items(self) -> List[Tuple[str, Optional[str]]]:
        return list(self._pairs)

    def keys(self) -> List[str]:
        return [name for name, _ in self._pairs]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._pairs)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def to_dict(self) -> Dict[str, Any]:
        """``{name: value}``; a repeated name maps to the list of its values."""
        out: Dict[str, Any] = {}
        for name, value in self._pairs:
            if name in out:
                if not isinstance(out[name], list):
                    out[name] = [out[name]]
                out[name].append(value)
            else:
                out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Entries):
            return self._pairs == other._pairs
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        if isinstance(other, (list, tuple)):
            return self._pairs == [tuple(pair) for pair in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Entries(%r)" % (self._pairs,)


class Rewrite:
    """The Rewrite action as sent: changes, not the whole request.  ``path`` (None: unchanged);
    ``headers``/``args``: entries to set (a value) or delete (None); ``resp_headers``: set on the
    client's response; ``body``: the new request body (None: unchanged)."""

    __slots__ = ("path", "headers", "args", "resp_headers", "body")

    def __init__(self, raw: "gateway.Rewrite"):
        self.path: Optional[str] = raw.path
        self.headers = Entries(raw.headers)
        self.args = Entries(raw.args, case_insensitive=False)
        self.resp_headers = Entries(raw.resp_headers)
        self.body: Optional[bytes] = raw.body

    def __repr__(self) -> str:
        return "<Rewrite path=%r headers=%r args=%r resp_headers=%r body=%r>" % (
            self.path, self.headers.items(), self.args.items(), self.resp_headers.items(),
            self.body)


class UpstreamRequest:
    """The request as the gateway proxies it once a Rewrite is applied."""

    __slots__ = ("method", "path", "args", "headers", "body")

    def __init__(self, method: str, path: str, args: Entries, headers: Entries,
                 body: Optional[bytes]):
        self.method = method
        self.path = path
        self.args = args
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return "<UpstreamRequest %s %s args=%r headers=%r>" % (
            self.method, self.path, self.args.items(), self.headers.items())


class _Result:
    """What both phases' results share: the raw answer, the ExtraInfo asked, an Err."""

    frame: bytes
    err: Optional[str]
    exception: Optional[BaseException]
    extra_info: List[Tuple[str, Optional[str]]]

    @property
    def failed(self) -> bool:
        """True when the runner answers this call with an Err frame."""
        return self.err is not None

    def raise_for_err(self) -> None:
        """Raise ``CallFailed`` if the call is answered with an Err frame."""
        if self.err is not None:
            raise CallFailed(self.err, self.exception)

    @property
    def vars_asked(self) -> List[str]:
        """The gateway variables the plugins asked for (ExtraInfo Var), in order."""
        return [name for kind, name in self.extra_info if kind == "var" and name is not None]


class RequestResult(_Result):
    """The answer to an HTTPReqCall.

    ``action`` is "stop", "rewrite" or None (no action, or an Err).  After a Stop: ``stopped``,
    ``status`` (0 on the wire means 200 and reads as 200), ``headers``, ``body``, ``text``,
    ``json()``.  After a Rewrite: ``rewritten``, ``rewrite`` (the changes as sent) and
    ``upstream`` (the request as the gateway proxies it).  ``extra_info`` lists what the plugins
    asked the gateway: ``("var", name)``, ``("req_body", None)``.
    """

    def __init__(self, request: UpstreamRequest, frame: bytes,
                 answer: Optional["gateway.HTTPReqCallResp"], err: Optional[str] = None,
                 exception: Optional[BaseException] = None,
                 extra_info: Optional[List[Tuple[str, Optional[str]]]] = None):
        self.request = request
        self.frame = frame
        self.answer = answer
        self.err = err
        self.exception = exception
        self.extra_info = list(extra_info or ())
        self.stop = answer.stop if answer is not None else None
        self.rewrite: Optional[Rewrite] = (
            Rewrite(answer.rewrite) if answer is not None and answer.rewrite is not None else None)

    @property
    def action(self) -> Optional[str]:
        if self.answer is None:
            return None
        return {ACTION_STOP: "stop", ACTION_REWRITE: "rewrite"}.get(self.answer.action_type)

    @property
    def stopped(self) -> bool:
        return self.stop is not None

    @property
    def rewritten(self) -> bool:
        return self.rewrite is not None

    @property
    def no_action(self) -> bool:
        """True when the request goes on unchanged (action NONE), not after an Err."""
        return self.answer is not None and self.answer.action_type == 0

    @property
    def status(self) -> Optional[int]:
        """The Stop's status (200 for the wire's 0), None when not stopped."""
        if self.stop is None:
            return None
        return self.stop.status or 200

    @property
    def headers(self) -> Entries:
        """The Stop's headers (empty when not stopped)."""
        return Entries(self.stop.headers if self.stop is not None else None)

    @property
    def body(self) -> Optional[bytes]:
        """The Stop's body; None when not stopped or sent without one."""
        return self.stop.body if self.stop is not None else None

    @property
    def text(self) -> Optional[str]:
        body = self.body
        return None if body is None else body.decode("utf-8", "surrogateescape")

    def json(self) -> Any:
        """The Stop's body as JSON."""
        if self.body is None:
            raise ValueError("the answer has no body")
        return _json.loads(self.body)

    @property
    def resp_headers(self) -> Entries:
        """The Rewrite's response headers (empty when not rewritten)."""
        return self.rewrite.resp_headers if self.rewrite is not None else Entries()

    @property
    def upstream(self) -> Optional[UpstreamRequest]:
        """The request as proxied: the original with the Rewrite applied (unchanged after no
        action); None after a Stop or an Err."""
        if self.answer is None or self.stop is not None:
            return None
        if self.rewrite is None:
            return self.request
        rw = self.rewrite
        return UpstreamRequest(
            self.request.method, rw.path if rw.path is not None else self.request.path,
            _apply_changes(self.request.args, rw.args),
            _apply_changes(self.request.headers, rw.headers),
            rw.body if rw.body is not None else self.request.body)

    def __repr__(self) -> str:
        if self.err is not None:
            return "<RequestResult Err %s>" % self.err
        if self.stop is not None:
            return "<RequestResult stop status=%s headers=%r body=%r>" % (
                self.status, self.headers.items(), self.body)
        if self.rewrite is not None:
            return "<RequestResult %r>" % (self.rewrite,)
        return "<RequestResult no action>"


class ResponseResult(_Result):
    """The answer to an HTTPRespCall, and what the client gets.

    ``status``, ``headers`` and ``body`` are what the client receives (the plugins' values, or
    the upstream's where they set none); ``status_changed``, ``headers_changed``,
    ``body_changed`` and ``changed`` say what the plugins set; ``answer`` is the raw answer.
    """

    def __init__(self, upstream_status: int, upstream_headers: Entries,
                 upstream_body: Optional[bytes], frame: bytes,
                 answer: Optional["gateway.HTTPRespCallResp"], err: Optional[str] = None,
                 exception: Optional[BaseException] = None,
                 extra_info: Optional[List[Tuple[str, Optional[str]]]] = None):
        self.upstream_status = upstream_status
        self.upstream_headers = upstream_headers
        self.upstream_body = upstream_body
        self.frame = frame
        self.answer = answer
        self.err = err
        self.exception = exception
        self.extra_info = list(extra_info or ())

    @property
    def status_changed(self) -> bool:
        return self.answer is not None and bool(self.answer.status)

    @property
    def headers_changed(self) -> bool:
        return self.answer is not None and self.answer.headers is not None

    @property
    def body_changed(self) -> bool:
        return self.answer is not None and self.answer.body is not None

    @property
    def changed(self) -> bool:
        return self.status_changed or self.headers_changed or self.body_changed

    @property
    def status(self) -> int:
        answer = self.answer
        return answer.status if answer is not None and answer.status else self.upstream_status

    @property
    def headers(self) -> Entries:
        """When the plugins send headers, the gateway sets only those (one sent without a
        value clears that header: how deleting every header is sent)."""
        answer = self.answer
        if answer is not None and answer.headers is not None:
            return Entries([(name, value) for name, value in answer.headers if value is not None])
        return self.upstream_headers

    @property
    def body(self) -> Optional[bytes]:
        answer = self.answer
        return answer.body if answer is not None and answer.body is not None else self.upstream_body

    @property
    def text(self) -> Optional[str]:
        body = self.body
        return None if body is None else body.decode("utf-8", "surrogateescape")

    def json(self) -> Any:
        if self.body is None:
            raise ValueError("the response has no body")
        return _json.loads(self.body)

    def __repr__(self) -> str:
        if self.err is not None:
            return "<ResponseResult Err %s>" % self.err
        return "<ResponseResult status=%d headers=%r body=%r changed=%s>" % (
            self.status, self.headers.items(), self.body, self.changed)


def _apply_changes(original: Entries, changes: Entries) -> Entries:
    """Rewrite headers/args applied the gateway's way: a name it mentions loses its values and
    gets those given (none: deleted); a repeated name becomes multi-valued."""
    if not changes:
        return original
    fold = original._fold
    touched: Dict[str, List[Optional[str]]] = {}
    names: Dict[str, str] = {}
    for name, value in changes.items():
        key = name.lower() if fold else name
        names.setdefault(key, name)
        values = touched.setdefault(key, [])
        if value is not None:
            values.append(value)
    pairs = [(name, value) for name, value in original.items()
             if (name.lower() if fold else name) not in touched]
    for key, values in touched.items():
        pairs.extend((names[key], value) for value in values)
    return Entries(pairs, case_insensitive=fold)


# ---------------------------------------------------------------------------------------------
# Driving the calls

class _Loop:
    """The test's stand-in for the server loop, run by the calling thread: worker threads and
    ExtraInfo answers hand their results over through a queue, as they do to the real loop."""

    def __init__(self, pool_getter):
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._pool_getter = pool_getter
        self.thread = threading.get_ident()

    def call_soon(self, callback, *args) -> None:
        self._queue.put((callback, args))

    call_soon_threadsafe = call_soon

    def run_in_thread(self, fn, args) -> Future:
        return run_in_pool(self._pool_getter(), self.call_soon_threadsafe, fn, args)

    def run_until_done(self, future: Future, deadline: float) -> bool:
        """Run hand-offs until ``future`` is done; False if the deadline passes first."""
        while not future.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                callback, args = self._queue.get(timeout=left)
            except queue.Empty:
                return False
            callback(*args)
        return True


class _Context:
    """The plugins' view of the gateway during one call (what the server's ``Call`` is): ExtraInfo
    questions go through the codec both ways and are answered from the test's data."""

    def __init__(self, loop: _Loop, vars: Mapping[str, Optional[bytes]],
                 body: Optional[bytes], body_type: int, timeout: float):
        self.loop = loop
        self.vars = vars
        self.body = body
        self.body_type = body_type
        self.timeout = timeout
        self.live = True
        self.asked: List[Tuple[str, Optional[str]]] = []

    def _answer(self, info_type: int, name: Optional[str]) -> bytes:
        """The gateway's side: the ExtraInfo.Req frame read, the ExtraInfo.Resp payload made."""
        if info_type == INFO_VAR:
            frame = codec.encode_extra_info_var(name)
        elif info_type == INFO_REQ_BODY:
            frame = codec.encode_extra_info_req_body()
        elif info_type == INFO_RESP_BODY:
            frame = codec.encode_extra_info_resp_body()
        else:
            raise ValueError("unknown ExtraInfo type %r" % (info_type,))
        kind, asked_name = gateway.decode_extra_info_req(frame[4:])
        self.asked.append((_INFO_KINDS.get(kind, str(kind)), asked_name))
        if kind == INFO_VAR:
            result = self.vars.get(asked_name)
        elif kind == self.body_type:
            result = self.body
        else:
            result = None  # ReqBody in the response phase or the reverse: the gateway has none
        return gateway.encode_extra_info_resp(result)[4:]

    def extra_info(self, info_type: int, name: Optional[str] = None) -> Future:
        """On the loop thread: a Future of the answer, resolved by the loop like a real one."""
        if not self.live:
            raise CancelledError()
        payload = self._answer(info_type, name)
        future = Future()

        def deliver():
            try:
                future.set_result(codec.decode_extra_info_resp(payload))
            except DecodeError as exc:
                future.set_exception(exc)
        self.loop.call_soon(deliver)
        return future

    def extra_info_blocking(self, info_type: int, name: Optional[str] = None) -> Optional[bytes]:
        """From a worker thread: asks through the loop and waits, as the server does."""
        if threading.get_ident() == self.loop.thread:
            raise RuntimeError("get_var()/get_body() block; on the loop, await request.var()/body()")
        return wait_from_thread(self.loop.call_soon_threadsafe,
                                lambda: self.extra_info(info_type, name), self.timeout)


def _err_of(exc: BaseException) -> int:
    """The Err code the server answers a failed call with (see Connection.call_failed)."""
    return BAD_REQUEST if isinstance(exc, DecodeError) else SERVICE_UNAVAILABLE


def _text(value: Bytes) -> Optional[bytes]:
    """A var or body as the gateway sends it: bytes, absent (None) when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise TypeError("a variable or body must be str or bytes, not %s" % type(value).__name__)
    return value or None


def _entries(value: Optional[EntriesIn]) -> List[Tuple[str, Optional[str]]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        pairs: List[Tuple[str, Optional[str]]] = []
        for name, item in value.items():
            if isinstance(item, (list, tuple)):
                pairs.extend((name, v) for v in item)
            else:
                pairs.append((name, item))  # type: ignore[arg-type]
        return pairs
    return [(name, item) for name, item in value]


def _split_query(path: str) -> Tuple[str, List[Tuple[str, Optional[str]]]]:
    """``/p?a=1&flag&y=`` -> ("/p", [("a", "1"), ("flag", None), ("y", "")]), as the gateway
    splits it (the path without its query, bare names without a value)."""
    path, _, query = path.partition("?")
    args: List[Tuple[str, Optional[str]]] = []
    for part in query.split("&") if query else ():
        if not part:
            continue
        name, eq, value = part.partition("=")
        args.append((unquote(name), unquote(value) if eq else None))
    return path, args


def _derived_vars(method: str, path: str, args: List[Tuple[str, Optional[str]]],
                  headers: List[Tuple[str, Optional[str]]], src_ip: Optional[str]
                  ) -> Dict[str, bytes]:
    """The nginx variables the gateway would have for this request."""
    out: Dict[str, str] = {"request_method": method, "uri": path}
    if src_ip:
        out["remote_addr"] = src_ip
    query = "&".join(name if value is None else "%s=%s" % (name, value) for name, value in args)
    out["request_uri"] = path + ("?" + query if query else "")
    if query:
        out["args"] = query
    for name, value in reversed(args):
        out["arg_" + name] = "" if value is None else value
    for name, value in reversed(headers):
        key = "http_" + name.lower().replace("-", "_")
        out[key] = "" if value is None else value
        if name.lower() == "host" and value:
            out["host"] = value.rsplit(":", 1)[0].lower() if not value.endswith("]") else value.lower()
        if name.lower() == "cookie" and value:
            for cookie in value.split(";"):
                cname, eq, cvalue = cookie.strip().partition("=")
                if eq:
                    out["cookie_" + cname] = cvalue
    return {name: value.encode("utf-8", "surrogateescape") for name, value in out.items()}


def _conf_text(value: Any) -> Optional[str]:
    """A conf value as the gateway sends it: JSON text (str/bytes as given), None absent."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value
    return _json.dumps(value)


def _conf_entries(plugins: PluginsIn, conf: Any) -> List[Tuple[str, Optional[str]]]:
    if isinstance(plugins, str):
        return [(plugins, _conf_text(conf))]
    if conf is not None:
        raise TypeError("conf goes with one plugin name; for several, pass {name: conf} or "
                        "[(name, conf), ...]")
    if isinstance(plugins, Mapping):
        return [(name, _conf_text(value)) for name, value in plugins.items()]
    entries: List[Tuple[str, Optional[str]]] = []
    for item in plugins:
        if isinstance(item, str):
            entries.append((item, None))
        else:
            name, value = item
            entries.append((name, _conf_text(value)))
    if not entries:
        raise ValueError("no plugin to run")
    return entries


class PreparedConf:
    """One PrepareConf: its chain is kept, so calls share the plugins' parsed conf (and any state
    a plugin keeps), as they do in the server.  Made by ``PluginTester.prepare``."""

    def __init__(self, tester: "PluginTester", chain: Any, conf_token: int,
                 entries: List[Tuple[str, Optional[str]]], key: Optional[str]):
        self.tester = tester
        self.chain = chain
        self.conf_token = conf_token
        self.entries = entries
        self.key = key

    def request(self, *, method: Union[str, int] = "GET", path: str = "/",
                args: Optional[EntriesIn] = None, headers: Optional[EntriesIn] = None,
                src_ip: Optional[str] = "127.0.0.1", vars: Optional[Mapping[str, Bytes]] = None,
                body: Bytes = None, id: Optional[int] = None) -> RequestResult:
        """Run the request phase (HTTPReqCall).  ``path`` may carry a query (``/p?a=1&flag``),
        added before ``args``.  ``vars`` answers ExtraInfo Var (on top of those the gateway
        derives from the request: remote_addr, request_method, uri, request_uri, args, arg_*,
        http_*, cookie_*, host; None makes one absent); ``body`` answers ExtraInfo ReqBody."""
        t = self.tester
        path, query_args = _split_query(path)
        arg_pairs = query_args + _entries(args)
        header_pairs = _entries(headers)
        method_name = METHODS[method] if isinstance(method, int) else method.upper()
        call_id = t._next_id() if id is None else id
        frame = gateway.encode_http_req_call_req(
            call_id, self.conf_token, method=method, path=path, src_ip=src_ip, args=arg_pairs,
            headers=header_pairs)
        req = codec.decode_http_req_call(frame[4:])
        known: Dict[str, Optional[bytes]] = dict(
            _derived_vars(method_name, path, arg_pairs, header_pairs, src_ip))
        for name, value in (vars or {}).items():
            known[name] = _text(value)
        req_body = _text(body)
        original = UpstreamRequest(method_name, path, Entries(arg_pairs, case_insensitive=False),
                                   Entries(header_pairs), req_body)
        answer, exc, asked = t._run(self.chain.call_request, req, known, req_body, INFO_REQ_BODY)
        rpc_type, payload = _split(answer)
        if rpc_type == RPC_ERR:
            return RequestResult(original, answer, None, _err_name(payload), exc, asked)
        if rpc_type != RPC_HTTP_REQ_CALL:
            raise AssertionError("HTTPReqCall answered with a frame of type %d" % rpc_type)
        decoded = gateway.decode_http_req_call_resp(payload)
        if decoded.id != call_id:
            raise AssertionError("answer id %d for call id %d" % (decoded.id, call_id))
        return RequestResult(original, answer, decoded, None, None, asked)

    def response(self, *, status: int = 200, headers: Optional[EntriesIn] = None,
                 body: Bytes = None, vars: Optional[Mapping[str, Bytes]] = None,
                 id: Optional[int] = None) -> ResponseResult:
        """Run the response phase (HTTPRespCall) on an upstream response: ``status``,
        ``headers`` and ``body`` (which answers ExtraInfo RespBody); ``vars`` answers Var."""
        t = self.tester
        header_pairs = _entries(headers)
        call_id = t._next_id() if id is None else id
        frame = gateway.encode_http_resp_call_req(call_id, self.conf_token, status=status,
                                                  headers=header_pairs)
        req = codec.decode_http_resp_call(frame[4:])
        known = {name: _text(value) for name, value in (vars or {}).items()}
        resp_body = _text(body)
        upstream = (status, Entries(header_pairs), resp_body)
        answer, exc, asked = t._run(self.chain.call_response, req, known, resp_body,
                                    INFO_RESP_BODY)
        rpc_type, payload = _split(answer)
        if rpc_type == RPC_ERR:
            return ResponseResult(*upstream, answer, None, _err_name(payload), exc, asked)
        if rpc_type != RPC_HTTP_RESP_CALL:
            raise AssertionError("HTTPRespCall answered with a frame of type %d" % rpc_type)
        decoded = gateway.decode_http_resp_call_resp(payload)
        if decoded.id != call_id:
            raise AssertionError("answer id %d for call id %d" % (decoded.id, call_id))
        return ResponseResult(*upstream, answer, decoded, None, None, asked)

    def __repr__(self) -> str:
        return "<PreparedConf conf_token=%d %r>" % (self.conf_token, self.entries)


def _err_name(payload: bytes) -> str:
    code = gateway.decode_err(payload)
    return ERR_NAMES.get(code, "Err %d" % code)


def _split(frame: bytes) -> Tuple[int, bytes]:
    rpc_type, length = codec.decode_header(frame)
    payload = frame[4:]
    if len(payload) != length:
        raise AssertionError("answer frame says %d payload bytes, has %d" % (length, len(payload)))
    return rpc_type, payload


class PluginTester:
    """Loads plugins like ``a6fast serve`` and runs calls through them.

    ``plugins_dir``: a directory (or several) of plugin files, as ``--plugins``; ``plugins``:
    plugin objects or modules to add (decorated functions, ``Plugin`` subclasses, official-runner
    classes); ``builtins`` loads the built-in examples too (yours win a name clash);
    ``entry_points`` the installed ``a6fast.plugins`` entry points; ``registry`` uses a ready
    ``Registry`` instead.  A plugin file that fails to load raises ``PluginLoadError`` unless
    ``allow_load_errors`` (then see ``.registry.errors``).

    ``call_timeout``: seconds a call may take (the server answers SERVICE_UNAVAILABLE after its
    ``--call-timeout``; here ``PluginTimeout`` is raised).  ``raise_errors=False``: a plugin's
    exception is reported on the result (``failed``, ``err``, ``exception``) instead of raised.

    Use it as a context manager (or call ``close()``) to stop the threads of ``def`` hooks.
    """

    def __init__(self, plugins_dir: Union[PathLike, Sequence[PathLike], None] = None, *,
                 plugins: Iterable[Any] = (), builtins: bool = True, entry_points: bool = False,
                 registry: Optional[Registry] = None, call_timeout: float = 10.0,
                 threads: int = 8, raise_errors: bool = True, allow_load_errors: bool = False):
        if registry is None:
            if plugins_dir is None:
                dirs: List[str] = []
            elif isinstance(plugins_dir, (str, os.PathLike)):
                dirs = [os.fspath(plugins_dir)]
            else:
                dirs = [os.fspath(d) for d in plugins_dir]
            registry = Registry()
            for directory in dirs:
                registry.load_dir(directory)
            for obj in plugins:
                registry.add(obj)
            if entry_points:
                registry.load_entry_points()
            if builtins:
                registry.load_builtins()
        elif plugins:
            for obj in plugins:
                registry.add(obj)
        if registry.errors and not allow_load_errors:
            raise PluginLoadError(registry.errors)
        self.registry = registry
        self.call_timeout = call_timeout
        self.raise_errors = raise_errors
        self._threads = threads
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._ids = 0
        self._tokens = 0

    # preparing ----------------------------------------------------------------------------------
    def prepare(self, plugins: PluginsIn, conf: Any = None, *,
                key: Optional[str] = None) -> PreparedConf:
        """A PrepareConf of ``plugins`` (a name with its ``conf``, ``{name: conf}``, or
        ``[(name, conf), ...]`` in execution order).  A conf is JSON-encoded unless it is str or
        bytes (then sent as the JSON text it is); None sends no value.  Raises ``UnknownPlugin``
        or ``ConfError`` where the runner answers Err BAD_REQUEST."""
        entries = _conf_entries(plugins, conf)
        if key is None:
            key = "route#test#ext-plugin-pre-req#%d" % (self._tokens + 1)
        frame = gateway.encode_prepare_conf_req(entries, key)
        req = codec.decode_prepare_conf_req(frame[4:])
        chain = self.registry.prepare(req.conf, req.key)
        self._tokens += 1
        return PreparedConf(self, chain, self._tokens, entries, key)

    def request(self, plugins: PluginsIn, conf: Any = None, **fields: Any) -> RequestResult:
        """Prepare ``plugins`` and run one request-phase call; see ``PreparedConf.request``."""
        return self.prepare(plugins, conf).request(**fields)

    def response(self, plugins: PluginsIn, conf: Any = None, **fields: Any) -> ResponseResult:
        """Prepare ``plugins`` and run one response-phase call; see ``PreparedConf.response``."""
        return self.prepare(plugins, conf).response(**fields)

    # running ------------------------------------------------------------------------------------
    def _next_id(self) -> int:
        call_id = self._ids
        self._ids = (self._ids + 1) & 0xFFFFFFFF
        return call_id

    def _get_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="a6fast-testing")
        return self._pool

    def _run(self, run, req, known_vars, body, body_type):
        """Run one call as the server's Connection.run_call does: ``(answer frame, exception,
        ExtraInfo asked)``; a failure is raised, or with raise_errors off answered with the Err
        frame the server would send."""
        loop = _Loop(self._get_pool)
        ctx = _Context(loop, known_vars, body, body_type, self.call_timeout)
        deadline = time.monotonic() + self.call_timeout
        previous = futures.get_offload()
        futures.set_offload(loop.run_in_thread)
        try:
            try:
                answer = run(req, ctx)
                if isinstance(answer, Future):
                    if not loop.run_until_done(answer, deadline):
                        ctx.live = False
                        answer.cancel()
                        raise PluginTimeout("plugins did not answer within %gs (the runner "
                                            "answers SERVICE_UNAVAILABLE)" % self.call_timeout)
                    answer = answer.result()
                if answer.__class__ is not bytes:
                    raise TypeError("plugin chain returned %r" % (type(answer),))
            except (Exception, CancelledError) as exc:
                ctx.live = False
                if self.raise_errors:
                    raise
                return codec.encode_err(_err_of(exc)), exc, ctx.asked
        finally:
            futures.set_offload(previous)
        return answer, None, ctx.asked

    def close(self) -> None:
        """Stop the thread pool of ``def`` hooks (threads still running are not waited for)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "PluginTester":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
