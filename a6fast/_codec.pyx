# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, overflowcheck=False, auto_pickle=False
"""The compiled codec: the API and behaviour documented in ``a6fast.codec``, byte for byte and
error for error the same as its pure twin ``a6fast._codec_py`` (whose tables are read and built by
``a6fast._flatbuffers``: its docstring gives the layout).

Reads check every offset against the payload before following it, in 64-bit arithmetic so that
no length near 2**32 can wrap.  Writers run one layout function twice: once measuring, once
filling a single ``bytes`` allocated at the measured size.
"""
cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact,
                            PyBytes_FromStringAndSize, PyBytes_GET_SIZE)
from cpython.list cimport PyList_Check, PyList_CheckExact
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_Check, PyTuple_CheckExact
from cpython.unicode cimport (PyUnicode_AsUTF8AndSize, PyUnicode_Check, PyUnicode_CheckExact,
                              PyUnicode_Compare, PyUnicode_DecodeUTF8)
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from .errors import DecodeError, EncodeError, TooManyPlugins
from .protocol import METHODS as _METHODS

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

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    const char* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    PyObject* PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)   # a list's or tuple's item

cdef enum:
    MAX_PAYLOAD = 0xFFFFFF
    METHOD_MAX = 14       # A6.Method TRACE


# ---------------------------------------------------------------------------------------------
# Reading

# Little-endian reads composed from bytes: right on any host, and gcc folds each into one load.
cdef inline uint32_t _u16(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8)


cdef inline uint32_t _u32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16)
            | (<uint32_t>p[3] << 24))


cdef struct _Table:
    int64_t pos           # the table (its soffset)
    int64_t vt            # its vtable
    int64_t vtsize
    int64_t size          # inline size, from the vtable


cdef inline int _open_table(const uint8_t* p, int64_t n, int64_t pos, _Table* t) except -1:
    cdef int64_t vt, vtsize, size
    if pos + 4 > n:
        raise DecodeError("table at %d outside the buffer of %d bytes" % (pos, n))
    vt = pos - <int64_t><int32_t>_u32(p + pos)
    if vt < 0 or vt + 4 > n:
        raise DecodeError("vtable at %d outside the buffer" % vt)
    vtsize = _u16(p + vt)
    if vtsize < 4 or vtsize & 1 or vt + vtsize > n:
        raise DecodeError("bad vtable size %d at %d" % (vtsize, vt))
    size = _u16(p + vt + 2)
    if size < 4 or pos + size > n:
        raise DecodeError("bad table size %d at %d" % (size, pos))
    t.pos = pos
    t.vt = vt
    t.vtsize = vtsize
    t.size = size
    return 0


cdef int _open_root(const uint8_t* p, int64_t n, _Table* t) except -1:
    if n < 4:
        raise DecodeError("payload of %d bytes is shorter than 4" % n)
    return _open_table(p, n, _u32(p), t)


cdef inline int64_t _field(const uint8_t* p, const _Table* t, int slot, int width) except -2:
    """Position of a present field, checked to lie inside its table; -1 when absent."""
    cdef int64_t at = 4 + 2 * slot
    cdef int64_t off
    if at >= t.vtsize:
        return -1
    off = _u16(p + t.vt + at)
    if off == 0:
        return -1
    if off + width > t.size:
        raise DecodeError("field %d of the table at %d overruns it" % (slot, t.pos))
    return t.pos + off


cdef inline int64_t _follow(const uint8_t* p, int64_t n, int64_t at) except -1:
    """Target of the uoffset stored at ``at``, with room for its first 4 bytes."""
    cdef uint32_t off = _u32(p + at)
    cdef int64_t target = at + off
    if off == 0:
        raise DecodeError("offset at %d points at itself" % at)
    if target + 4 > n:
        raise DecodeError("offset at %d points outside the buffer" % at)
    return target


cdef inline int64_t _vector(const uint8_t* p, int64_t n, int64_t at, int64_t elsize,
                     int64_t* count) except -1:
    """Start of the elements of the vector referenced at ``at``; its length goes to ``count``."""
    cdef int64_t target = _follow(p, n, at)
    cdef int64_t length = _u32(p + target)
    if length * elsize > n - target - 4:
        raise DecodeError("vector at %d of %d elements overruns the buffer" % (target, length))
    count[0] = length
    return target + 4


cdef object _string(const uint8_t* p, int64_t n, const _Table* t, int slot):
    cdef int64_t length, start
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return None
    start = _vector(p, n, at, 1, &length)
    return PyUnicode_DecodeUTF8(<const char*>p + start, length, "surrogateescape")


cdef object _ubytes(const uint8_t* p, int64_t n, const _Table* t, int slot):
    cdef int64_t length, start
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return None
    start = _vector(p, n, at, 1, &length)
    return PyBytes_FromStringAndSize(<const char*>p + start, length)


# Shared offsets: any number of a vector's slots may point at one entry, so each entry is charged
# what it occupies of its own in a payload where nothing is shared, and a vector may charge at
# most twice the payload plus 4 KiB (a6fast._flatbuffers.field_entries says why, and how that
# bounds a whole frame).
cdef enum:
    _ENTRY_COST = 8       # its slot and its table's soffset
    _STRING_COST = 4      # a string's length, on top of its bytes


cdef inline int64_t _entries_budget(int64_t n) noexcept nogil:
    return 2 * n + 4096


cdef inline object _text_at(const uint8_t* p, int64_t start, int64_t length):
    if length < 0:
        return None
    return PyUnicode_DecodeUTF8(<const char*>p + start, length, "surrogateescape")


cdef struct _Entry:
    int64_t name_start
    int64_t name_len      # -1: absent
    int64_t value_start
    int64_t value_len     # -1: absent


cdef int _check_entry(const uint8_t* p, int64_t n, int64_t vec, int64_t i, int64_t* budget,
                            _Entry* e) except -1:
    """Check entry ``i`` of the [TextEntry] whose elements start at ``vec`` and charge it, with
    the checks' own error messages: _read_entry's way when its quick checks fail."""
    cdef _Table t
    cdef int64_t name_at, value_at
    _open_table(p, n, _follow(p, n, vec + 4 * i), &t)
    name_at = _field(p, &t, 0, 4)
    value_at = _field(p, &t, 1, 4)
    budget[0] -= _ENTRY_COST
    e.name_len = -1
    e.value_len = -1
    if name_at >= 0:
        e.name_start = _vector(p, n, name_at, 1, &e.name_len)
        budget[0] -= _STRING_COST + e.name_len
    if value_at >= 0:
        e.value_start = _vector(p, n, value_at, 1, &e.value_len)
        budget[0] -= _STRING_COST + e.value_len
    if budget[0] < 0:
        raise DecodeError("entries at %d share more text than the payload holds" % vec)
    return 0


