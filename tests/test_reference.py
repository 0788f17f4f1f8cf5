"""Reference checks against the official FlatBuffers code, both ways, on both codec paths.

Our writers are read by the official readers, and what the official builders write is read by our
decoders, field by field.  The reference is ``a6pluginprotos`` 0.2.1 (installed as ``A6``) for the
tables it has, and the ``flatc --python`` output checked in under ``tests/reference/generated``
for the newer ones (Rewrite.resp_headers and .body, HTTPRespCall, ExtraInfo.RespBody).
"""
import importlib
import pathlib
import sys
import types

import flatbuffers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import A6.Err.Resp
import A6.ExtraInfo.Req
import A6.ExtraInfo.ReqBody
import A6.ExtraInfo.Resp
import A6.ExtraInfo.Var
import A6.HTTPReqCall.Req
import A6.HTTPReqCall.Resp
import A6.HTTPReqCall.Rewrite
import A6.HTTPReqCall.Stop
import A6.PrepareConf.Req
import A6.PrepareConf.Resp
import A6.TextEntry

GENERATED = pathlib.Path(__file__).parent / "reference" / "generated"
U32_MAX = 0xFFFFFFFF


def _a6_modules():
    return [name for name in sys.modules if name == "A6" or name.startswith("A6.")]


@pytest.fixture
def generated():
    """The flatc output, imported as ``A6`` for one test; the installed ``A6`` comes back after.

    Both packages are called ``A6`` and generated code imports ``A6.TextEntry`` lazily, so the
    swap lasts for the whole test and is undone whatever happens.
    """
    saved = {name: sys.modules.pop(name) for name in _a6_modules()}
    sys.path.insert(0, str(GENERATED))
    try:
        names = {
            "TextEntry": "A6.TextEntry",
            "HTTPReqCallResp": "A6.HTTPReqCall.Resp",
            "Rewrite": "A6.HTTPReqCall.Rewrite",
            "HTTPRespCallReq": "A6.HTTPRespCall.Req",
            "HTTPRespCallResp": "A6.HTTPRespCall.Resp",
            "ExtraInfoReq": "A6.ExtraInfo.Req",
            "RespBody": "A6.ExtraInfo.RespBody",
        }
        modules = {key: importlib.import_module(name) for key, name in names.items()}
        for module in modules.values():
            assert pathlib.Path(module.__file__).is_relative_to(GENERATED)
        yield types.SimpleNamespace(**modules)
    finally:
        sys.path.remove(str(GENERATED))
        for name in _a6_modules():
            del sys.modules[name]
        sys.modules.update(saved)


suppress = settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
                    max_examples=100, deadline=None)


# ---------------------------------------------------------------------------------------------
# Reading with the official readers

def payload_of(frame, rpc_type):
    assert frame[0] == rpc_type
    assert int.from_bytes(frame[1:4], "big") == len(frame) - 4
    return bytearray(frame[4:])


def official_entries(obj, field):
    """A [TextEntry] field as ``(name, value)`` bytes pairs; None when absent."""
    if getattr(obj, field + "IsNone")():
        return None
    get = getattr(obj, field)
    return [(entry.Name(), entry.Value())
            for entry in (get(j) for j in range(getattr(obj, field + "Length")()))]


def official_bytes(obj, field):
    """A [ubyte] field as bytes; None when absent."""
    if getattr(obj, field + "IsNone")():
        return None
    get = getattr(obj, field)
    return bytes(get(j) for j in range(getattr(obj, field + "Length")()))


def union_as(table_class, table):
    obj = table_class()
    obj.Init(table.Bytes, table.Pos)
    return obj


def encoded(pairs):
    return None if pairs is None else [
        (name.encode(), None if value is None else value.encode()) for name, value in pairs]


HEADERS = [("x-a", "1"), ("set-cookie", "a=1"), ("set-cookie", "b=2"), ("x-del", None),
           ("x-empty", "")]


