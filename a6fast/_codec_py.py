"""The pure-Python codec: the same API and behaviour as ``a6fast._codec`` (see ``a6fast.codec``).

It is also the test oracle for the compiled twin, so every rule is exact: the tables are read and
built with ``a6fast._flatbuffers`` (whose docstring gives the layout); decoders read the message
``payload[start:end]`` from a copy of that part (a whole ``bytes`` payload is kept as it is), so
no offset reaches past it and lazy fields never see later changes to a reused buffer; lookups by
name are their definition over the decoded lists.  It exposes exactly the compiled module's
public names (``__all__``); helpers are private.
"""
import operator as _operator
import struct as _struct

from . import _flatbuffers as _fb
from .errors import DecodeError, EncodeError, TooManyPlugins
from .protocol import (
    ACTION_NONE as _ACTION_NONE, ACTION_REWRITE as _ACTION_REWRITE, ACTION_STOP as _ACTION_STOP,
    HEADER_SIZE as _HEADER_SIZE, INFO_REQ_BODY as _INFO_REQ_BODY,
    INFO_RESP_BODY as _INFO_RESP_BODY, INFO_VAR as _INFO_VAR, MAX_PAYLOAD as _MAX_PAYLOAD,
    METHODS as _METHODS, RPC_ERR as _RPC_ERR, RPC_EXTRA_INFO as _RPC_EXTRA_INFO,
    RPC_HTTP_REQ_CALL as _RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL as _RPC_HTTP_RESP_CALL,
    RPC_PREPARE_CONF as _RPC_PREPARE_CONF,
)

__all__ = [
    "encode_header", "decode_header", "frame_end",
    "decode_prepare_conf_req", "decode_http_req_call", "decode_http_resp_call",
    "decode_extra_info_resp",
    "encode_err", "encode_prepare_conf_resp", "encode_no_action", "encode_stop",
    "encode_rewrite", "encode_http_resp_call_resp", "encode_extra_info_var",
    "encode_extra_info_req_body", "encode_extra_info_resp_body",
    "PrepareConfReq", "HTTPReqCallReq", "HTTPRespCallReq",
    "DecodeError", "EncodeError", "TooManyPlugins",
]

_unpack_header = _struct.Struct(">I").unpack_from
_METHOD_MAX = len(_METHODS) - 1


# ---------------------------------------------------------------------------------------------
# Frame header

def encode_header(rpc_type, length):
    """The 4-byte frame header: RPC type, then the payload length as 24-bit big-endian."""
    rpc_type = _fb.check_uint(rpc_type, 0xFF, "rpc type")
    length = _fb.check_uint(length, _MAX_PAYLOAD, "payload length")
    return bytes((rpc_type, length >> 16, (length >> 8) & 0xFF, length & 0xFF))


def decode_header(data, offset=0):
    """``(rpc_type, length)`` from the 4 bytes at ``offset`` of a bytes-like object."""
    try:
        view = memoryview(data)
    except TypeError:
        raise DecodeError("frame header: not bytes-like") from None
    try:
        offset = _operator.index(offset)
    except TypeError:
        raise DecodeError("frame header: offset is not an int") from None
    # unpack_from would count a negative offset from the end; that is never meant here.
    if offset < 0 or offset + _HEADER_SIZE > view.nbytes:
        raise DecodeError("frame header: fewer than 4 bytes")
    if not view.c_contiguous:
        view = view.tobytes()
    (word,) = _unpack_header(view, offset)
    return word >> 24, word & 0xFFFFFF



def frame_end(data, offset=0):
    """Where the frame starting at ``offset`` of a bytes-like object ends (``offset`` + 4 + the
    length its header gives) if all of it is there; -1 if not, header or payload.

    The server's per-frame check: an int, no tuple.  The frame's type is its first byte."""
    if type(data) not in _BYTES or type(offset) is not int or offset < 0:
        data, offset = _byte_view(data, offset)
    size = len(data)
    if offset > size - 4:
        return -1
    end = offset + 4 + (_unpack_header(data, offset)[0] & 0xFFFFFF)
    return end if end <= size else -1


_BYTES = (bytes, bytearray)