cdef inline int64_t _string_at(const uint8_t* p, int64_t n, int64_t pos, int64_t vtsize,
                               int64_t size, int64_t vt, int slot, int64_t* start) noexcept nogil:
    """The length of string field ``slot`` of the table at ``pos`` (its start to ``start``), -1
    when absent, -2 when any check fails (the caller then checks again, raising)."""
    cdef int64_t off, at, target
    cdef uint32_t rel
    if 4 + 2 * slot >= vtsize:
        return -1
    off = _u16(p + vt + 4 + 2 * slot)
    if off == 0:
        return -1
    if off + 4 > size:
        return -2
    at = pos + off
    rel = _u32(p + at)
    target = at + rel
    if rel == 0 or target + 4 > n:
        return -2
    off = _u32(p + target)
    if off > n - target - 4:
        return -2
    start[0] = target + 4
    return off


cdef inline int _read_entry(const uint8_t* p, int64_t n, int64_t vec, int64_t i, int64_t* budget,
                            _Entry* e) except -1:
    """Check entry ``i`` of the [TextEntry] whose elements start at ``vec`` and charge it.

    The one walk of an entry list: the full decode and the lookups check and charge alike, so a
    payload raises the same error whichever reads it.  The checks run inline, with no call and
    no error path, for the many entries a lookup only skips; any failure is checked again by
    _check_entry, which raises with the reason."""
    cdef int64_t slot = vec + 4 * i
    cdef uint32_t rel = _u32(p + slot)
    cdef int64_t pos = slot + rel
    cdef int64_t vt, vtsize, size, cost
    if rel == 0 or pos + 4 > n:
        return _check_entry(p, n, vec, i, budget, e)
    vt = pos - <int64_t><int32_t>_u32(p + pos)
    if vt < 0 or vt + 4 > n:
        return _check_entry(p, n, vec, i, budget, e)
    vtsize = _u16(p + vt)
    size = _u16(p + vt + 2)
    if vtsize < 4 or vtsize & 1 or vt + vtsize > n or size < 4 or pos + size > n:
        return _check_entry(p, n, vec, i, budget, e)
    e.name_len = _string_at(p, n, pos, vtsize, size, vt, 0, &e.name_start)
    e.value_len = _string_at(p, n, pos, vtsize, size, vt, 1, &e.value_start)
    if e.name_len == -2 or e.value_len == -2:
        return _check_entry(p, n, vec, i, budget, e)
    cost = _ENTRY_COST
    if e.name_len >= 0:
        cost += _STRING_COST + e.name_len
    if e.value_len >= 0:
        cost += _STRING_COST + e.value_len
    if budget[0] - cost < 0:
        return _check_entry(p, n, vec, i, budget, e)
    budget[0] -= cost
    return 0


cdef list _entries(const uint8_t* p, int64_t n, const _Table* t, int slot):
    """A [TextEntry] as a list of (name, value); absent reads as []."""
    cdef int64_t count, start, i
    cdef int64_t budget = _entries_budget(n)
    cdef _Entry e
    cdef list out = []
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return out
    start = _vector(p, n, at, 4, &count)
    for i in range(count):
        _read_entry(p, n, start, i, &budget, &e)
        out.append((_text_at(p, e.name_start, e.name_len),
                    _text_at(p, e.value_start, e.value_len)))
    return out


# Lookups by name: every entry is walked as _entries walks it, but a name is only compared, as
# bytes, and only a match's value becomes an object.

cdef inline bint _is_ascii(const uint8_t* s, int64_t n) noexcept nogil:
    cdef uint64_t seen = 0, word
    cdef int64_t i = 0
    while i + 8 <= n:                         # 8 bytes at a time: one load each
        memcpy(&word, s + i, 8)
        seen |= word
        i += 8
    while i < n:
        seen |= s[i]
        i += 1
    return not seen & (<uint64_t>0x0101010101010101 * 0x80)


cdef inline bint _ascii_fold_equal(const uint8_t* a, const uint8_t* b, int64_t n) noexcept nogil:
    """``a`` and ``b`` equal once A-Z are folded to a-z (all that str.lower does to ASCII)."""
    cdef int64_t i
    cdef uint8_t x, y
    for i in range(n):
        x = a[i]
        y = b[i]
        if x != y:
            if <uint8_t>(x - 65) < 26:
                x += 32
            if <uint8_t>(y - 65) < 26:
                y += 32
            if x != y:
                return False
    return True


cdef list _values_named(const uint8_t* p, int64_t n, const _Table* t, int slot, object name):
    """Values of the entries of vector ``slot`` named exactly ``name``, in order."""
    cdef int64_t count, start, i
    cdef int64_t budget = _entries_budget(n)
    cdef Py_ssize_t size = 0
    cdef const char* want = NULL
    cdef object encoded = None
    cdef _Entry e
    cdef list out = []
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return out
    start = _vector(p, n, at, 4, &count)
    # A name matches when its bytes decode to ``name``: bytes equal to the UTF-8 of ``name``, if
    # any bytes decode to it at all (lone surrogates other than escaped bytes never come out of
    # a decode, and escapes of bytes that form valid UTF-8 decode to other text).
    if PyUnicode_IS_ASCII(name):
        want = PyUnicode_DATA(name)
        size = PyUnicode_GET_LENGTH(name)
    else:
        try:
            want = PyUnicode_AsUTF8AndSize(name, &size)
        except UnicodeEncodeError:
            try:
                encoded = str.encode(name, "utf-8", "surrogateescape")
            except UnicodeEncodeError:
                encoded = None
            if encoded is not None and PyUnicode_Compare(PyUnicode_DecodeUTF8(
                    PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded),
                    "surrogateescape"), name) == 0:
                want = PyBytes_AS_STRING(encoded)
                size = PyBytes_GET_SIZE(encoded)
    for i in range(count):
        _read_entry(p, n, start, i, &budget, &e)
        if (want != NULL and e.name_len == size
                and memcmp(p + e.name_start, want, size) == 0):
            out.append(_text_at(p, e.value_start, e.value_len))
    return out


