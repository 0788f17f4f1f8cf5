"""The pure-Python codec: the same API and behaviour as ``a6fast._codec`` (see ``a6fast.codec``).

It is also the test oracle for the compiled twin, so every rule below is exact.

Reading: a bounds-checked FlatBuffers table reader.  A table is the tuple
``(pos, vt, vtsize, tblsize)``; every offset is checked against the buffer before it is followed,
and a uoffset of 0 (pointing at itself) is rejected, as the official verifier does.  Decoders copy
a non-``bytes`` payload once, so lazy fields never see later changes to a reused buffer.

Writing: one ``bytearray`` that starts with the 4-byte frame header, filled front to back.
Layout of every payload (positions relative to the payload start)::

    [root uoffset][vtable][table inline][children, in slot order, depth first]...

Each object (vtable, table, string, vector) starts 4-byte aligned, padding is zero, and the
payload ends with the last byte of its last object.  A table's vtable precedes it (2 bytes of
padding between them when the slot count is odd) and has ``1 + highest present slot`` entries.
Inline fields follow the 4-byte soffset: first the 4-byte ones (uoffsets, uint32), then uint16,
then ubyte, each group in slot order; the inline size is not padded.  Every scalar field of a
table is written, zero or not; ``None`` leaves an optional string/vector/table field out.
Strings are NUL-terminated, byte vectors are not.  A vector of TextEntry is
``[len][len uoffsets]`` followed by the entry tables, each followed by its name then value.
"""
import operator
import struct

from .errors import DecodeError, EncodeError, TooManyPlugins
from .protocol import (
    ACTION_NONE, ACTION_REWRITE, ACTION_STOP, HEADER_SIZE, INFO_REQ_BODY, INFO_RESP_BODY,
    INFO_VAR, MAX_PAYLOAD, METHODS, RPC_ERR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL,
    RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF,
)

_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_s32 = struct.Struct("<i").unpack_from
_unpack_header = struct.Struct(">I").unpack_from
_pack_u16 = struct.Struct("<H").pack_into
_pack_u32 = struct.Struct("<I").pack_into
_pack_s32 = struct.Struct("<i").pack_into
_u32_bytes = struct.Struct("<I").pack

_METHOD_MAX = len(METHODS) - 1
# Errors a reader must never let escape; each is turned into DecodeError.
_LEAKS = (IndexError, struct.error, OverflowError, UnicodeError, RecursionError)


# ---------------------------------------------------------------------------------------------
# Frame header

def encode_header(rpc_type, length):
    """The 4-byte frame header: RPC type, then the payload length as 24-bit big-endian."""
    rpc_type = check_uint(rpc_type, 0xFF, "rpc type")
    length = check_uint(length, MAX_PAYLOAD, "payload length")
    return bytes((rpc_type, length >> 16, (length >> 8) & 0xFF, length & 0xFF))


def decode_header(data, offset=0):
    """``(rpc_type, length)`` from the 4 bytes at ``offset`` of a bytes-like object."""
    try:
        view = memoryview(data)
    except TypeError:
        raise DecodeError("frame header: not bytes-like") from None
    try:
        offset = operator.index(offset)
    except TypeError:
        raise DecodeError("frame header: offset is not an int") from None
    # unpack_from would count a negative offset from the end; that is never meant here.
    if offset < 0 or offset + HEADER_SIZE > view.nbytes:
        raise DecodeError("frame header: fewer than 4 bytes")
    if not view.c_contiguous:
        view = view.tobytes()
    (word,) = _unpack_header(view, offset)
    return word >> 24, word & 0xFFFFFF


# ---------------------------------------------------------------------------------------------
# Reader helpers (shared with a6fast.gateway)

def snapshot(payload):
    """The payload as ``bytes``: lazy fields must not see later changes to a reused buffer."""
    if type(payload) is bytes:
        return payload
    try:
        return memoryview(payload).tobytes()
    except TypeError:
        raise DecodeError("payload is not bytes-like") from None


