"""The gateway's side of the protocol in pure Python: for tests, the benchmark client and
testing plugins without an APISIX.

Encoders build the frames the gateway sends (PrepareConf, HTTPReqCall, HTTPRespCall requests and
ExtraInfo answers); decoders read the runner's answers and are as strict as the runner's own
codec (malformed input raises ``DecodeError``).  Unlike the runner-side readers, absent entry
lists read as None here, so a test can tell "not sent" from "sent empty".
"""
import ipaddress
from collections import namedtuple

from . import _flatbuffers as _fb
from .codec import decode_header, frame_end
from .errors import DecodeError, EncodeError
from .protocol import (
    ACTION_REWRITE, ACTION_STOP, HEADER_SIZE, INFO_VAR, METHOD_VALUES, RPC_EXTRA_INFO,
    RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF,
)

__all__ = [
    "encode_prepare_conf_req", "encode_http_req_call_req", "encode_http_resp_call_req",
    "encode_extra_info_resp", "decode_err", "decode_prepare_conf_resp",
    "decode_http_req_call_resp", "decode_http_resp_call_resp", "decode_extra_info_req",
    "read_frame", "split_frames", "HTTPReqCallResp", "Stop", "Rewrite", "HTTPRespCallResp",
    "ExtraInfoReq",
]

HTTPReqCallResp = namedtuple("HTTPReqCallResp", "id action_type stop rewrite")
Stop = namedtuple("Stop", "status headers body")
Rewrite = namedtuple("Rewrite", "path headers args resp_headers body")
HTTPRespCallResp = namedtuple("HTTPRespCallResp", "id status headers body")
ExtraInfoReq = namedtuple("ExtraInfoReq", "info_type name")


# ---------------------------------------------------------------------------------------------
# What the gateway sends

def encode_prepare_conf_req(conf, key=None):
    """A PrepareConf frame: ``conf`` is ``(plugin name, JSON text)`` pairs in execution order."""
    fields = []
    _fb.entries_field(fields, 0, conf, "conf")
    _fb.text_field(fields, 1, key, "key")
    return _fb.build_frame(RPC_PREPARE_CONF, fields)


def _method(method):
    # Any ubyte is allowed, so a test can send a method the runner must reject.
    if isinstance(method, str):
        try:
            return METHOD_VALUES[method.upper()]
        except KeyError:
            raise EncodeError("unknown method %r" % method) from None
    return _fb.check_uint(method, 0xFF, "method")