cdef list _values_named_any_case(const uint8_t* p, int64_t n, const _Table* t, int slot,
                                 object name):
    """Values of the entries of vector ``slot`` whose name lowers to ``name.lower()``, in order."""
    cdef int64_t count, start, i
    cdef int64_t budget = _entries_budget(n)
    cdef Py_ssize_t size = 0
    cdef const char* want = NULL
    cdef object lowered = None
    cdef _Entry e
    cdef const uint8_t* s
    cdef list out = []
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return out
    start = _vector(p, n, at, 4, &count)
    # An ASCII entry name lowers to its ASCII fold, so it is compared as bytes with the ASCII
    # ``name`` or ``name.lower()`` (which may be ASCII when ``name`` is not: KELVIN SIGN -> k);
    # any other entry name is decoded and lowered, as the full decode and str.lower would.
    if PyUnicode_IS_ASCII(name):
        want = PyUnicode_DATA(name)
        size = PyUnicode_GET_LENGTH(name)
    else:
        lowered = str.lower(name)
        if PyUnicode_IS_ASCII(lowered):
            want = PyUnicode_DATA(lowered)
            size = PyUnicode_GET_LENGTH(lowered)
    for i in range(count):
        _read_entry(p, n, start, i, &budget, &e)
        if e.name_len < 0:
            continue
        s = p + e.name_start
        if want != NULL and e.name_len == size and _ascii_fold_equal(
                s, <const uint8_t*>want, size):
            out.append(_text_at(p, e.value_start, e.value_len))
        elif ((want == NULL or (e.name_len > size and (e.name_len - size) & 1 == 0))
              and not _is_ascii(s, e.name_len)):
            # A non-ASCII name lowers to an ASCII ``want`` only if its only non-ASCII characters
            # are KELVIN SIGNs (3 bytes, lowered to "k": the one such character, which a test
            # checks), so only a name 2, 4, ... bytes longer than ``want`` can: the others are
            # not decoded.
            if lowered is None:
                lowered = str.lower(name)
            if PyUnicode_Compare(str.lower(_text_at(p, e.name_start, e.name_len)), lowered) == 0:
                out.append(_text_at(p, e.value_start, e.value_len))
    return out


cdef int64_t _entry_count(const uint8_t* p, int64_t n, const _Table* t, int slot) except -1:
    """How many entries the vector field ``slot`` lists (0 when absent), none of them read."""
    cdef int64_t count
    cdef int64_t at = _field(p, t, slot, 4)
    if at < 0:
        return 0
    _vector(p, n, at, 4, &count)
    return count


cdef uint32_t _scalar(const uint8_t* p, const _Table* t, int slot, int width) except? 0xFFFFFFFF:
    """A ubyte, uint16 or uint32 field; 0 when absent."""
    cdef int64_t at = _field(p, t, slot, width)
    if at < 0:
        return 0
    if width == 1:
        return p[at]
    if width == 2:
        return _u16(p + at)
    return _u32(p + at)


cdef int _bounds(object start, object end, int64_t size, int64_t* lo, int64_t* hi) except -1:
    """The message ``buf[start:end]`` of a buffer of ``size`` bytes: ints (not bool), ``end``
    None for ``size``, 0 <= start <= end <= size; DecodeError otherwise (the pure twin's words)."""
    cdef long long s = 0, e
    cdef int overflow = 0
    if not PyLong_CheckExact(start):
        raise DecodeError("payload start must be an int, not %s" % type(start).__name__)
    if end is None:
        e = size
    elif PyLong_CheckExact(end):
        e = PyLong_AsLongLongAndOverflow(end, &overflow)
    else:
        raise DecodeError("payload end must be an int or None, not %s" % type(end).__name__)
    if not overflow:
        s = PyLong_AsLongLongAndOverflow(start, &overflow)
    if overflow or not 0 <= s <= e <= size:
        raise DecodeError("payload [%d:%d] is not within the %d bytes of the buffer"
                          % (start, size if end is None else end, size))
    lo[0] = s
    hi[0] = e
    return 0


cdef bytes _snapshot(object payload, object start, object end, int64_t* off, int64_t* n):
    """``payload[start:end]`` as it stands now, for decoded messages to keep: a bytes payload
    itself (``off`` then says where the part starts), any other buffer's part copied once, so a
    reused receive buffer cannot change lazy fields later."""
    cdef Py_buffer view
    cdef int64_t lo, hi
    cdef bytes part
    if PyBytes_CheckExact(payload):
        _bounds(start, end, PyBytes_GET_SIZE(payload), &lo, &hi)
        off[0] = lo
        n[0] = hi - lo
        return <bytes>payload
    if PyByteArray_CheckExact(payload):
        _bounds(start, end, PyByteArray_GET_SIZE(payload), &lo, &hi)
        off[0] = 0
        n[0] = hi - lo
        return PyBytes_FromStringAndSize(PyByteArray_AS_STRING(payload) + lo, hi - lo)
    if not PyObject_CheckBuffer(payload):
        raise DecodeError("payload must be bytes-like, not %s" % type(payload).__name__)
    try:
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    except BufferError:                       # not contiguous: its bytes in order, one copy
        part = memoryview(payload).tobytes()
        _bounds(start, end, PyBytes_GET_SIZE(part), &lo, &hi)
        off[0] = lo
        n[0] = hi - lo
        return part
    except ValueError:                        # a released memoryview
        raise DecodeError("payload is a released buffer") from None
    try:
        _bounds(start, end, view.len, &lo, &hi)
        off[0] = 0
        n[0] = hi - lo
        return PyBytes_FromStringAndSize(<const char*>view.buf + lo, hi - lo)
    finally:
        PyBuffer_Release(&view)


# Bits of the _have fields: lazy fields already decoded.
cdef enum:
    _HAVE_SRC_IP = 1
    _HAVE_PATH = 2
    _HAVE_ARGS = 4
    _HAVE_HEADERS = 8


cdef inline int _check_name(object name, str what) except -1:
    if not PyUnicode_Check(name):
        raise TypeError("%s name must be str, not %s" % (what, type(name).__name__))
    return 0


# Each class's docstring starts "Name(args)", then "--" alone: CPython makes that the class's
# __text_signature__, so inspect.signature() gives the constructor's as it does for the pure twin.
@cython.final
@cython.freelist(16)
cdef class HTTPReqCallReq:
    """HTTPReqCallReq(payload, start=0, end=None)
--

An HTTPReqCall.Req (the message ``payload[start:end]``): scalars read at once,
    ``path``/``src_ip``/``args``/``headers`` on use."""

    cdef readonly uint32_t id
    cdef readonly int method
    cdef readonly uint32_t conf_token
    # The payload is _n bytes at _off in _buf: every lazy read is bounded by them.
    cdef bytes _buf
    cdef int64_t _off
    cdef int64_t _n
    cdef _Table _t
    cdef int _have
    cdef object _src_ip, _path
    cdef list _args, _headers

    def __init__(self, payload, start=0, end=None):
        self._read(payload, start, end)

    cdef int _read(self, object payload, object start, object end) except -1:
        # All or nothing: the table and its buffer must never come from different payloads.
        cdef int64_t off, n
        cdef bytes buf = _snapshot(payload, start, end, &off, &n)
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf) + off
        cdef _Table t
        cdef uint32_t id, method, conf_token
        _open_root(p, n, &t)
        method = _scalar(p, &t, 2, 1)
        if method > METHOD_MAX:
            raise DecodeError("unknown method %d" % method)
        id = _scalar(p, &t, 0, 4)
        conf_token = _scalar(p, &t, 6, 4)
        self.id = id
        self.method = method
        self.conf_token = conf_token
        self._t = t
        self._buf = buf
        self._off = off
        self._n = n
        self._have = 0
        return 0

    cdef inline const uint8_t* _p(self) noexcept:
        return <const uint8_t*>PyBytes_AS_STRING(self._buf) + self._off

    # A failed decode is not cached, so a corrupt field raises again on every access.
    @property
    def src_ip(self):
        """The client address as 4 or 16 raw bytes; None when absent."""
        if not self._have & _HAVE_SRC_IP:
            self._src_ip = _ubytes(self._p(), self._n, &self._t, 1)
            self._have |= _HAVE_SRC_IP
        return self._src_ip

    @property
    def path(self):
        """The path without its query; None when absent."""
        if not self._have & _HAVE_PATH:
            self._path = _string(self._p(), self._n, &self._t, 3)
            self._have |= _HAVE_PATH
        return self._path

    @property
    def args(self):
        """Query args as ``(name, value)``; a bare ``?flag`` has value None."""
        if not self._have & _HAVE_ARGS:
            self._args = _entries(self._p(), self._n, &self._t, 4)
            self._have |= _HAVE_ARGS
        return self._args

    @property
    def headers(self):
        """Request headers as ``(name, value)``, names repeated for multi-valued headers."""
        if not self._have & _HAVE_HEADERS:
            self._headers = _entries(self._p(), self._n, &self._t, 5)
            self._have |= _HAVE_HEADERS
        return self._headers

    def header_values(self, name):
        """The values of the headers called ``name`` in any case, in order; nothing cached."""
        _check_name(name, "header")
        return _values_named_any_case(self._p(), self._n, &self._t, 5, name)

    def arg_values(self, name):
        """The values of the query args called exactly ``name``, in order; nothing cached."""
        _check_name(name, "arg")
        return _values_named(self._p(), self._n, &self._t, 4, name)

    def __repr__(self):
        return "HTTPReqCallReq(id=%d, conf_token=%d, method=%s)" % (
            self.id, self.conf_token, _METHODS[self.method])