def test_err_code_is_read_by_the_official_reader(codec):
    for code in (0, 1, 2):
        resp = A6.Err.Resp.Resp.GetRootAs(payload_of(codec.encode_err(code), 0))
        assert resp.Code() == code


def test_conf_token_is_read_by_the_official_reader(codec):
    for token in (0, 1, U32_MAX):
        resp = A6.PrepareConf.Resp.Resp.GetRootAs(payload_of(
            codec.encode_prepare_conf_resp(token), 1))
        assert resp.ConfToken() == token


@pytest.mark.parametrize("id", [0, 1, U32_MAX])
def test_no_action_is_read_by_the_official_reader(codec, id):
    resp = A6.HTTPReqCall.Resp.Resp.GetRootAs(payload_of(codec.encode_no_action(id), 2))
    assert (resp.Id(), resp.ActionType(), resp.Action()) == (id, 0, None)


def test_stop_is_read_by_the_official_reader(codec):
    resp = A6.HTTPReqCall.Resp.Resp.GetRootAs(payload_of(
        codec.encode_stop(0, 403, HEADERS, b"denied\x00\xff"), 2))
    assert (resp.Id(), resp.ActionType()) == (0, 1)
    stop = union_as(A6.HTTPReqCall.Stop.Stop, resp.Action())
    assert stop.Status() == 403
    assert official_entries(stop, "Headers") == encoded(HEADERS)
    assert official_bytes(stop, "Body") == b"denied\x00\xff"


def test_stop_absent_and_empty_fields_as_the_official_reader_sees_them(codec):
    resp = A6.HTTPReqCall.Resp.Resp.GetRootAs(payload_of(codec.encode_stop(1, 0, None, None), 2))
    stop = union_as(A6.HTTPReqCall.Stop.Stop, resp.Action())
    assert (stop.Status(), stop.HeadersIsNone(), stop.BodyIsNone()) == (0, True, True)
    resp = A6.HTTPReqCall.Resp.Resp.GetRootAs(payload_of(codec.encode_stop(1, 200, [], b""), 2))
    stop = union_as(A6.HTTPReqCall.Stop.Stop, resp.Action())
    assert official_entries(stop, "Headers") == [] and official_bytes(stop, "Body") == b""


def test_rewrite_path_headers_args_are_read_by_the_official_reader(codec):
    args = [("q", "1"), ("q", "2"), ("flag", None), ("empty", "")]
    resp = A6.HTTPReqCall.Resp.Resp.GetRootAs(payload_of(
        codec.encode_rewrite(U32_MAX, "/new/path", HEADERS, args, None, None), 2))
    assert (resp.Id(), resp.ActionType()) == (U32_MAX, 2)
    rewrite = union_as(A6.HTTPReqCall.Rewrite.Rewrite, resp.Action())
    assert rewrite.Path() == b"/new/path"
    assert official_entries(rewrite, "Headers") == encoded(HEADERS)
    assert official_entries(rewrite, "Args") == encoded(args)


def test_rewrite_every_field_is_read_by_the_flatc_reader(codec, generated):
    args = [("a", None), ("b", "2")]
    resp_headers = [("x-resp", "1"), ("x-resp", "2")]
    resp = generated.HTTPReqCallResp.Resp.GetRootAs(payload_of(
        codec.encode_rewrite(0, "/p", HEADERS, args, resp_headers, b"new\x00body"), 2))
    assert (resp.Id(), resp.ActionType()) == (0, 2)
    rewrite = union_as(generated.Rewrite.Rewrite, resp.Action())
    assert rewrite.Path() == b"/p"
    assert official_entries(rewrite, "Headers") == encoded(HEADERS)
    assert official_entries(rewrite, "Args") == encoded(args)
    assert official_entries(rewrite, "RespHeaders") == encoded(resp_headers)
    assert official_bytes(rewrite, "Body") == b"new\x00body"