def table_at(buf, pos):
    """Check the table at ``pos`` and its vtable; return ``(pos, vt, vtsize, tblsize)``."""
    n = len(buf)
    if pos + 4 > n:
        raise DecodeError("table outside the buffer")
    vt = pos - _unpack_s32(buf, pos)[0]
    if vt < 0 or vt + 4 > n:
        raise DecodeError("vtable outside the buffer")
    vtsize, tblsize = _unpack_u16(buf, vt)[0], _unpack_u16(buf, vt + 2)[0]
    if vtsize < 4 or vtsize & 1 or vt + vtsize > n:
        raise DecodeError("bad vtable size")
    if tblsize < 4 or pos + tblsize > n:
        raise DecodeError("bad table size")
    return pos, vt, vtsize, tblsize


def root_table(buf):
    """The root table of a payload."""
    if len(buf) < 4:
        raise DecodeError("payload shorter than 4 bytes")
    return table_at(buf, _unpack_u32(buf, 0)[0])


def field_pos(buf, tab, slot, width):
    """Absolute position of field ``slot`` (``width`` bytes wide), or -1 when absent."""
    pos, vt, vtsize, tblsize = tab
    entry = 4 + 2 * slot
    if entry >= vtsize:
        return -1
    off = _unpack_u16(buf, vt + entry)[0]
    if off == 0:
        return -1
    if off + width > tblsize:
        raise DecodeError("field outside its table")
    return pos + off


def field_u8(buf, tab, slot):
    """A ubyte field; 0 when absent."""
    at = field_pos(buf, tab, slot, 1)
    return 0 if at < 0 else buf[at]


def field_u16(buf, tab, slot):
    """A uint16 field; 0 when absent."""
    at = field_pos(buf, tab, slot, 2)
    return 0 if at < 0 else _unpack_u16(buf, at)[0]


def field_u32(buf, tab, slot):
    """A uint32 field; 0 when absent."""
    at = field_pos(buf, tab, slot, 4)
    return 0 if at < 0 else _unpack_u32(buf, at)[0]


def _follow(buf, at):
    """Target of the uoffset stored at ``at``; the target's first 4 bytes must be in the buffer."""
    off = _unpack_u32(buf, at)[0]
    # An offset of 0 would point at itself: never written by a builder.
    if off == 0:
        raise DecodeError("offset points at itself")
    target = at + off
    if target + 4 > len(buf):
        raise DecodeError("offset points outside the buffer")
    return target


def _span(buf, at, elem_size):
    """``(start, count)`` of the vector whose uoffset is stored at ``at``."""
    target = _follow(buf, at)
    count = _unpack_u32(buf, target)[0]
    start = target + 4
    if start + count * elem_size > len(buf):
        raise DecodeError("vector longer than the buffer")
    return start, count


def _string_at(buf, at):
    start, count = _span(buf, at, 1)
    return buf[start:start + count].decode("utf-8", "surrogateescape")


def field_string(buf, tab, slot):
    """A string field as ``str`` (UTF-8, surrogateescape); None when absent."""
    at = field_pos(buf, tab, slot, 4)
    if at < 0:
        return None
    return _string_at(buf, at)


def field_bytes(buf, tab, slot):
    """A ``[ubyte]`` field as ``bytes``; None when absent."""
    at = field_pos(buf, tab, slot, 4)
    if at < 0:
        return None
    start, count = _span(buf, at, 1)
    return buf[start:start + count]


def field_table(buf, tab, slot):
    """A table field, checked; None when absent."""
    at = field_pos(buf, tab, slot, 4)
    if at < 0:
        return None
    return table_at(buf, _follow(buf, at))


# FlatBuffers lets any number of offsets point at one object: a vector whose 4-byte slots all name
# one entry with a long value would decode to far more text than the payload holds (quadratic in
# its size).  So each entry is charged what it occupies of its own in a payload where nothing is
# shared (ENTRY_COST: its slot and its table's soffset; STRING_COST + length for each string), and
# one vector may charge at most entries_budget(payload size): twice the payload plus 4 KiB, room
# for a builder's shared strings (CreateSharedString) while an unshared payload never charges
# more than its size.  The budget is per vector, not per frame, so whether a field decodes does
# not depend on which fields a plugin read before; a message has a fixed handful of fields, each
# decoded at most once (lazy fields are cached) and single strings cost at most the payload, so
# decoding a whole frame stays linear in its size.
ENTRY_COST = 8
STRING_COST = 4