def _byte_view(data, offset):
    """``data`` as a buffer of single bytes and ``offset`` as an int >= 0, or DecodeError."""
    try:
        view = memoryview(data)
    except TypeError:
        raise DecodeError("frame header: not bytes-like") from None
    except ValueError:                                 # a released memoryview
        raise DecodeError("frame header: released buffer") from None
    try:
        offset = _operator.index(offset)
    except TypeError:
        raise DecodeError("frame header: offset is not an int") from None
    if offset < 0:
        raise DecodeError("frame header: negative offset %d" % offset)
    return (view.cast("B") if view.c_contiguous else view.tobytes()), offset


# ---------------------------------------------------------------------------------------------
# Runner-side reads

_UNSET = object()


def _bounds(start, end, size):
    """``(start, end)`` of the message ``buf[start:end]`` in a buffer of ``size`` bytes: ints (not
    bool), ``end`` None for ``size``, 0 <= start <= end <= size; DecodeError otherwise."""
    if type(start) is not int:
        raise DecodeError("payload start must be an int, not %s" % type(start).__name__)
    if end is None:
        end = size
    elif type(end) is not int:
        raise DecodeError("payload end must be an int or None, not %s" % type(end).__name__)
    if not 0 <= start <= end <= size:
        raise DecodeError("payload [%d:%d] is not within the %d bytes of the buffer"
                          % (start, end, size))
    return start, end


def _part(payload, start, end):
    """``payload[start:end]`` as bytes (bounds in bytes), copied from anything but a whole bytes
    payload, so that lazy fields never see later changes to a reused buffer."""
    if type(payload) is bytes or type(payload) is bytearray:
        data = payload
    else:
        try:
            view = memoryview(payload)
        except TypeError:
            raise DecodeError("payload must be bytes-like, not %s"
                              % type(payload).__name__) from None
        except ValueError:                             # a released memoryview
            raise DecodeError("payload is a released buffer") from None
        try:
            data = view.cast("B")
        except (TypeError, ValueError):                # not contiguous, or an odd format
            data = view.tobytes()
    start, end = _bounds(start, end, len(data))
    if type(data) is bytes and start == 0 and end == len(data):
        return data
    with memoryview(data) as view:
        return view[start:end].tobytes()


def _entries_or_empty(buf, tab, slot):
    entries = _fb.field_entries(buf, tab, slot)
    return [] if entries is None else entries


def _lookup_name(name, what):
    """``name`` as an exact str (none of a subclass's methods run), or TypeError."""
    if type(name) is not str:
        if not isinstance(name, str):
            raise TypeError("%s name must be str, not %s" % (what, type(name).__name__))
        name = str.__str__(name)
    return name


def _values_any_case(entries, key):
    return [value for entry_name, value in entries
            if entry_name is not None and entry_name.lower() == key]


class PrepareConfReq:
    """A6.PrepareConf.Req (the message ``payload[start:end]``): ``conf`` (list of ``(plugin name,
    JSON text)``) and ``key``.

    With ``max_entries``, a conf listing more raises TooManyPlugins before any entry is read."""

    __slots__ = ("conf", "key")

    def __init__(self, payload, max_entries=None, start=0, end=None):
        buf = _part(payload, start, end)
        self.conf, self.key = _fb.guarded(self._read, buf, max_entries)

    @staticmethod
    def _read(buf, max_entries):
        tab = _fb.root_table(buf)
        key = _fb.field_string(buf, tab, 1)
        if max_entries is not None:
            count = _fb.entry_count(buf, tab, 0)
            if count > max_entries:
                raise TooManyPlugins(count, max_entries, key)
        return _entries_or_empty(buf, tab, 0), key

    def __repr__(self):
        return "PrepareConfReq(key=%r, conf=%r)" % (self.key, [name for name, _ in self.conf])


