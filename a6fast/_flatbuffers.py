"""FlatBuffers tables in pure Python: a bounds-checked reader and a builder.

The pure codec (``a6fast._codec_py``) reads and writes the runner's side of the protocol with
them, and the gateway side (``a6fast.gateway``) the gateway's; the compiled codec has its own, in
C.  Nothing here knows a message of the protocol: callers name the slots.

Reading: a table is the tuple ``(pos, vt, vtsize, tblsize)``; every offset is checked against the
buffer before it is followed, and a uoffset of 0 (pointing at itself) is rejected, as the official
verifier does.  Malformed input raises ``DecodeError`` (through ``guarded``), never anything else.

Building: one ``bytearray`` that starts with the 4-byte frame header, filled front to back.
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
The compiled codec writes exactly this layout.
"""
import operator
import struct

from .errors import DecodeError, EncodeError
from .protocol import HEADER_SIZE, MAX_PAYLOAD

_unpack_u16 = struct.Struct("<H").unpack_from
_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_s32 = struct.Struct("<i").unpack_from
_pack_u16 = struct.Struct("<H").pack_into
_pack_u32 = struct.Struct("<I").pack_into
_pack_s32 = struct.Struct("<i").pack_into
_u32_bytes = struct.Struct("<I").pack

# Errors a reader must never let escape; each is turned into DecodeError.
_LEAKS = (IndexError, struct.error, OverflowError, UnicodeError, RecursionError)


# ---------------------------------------------------------------------------------------------
# Reading

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
# Building
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