def entries_budget(size):
    """What the entries of one vector in a payload of ``size`` bytes may charge in all."""
    return 2 * size + 4096


def entry_count(buf, tab, slot):
    """How many entries the vector field ``slot`` lists (0 when absent), none of them read."""
    at = field_pos(buf, tab, slot, 4)
    return 0 if at < 0 else _span(buf, at, 4)[1]


def field_entries(buf, tab, slot):
    """A ``[TextEntry]`` field as a list of ``(name, value)``; None when absent."""
    at = field_pos(buf, tab, slot, 4)
    if at < 0:
        return None
    start, count = _span(buf, at, 4)
    budget = entries_budget(len(buf))
    entries = []
    append = entries.append
    for elem in range(start, start + 4 * count, 4):
        entry = table_at(buf, _follow(buf, elem))
        name_at = field_pos(buf, entry, 0, 4)
        value_at = field_pos(buf, entry, 1, 4)
        budget -= ENTRY_COST
        name = value = None
        if name_at >= 0:
            name_start, name_len = _span(buf, name_at, 1)
            budget -= STRING_COST + name_len
        if value_at >= 0:
            value_start, value_len = _span(buf, value_at, 1)
            budget -= STRING_COST + value_len
        if budget < 0:
            raise DecodeError("entries at %d share more text than the payload holds" % start)
        if name_at >= 0:
            name = buf[name_start:name_start + name_len].decode("utf-8", "surrogateescape")
        if value_at >= 0:
            value = buf[value_start:value_start + value_len].decode("utf-8", "surrogateescape")
        append((name, value))
    return entries


def guarded(read, *args):
    """Call a reader; anything but DecodeError that escapes it becomes DecodeError."""
    try:
        return read(*args)
    except DecodeError:
        raise
    except _LEAKS as exc:
        raise DecodeError("malformed payload (%s)" % type(exc).__name__) from exc


# ---------------------------------------------------------------------------------------------
# Runner-side reads

_UNSET = object()


def _entries_or_empty(buf, tab, slot):
    entries = field_entries(buf, tab, slot)
    return [] if entries is None else entries


class PrepareConfReq:
    """A6.PrepareConf.Req: ``conf`` (list of ``(plugin name, JSON text)``) and ``key``.

    With ``max_entries``, a conf listing more raises TooManyPlugins before any entry is read."""

    __slots__ = ("conf", "key")

    def __init__(self, payload, max_entries=None):
        buf = snapshot(payload)
        self.conf, self.key = guarded(self._read, buf, max_entries)

    @staticmethod
    def _read(buf, max_entries):
        tab = root_table(buf)
        key = field_string(buf, tab, 1)
        if max_entries is not None:
            count = entry_count(buf, tab, 0)
            if count > max_entries:
                raise TooManyPlugins(count, max_entries, key)
        return _entries_or_empty(buf, tab, 0), key

    def __repr__(self):
        return "PrepareConfReq(key=%r, conf=%r)" % (self.key, [name for name, _ in self.conf])


class HTTPReqCallReq:
    """A6.HTTPReqCall.Req: scalars read at once; path, src_ip, args, headers on first use."""

    __slots__ = ("id", "method", "conf_token", "_buf", "_tab",
                 "_path", "_src_ip", "_args", "_headers")

    def __init__(self, payload):
        buf = snapshot(payload)
        tab, self.id, self.method, self.conf_token = guarded(self._read, buf)
        self._buf = buf
        self._tab = tab
        self._path = self._src_ip = self._args = self._headers = _UNSET

    @staticmethod
    def _read(buf):
        tab = root_table(buf)
        method = field_u8(buf, tab, 2)
        if method > _METHOD_MAX:
            raise DecodeError("unknown method %d" % method)
        return tab, field_u32(buf, tab, 0), method, field_u32(buf, tab, 6)

    # A failed decode is not cached, so a corrupt field raises again on every access.
    @property
    def path(self):
        """The path without its query; None when absent."""
        value = self._path
        if value is _UNSET:
            value = self._path = guarded(field_string, self._buf, self._tab, 3)
        return value

    @property
    def src_ip(self):
        """The client address as 4 or 16 raw bytes; None when absent."""
        value = self._src_ip
        if value is _UNSET:
            value = self._src_ip = guarded(field_bytes, self._buf, self._tab, 1)
        return value

    @property
    def args(self):
        """Query args as ``(name, value)``; a bare ``?flag`` has value None."""
        value = self._args
        if value is _UNSET:
            value = self._args = guarded(_entries_or_empty, self._buf, self._tab, 4)
        return value

    @property
    def headers(self):
        """Request headers as ``(name, value)``, names repeated for multi-valued headers."""
        value = self._headers
        if value is _UNSET:
            value = self._headers = guarded(_entries_or_empty, self._buf, self._tab, 5)
        return value

    def __repr__(self):
        return "HTTPReqCallReq(id=%d, conf_token=%d, method=%s)" % (
            self.id, self.conf_token, METHODS[self.method])


