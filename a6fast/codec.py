"""The codec: frame header and every table of the protocol, as the runner reads and writes them.

Two implementations with one API and one behaviour: ``a6fast._codec`` (Cython, the hot path) and
``a6fast._codec_py`` (pure Python, for platforms without a wheel and as the test oracle).  This
module picks one at import: the pure one when ``A6FAST_NO_EXTENSIONS`` is set to a non-empty value
other than ``0``, or when the extension is not built.  ``IMPLEMENTATION`` says which, and
``FALLBACK_REASON`` why the pure one is used when it was not asked for.

API (both modules)
------------------
Frame header::

    encode_header(rpc_type, length) -> bytes            # 4 bytes; EncodeError if out of range
    decode_header(data, offset=0) -> (rpc_type, length)  # DecodeError if fewer than 4 bytes
    frame_end(data, offset=0) -> int                     # offset + 4 + length if the whole
                                                         # frame is there, else -1; the type
                                                         # is data[offset]

Runner side reads (the message is ``payload[start:end]``: a bytes-like ``payload``, ``end`` None
meaning its end)::

    decode_prepare_conf_req(payload, max_entries=None, start=0, end=None) -> PrepareConfReq
                                                          # .conf: list[(name, value)], .key;
                                                          # TooManyPlugins (a DecodeError) if
                                                          # conf lists more than max_entries,
                                                          # raised before any entry is read
    decode_http_req_call(payload, start=0, end=None)   -> HTTPReqCallReq
                                                          # .id .src_ip .method .path .args
                                                          # .headers .conf_token
                                                          # .header_values(name)
                                                          # .arg_values(name)
    decode_http_resp_call(payload, start=0, end=None)  -> HTTPRespCallReq
                                                          # .id .status .headers .conf_token
                                                          # .header_values(name)
    decode_extra_info_resp(payload, start=0, end=None) -> bytes | None
                                                          # ExtraInfo.Resp.result

The classes take the same arguments as their decoders.

Runner side writes (each returns a whole frame: header + payload)::

    encode_err(code)
    encode_prepare_conf_resp(conf_token)
    encode_no_action(id)                                   # HTTPReqCall.Resp, action NONE
    encode_stop(id, status, headers, body)
    encode_rewrite(id, path, headers, args, resp_headers, body)
    encode_http_resp_call_resp(id, status, headers, body)
    encode_extra_info_var(name)
    encode_extra_info_req_body()
    encode_extra_info_resp_body()

Conventions
-----------
- Strings are ``str``, decoded as UTF-8 with ``surrogateescape`` so that any byte survives a round
  trip; writers accept ``str`` (encoded the same way) or ``bytes``.
- Absent is ``None`` and never the same as empty: a TextEntry without a value has value ``None``,
  an absent vector reads as ``[]`` for entry lists (``args``/``headers``) but an absent ``src_ip``,
  ``path``, ``key`` or ExtraInfo ``result`` reads as ``None``.  On writing, ``None`` leaves a field
  out, ``[]`` / ``b""`` writes an empty vector.
- Entry lists are sequences of ``(name, value)`` pairs, in order, names repeated for multi-valued.
- ``id``, ``conf_token``: uint32; ``status``: uint16; ``method``: the ``A6.Method`` value (0..14).
  Scalars are read eagerly and checked; string and vector fields of ``HTTPReqCallReq`` and
  ``HTTPRespCallReq`` are decoded on first access (then cached), so a corrupt field raises
  ``DecodeError`` when it is touched.
- Every read of untrusted bytes is bounds-checked first; malformed input raises
  ``a6fast.errors.DecodeError``, never anything else and never a read outside the buffer.
- Reading in place: ``start`` and ``end`` are ints (not bool) with ``0 <= start <= end <=
  len(payload)``, counted in bytes (a memoryview's ``nbytes``); anything else is ``DecodeError``.
  Offsets in the message are relative to ``start`` and never followed outside ``[start, end)``:
  decoding ``(buf, start, end)`` gives exactly what decoding ``buf[start:end]`` gives, errors
  included, whatever ``buf`` holds around it (a frame header, the next frame).  What a decoded
  message keeps for its lazy fields: a ``bytes`` payload itself (the compiled codec reads it in
  place, no copy, so the message keeps that whole object alive; the pure one copies the part
  unless it is all of it), anything else copied once, ``payload[start:end]`` only, so that a
  receive buffer reused later cannot change them.  ``decode_extra_info_resp`` keeps nothing: the
  compiled codec reads any contiguous buffer in place and copies only the result.
- Lookups: ``req.header_values(name)`` is ``[v for n, v in req.headers if n is not None and
  n.lower() == name.lower()]`` (``str.lower``, so beyond ASCII too: ``"\u212a".lower() == "k"``)
  and ``req.arg_values(name)`` is ``[v for n, v in req.args if n == name]``; a ``name`` that is
  not ``str`` is ``TypeError`` (a ``str`` subclass counts as its ``str`` value).  They cache
  nothing and build no list of the entries: the compiled codec compares names as bytes and
  decodes only the values that match.  Each checks and charges every entry of the vector as
  reading the list does, so a payload that makes ``.headers`` raise makes the lookup raise the
  same ``DecodeError``, on every call.
- Decoding is linear in the payload's size: FlatBuffers lets many offsets share one object, so
  each entry list is charged for what it decodes and one that comes to more than twice the
  message (``end - start`` bytes, whatever the buffer around it) plus 4 KiB is a ``DecodeError``
  (the charge: ``a6fast._flatbuffers.field_entries``).
- Writers read each argument once, in argument order, and write what they read: code that runs
  while a later argument is read (an iterable, ``__index__``) cannot change an earlier one.
- Writers raise ``a6fast.errors.EncodeError`` for wrong types, out-of-range numbers and a payload
  larger than ``MAX_PAYLOAD``.
"""
from os import environ as _environ