def test_rewrite_absent_and_empty_fields_as_the_flatc_reader_sees_them(codec, generated):
    def rewrite_of(frame):
        resp = generated.HTTPReqCallResp.Resp.GetRootAs(payload_of(frame, 2))
        return union_as(generated.Rewrite.Rewrite, resp.Action())

    absent = rewrite_of(codec.encode_rewrite(1, None, None, None, None, None))
    assert absent.Path() is None
    assert all(getattr(absent, field + "IsNone")()
               for field in ("Headers", "Args", "RespHeaders", "Body"))
    empty = rewrite_of(codec.encode_rewrite(1, "", [], [], [], b""))
    assert empty.Path() == b""
    for field in ("Headers", "Args", "RespHeaders"):
        assert official_entries(empty, field) == []
    assert official_bytes(empty, "Body") == b""


def test_http_resp_call_resp_is_read_by_the_flatc_reader(codec, generated):
    resp = generated.HTTPRespCallResp.Resp.GetRootAs(payload_of(
        codec.encode_http_resp_call_resp(0, 418, HEADERS, b"\xffteapot"), 4))
    assert (resp.Id(), resp.Status()) == (0, 418)
    assert official_entries(resp, "Headers") == encoded(HEADERS)
    assert official_bytes(resp, "Body") == b"\xffteapot"


def test_http_resp_call_resp_absent_and_empty_as_the_flatc_reader_sees_them(codec, generated):
    resp = generated.HTTPRespCallResp.Resp.GetRootAs(payload_of(
        codec.encode_http_resp_call_resp(U32_MAX, 0, None, None), 4))
    assert (resp.Id(), resp.Status(), resp.HeadersIsNone(), resp.BodyIsNone()) == (
        U32_MAX, 0, True, True)
    resp = generated.HTTPRespCallResp.Resp.GetRootAs(payload_of(
        codec.encode_http_resp_call_resp(1, 200, [], b""), 4))
    assert official_entries(resp, "Headers") == [] and official_bytes(resp, "Body") == b""


def test_extra_info_var_is_read_by_the_official_reader(codec):
    req = A6.ExtraInfo.Req.Req.GetRootAs(payload_of(codec.encode_extra_info_var("cookie_x"), 3))
    assert req.InfoType() == 1
    assert union_as(A6.ExtraInfo.Var.Var, req.Info()).Name() == b"cookie_x"


def test_extra_info_req_body_is_read_by_the_official_reader(codec):
    req = A6.ExtraInfo.Req.Req.GetRootAs(payload_of(codec.encode_extra_info_req_body(), 3))
    assert req.InfoType() == 2 and req.Info() is not None
    union_as(A6.ExtraInfo.ReqBody.ReqBody, req.Info())


def test_extra_info_resp_body_is_read_by_the_flatc_reader(codec, generated):
    req = generated.ExtraInfoReq.Req.GetRootAs(payload_of(codec.encode_extra_info_resp_body(), 3))
    assert req.InfoType() == 3 and req.Info() is not None
    union_as(generated.RespBody.RespBody, req.Info())


# ---------------------------------------------------------------------------------------------
# What the official builders write, read by our decoders

def build_entries(builder, text_entry, pairs):
    """A [TextEntry] vector written with a generated TextEntry module."""
    tables = []
    for name, value in pairs:
        name_off = None if name is None else builder.CreateString(name)
        value_off = None if value is None else builder.CreateString(value)
        text_entry.Start(builder)
        if name_off is not None:
            text_entry.AddName(builder, name_off)
        if value_off is not None:
            text_entry.AddValue(builder, value_off)
        tables.append(text_entry.End(builder))
    builder.StartVector(4, len(tables), 4)
    for table in reversed(tables):
        builder.PrependUOffsetTRelative(table)
    return builder.EndVector()


def finish(builder, root):
    builder.Finish(root)
    return bytes(builder.Output())


def official_prepare_conf_req(conf, key):
    builder = flatbuffers.Builder(0)
    conf_off = None if conf is None else build_entries(builder, A6.TextEntry, conf)
    key_off = None if key is None else builder.CreateString(key)
    module = A6.PrepareConf.Req
    module.Start(builder)
    if conf_off is not None:
        module.AddConf(builder, conf_off)
    if key_off is not None:
        module.AddKey(builder, key_off)
    return finish(builder, module.End(builder))