def decode_http_req_call(payload, start=0, end=None):
    """Read the HTTPReqCall.Req ``payload[start:end]``; its string and vector fields are decoded
    on first use."""
    cdef HTTPReqCallReq req = HTTPReqCallReq.__new__(HTTPReqCallReq)
    req._read(payload, start, end)
    return req


@cython.final
@cython.freelist(8)
cdef class HTTPRespCallReq:
    """HTTPRespCallReq(payload, start=0, end=None)
--

An HTTPRespCall.Req (the message ``payload[start:end]``): scalars read at once, ``headers``
    on use."""

    cdef readonly uint32_t id
    cdef readonly uint32_t status
    cdef readonly uint32_t conf_token
    cdef bytes _buf
    cdef int64_t _off
    cdef int64_t _n
    cdef _Table _t
    cdef int _have
    cdef list _headers

    def __init__(self, payload, start=0, end=None):
        self._read(payload, start, end)

    cdef int _read(self, object payload, object start, object end) except -1:
        cdef int64_t off, n
        cdef bytes buf = _snapshot(payload, start, end, &off, &n)
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf) + off
        cdef _Table t
        cdef uint32_t id, status, conf_token
        _open_root(p, n, &t)
        id = _scalar(p, &t, 0, 4)
        status = _scalar(p, &t, 1, 2)
        conf_token = _scalar(p, &t, 3, 4)
        self.id = id
        self.status = status
        self.conf_token = conf_token
        self._t = t
        self._buf = buf
        self._off = off
        self._n = n
        self._have = 0
        return 0

    cdef inline const uint8_t* _p(self) noexcept:
        return <const uint8_t*>PyBytes_AS_STRING(self._buf) + self._off

    @property
    def headers(self):
        """Upstream response headers as ``(name, value)``."""
        if not self._have & _HAVE_HEADERS:
            self._headers = _entries(self._p(), self._n, &self._t, 2)
            self._have |= _HAVE_HEADERS
        return self._headers

    def header_values(self, name):
        """The values of the headers called ``name`` in any case, in order; nothing cached."""
        _check_name(name, "header")
        return _values_named_any_case(self._p(), self._n, &self._t, 2, name)

    def __repr__(self):
        return "HTTPRespCallReq(id=%d, conf_token=%d, status=%d)" % (
            self.id, self.conf_token, self.status)


def decode_http_resp_call(payload, start=0, end=None):
    """Read the HTTPRespCall.Req ``payload[start:end]``; its headers are decoded on first use."""
    cdef HTTPRespCallReq req = HTTPRespCallReq.__new__(HTTPRespCallReq)
    req._read(payload, start, end)
    return req


@cython.final
cdef class PrepareConfReq:
    """PrepareConfReq(payload, max_entries=None, start=0, end=None)
--

A PrepareConf.Req (the message ``payload[start:end]``): ``conf`` (list of ``(plugin name, JSON
    text)``) and ``key``.

    With ``max_entries``, a conf listing more raises TooManyPlugins before any entry is read."""

    cdef readonly list conf
    cdef readonly object key

    def __init__(self, payload, max_entries=None, start=0, end=None):
        cdef int64_t off, n
        cdef bytes buf = _snapshot(payload, start, end, &off, &n)
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(buf) + off
        cdef int64_t count
        cdef _Table t
        _open_root(p, n, &t)
        key = _string(p, n, &t, 1)
        if max_entries is not None:
            count = _entry_count(p, n, &t, 0)
            if count > max_entries:
                raise TooManyPlugins(count, max_entries, key)
        self.conf = _entries(p, n, &t, 0)
        self.key = key

    def __repr__(self):
        return "PrepareConfReq(key=%r, conf=%r)" % (self.key, [name for name, _ in self.conf])


def decode_prepare_conf_req(payload, max_entries=None, start=0, end=None):
    """Read the PrepareConf.Req ``payload[start:end]``, all of it at once (it is rare and small);
    TooManyPlugins if it lists more than ``max_entries``."""
    return PrepareConfReq(payload, max_entries, start, end)


cdef object _extra_info_result(const uint8_t* base, int64_t size, object start, object end):
    cdef int64_t lo, hi
    cdef _Table t
    _bounds(start, end, size, &lo, &hi)
    _open_root(base + lo, hi - lo, &t)
    return _ubytes(base + lo, hi - lo, &t, 0)


def decode_extra_info_resp(payload, start=0, end=None):
    """``result`` of the ExtraInfo.Resp ``payload[start:end]``: bytes, or None when absent.

    Read in place from any contiguous buffer: the result is the one copy made."""
    cdef Py_buffer view
    if PyBytes_CheckExact(payload):
        return _extra_info_result(<const uint8_t*>PyBytes_AS_STRING(payload),
                                  PyBytes_GET_SIZE(payload), start, end)
    if not PyObject_CheckBuffer(payload):
        raise DecodeError("payload must be bytes-like, not %s" % type(payload).__name__)
    try:
        # Held while it is read, so that nothing can resize it meanwhile.
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    except BufferError:                       # not contiguous
        payload = memoryview(payload).tobytes()
        return _extra_info_result(<const uint8_t*>PyBytes_AS_STRING(payload),
                                  PyBytes_GET_SIZE(payload), start, end)
    except ValueError:                        # a released memoryview
        raise DecodeError("payload is a released buffer") from None
    try:
        return _extra_info_result(<const uint8_t*>view.buf, view.len, start, end)
    finally:
        PyBuffer_Release(&view)