from .errors import DecodeError, EncodeError, TooManyPlugins


def _why_not_compiled(exc):
    from importlib.machinery import EXTENSION_SUFFIXES
    from os.path import abspath, dirname, exists, join

    here = dirname(abspath(__file__))
    if any(exists(join(here, "_codec" + suffix)) for suffix in EXTENSION_SUFFIXES):
        return "it does not load: %s" % exc  # another Python's build, say
    return "no _codec%s in %s" % (EXTENSION_SUFFIXES[0], here)


__all__ = [
    "encode_header", "decode_header", "frame_end",
    "decode_prepare_conf_req", "decode_http_req_call", "decode_http_resp_call",
    "decode_extra_info_resp",
    "encode_err", "encode_prepare_conf_resp", "encode_no_action", "encode_stop",
    "encode_rewrite", "encode_http_resp_call_resp", "encode_extra_info_var",
    "encode_extra_info_req_body", "encode_extra_info_resp_body",
    "PrepareConfReq", "HTTPReqCallReq", "HTTPRespCallReq",
    "DecodeError", "EncodeError", "TooManyPlugins", "IMPLEMENTATION", "FALLBACK_REASON",
]

# Why the pure codec is in use although it was not asked for (None otherwise): `a6fast serve`
# warns with it, since pip hides the build's own warning.
FALLBACK_REASON = None

_pure = _environ.get("A6FAST_NO_EXTENSIONS", "") not in ("", "0")
if not _pure:
    try:
        from . import _codec  # noqa: F401  (imported first only to learn whether it is built)
    except ImportError as _exc:
        _pure = True
        FALLBACK_REASON = _why_not_compiled(_exc)

# Explicit names, so that a reader (and go-to-definition) finds each one; both lists must stay
# exactly the modules' __all__ (tests/test_codec_face.py checks).
if _pure:
    from ._codec_py import (
        HTTPReqCallReq, HTTPRespCallReq, PrepareConfReq, decode_extra_info_resp, decode_header,
        decode_http_req_call, decode_http_resp_call, decode_prepare_conf_req, encode_err,
        encode_extra_info_req_body, encode_extra_info_resp_body, encode_extra_info_var,
        encode_header, encode_http_resp_call_resp, encode_no_action, encode_prepare_conf_resp,
        encode_rewrite, encode_stop, frame_end,
    )
else:
    from ._codec import (
        HTTPReqCallReq, HTTPRespCallReq, PrepareConfReq, decode_extra_info_resp, decode_header,
        decode_http_req_call, decode_http_resp_call, decode_prepare_conf_req, encode_err,
        encode_extra_info_req_body, encode_extra_info_resp_body, encode_extra_info_var,
        encode_header, encode_http_resp_call_resp, encode_no_action, encode_prepare_conf_resp,
        encode_rewrite, encode_stop, frame_end,
    )

IMPLEMENTATION = "pure" if _pure else "compiled"