def official_http_req_call_req(id=0, conf_token=0, method=0, path=None, src_ip=None, args=None,
                               headers=None, force_defaults=False):
    builder = flatbuffers.Builder(0)
    builder.ForceDefaults(force_defaults)
    args_off = None if args is None else build_entries(builder, A6.TextEntry, args)
    headers_off = None if headers is None else build_entries(builder, A6.TextEntry, headers)
    path_off = None if path is None else builder.CreateString(path)
    ip_off = None if src_ip is None else builder.CreateByteVector(src_ip)
    module = A6.HTTPReqCall.Req
    module.Start(builder)
    module.AddId(builder, id)
    module.AddConfToken(builder, conf_token)
    module.AddMethod(builder, method)
    if ip_off is not None:
        module.AddSrcIp(builder, ip_off)
    if path_off is not None:
        module.AddPath(builder, path_off)
    if args_off is not None:
        module.AddArgs(builder, args_off)
    if headers_off is not None:
        module.AddHeaders(builder, headers_off)
    return finish(builder, module.End(builder))


def official_extra_info_resp(result):
    builder = flatbuffers.Builder(0)
    result_off = None if result is None else builder.CreateByteVector(result)
    module = A6.ExtraInfo.Resp
    module.Start(builder)
    if result_off is not None:
        module.AddResult(builder, result_off)
    return finish(builder, module.End(builder))


def test_official_prepare_conf_req_is_read(codec):
    conf = [("auth", '{"k":"v"}'), ("limit", None), ("auth", "")]
    req = codec.decode_prepare_conf_req(official_prepare_conf_req(
        conf, "route#1#ext-plugin-pre-req#2"))
    assert req.conf == conf
    assert req.key == "route#1#ext-plugin-pre-req#2"


def test_official_prepare_conf_req_absent_and_empty_fields(codec):
    req = codec.decode_prepare_conf_req(official_prepare_conf_req(None, None))
    assert (req.conf, req.key) == ([], None)
    req = codec.decode_prepare_conf_req(official_prepare_conf_req([], ""))
    assert (req.conf, req.key) == ([], "")


def test_official_http_req_call_req_is_read_field_by_field(codec):
    args = [("flag", None), ("y", ""), ("x", "1"), ("x", "2")]
    headers = [("host", "upstream.example"), ("cookie", "a"), ("cookie", "b")]
    req = codec.decode_http_req_call(official_http_req_call_req(
        id=(3 << 22) + 1, conf_token=U32_MAX, method=13, path="/pa/th",
        src_ip=bytes([198, 51, 100, 7]), args=args, headers=headers))
    assert (req.id, req.conf_token, req.method) == ((3 << 22) + 1, U32_MAX, 13)
    assert req.path == "/pa/th"
    assert req.src_ip == bytes([198, 51, 100, 7])
    assert req.args == args
    assert req.headers == headers


@pytest.mark.parametrize("force_defaults", [False, True], ids=["omitted", "written"])
def test_official_http_req_call_id_0_is_read_whether_omitted_or_written(codec, force_defaults):
    req = codec.decode_http_req_call(official_http_req_call_req(
        id=0, conf_token=0, method=0, force_defaults=force_defaults))
    assert (req.id, req.conf_token, req.method) == (0, 0, 0)


def test_official_http_req_call_16_byte_src_ip(codec):
    ip = bytes.fromhex("20010db8000000000000000000000001")
    assert codec.decode_http_req_call(official_http_req_call_req(src_ip=ip)).src_ip == ip


def test_official_http_req_call_absent_fields_read_as_none_or_empty(codec):
    req = codec.decode_http_req_call(official_http_req_call_req(id=5))
    assert (req.path, req.src_ip, req.args, req.headers) == (None, None, [], [])


def test_official_http_req_call_empty_vectors_read_as_empty(codec):
    req = codec.decode_http_req_call(official_http_req_call_req(
        id=5, path="", src_ip=b"", args=[], headers=[]))
    assert (req.path, req.src_ip, req.args, req.headers) == ("", b"", [], [])