cdef tuple _header_at(const uint8_t* p, int64_t n, int64_t offset):
    if offset < 0 or offset + 4 > n:
        raise DecodeError("frame header: fewer than 4 bytes at %d of %d" % (offset, n))
    p += offset
    return p[0], (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


def decode_header(data, offset=0):
    """``(rpc_type, length)`` from the 4 bytes at ``offset`` of a bytes-like object."""
    cdef Py_buffer view
    cdef long long at
    cdef int overflow = 0
    if not PyObject_CheckBuffer(data):
        raise DecodeError("frame header: not bytes-like")
    if not PyLong_CheckExact(offset):
        try:
            offset = PyNumber_Index(offset)
        except TypeError:
            raise DecodeError("frame header: offset is not an int") from None
    at = PyLong_AsLongLongAndOverflow(offset, &overflow)
    if overflow:
        raise DecodeError("frame header: offset %d out of range" % offset)
    if PyBytes_CheckExact(data):
        return _header_at(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), at)
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        data = memoryview(data).tobytes()     # not contiguous
        return _header_at(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), at)
    try:
        return _header_at(<const uint8_t*>view.buf, view.len, at)
    finally:
        PyBuffer_Release(&view)



cdef inline int64_t _frame_end_at(const uint8_t* p, int64_t n, int64_t at) noexcept nogil:
    cdef int64_t end
    if at > n - 4:
        return -1
    end = at + 4 + ((<int64_t>p[at + 1] << 16) | (<int64_t>p[at + 2] << 8) | p[at + 3])
    return end if end <= n else -1


def frame_end(data, offset=0):
    """Where the frame starting at ``offset`` of a bytes-like object ends (``offset`` + 4 + the
    length its header gives) if all of it is there; -1 if not, header or payload.

    The server's per-frame check: an int, no tuple.  The frame's type is its first byte."""
    cdef Py_buffer view
    cdef long long at
    cdef int overflow = 0
    cdef int64_t end
    # bytes (one recv) and bytearray (a receive buffer) first: no buffer to hold for 4 bytes
    if PyBytes_CheckExact(data) and PyLong_CheckExact(offset):
        at = PyLong_AsLongLongAndOverflow(offset, &overflow)
        if at >= 0 and not overflow:
            return _frame_end_at(<const uint8_t*>PyBytes_AS_STRING(data),
                                 PyBytes_GET_SIZE(data), at)
    elif PyByteArray_CheckExact(data) and PyLong_CheckExact(offset):
        at = PyLong_AsLongLongAndOverflow(offset, &overflow)
        if at >= 0 and not overflow:
            return _frame_end_at(<const uint8_t*>PyByteArray_AS_STRING(data),
                                 PyByteArray_GET_SIZE(data), at)
    if not PyObject_CheckBuffer(data):
        raise DecodeError("frame header: not bytes-like")
    if not PyLong_CheckExact(offset):
        try:
            offset = PyNumber_Index(offset)
        except TypeError:
            raise DecodeError("frame header: offset is not an int") from None
    at = PyLong_AsLongLongAndOverflow(offset, &overflow)
    if overflow > 0:
        return -1                             # past the end of any buffer
    if overflow or at < 0:
        raise DecodeError("frame header: negative offset %d" % offset)
    try:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    except BufferError:
        data = memoryview(data).tobytes()     # not contiguous
        return _frame_end_at(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), at)
    except ValueError:                        # a released memoryview
        raise DecodeError("frame header: released buffer") from None
    end = _frame_end_at(<const uint8_t*>view.buf, view.len, at)
    PyBuffer_Release(&view)
    return end

# ---------------------------------------------------------------------------------------------
# Preparing values to write: checked and reduced to (pointer, length) before any layout runs

cdef int64_t _uint(object value, int64_t top, str what) except -1:
    """``value`` as an int in ``0..top`` (anything with __index__); EncodeError otherwise."""
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value):
        try:
            value = PyNumber_Index(value)
        except TypeError:
            raise EncodeError("%s must be an int, not %s" % (what, type(value).__name__)) from None
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < 0 or v > top:
        raise EncodeError("%s %d out of range 0..%d" % (what, value, top))
    return v


# Two steps, so that no pointer ever outlives its object: first every argument is read, in
# argument order, into objects the writer holds itself (exact str with its UTF-8 at hand, bytes,
# flat lists of those for entry lists); this is where user code may run (iteration, __len__,
# __index__, buffer exports) and change or drop anything.  The body's buffer is taken last.  Then
# (pointer, length) pairs are taken from the held objects, and from there to the finished frame
# no Python code runs.

cdef struct _Str:
    const char* p
    Py_ssize_t n          # -1: absent


cdef object _text_obj(object s, str what):
    """A string field's value as an exact str whose UTF-8 is at hand, or bytes."""
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(s):
        if PyUnicode_IS_ASCII(s):
            return s
        try:
            PyUnicode_AsUTF8AndSize(s, &n)            # cached in the str, for _point
            return s
        except UnicodeEncodeError:
            pass                                      # lone surrogates: escaped bytes?
        try:
            return (<str>s).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise EncodeError("%s cannot be encoded as UTF-8" % what) from None
    if PyBytes_Check(s):
        return s                                      # immutable, subclass or not
    if PyUnicode_Check(s) or not PyObject_CheckBuffer(s):
        raise EncodeError("%s must be str or bytes, not %s" % (what, type(s).__name__))
    try:
        return memoryview(s).tobytes()
    except ValueError as exc:                         # a released memoryview
        raise EncodeError("%s: %s" % (what, exc)) from None


cdef inline object _opt_text_obj(object s, str what):
    return None if s is None else _text_obj(s, what)


cdef list _entry_objs(object entries, str what):
    """(name, value) pairs as one flat list [name, value, name, value, ...]; None when absent."""
    cdef list out
    cdef object seq, pair, name, value
    if entries is None:
        return None
    if PyUnicode_Check(entries) or PyBytes_Check(entries) or isinstance(
            entries, (bytearray, memoryview)):
        raise EncodeError("%s must be an iterable of (name, value) pairs" % what)
    if PyList_CheckExact(entries) or PyTuple_CheckExact(entries):
        seq = entries
    else:
        try:
            seq = iter(entries)
        except TypeError:
            raise EncodeError("%s must be an iterable of (name, value) pairs" % what) from None
    out = []
    for pair in seq:
        # Only real pairs: a 2-character string would otherwise unpack as (name, value).
        if not (PyTuple_Check(pair) or PyList_Check(pair)) or len(pair) != 2:
            raise EncodeError("%s: each entry must be a (name, value) pair" % what)
        try:
            name, value = pair
        except ValueError:                            # a subclass whose __len__ lied
            raise EncodeError("%s: each entry must be a (name, value) pair" % what) from None
        if name is None:
            raise EncodeError("%s: entry name must not be None" % what)
        out.append(_text_obj(name, what))
        out.append(_opt_text_obj(value, what))
    return out