class HTTPReqCallReq:
    """A6.HTTPReqCall.Req (the message ``payload[start:end]``): scalars read at once; path,
    src_ip, args, headers on first use."""

    __slots__ = ("id", "method", "conf_token", "_buf", "_tab",
                 "_path", "_src_ip", "_args", "_headers")

    def __init__(self, payload, start=0, end=None):
        buf = _part(payload, start, end)
        tab, self.id, self.method, self.conf_token = _fb.guarded(self._read, buf)
        self._buf = buf
        self._tab = tab
        self._path = self._src_ip = self._args = self._headers = _UNSET

    @staticmethod
    def _read(buf):
        tab = _fb.root_table(buf)
        method = _fb.field_u8(buf, tab, 2)
        if method > _METHOD_MAX:
            raise DecodeError("unknown method %d" % method)
        return tab, _fb.field_u32(buf, tab, 0), method, _fb.field_u32(buf, tab, 6)

    # A failed decode is not cached, so a corrupt field raises again on every access.
    @property
    def path(self):
        """The path without its query; None when absent."""
        value = self._path
        if value is _UNSET:
            value = self._path = _fb.guarded(_fb.field_string, self._buf, self._tab, 3)
        return value

    @property
    def src_ip(self):
        """The client address as 4 or 16 raw bytes; None when absent."""
        value = self._src_ip
        if value is _UNSET:
            value = self._src_ip = _fb.guarded(_fb.field_bytes, self._buf, self._tab, 1)
        return value

    @property
    def args(self):
        """Query args as ``(name, value)``; a bare ``?flag`` has value None."""
        value = self._args
        if value is _UNSET:
            value = self._args = _fb.guarded(_entries_or_empty, self._buf, self._tab, 4)
        return value

    @property
    def headers(self):
        """Request headers as ``(name, value)``, names repeated for multi-valued headers."""
        value = self._headers
        if value is _UNSET:
            value = self._headers = _fb.guarded(_entries_or_empty, self._buf, self._tab, 5)
        return value

    # The lookups are their definition over the decoded lists: the oracle for the compiled ones,
    # which compare names as bytes.
    def header_values(self, name):
        """The values of the headers called ``name`` in any case, in order."""
        key = _lookup_name(name, "header").lower()
        return _values_any_case(self.headers, key)

    def arg_values(self, name):
        """The values of the query args called exactly ``name``, in order."""
        name = _lookup_name(name, "arg")
        return [value for arg_name, value in self.args if arg_name == name]

    def __repr__(self):
        return "HTTPReqCallReq(id=%d, conf_token=%d, method=%s)" % (
            self.id, self.conf_token, _METHODS[self.method])


class HTTPRespCallReq:
    """A6.HTTPRespCall.Req (the message ``payload[start:end]``): scalars read at once,
    ``headers`` on use."""

    __slots__ = ("id", "status", "conf_token", "_buf", "_tab", "_headers")

    def __init__(self, payload, start=0, end=None):
        buf = _part(payload, start, end)
        tab, self.id, self.status, self.conf_token = _fb.guarded(self._read, buf)
        self._buf = buf
        self._tab = tab
        self._headers = _UNSET

    @staticmethod
    def _read(buf):
        tab = _fb.root_table(buf)
        return (tab, _fb.field_u32(buf, tab, 0), _fb.field_u16(buf, tab, 1),
                _fb.field_u32(buf, tab, 3))

    @property
    def headers(self):
        """Upstream response headers as ``(name, value)``."""
        value = self._headers
        if value is _UNSET:
            value = self._headers = _fb.guarded(_entries_or_empty, self._buf, self._tab, 2)
        return value

    def header_values(self, name):
        """The values of the headers called ``name`` in any case, in order."""
        key = _lookup_name(name, "header").lower()
        return _values_any_case(self.headers, key)

    def __repr__(self):
        return "HTTPRespCallReq(id=%d, conf_token=%d, status=%d)" % (
            self.id, self.conf_token, self.status)


def decode_prepare_conf_req(payload, max_entries=None, start=0, end=None):
    """Read the A6.PrepareConf.Req ``payload[start:end]``; TooManyPlugins if it lists more than
    ``max_entries``."""
    return PrepareConfReq(payload, max_entries, start, end)


def decode_http_req_call(payload, start=0, end=None):
    """Read the A6.HTTPReqCall.Req ``payload[start:end]``."""
    return HTTPReqCallReq(payload, start, end)