def _official_http_resp_call_req(generated, id, conf_token, status, headers):
    builder = flatbuffers.Builder(0)
    headers_off = None if headers is None else build_entries(builder, generated.TextEntry,
                                                              headers)
    module = generated.HTTPRespCallReq
    module.Start(builder)
    module.AddId(builder, id)
    module.AddStatus(builder, status)
    module.AddConfToken(builder, conf_token)
    if headers_off is not None:
        module.AddHeaders(builder, headers_off)
    return finish(builder, module.End(builder))


def test_official_http_resp_call_req_is_read(codec, generated):
    headers = [("content-type", "text/plain"), ("set-cookie", "a"), ("set-cookie", "b"),
               ("x-no-value", None)]
    req = codec.decode_http_resp_call(_official_http_resp_call_req(generated, 0, 77, 502,
                                                                   headers))
    assert (req.id, req.conf_token, req.status) == (0, 77, 502)
    assert req.headers == headers


def test_official_http_resp_call_req_absent_and_empty_headers(codec, generated):
    req = codec.decode_http_resp_call(_official_http_resp_call_req(generated, 1, 2, 0, None))
    assert (req.status, req.headers) == (0, [])
    req = codec.decode_http_resp_call(_official_http_resp_call_req(generated, 1, 2, 200, []))
    assert (req.status, req.headers) == (200, [])


def test_official_extra_info_resp_is_read(codec):
    assert codec.decode_extra_info_resp(official_extra_info_resp(b"\x00\x01\xff")) == (
        b"\x00\x01\xff")
    assert codec.decode_extra_info_resp(official_extra_info_resp(b"")) == b""
    assert codec.decode_extra_info_resp(official_extra_info_resp(None)) is None


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
pairs = st.lists(st.tuples(text, st.none() | text), max_size=5)


@suppress
@given(id=st.integers(0, U32_MAX), conf_token=st.integers(0, U32_MAX), method=st.integers(0, 14),
       path=st.none() | text, src_ip=st.none() | st.binary(min_size=4, max_size=16),
       args=st.none() | pairs, headers=st.none() | pairs)
def test_any_official_http_req_call_req_is_read(codec, id, conf_token, method, path, src_ip,
                                                args, headers):
    req = codec.decode_http_req_call(official_http_req_call_req(
        id, conf_token, method, path, src_ip, args, headers))
    assert (req.id, req.conf_token, req.method, req.path, req.src_ip) == (
        id, conf_token, method, path, src_ip)
    assert req.args == (args or []) and req.headers == (headers or [])


def _text_of(raw):
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


@suppress
@given(args=st.none() | pairs, headers=st.none() | pairs, before=st.binary(max_size=8),
       after=st.binary(max_size=8), data=st.data())
def test_official_http_req_call_req_is_read_in_place_and_looked_up(codec, args, headers, before,
                                                                   after, data):
    payload = official_http_req_call_req(7, 9, 1, "/p", bytes([10, 0, 0, 1]), args, headers)
    buf = before + payload + after
    req = codec.decode_http_req_call(buf, len(before), len(before) + len(payload))
    # the official reader, told where the message starts
    official = A6.HTTPReqCall.Req.Req.GetRootAs(bytearray(buf), len(before))
    assert (req.id, req.conf_token, req.method, req.path) == (
        official.Id(), official.ConfToken(), official.Method(), _text_of(official.Path()))
    official_headers = official_entries(official, "Headers") or []
    official_args = official_entries(official, "Args") or []
    known = [name for name, _ in (args or []) + (headers or [])]
    name = data.draw(text | (st.sampled_from(known).map(str.swapcase) if known else text))
    assert req.header_values(name) == [_text_of(value) for raw, value in official_headers
                                       if _text_of(raw).lower() == name.lower()]
    assert req.arg_values(name) == [_text_of(value) for raw, value in official_args
                                    if _text_of(raw) == name]