cdef object _body(object body, _Str* out, Py_buffer* view, bint* held, str what):
    """A [ubyte] field from any bytes-like (not str): returns the object the caller must hold
    until the frame is filled (None when the argument itself is used); a buffer held here is
    released by the caller.

    Read after every other argument: no Python code runs between it and the frame's end."""
    if body is None:
        out.n = -1
        return None
    if PyBytes_CheckExact(body):
        out.p = PyBytes_AS_STRING(body)               # the caller's argument: held by the call
        out.n = PyBytes_GET_SIZE(body)
        return None
    if PyUnicode_Check(body) or not PyObject_CheckBuffer(body):
        raise EncodeError("%s must be bytes, not %s" % (what, type(body).__name__))
    try:
        # Held until the frame is filled, so a bytearray cannot be resized meanwhile.
        PyObject_GetBuffer(body, view, PyBUF_SIMPLE)
    except BufferError:
        body = memoryview(body).tobytes()             # not contiguous
        out.p = PyBytes_AS_STRING(body)
        out.n = PyBytes_GET_SIZE(body)
        return body
    except ValueError as exc:
        raise EncodeError("%s: %s" % (what, exc)) from None
    held[0] = True
    out.p = <const char*>view.buf
    out.n = view.len
    return None


cdef int _point(object s, _Str* out) except -1:
    """(pointer, length) into a value made by _text_obj, which the caller holds; runs no Python."""
    cdef Py_ssize_t n
    if s is None:
        out.n = -1
    elif PyBytes_Check(s):
        out.p = PyBytes_AS_STRING(s)
        out.n = PyBytes_GET_SIZE(s)
    elif PyUnicode_IS_ASCII(s):
        out.p = PyUnicode_DATA(s)
        out.n = PyUnicode_GET_LENGTH(s)
    else:
        out.p = PyUnicode_AsUTF8AndSize(s, &n)        # cached by _text_obj: no allocation
        out.n = n
    return 0


cdef enum:
    _INLINE_ENTRIES = 8   # most entry lists are short: no allocation for them


cdef struct _Entries:
    Py_ssize_t count      # -1: the vector is absent
    _Str* items           # name, value, name, value, ...: ``inline`` or allocated
    _Str inline[2 * _INLINE_ENTRIES]


cdef int _point_entries(list objs, _Entries* out) except -1:
    """Point ``out`` into a list made by _entry_objs; an allocated ``out.items`` is freed by
    _free_entries."""
    cdef Py_ssize_t i, count
    if objs is None:
        out.count = -1
        return 0
    count = len(objs) // 2
    if count <= _INLINE_ENTRIES:
        out.items = out.inline
    else:
        out.items = <_Str*>PyMem_Malloc(2 * count * sizeof(_Str))
        if out.items == NULL:
            raise MemoryError()
    out.count = count
    for i in range(2 * count):
        _point(<object>PySequence_Fast_GET_ITEM(objs, i), &out.items[i])
    return 0


cdef inline void _free_entries(_Entries* e) noexcept:
    if e.count > _INLINE_ENTRIES:
        PyMem_Free(e.items)
    e.count = -1


# ---------------------------------------------------------------------------------------------
# Layout, the pure twin's exactly: every object 4-aligned, a vtable right before its table,
# inline fields 4-byte ones first, then 2-byte, then 1-byte (each group in slot order), children
# after their table in slot order, depth first.

cdef struct _W:
    uint8_t* out          # NULL while measuring
    int64_t pos           # relative to the payload start, which alignment is relative to


cdef inline void _put_u8(_W* w, int64_t at, uint32_t v) noexcept:
    if w.out != NULL:
        w.out[at] = <uint8_t>v


cdef inline void _put_u16(_W* w, int64_t at, uint32_t v) noexcept:
    if w.out != NULL:
        w.out[at] = <uint8_t>v
        w.out[at + 1] = <uint8_t>(v >> 8)


cdef inline void _store_u32(uint8_t* out, int64_t at, uint32_t v) noexcept:
    out[at] = <uint8_t>v
    out[at + 1] = <uint8_t>(v >> 8)
    out[at + 2] = <uint8_t>(v >> 16)
    out[at + 3] = <uint8_t>(v >> 24)


cdef inline void _put_u32(_W* w, int64_t at, uint32_t v) noexcept:
    if w.out != NULL:
        _store_u32(w.out, at, v)


cdef inline void _align4(_W* w) noexcept:
    cdef int64_t pad = (-w.pos) & 3
    if pad:
        if w.out != NULL:
            memset(w.out + w.pos, 0, pad)
        w.pos += pad


cdef int64_t _table(_W* w, int64_t ref, int nslots, const int* widths, int64_t* fields) noexcept:
    """Write a vtable and its table, point the uoffset at ``ref`` at it.

    ``widths[i]`` is 0 for an absent field, else 4, 2 or 1; each present field's position goes
    to ``fields[i]`` for the caller to fill.  ``nslots`` ends at the last present field.
    """
    cdef int64_t vt, tbl, off = 4
    cdef int i, width
    _align4(w)
    vt = w.pos
    w.pos += 4 + 2 * nslots
    _align4(w)
    tbl = w.pos
    for i in range(nslots):
        if not widths[i]:
            _put_u16(w, vt + 4 + 2 * i, 0)
    width = 4
    while width:
        for i in range(nslots):
            if widths[i] == width:
                fields[i] = tbl + off
                _put_u16(w, vt + 4 + 2 * i, <uint32_t>off)
                off += width
        width >>= 1
    _put_u16(w, vt, 4 + 2 * nslots)
    _put_u16(w, vt + 2, <uint32_t>off)
    _put_u32(w, tbl, <uint32_t>(tbl - vt))
    _put_u32(w, ref, <uint32_t>(tbl - ref))
    if w.out != NULL:
        memset(w.out + tbl + 4, 0, off - 4)           # the caller fills every field
    w.pos = tbl + off
    return tbl


cdef inline int _nslots(int count, const int* widths) noexcept:
    while count and not widths[count - 1]:
        count -= 1
    return count


cdef void _blob(_W* w, int64_t ref, const _Str* s, bint nul) noexcept:
    """A string (NUL-terminated) or [ubyte], referenced from ``ref``."""
    _align4(w)
    _put_u32(w, ref, <uint32_t>(w.pos - ref))
    _put_u32(w, w.pos, <uint32_t>s.n)
    if w.out != NULL:
        memcpy(w.out + w.pos + 4, s.p, s.n)
        if nul:
            w.out[w.pos + 4 + s.n] = 0
    w.pos += 4 + s.n + nul