class HTTPRespCallReq:
    """A6.HTTPRespCall.Req: scalars read at once, ``headers`` on use."""

    __slots__ = ("id", "status", "conf_token", "_buf", "_tab", "_headers")

    def __init__(self, payload):
        buf = snapshot(payload)
        tab, self.id, self.status, self.conf_token = guarded(self._read, buf)
        self._buf = buf
        self._tab = tab
        self._headers = _UNSET

    @staticmethod
    def _read(buf):
        tab = root_table(buf)
        return tab, field_u32(buf, tab, 0), field_u16(buf, tab, 1), field_u32(buf, tab, 3)

    @property
    def headers(self):
        """Upstream response headers as ``(name, value)``."""
        value = self._headers
        if value is _UNSET:
            value = self._headers = guarded(_entries_or_empty, self._buf, self._tab, 2)
        return value

    def __repr__(self):
        return "HTTPRespCallReq(id=%d, conf_token=%d, status=%d)" % (
            self.id, self.conf_token, self.status)


def decode_prepare_conf_req(payload, max_entries=None):
    """Read an A6.PrepareConf.Req payload; TooManyPlugins if it lists more than ``max_entries``."""
    return PrepareConfReq(payload, max_entries)


def decode_http_req_call(payload):
    """Read an A6.HTTPReqCall.Req payload."""
    return HTTPReqCallReq(payload)


def decode_http_resp_call(payload):
    """Read an A6.HTTPRespCall.Req payload."""
    return HTTPRespCallReq(payload)


def _read_extra_info_resp(buf):
    return field_bytes(buf, root_table(buf), 0)


def decode_extra_info_resp(payload):
    """``result`` of an A6.ExtraInfo.Resp payload: bytes, or None when absent."""
    return guarded(_read_extra_info_resp, snapshot(payload))


# ---------------------------------------------------------------------------------------------
# Writer helpers (shared with a6fast.gateway)
#
# A table is described as a list of fields ``(slot, kind, value)``; kind is "B", "H" or "I" for
# a scalar, or "s" (string bytes), "v" (ubyte vector bytes), "e" (TextEntry list of
# ``(name bytes, value bytes | None)``) and "t" (a nested table's field list).

_WIDTH = {"I": 4, "s": 4, "v": 4, "e": 4, "t": 4, "H": 2, "B": 1}


def check_uint(value, top, what):
    """``value`` as an int in ``0..top``; EncodeError otherwise."""
    try:
        value = operator.index(value)
    except TypeError:
        raise EncodeError("%s must be an int, not %s" % (what, type(value).__name__)) from None
    if not 0 <= value <= top:
        raise EncodeError("%s %d out of range 0..%d" % (what, value, top))
    return value


def to_text(value, what):
    """A string field's bytes: ``str`` encoded UTF-8 (surrogateescape), or bytes-like."""
    if type(value) is str:
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise EncodeError("%s cannot be encoded as UTF-8" % what) from None
    if type(value) is bytes:
        return value
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise EncodeError("%s must be str or bytes, not %s"
                          % (what, type(value).__name__)) from None
    except ValueError as exc:                          # a released memoryview
        raise EncodeError("%s: %s" % (what, exc)) from None