def decode_http_resp_call(payload, start=0, end=None):
    """Read the A6.HTTPRespCall.Req ``payload[start:end]``."""
    return HTTPRespCallReq(payload, start, end)


def _read_extra_info_resp(buf):
    return _fb.field_bytes(buf, _fb.root_table(buf), 0)


def decode_extra_info_resp(payload, start=0, end=None):
    """``result`` of the A6.ExtraInfo.Resp ``payload[start:end]``: bytes, or None when absent."""
    return _fb.guarded(_read_extra_info_resp, _part(payload, start, end))


# ---------------------------------------------------------------------------------------------
# Runner-side writes

def encode_err(code):
    """An Err frame with ``code`` (A6.Err.Code), written even when 0."""
    return _fb.build_frame(_RPC_ERR, [(0, "B", _fb.check_uint(code, 2, "code"))])


def encode_prepare_conf_resp(conf_token):
    """The PrepareConf answer carrying ``conf_token``."""
    conf_token = _fb.check_uint(conf_token, 0xFFFFFFFF, "conf_token")
    return _fb.build_frame(_RPC_PREPARE_CONF, [(0, "I", conf_token)])


def encode_no_action(id):
    """HTTPReqCall.Resp with no action: the request goes on unchanged."""
    return _fb.build_frame(_RPC_HTTP_REQ_CALL, [
        (0, "I", _fb.check_uint(id, 0xFFFFFFFF, "id")), (1, "B", _ACTION_NONE)])


def encode_stop(id, status, headers, body):
    """HTTPReqCall.Resp with a Stop action: the gateway answers the client itself."""
    id = _fb.check_uint(id, 0xFFFFFFFF, "id")
    stop = [(0, "H", _fb.check_uint(status, 0xFFFF, "status"))]
    _fb.entries_field(stop, 1, headers, "headers")
    _fb.body_field(stop, 2, body, "body")
    return _fb.build_frame(_RPC_HTTP_REQ_CALL, [
        (0, "I", id), (1, "B", _ACTION_STOP), (2, "t", stop)])


def encode_rewrite(id, path, headers, args, resp_headers, body):
    """HTTPReqCall.Resp with a Rewrite action: changes to the upstream request."""
    id = _fb.check_uint(id, 0xFFFFFFFF, "id")
    rewrite = []
    _fb.text_field(rewrite, 0, path, "path")
    _fb.entries_field(rewrite, 1, headers, "headers")
    _fb.entries_field(rewrite, 2, args, "args")
    _fb.entries_field(rewrite, 3, resp_headers, "resp_headers")
    _fb.body_field(rewrite, 4, body, "body")
    return _fb.build_frame(_RPC_HTTP_REQ_CALL, [
        (0, "I", id), (1, "B", _ACTION_REWRITE), (2, "t", rewrite)])


def encode_http_resp_call_resp(id, status, headers, body):
    """HTTPRespCall.Resp: optional new status, headers and body for the client's response."""
    fields = [(0, "I", _fb.check_uint(id, 0xFFFFFFFF, "id")),
              (1, "H", _fb.check_uint(status, 0xFFFF, "status"))]
    _fb.entries_field(fields, 2, headers, "headers")
    _fb.body_field(fields, 3, body, "body")
    return _fb.build_frame(_RPC_HTTP_RESP_CALL, fields)


def encode_extra_info_var(name):
    """ExtraInfo.Req asking for the gateway variable ``name``."""
    if name is None:
        raise EncodeError("var name must be str or bytes, not None")
    var = [(0, "s", _fb.to_text(name, "var name"))]
    return _fb.build_frame(_RPC_EXTRA_INFO, [(0, "B", _INFO_VAR), (1, "t", var)])


def encode_extra_info_req_body():
    """ExtraInfo.Req asking for the request body."""
    return _fb.build_frame(_RPC_EXTRA_INFO, [(0, "B", _INFO_REQ_BODY), (1, "t", [])])


def encode_extra_info_resp_body():
    """ExtraInfo.Req asking for the upstream response body (only during HTTPRespCall)."""
    return _fb.build_frame(_RPC_EXTRA_INFO, [(0, "B", _INFO_RESP_BODY), (1, "t", [])])