cdef void _entry_vector(_W* w, int64_t ref, const _Entries* e) noexcept:
    # A TextEntry table has one of two shapes, so its vtable is written whole, as _table would:
    # [vtsize 8, size 12, name@4, value@8] or, without a value, [vtsize 6, size 8, name@4].
    cdef int64_t vec, slot, vt, tbl
    cdef Py_ssize_t i
    cdef const _Str* value
    _align4(w)
    vec = w.pos
    _put_u32(w, ref, <uint32_t>(vec - ref))
    _put_u32(w, vec, <uint32_t>e.count)
    w.pos += 4 + 4 * e.count
    for i in range(e.count):
        value = &e.items[2 * i + 1]
        _align4(w)
        vt = w.pos
        if value.n >= 0:
            _put_u32(w, vt, 8 | (12 << 16))
            _put_u32(w, vt + 4, 4 | (8 << 16))
            w.pos += 8
        else:
            _put_u32(w, vt, 6 | (8 << 16))
            _put_u16(w, vt + 4, 4)
            w.pos += 6
            _align4(w)
        tbl = w.pos
        slot = vec + 4 + 4 * i
        _put_u32(w, slot, <uint32_t>(tbl - slot))
        _put_u32(w, tbl, <uint32_t>(tbl - vt))
        w.pos = tbl + (12 if value.n >= 0 else 8)
        _blob(w, tbl + 4, &e.items[2 * i], True)
        if value.n >= 0:
            _blob(w, tbl + 8, value, True)


ctypedef void (*_Layout)(_W*, void*) noexcept


cdef object _finish(int rpc_type, _Layout lay, void* args):
    """Measure, check the frame limit, then allocate the frame once and fill it."""
    cdef _W w
    cdef object frame
    cdef uint8_t* out
    w.out = NULL
    w.pos = 4
    lay(&w, args)
    if w.pos > MAX_PAYLOAD:
        raise EncodeError("payload of %d bytes larger than %d" % (w.pos, MAX_PAYLOAD))
    frame = PyBytes_FromStringAndSize(NULL, 4 + w.pos)
    out = <uint8_t*>PyBytes_AS_STRING(frame)
    out[0] = <uint8_t>rpc_type
    out[1] = <uint8_t>(w.pos >> 16)
    out[2] = <uint8_t>(w.pos >> 8)
    out[3] = <uint8_t>w.pos
    w.out = out + 4
    w.pos = 4
    lay(&w, args)
    return frame


# ---------------------------------------------------------------------------------------------
# Writers: per message, a struct of its prepared fields and a layout run by _finish

def encode_header(rpc_type, length):
    """The 4-byte frame header: RPC type, then the payload length as 24-bit big-endian."""
    cdef int64_t t = _uint(rpc_type, 0xFF, "rpc type")
    cdef int64_t n = _uint(length, MAX_PAYLOAD, "payload length")
    cdef uint8_t out[4]
    out[0] = <uint8_t>t
    out[1] = <uint8_t>(n >> 16)
    out[2] = <uint8_t>(n >> 8)
    out[3] = <uint8_t>n
    return PyBytes_FromStringAndSize(<char*>out, 4)


cdef struct _Scalars:
    # A root table of scalars only: Err.Resp, PrepareConf.Resp, HTTPReqCall.Resp without action.
    int nslots
    int widths[2]
    uint32_t values[2]


cdef void _lay_scalars(_W* w, void* args) noexcept:
    cdef _Scalars* a = <_Scalars*>args
    cdef int64_t fields[2]
    cdef int i
    _table(w, 0, a.nslots, a.widths, fields)
    for i in range(a.nslots):
        if a.widths[i] == 1:
            _put_u8(w, fields[i], a.values[i])
        else:
            _put_u32(w, fields[i], a.values[i])


def encode_err(code):
    """An Err frame with ``code`` (A6.Err.Code), written even when 0."""
    cdef _Scalars a
    a.nslots = 1
    a.widths[0] = 1
    a.values[0] = <uint32_t>_uint(code, 2, "code")
    return _finish(0, _lay_scalars, &a)


def encode_prepare_conf_resp(conf_token):
    """The PrepareConf answer carrying ``conf_token``."""
    cdef _Scalars a
    a.nslots = 1
    a.widths[0] = 4
    a.values[0] = <uint32_t>_uint(conf_token, 0xFFFFFFFF, "conf_token")
    return _finish(1, _lay_scalars, &a)


def encode_no_action(id):
    """HTTPReqCall.Resp with no action: the request goes on unchanged."""
    cdef _Scalars a
    a.nslots = 2
    a.widths[0] = 4
    a.widths[1] = 1
    a.values[0] = <uint32_t>_uint(id, 0xFFFFFFFF, "id")
    a.values[1] = 0
    return _finish(2, _lay_scalars, &a)


cdef int64_t _call_resp(_W* w, uint32_t id, uint32_t action_type) noexcept:
    """The root HTTPReqCall.Resp{id, action_type, action}; returns the action field to point."""
    cdef int widths[3]
    cdef int64_t fields[3]
    widths[0] = 4
    widths[1] = 1
    widths[2] = 4
    _table(w, 0, 3, widths, fields)
    _put_u32(w, fields[0], id)
    _put_u8(w, fields[1], action_type)
    return fields[2]


cdef struct _Reply:
    # Stop, and HTTPRespCall.Resp: the same fields.
    uint32_t id
    uint32_t status
    _Entries headers
    _Str body


cdef void _lay_stop(_W* w, void* args) noexcept:
    cdef _Reply* a = <_Reply*>args
    cdef int widths[3]
    cdef int64_t fields[3]
    cdef int64_t ref = _call_resp(w, a.id, 1)
    widths[0] = 2
    widths[1] = 4 if a.headers.count >= 0 else 0
    widths[2] = 4 if a.body.n >= 0 else 0
    _table(w, ref, _nslots(3, widths), widths, fields)
    _put_u16(w, fields[0], a.status)
    if widths[1]:
        _entry_vector(w, fields[1], &a.headers)
    if widths[2]:
        _blob(w, fields[2], &a.body, False)


cdef void _lay_http_resp_call_resp(_W* w, void* args) noexcept:
    cdef _Reply* a = <_Reply*>args
    cdef int widths[4]
    cdef int64_t fields[4]
    widths[0] = 4
    widths[1] = 2
    widths[2] = 4 if a.headers.count >= 0 else 0
    widths[3] = 4 if a.body.n >= 0 else 0
    _table(w, 0, _nslots(4, widths), widths, fields)
    _put_u32(w, fields[0], a.id)
    _put_u16(w, fields[1], a.status)
    if widths[2]:
        _entry_vector(w, fields[2], &a.headers)
    if widths[3]:
        _blob(w, fields[3], &a.body, False)