def to_body(value, what):
    """A ``[ubyte]`` field's bytes from a bytes-like value; None stays None (absent)."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, str):
        raise EncodeError("%s must be bytes, not str" % what)
    try:
        return memoryview(value).tobytes()
    except TypeError:
        raise EncodeError("%s must be bytes, not %s" % (what, type(value).__name__)) from None
    except ValueError as exc:                          # a released memoryview
        raise EncodeError("%s: %s" % (what, exc)) from None


def to_entries(value, what):
    """A TextEntry list from an iterable of ``(name, value)`` tuples/lists; None stays None."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        raise EncodeError("%s must be an iterable of (name, value) pairs" % what)
    try:
        items = iter(value)
    except TypeError:
        raise EncodeError("%s must be an iterable of (name, value) pairs" % what) from None
    entries = []
    for item in items:
        # Only real pairs: a 2-character string would otherwise unpack as (name, value).
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise EncodeError("%s: each entry must be a (name, value) pair" % what)
        try:
            name, text = item
        except ValueError:                             # a subclass whose __len__ lied
            raise EncodeError("%s: each entry must be a (name, value) pair" % what) from None
        if name is None:
            raise EncodeError("%s: entry name must not be None" % what)
        entries.append((to_text(name, what), None if text is None else to_text(text, what)))
    return entries


def _raw_size(fields):
    """Bytes of string/vector data in a field list: a lower bound of the payload size."""
    size = 0
    for _, kind, value in fields:
        if kind in "sv":
            size += len(value)
        elif kind == "e":
            for name, text in value:
                size += len(name) + (0 if text is None else len(text))
        elif kind == "t":
            size += _raw_size(value)
    return size


def _pad4(out):
    rest = len(out) & 3
    if rest:
        out += bytes(4 - rest)


def _put_vector(out, data, nul):
    _pad4(out)
    pos = len(out)
    out += _u32_bytes(len(data))
    out += data
    if nul:
        out.append(0)
    return pos


def _put_entries(out, entries):
    _pad4(out)
    pos = len(out)
    out += _u32_bytes(len(entries))
    first = len(out)
    out += bytes(4 * len(entries))
    for index, (name, text) in enumerate(entries):
        fields = [(0, "s", name)]
        if text is not None:
            fields.append((1, "s", text))
        elem = first + 4 * index
        _pack_u32(out, elem, put_table(out, fields) - elem)
    return pos


def put_table(out, fields):
    """Append a table (vtable first, then inline fields, then children); return its position."""
    nslots = 1 + max((field[0] for field in fields), default=-1)
    inline = sorted(fields, key=lambda field: (-_WIDTH[field[1]], field[0]))
    vtable = [0] * nslots
    offset = 4
    for slot, kind, _ in inline:
        vtable[slot] = offset
        offset += _WIDTH[kind]
    vtsize = 4 + 2 * nslots
    _pad4(out)
    vt = len(out)
    out += struct.pack("<%dH" % (2 + nslots), vtsize, offset, *vtable)
    _pad4(out)
    pos = len(out)
    out += bytes(offset)
    _pack_s32(out, pos, pos - vt)
    children = []
    for slot, kind, value in inline:
        at = pos + vtable[slot]
        if kind == "I":
            _pack_u32(out, at, value)
        elif kind == "H":
            _pack_u16(out, at, value)
        elif kind == "B":
            out[at] = value
        else:
            children.append((at, kind, value))
    # Offset fields are all 4 wide, so ``inline`` already lists them in slot order.
    for at, kind, value in children:
        if kind == "s":
            child = _put_vector(out, value, True)
        elif kind == "v":
            child = _put_vector(out, value, False)
        elif kind == "e":
            child = _put_entries(out, value)
        else:
            child = put_table(out, value)
        _pack_u32(out, at, child - at)
    return pos


def build_frame(rpc_type, fields):
    """A whole frame (header + payload) whose root table has ``fields``."""
    if _raw_size(fields) > MAX_PAYLOAD:
        raise EncodeError("payload larger than %d bytes" % MAX_PAYLOAD)
    out = bytearray(HEADER_SIZE + 4)
    root = put_table(out, fields)
    _pack_u32(out, HEADER_SIZE, root - HEADER_SIZE)
    length = len(out) - HEADER_SIZE
    if length > MAX_PAYLOAD:
        raise EncodeError("payload larger than %d bytes" % MAX_PAYLOAD)
    out[0] = rpc_type
    out[1:4] = length.to_bytes(3, "big")
    return bytes(out)