def _src_ip(src_ip):
    if src_ip is None:
        return None
    if isinstance(src_ip, str):
        try:
            return ipaddress.ip_address(src_ip).packed
        except ValueError:
            raise EncodeError("src_ip %r is not an IP address" % src_ip) from None
    if isinstance(src_ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return src_ip.packed
    return _fb.to_body(src_ip, "src_ip")


def encode_http_req_call_req(id, conf_token, method=0, path=None, src_ip=None, args=None,
                             headers=None):
    """An HTTPReqCall frame.  ``method`` is an A6.Method value or name; ``src_ip`` raw bytes
    (4 or 16, not checked) or an address as text."""
    fields = [(0, "I", _fb.check_uint(id, 0xFFFFFFFF, "id")),
              (2, "B", _method(method)),
              (6, "I", _fb.check_uint(conf_token, 0xFFFFFFFF, "conf_token"))]
    ip = _src_ip(src_ip)
    if ip is not None:
        fields.append((1, "v", ip))
    _fb.text_field(fields, 3, path, "path")
    _fb.entries_field(fields, 4, args, "args")
    _fb.entries_field(fields, 5, headers, "headers")
    return _fb.build_frame(RPC_HTTP_REQ_CALL, fields)


def encode_http_resp_call_req(id, conf_token, status=0, headers=None):
    """An HTTPRespCall frame: the upstream's status and headers."""
    fields = [(0, "I", _fb.check_uint(id, 0xFFFFFFFF, "id")),
              (1, "H", _fb.check_uint(status, 0xFFFF, "status")),
              (3, "I", _fb.check_uint(conf_token, 0xFFFFFFFF, "conf_token"))]
    _fb.entries_field(fields, 2, headers, "headers")
    return _fb.build_frame(RPC_HTTP_RESP_CALL, fields)


def encode_extra_info_resp(result):
    """The gateway's ExtraInfo answer; ``result`` None leaves it absent (unknown var, no body)."""
    fields = []
    _fb.body_field(fields, 0, result, "result")
    return _fb.build_frame(RPC_EXTRA_INFO, fields)


# ---------------------------------------------------------------------------------------------
# What the runner answers

def _read_err(buf):
    return _fb.field_u8(buf, _fb.root_table(buf), 0)


def decode_err(payload):
    """``code`` of an Err.Resp payload (0 when absent)."""
    return _fb.guarded(_read_err, _fb.snapshot(payload))


def _read_prepare_conf_resp(buf):
    return _fb.field_u32(buf, _fb.root_table(buf), 0)


def decode_prepare_conf_resp(payload):
    """``conf_token`` of a PrepareConf.Resp payload."""
    return _fb.guarded(_read_prepare_conf_resp, _fb.snapshot(payload))


def _union(buf, tab, type_slot, what):
    kind = _fb.field_u8(buf, tab, type_slot)
    table = _fb.field_table(buf, tab, type_slot + 1)
    if kind and table is None:
        raise DecodeError("%s type %d without its table" % (what, kind))
    return kind, table


def _read_http_req_call_resp(buf):
    tab = _fb.root_table(buf)
    id = _fb.field_u32(buf, tab, 0)
    kind, action = _union(buf, tab, 1, "action")
    stop = rewrite = None
    if kind == ACTION_STOP:
        stop = Stop(_fb.field_u16(buf, action, 0), _fb.field_entries(buf, action, 1),
                    _fb.field_bytes(buf, action, 2))
    elif kind == ACTION_REWRITE:
        rewrite = Rewrite(_fb.field_string(buf, action, 0), _fb.field_entries(buf, action, 1),
                          _fb.field_entries(buf, action, 2), _fb.field_entries(buf, action, 3),
                          _fb.field_bytes(buf, action, 4))
    return HTTPReqCallResp(id, kind, stop, rewrite)


def decode_http_req_call_resp(payload):
    """An HTTPReqCall.Resp payload: ``id``, ``action_type`` and ``stop`` or ``rewrite``.

    Absent fields are None; entry lists are None when absent and ``[]`` when sent empty.  An
    unknown action type comes back as is with neither ``stop`` nor ``rewrite``.
    """
    return _fb.guarded(_read_http_req_call_resp, _fb.snapshot(payload))


def _read_http_resp_call_resp(buf):
    tab = _fb.root_table(buf)
    return HTTPRespCallResp(_fb.field_u32(buf, tab, 0), _fb.field_u16(buf, tab, 1),
                            _fb.field_entries(buf, tab, 2), _fb.field_bytes(buf, tab, 3))


def decode_http_resp_call_resp(payload):
    """An HTTPRespCall.Resp payload: ``(id, status, headers or None, body or None)``."""
    return _fb.guarded(_read_http_resp_call_resp, _fb.snapshot(payload))


def _read_extra_info_req(buf):
    tab = _fb.root_table(buf)
    kind, info = _union(buf, tab, 0, "info")
    name = _fb.field_string(buf, info, 0) if kind == INFO_VAR else None
    return ExtraInfoReq(kind, name)


def decode_extra_info_req(payload):
    """An ExtraInfo.Req payload: ``(info_type, var name or None)``."""
    return _fb.guarded(_read_extra_info_req, _fb.snapshot(payload))


# ---------------------------------------------------------------------------------------------
# Frames on a socket

def _recv_exactly(sock, size, started):
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            if started or chunks:
                raise EOFError("connection closed in the middle of a frame")
            raise EOFError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(sock):
    """Read exactly one frame from a blocking socket: ``(rpc_type, payload)``.

    Raises EOFError when the peer closes, whether between frames or inside one.
    """
    rpc_type, length = decode_header(_recv_exactly(sock, HEADER_SIZE, False))
    return rpc_type, _recv_exactly(sock, length, True)


def split_frames(data):
    """Split received bytes into complete frames: ``([(rpc_type, payload), ...], rest)``."""
    view = memoryview(data)
    frames = []
    at = 0
    while (end := frame_end(view, at)) >= 0:
        frames.append((view[at], bytes(view[at + HEADER_SIZE:end])))
        at = end
    return frames, bytes(view[at:])