cdef object _reply_frame(int rpc_type, _Layout lay, id, status, headers, body):
    cdef _Reply a
    cdef object kept
    cdef list header_objs
    cdef Py_buffer view
    cdef bint held = False
    a.headers.count = -1
    a.id = <uint32_t>_uint(id, 0xFFFFFFFF, "id")
    a.status = <uint32_t>_uint(status, 0xFFFF, "status")
    header_objs = _entry_objs(headers, "headers")
    if header_objs is None and rpc_type == 2 and PyBytes_CheckExact(body):
        return _plain_stop(a.id, a.status, <bytes>body)
    try:
        kept = _body(body, &a.body, &view, &held, "body")
        _point_entries(header_objs, &a.headers)
        return _finish(rpc_type, lay, &a)
    finally:
        _free_entries(&a.headers)
        if held:
            PyBuffer_Release(&view)


cdef object _plain_stop(uint32_t id, uint32_t status, bytes body):
    """What _lay_stop writes for a Stop with a body and no headers, most Stops (a deny), as
    straight-line stores: the same bytes (the agreement tests compare them with the pure twin's)
    without the two layout passes (encode_stop: about 2,200 instructions -> 800).  Payload offsets: 0 root uoffset; 4 root vtable (id,
    action_type, action); 16 root table; 32 Stop vtable (status, no headers, body); 44 Stop
    table; 56 the body vector."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    cdef int64_t size = 60 + n
    cdef object frame
    cdef uint8_t* out
    if size > MAX_PAYLOAD:
        raise EncodeError("payload of %d bytes larger than %d" % (size, MAX_PAYLOAD))
    frame = PyBytes_FromStringAndSize(NULL, 4 + size)
    out = <uint8_t*>PyBytes_AS_STRING(frame)
    out[0] = 2
    out[1] = <uint8_t>(size >> 16)
    out[2] = <uint8_t>(size >> 8)
    out[3] = <uint8_t>size
    out += 4
    _store_u32(out, 0, 16)
    _store_u32(out, 4, 10 | (13 << 16))       # vtable size, table size
    _store_u32(out, 8, 4 | (12 << 16))        # id at 4, action_type at 12
    _store_u32(out, 12, 8)                    # action at 8; padding
    _store_u32(out, 16, 12)                   # table - vtable
    _store_u32(out, 20, id)
    _store_u32(out, 24, 44 - 24)              # action: the Stop table
    _store_u32(out, 28, 1)                    # action_type Stop; padding
    _store_u32(out, 32, 10 | (10 << 16))
    _store_u32(out, 36, 8)                    # status at 8, no headers
    _store_u32(out, 40, 4)                    # body at 4; padding
    _store_u32(out, 44, 12)                   # table - vtable
    _store_u32(out, 48, 56 - 48)              # body: the vector
    _store_u32(out, 52, status)               # status (u16); padding
    _store_u32(out, 56, <uint32_t>n)
    memcpy(out + 60, PyBytes_AS_STRING(body), n)
    return frame


def encode_stop(id, status, headers, body):
    """HTTPReqCall.Resp with a Stop action: the gateway answers the client itself."""
    return _reply_frame(2, _lay_stop, id, status, headers, body)


def encode_http_resp_call_resp(id, status, headers, body):
    """HTTPRespCall.Resp: new status (0: unchanged), headers and body for the client's response."""
    return _reply_frame(4, _lay_http_resp_call_resp, id, status, headers, body)


cdef struct _Rewrite:
    uint32_t id
    _Str path
    _Entries headers
    _Entries args
    _Entries resp_headers
    _Str body


cdef void _lay_rewrite(_W* w, void* args) noexcept:
    cdef _Rewrite* a = <_Rewrite*>args
    cdef int widths[5]
    cdef int64_t fields[5]
    cdef int64_t ref = _call_resp(w, a.id, 2)
    widths[0] = 4 if a.path.n >= 0 else 0
    widths[1] = 4 if a.headers.count >= 0 else 0
    widths[2] = 4 if a.args.count >= 0 else 0
    widths[3] = 4 if a.resp_headers.count >= 0 else 0
    widths[4] = 4 if a.body.n >= 0 else 0
    _table(w, ref, _nslots(5, widths), widths, fields)
    if widths[0]:
        _blob(w, fields[0], &a.path, True)
    if widths[1]:
        _entry_vector(w, fields[1], &a.headers)
    if widths[2]:
        _entry_vector(w, fields[2], &a.args)
    if widths[3]:
        _entry_vector(w, fields[3], &a.resp_headers)
    if widths[4]:
        _blob(w, fields[4], &a.body, False)


def encode_rewrite(id, path, headers, args, resp_headers, body):
    """HTTPReqCall.Resp with a Rewrite action: changes to the upstream request."""
    cdef _Rewrite a
    cdef object kept
    cdef object path_obj
    cdef list header_objs, arg_objs, resp_header_objs
    cdef Py_buffer view
    cdef bint held = False
    a.headers.count = -1
    a.args.count = -1
    a.resp_headers.count = -1
    a.id = <uint32_t>_uint(id, 0xFFFFFFFF, "id")
    path_obj = _opt_text_obj(path, "path")
    header_objs = _entry_objs(headers, "headers")
    arg_objs = _entry_objs(args, "args")
    resp_header_objs = _entry_objs(resp_headers, "resp_headers")
    try:
        kept = _body(body, &a.body, &view, &held, "body")
        _point(path_obj, &a.path)
        _point_entries(header_objs, &a.headers)
        _point_entries(arg_objs, &a.args)
        _point_entries(resp_header_objs, &a.resp_headers)
        return _finish(2, _lay_rewrite, &a)
    finally:
        _free_entries(&a.headers)
        _free_entries(&a.args)
        _free_entries(&a.resp_headers)
        if held:
            PyBuffer_Release(&view)


cdef struct _Info:
    uint32_t info_type
    _Str name             # Var only


cdef void _lay_extra_info(_W* w, void* args) noexcept:
    cdef _Info* a = <_Info*>args
    cdef int widths[2]
    cdef int64_t fields[2]
    cdef int64_t ref
    widths[0] = 1
    widths[1] = 4
    _table(w, 0, 2, widths, fields)
    _put_u8(w, fields[0], a.info_type)
    ref = fields[1]
    if a.name.n >= 0:
        widths[0] = 4
        _table(w, ref, 1, widths, fields)
        _blob(w, fields[0], &a.name, True)
    else:
        _table(w, ref, 0, widths, fields)


def encode_extra_info_var(name):
    """ExtraInfo.Req asking for the gateway variable ``name``."""
    cdef _Info a
    cdef object name_obj
    a.info_type = 1
    if name is None:
        raise EncodeError("var name must be str or bytes, not None")
    name_obj = _text_obj(name, "var name")
    _point(name_obj, &a.name)
    return _finish(3, _lay_extra_info, &a)


def encode_extra_info_req_body():
    """ExtraInfo.Req asking for the request body."""
    cdef _Info a
    a.info_type = 2
    a.name.n = -1
    return _finish(3, _lay_extra_info, &a)


def encode_extra_info_resp_body():
    """ExtraInfo.Req asking for the upstream response body (only during HTTPRespCall)."""
    cdef _Info a
    a.info_type = 3
    a.name.n = -1
    return _finish(3, _lay_extra_info, &a)