def entries_field(fields, slot, value, what):
    """Append a TextEntry-list field unless ``value`` is None."""
    entries = to_entries(value, what)
    if entries is not None:
        fields.append((slot, "e", entries))


def body_field(fields, slot, value, what):
    """Append a ``[ubyte]`` field unless ``value`` is None."""
    data = to_body(value, what)
    if data is not None:
        fields.append((slot, "v", data))


def text_field(fields, slot, value, what):
    """Append a string field unless ``value`` is None."""
    if value is not None:
        fields.append((slot, "s", to_text(value, what)))


# ---------------------------------------------------------------------------------------------
# Runner-side writes

def encode_err(code):
    """An Err frame with ``code`` (A6.Err.Code), written even when 0."""
    return build_frame(RPC_ERR, [(0, "B", check_uint(code, 2, "code"))])


def encode_prepare_conf_resp(conf_token):
    """The PrepareConf answer carrying ``conf_token``."""
    conf_token = check_uint(conf_token, 0xFFFFFFFF, "conf_token")
    return build_frame(RPC_PREPARE_CONF, [(0, "I", conf_token)])


def encode_no_action(id):
    """HTTPReqCall.Resp with no action: the request goes on unchanged."""
    return build_frame(RPC_HTTP_REQ_CALL, [
        (0, "I", check_uint(id, 0xFFFFFFFF, "id")), (1, "B", ACTION_NONE)])


def encode_stop(id, status, headers, body):
    """HTTPReqCall.Resp with a Stop action: the gateway answers the client itself."""
    id = check_uint(id, 0xFFFFFFFF, "id")
    stop = [(0, "H", check_uint(status, 0xFFFF, "status"))]
    entries_field(stop, 1, headers, "headers")
    body_field(stop, 2, body, "body")
    return build_frame(RPC_HTTP_REQ_CALL, [(0, "I", id), (1, "B", ACTION_STOP), (2, "t", stop)])


def encode_rewrite(id, path, headers, args, resp_headers, body):
    """HTTPReqCall.Resp with a Rewrite action: changes to the upstream request."""
    id = check_uint(id, 0xFFFFFFFF, "id")
    rewrite = []
    text_field(rewrite, 0, path, "path")
    entries_field(rewrite, 1, headers, "headers")
    entries_field(rewrite, 2, args, "args")
    entries_field(rewrite, 3, resp_headers, "resp_headers")
    body_field(rewrite, 4, body, "body")
    return build_frame(RPC_HTTP_REQ_CALL, [
        (0, "I", id), (1, "B", ACTION_REWRITE), (2, "t", rewrite)])


def encode_http_resp_call_resp(id, status, headers, body):
    """HTTPRespCall.Resp: optional new status, headers and body for the client's response."""
    fields = [(0, "I", check_uint(id, 0xFFFFFFFF, "id")),
              (1, "H", check_uint(status, 0xFFFF, "status"))]
    entries_field(fields, 2, headers, "headers")
    body_field(fields, 3, body, "body")
    return build_frame(RPC_HTTP_RESP_CALL, fields)


def encode_extra_info_var(name):
    """ExtraInfo.Req asking for the gateway variable ``name``."""
    if name is None:
        raise EncodeError("var name must be str or bytes, not None")
    var = [(0, "s", to_text(name, "var name"))]
    return build_frame(RPC_EXTRA_INFO, [(0, "B", INFO_VAR), (1, "t", var)])


def encode_extra_info_req_body():
    """ExtraInfo.Req asking for the request body."""
    return build_frame(RPC_EXTRA_INFO, [(0, "B", INFO_REQ_BODY), (1, "t", [])])


def encode_extra_info_resp_body():
    """ExtraInfo.Req asking for the upstream response body (only during HTTPRespCall)."""
    return build_frame(RPC_EXTRA_INFO, [(0, "B", INFO_RESP_BODY), (1, "t", [])])
