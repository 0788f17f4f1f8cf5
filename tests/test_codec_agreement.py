"""The compiled codec and its pure twin agree, on everything.

Writers: for random valid arguments both produce the same bytes, and the gateway's decoders read
the inputs back; for random (often wrong) arguments both raise EncodeError or neither does.
Readers: for gateway-encoded messages both read the inputs back; for random bytes and for
mutated or truncated valid messages both give the same values, lazy fields forced, or both raise
DecodeError, and nothing else ever escapes; a message read in place between any bytes reads as it
does alone, and bounds outside the buffer are refused in the same words.  Lookups by name give
what searching the decoded list gives, or the same DecodeError.
"""
import inspect
import struct

import flatbuffers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a6fast import _codec as compiled
from a6fast import _codec_py as pure
from a6fast import gateway
from a6fast.errors import DecodeError, EncodeError, TooManyPlugins
from a6fast.protocol import (
    ACTION_NONE, ACTION_REWRITE, ACTION_STOP, INFO_REQ_BODY, INFO_RESP_BODY, INFO_VAR,
    MAX_PAYLOAD, RPC_ERR, RPC_EXTRA_INFO, RPC_HTTP_REQ_CALL, RPC_HTTP_RESP_CALL, RPC_PREPARE_CONF,
)

from fuzz_codec import comparable, decode_all  # tests/fuzz_codec.py, the same reading

pytestmark = pytest.mark.compiled

U32_MAX = 0xFFFFFFFF
CODECS = (compiled, pure)
examples = settings(max_examples=300, deadline=None)

# Text that survives UTF-8 with surrogateescape: no surrogates but the escaped bytes' own.
chars = st.characters(blacklist_categories=("Cs",)) | st.characters(
    min_codepoint=0xDC80, max_codepoint=0xDCFF)
texts = st.text(chars, max_size=20) | st.binary(max_size=20)
pairs = st.tuples(texts, st.none() | texts) | st.lists(texts, min_size=2, max_size=2)
# Past 8 entries the compiled writer switches from inline storage to an allocation.
entry_lists = st.lists(pairs, max_size=12) | st.lists(pairs, max_size=3).map(tuple)
bodies = st.tuples(st.sampled_from([bytes, bytearray, memoryview]), st.binary(max_size=64)).map(
    lambda made: made[0](made[1]))
u32 = st.integers(0, U32_MAX)
u16 = st.integers(0, 0xFFFF)


def as_text(value):
    """What a reader returns for a written string: its UTF-8 bytes decoded, escapes kept."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return bytes(value).decode("utf-8", "surrogateescape")


def as_entries(entries):
    if entries is None:
        return None
    return [(as_text(name), as_text(value)) for name, value in entries]


def as_body(body):
    return None if body is None else bytes(body)


def both(writer, *args):
    """The frame both writers make, checked identical, and its payload."""
    frame = getattr(compiled, writer)(*args)
    assert frame == getattr(pure, writer)(*args)
    for codec in CODECS:
        assert codec.decode_header(frame) == (frame[0], len(frame) - 4)
    return frame[0], frame[4:]


# ---------------------------------------------------------------------------------------------
# Writers: identical bytes, read back by the gateway

@examples
@given(code=st.integers(0, 2))
def test_err_frames_agree_and_carry_the_code(code):
    rpc_type, payload = both("encode_err", code)
    assert rpc_type == RPC_ERR and gateway.decode_err(payload) == code


@examples
@given(conf_token=u32)
def test_prepare_conf_resp_frames_agree_and_carry_the_token(conf_token):
    rpc_type, payload = both("encode_prepare_conf_resp", conf_token)
    assert rpc_type == RPC_PREPARE_CONF
    assert gateway.decode_prepare_conf_resp(payload) == conf_token


@examples
@given(id=u32)
def test_no_action_frames_agree_and_carry_the_id(id):
    rpc_type, payload = both("encode_no_action", id)
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload) == (id, ACTION_NONE, None, None)


@examples
@given(id=u32, status=u16, headers=st.none() | entry_lists, body=st.none() | bodies)
def test_stop_frames_agree_and_read_back(id, status, headers, body):
    rpc_type, payload = both("encode_stop", id, status, headers, body)
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload) == (
        id, ACTION_STOP, gateway.Stop(status, as_entries(headers), as_body(body)), None)


@examples
@given(id=u32, path=st.none() | texts, headers=st.none() | entry_lists,
       args=st.none() | entry_lists, resp_headers=st.none() | entry_lists,
       body=st.none() | bodies)
def test_rewrite_frames_agree_and_read_back(id, path, headers, args, resp_headers, body):
    rpc_type, payload = both("encode_rewrite", id, path, headers, args, resp_headers, body)
    assert rpc_type == RPC_HTTP_REQ_CALL
    assert gateway.decode_http_req_call_resp(payload) == (id, ACTION_REWRITE, None, gateway.Rewrite(
        as_text(path), as_entries(headers), as_entries(args), as_entries(resp_headers),
        as_body(body)))


@examples
@given(id=u32, status=u16, headers=st.none() | entry_lists, body=st.none() | bodies)
def test_http_resp_call_resp_frames_agree_and_read_back(id, status, headers, body):
    rpc_type, payload = both("encode_http_resp_call_resp", id, status, headers, body)
    assert rpc_type == RPC_HTTP_RESP_CALL
    assert gateway.decode_http_resp_call_resp(payload) == (
        id, status, as_entries(headers), as_body(body))


@examples
@given(name=texts)
def test_extra_info_var_frames_agree_and_name_the_var(name):
    rpc_type, payload = both("encode_extra_info_var", name)
    assert rpc_type == RPC_EXTRA_INFO
    assert gateway.decode_extra_info_req(payload) == (INFO_VAR, as_text(name))


def test_extra_info_body_frames_agree_and_ask_for_the_body():
    _, payload = both("encode_extra_info_req_body")
    assert gateway.decode_extra_info_req(payload) == (INFO_REQ_BODY, None)
    _, payload = both("encode_extra_info_resp_body")
    assert gateway.decode_extra_info_req(payload) == (INFO_RESP_BODY, None)


# Writers given anything: the same frame or EncodeError from both.

odd_ints = st.sampled_from([-1, U32_MAX + 1, 2 ** 64, 0x10000, 3, 1.0, "1", None, True, b"\x01"])
any_int = u32 | odd_ints
odd_texts = st.sampled_from([None, 5, 1.5, "\ud800", "a\udc7f", bytearray(b"ba"),
                             memoryview(b"mv"), ["x"]])
any_text = texts | odd_texts
odd_pairs = st.sampled_from(["ab", ("a", "b", "c"), (None, "v"), ("n", 1), (1, "v"), ("n",), 7])
any_entries = st.none() | entry_lists | st.sampled_from(
    ["ab", b"ab", 5, {"a": "b"}, [("a", "b"), "cd"]]) | st.lists(pairs | odd_pairs, max_size=4)
any_body = st.none() | bodies | st.sampled_from(["text", 12, [1, 2], bytearray(3)])
WRITERS = {
    "encode_err": (any_int,),
    "encode_prepare_conf_resp": (any_int,),
    "encode_no_action": (any_int,),
    "encode_stop": (any_int, any_int, any_entries, any_body),
    "encode_rewrite": (any_int, st.none() | any_text, any_entries, any_entries, any_entries,
                       any_body),
    "encode_http_resp_call_resp": (any_int, any_int, any_entries, any_body),
    "encode_extra_info_var": (any_text,),
}


def write_outcome(codec, writer, args):
    try:
        return getattr(codec, writer)(*args)
    except EncodeError:
        return EncodeError


@settings(max_examples=400, deadline=None)
@given(data=st.data(), writer=st.sampled_from(sorted(WRITERS)))
def test_writers_agree_on_any_arguments(data, writer):
    args = tuple(data.draw(arg) for arg in WRITERS[writer])
    assert write_outcome(compiled, writer, args) == write_outcome(pure, writer, args)


# ---------------------------------------------------------------------------------------------
# Readers: gateway-encoded messages read back, and any bytes read alike

ip_bytes = st.none() | st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16)


@st.composite
def prepare_conf_reqs(draw):
    conf, key = draw(st.none() | entry_lists), draw(st.none() | texts)
    return gateway.encode_prepare_conf_req(conf, key=key)[4:], (as_entries(conf) or [],
                                                                as_text(key))


@st.composite
def http_req_calls(draw):
    id, conf_token, method = draw(u32), draw(u32), draw(st.integers(0, 14))
    path, src_ip = draw(st.none() | texts), draw(ip_bytes)
    args, headers = draw(st.none() | entry_lists), draw(st.none() | entry_lists)
    frame = gateway.encode_http_req_call_req(id, conf_token, method=method, path=path,
                                             src_ip=src_ip, args=args, headers=headers)
    return frame[4:], (id, method, conf_token, as_text(path), src_ip,
                       as_entries(args) or [], as_entries(headers) or [])


@st.composite
def http_resp_calls(draw):
    id, conf_token, status = draw(u32), draw(u32), draw(u16)
    headers = draw(st.none() | entry_lists)
    frame = gateway.encode_http_resp_call_req(id, conf_token, status=status, headers=headers)
    return frame[4:], (id, status, conf_token, as_entries(headers) or [])


@st.composite
def extra_info_resps(draw):
    result = draw(st.none() | st.binary(max_size=64))
    return gateway.encode_extra_info_resp(result)[4:], (result,)


MESSAGES = {
    "prepare_conf_req": prepare_conf_reqs(),
    "http_req_call": http_req_calls(),
    "http_resp_call": http_resp_calls(),
    "extra_info_resp": extra_info_resps(),
}


def read_outcome(codec, kind, payload):
    """Every field, lazy ones forced (twice), each a value or DecodeError; or DecodeError."""
    return comparable(decode_all(codec, kind, payload))


@examples
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGES)))
def test_gateway_messages_read_back_through_both_decoders(data, kind):
    payload, expected = data.draw(MESSAGES[kind])
    for codec in CODECS:
        assert read_outcome(codec, kind, payload) == expected


# Offsets and lengths most likely to sit on a bound.
INTERESTING_U32 = [0, 1, 2, 3, 4, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, U32_MAX]


@st.composite
def mutated(draw, message):
    """A valid payload with some bytes changed, u32s overwritten or its tail cut off."""
    payload = bytearray(draw(message)[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(payload) - 1))
        how = draw(st.sampled_from(["byte", "bit", "u32", "u16", "cut"]))
        if how == "byte":
            payload[at] = draw(st.integers(0, 255))
        elif how == "bit":
            payload[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "u32" and at + 4 <= len(payload):
            value = draw(st.sampled_from(INTERESTING_U32) | st.integers(0, len(payload) + 8))
            struct.pack_into("<I", payload, at, value)
        elif how == "u16" and at + 2 <= len(payload):
            struct.pack_into("<H", payload, at, draw(st.integers(0, 0xFFFF)))
        elif how == "cut":
            del payload[at:]
            if not payload:
                break
    return bytes(payload)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGES)))
def test_mutated_messages_decode_alike(data, kind):
    payload = data.draw(mutated(MESSAGES[kind]))
    assert read_outcome(compiled, kind, payload) == read_outcome(pure, kind, payload)


@examples
@given(payload=st.binary(max_size=96), kind=st.sampled_from(sorted(MESSAGES)))
def test_random_bytes_decode_alike(payload, kind):
    assert read_outcome(compiled, kind, payload) == read_outcome(pure, kind, payload)


@examples
@given(data=st.binary(max_size=12), offset=st.integers(-2, 14) | st.sampled_from(
    [2 ** 63, -2 ** 63, 2 ** 70, None, 1.0]))
def test_frame_headers_decode_alike(data, offset):
    outcomes = []
    for codec in CODECS:
        try:
            outcomes.append(codec.decode_header(data, offset))
        except DecodeError:
            outcomes.append(DecodeError)
    assert outcomes[0] == outcomes[1]


def _buffer(kind, data):
    if kind == "strided":   # every other byte of twice the data: not contiguous
        return memoryview(bytes(b for byte in data for b in (byte, 0)))[::2]
    return {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[kind](data)


# Headers whose length is near the limit or a little past the bytes that follow, then a tail.
headers = st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 2, 3, 0xFF, 0x100, 0xFFFF, 0x10000,
                                                          0xFFFFFE, 0xFFFFFF]))
frame_bufs = st.tuples(st.binary(max_size=6), st.lists(headers, max_size=2), st.binary(max_size=8))


@examples
@given(parts=frame_bufs, kind=st.sampled_from(["bytes", "bytearray", "memoryview", "strided"]),
       offset=st.integers(-2, 24) | st.sampled_from([2 ** 31, 2 ** 63 - 1, 2 ** 63, -2 ** 63,
                                                      2 ** 70, -2 ** 70, None, 1.0, True, "0"]))
def test_frame_ends_agree_and_match_decode_header(parts, kind, offset):
    lead, heads, tail = parts
    data = _buffer(kind, lead + b"".join(bytes((t, n >> 16, (n >> 8) & 255, n & 255))
                                         for t, n in heads) + tail)
    outcomes = []
    for codec in CODECS:
        try:
            outcomes.append(codec.frame_end(data, offset))
        except DecodeError:
            outcomes.append(DecodeError)
    assert outcomes[0] == outcomes[1]
    end = outcomes[0]
    if end is DecodeError or end < 0:
        return
    # a whole frame: what decode_header reads there, ending inside the buffer
    rpc_type, length = pure.decode_header(data, offset)
    assert end == offset + 4 + length <= len(bytes(data))
    assert rpc_type == bytes(data)[offset]


@pytest.mark.parametrize("size", [MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1])
def test_frame_ends_agree_at_the_16_mib_limit(size):
    data = bytearray(b"\x02\xff\xff\xff") + bytes(size)
    ends = [codec.frame_end(data) for codec in CODECS] + [
        codec.frame_end(bytes(data), 0) for codec in CODECS]
    assert ends == [4 + MAX_PAYLOAD if size >= MAX_PAYLOAD else -1] * 4


# ---------------------------------------------------------------------------------------------
# Shared offsets: vectors whose slots share entries (and entries that share strings) are read
# alike, refused alike past the same budget

def _entry(builder, name, value, share):
    create = builder.CreateSharedString if share else builder.CreateString
    name_off = None if name is None else create(name)
    value_off = None if value is None else create(value)
    builder.StartObject(2)
    if name_off is not None:
        builder.PrependUOffsetTRelativeSlot(0, name_off, 0)
    if value_off is not None:
        builder.PrependUOffsetTRelativeSlot(1, value_off, 0)
    return builder.EndObject()


# message kind -> (root slot count, slots that hold an entry vector)
ENTRY_VECTOR_SLOTS = {"prepare_conf_req": (2, (0,)), "http_req_call": (7, (4, 5)),
                      "http_resp_call": (4, (2,))}


def shared_entries_payload(kind, slots, count, entries, share):
    """A payload of ``kind`` whose vector at each of ``slots`` (one vector, shared by them all)
    has ``count`` slots cycling over the tables of ``entries``."""
    nslots = ENTRY_VECTOR_SLOTS[kind][0]
    builder = flatbuffers.Builder(0)
    tables = [_entry(builder, name, value, share) for name, value in entries]
    builder.StartVector(4, count, 4)
    for i in reversed(range(count)):
        builder.PrependUOffsetTRelative(tables[i % len(tables)])
    vector = builder.EndVector()
    builder.StartObject(nslots)
    for slot in slots:
        builder.PrependUOffsetTRelativeSlot(slot, vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


short_texts = st.none() | st.text("ab\u00e9", max_size=8)


@st.composite
def shared_entry_messages(draw):
    kind = draw(st.sampled_from(sorted(ENTRY_VECTOR_SLOTS)))
    vector_slots = ENTRY_VECTOR_SLOTS[kind][1]
    slots = draw(st.lists(st.sampled_from(vector_slots), min_size=1, unique=True))
    entries = draw(st.lists(st.tuples(short_texts, short_texts | st.text("v", min_size=100,
                                                                             max_size=400)),
                            min_size=1, max_size=3))
    count = draw(st.integers(1, 400))
    return kind, shared_entries_payload(kind, slots, count, entries, draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(message=shared_entry_messages())
def test_vectors_sharing_entries_decode_alike(message):
    kind, payload = message
    assert read_outcome(compiled, kind, payload) == read_outcome(pure, kind, payload)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_vectors_sharing_entries_decode_alike(data):
    kind, payload = data.draw(shared_entry_messages())
    payload = data.draw(mutated(st.just((payload, None))))
    assert read_outcome(compiled, kind, payload) == read_outcome(pure, kind, payload)


def _refused(codec, payload):
    try:
        codec.decode_prepare_conf_req(payload)
    except DecodeError:
        return True
    return False


def test_both_refuse_shared_entries_from_the_same_count_on():
    # The smallest count of slots sharing one entry that the compiled codec refuses: the pure
    # one decodes one fewer and refuses that many too.  (An entry of no fields costs less than
    # twice its 4-byte slot, so any number of slots may share one: never refused.)
    for name, value in [("n", "v" * 100), ("", ""), ("plugin", None), (None, "")]:
        make = lambda count: shared_entries_payload(  # noqa: E731
            "prepare_conf_req", (0,), count, [(name, value)], False)
        low, high = 1, 1 << 16
        assert not _refused(compiled, make(low)) and _refused(compiled, make(high))
        while high - low > 1:
            middle = (low + high) // 2
            if _refused(compiled, make(middle)):
                high = middle
            else:
                low = middle
        assert not _refused(pure, make(low)) and _refused(pure, make(high)), (name, value, high)


@examples
@given(count=st.integers(0, 12), limit=st.none() | st.integers(0, 12))
def test_prepare_conf_plugin_limit_is_applied_alike(count, limit):
    payload = gateway.encode_prepare_conf_req([("p%d" % i, "{}") for i in range(count)],
                                              key="k")[4:]
    outcomes = []
    for codec in CODECS:
        try:
            req = codec.decode_prepare_conf_req(payload, max_entries=limit)
            outcomes.append((req.conf, req.key))
        except TooManyPlugins as exc:
            outcomes.append((TooManyPlugins, exc.count, exc.limit, exc.key))
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0][0] is TooManyPlugins) == (limit is not None and count > limit)


# ---------------------------------------------------------------------------------------------
# Writers given arguments that change while they are read: the same frame or EncodeError

BIG = 1 << 16


def _dropping_header_value():
    pair = [b"x-big", b"a" * BIG]

    def args():
        pair[1] = None
        yield ("a", "1")
    return "encode_rewrite", (1, None, (pair,), args(), None, None)


def _len_dropping_an_earlier_value():
    victim = [b"x-a", b"b" * BIG]

    class Meddling(list):
        def __len__(self):
            victim[1] = b"short"
            return 2
    return "encode_stop", (1, 200, [victim, Meddling([b"x-b", b"2"])], None)


def _len_lying_about_a_pair():
    class Lying(tuple):
        def __len__(self):
            return 2
    return "encode_http_resp_call_resp", (1, 200, [Lying(("a", "b", "c"))], None)


def _iter_emptying_earlier_lists():
    headers = [[b"x-h", b"c" * BIG]]
    args = [("a", b"d" * BIG)]

    class Emptying:
        def __iter__(self):
            headers[0].clear()
            headers.clear()
            args.clear()
            return iter([("r", "1")])
    return "encode_rewrite", (1, "/p", headers, args, Emptying(), bytearray(b"body"))


def _index_changing_headers_and_iterable_changing_body():
    body = bytearray(b"old")
    pair = [b"x-h", b"before"]

    class Id:
        def __index__(self):
            pair[1] = b"e" * BIG
            return 7

    def headers():
        yield tuple(pair)
        body[:] = b"new body, longer than the old one"
    return "encode_stop", (Id(), 200, headers(), body)


def _iterable_releasing_the_body():
    view = memoryview(bytearray(b"body"))

    def headers():
        view.release()
        yield ("h", "v")
    return "encode_http_resp_call_resp", (1, 200, headers(), view)


CHANGING_ARGUMENTS = [_dropping_header_value, _len_dropping_an_earlier_value,
                      _len_lying_about_a_pair, _iter_emptying_earlier_lists,
                      _index_changing_headers_and_iterable_changing_body,
                      _iterable_releasing_the_body]


@pytest.mark.parametrize("make", CHANGING_ARGUMENTS, ids=lambda make: make.__name__[1:])
def test_writers_agree_on_arguments_that_change_while_read(make):
    outcomes = []
    for codec in CODECS:
        writer, args = make()  # fresh arguments for each codec
        outcomes.append(write_outcome(codec, writer, args))
    assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------------------------------------
# Reading in place: a message between any bytes reads as the message alone, in both codecs, and
# bounds that are not the message's are refused alike, in the same words

class Bounded:
    """A codec whose decoders read ``payload[start:end]`` in place."""

    def __init__(self, codec, start, end):
        self.codec, self.start, self.end = codec, start, end

    def __getattr__(self, name):
        decode = getattr(self.codec, name)
        return lambda payload: decode(payload, start=self.start, end=self.end)


BUFFERS = {
    "bytes": bytes, "bytearray": bytearray, "memoryview": memoryview,
    "strided": lambda data: memoryview(bytes(b for byte in data for b in (byte, 0)))[::2],
}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(MESSAGES)), before=st.binary(max_size=12),
       after=st.binary(max_size=12), wrap=st.sampled_from(sorted(BUFFERS)))
def test_messages_between_any_bytes_decode_as_alone(data, kind, before, after, wrap):
    payload = data.draw(st.one_of(MESSAGES[kind].map(lambda made: made[0]),
                                  mutated(MESSAGES[kind]), st.binary(max_size=64)))
    buf = BUFFERS[wrap](before + payload + after)
    end = len(before) + len(payload) if after or data.draw(st.booleans()) else None
    alone = read_outcome(pure, kind, payload)
    for codec in CODECS:
        assert read_outcome(Bounded(codec, len(before), end), kind, buf) == alone


def words(codec, kind, buf, start, end):
    try:
        getattr(codec, "decode_" + kind)(buf, start=start, end=end)
    except DecodeError as exc:
        return str(exc)
    return None


odd_bounds = st.sampled_from([True, False, None, 1.0, "0", b"0", -1, -2 ** 64, 2 ** 64, 2 ** 70])


@settings(max_examples=400, deadline=None)
@given(buf=st.binary(max_size=24), wrap=st.sampled_from(sorted(BUFFERS)),
       kind=st.sampled_from(sorted(MESSAGES)), start=st.integers(-3, 30) | odd_bounds,
       end=st.none() | st.integers(-3, 30) | odd_bounds)
def test_any_bounds_decode_alike_and_are_refused_in_the_same_words(buf, wrap, kind, start, end):
    data = BUFFERS[wrap](buf)
    outcomes = [read_outcome(Bounded(codec, start, end), kind, data) for codec in CODECS]
    assert outcomes[0] == outcomes[1]
    stop = len(buf) if end is None else end
    within = (type(start) is int and type(stop) is int and 0 <= start <= stop <= len(buf))
    refusals = [words(codec, kind, data, start, end) for codec in CODECS]
    if within:
        assert outcomes[0] == read_outcome(pure, kind, buf[start:stop])
    else:
        assert outcomes[0] is DecodeError
        assert refusals[0] == refusals[1] and refusals[0].startswith("payload ")


# ---------------------------------------------------------------------------------------------
# Lookups by name: both codecs give the same values, or both raise, as the lists do

LOOKUP_NAMES = st.sampled_from(["host", "HOST", "x", "X", "k", "\u212a", "\u00e9", "\u00c9",
                                "\udcff", "\udcc3\udca9", "\ud800", "", "a"]) | texts.map(as_text)
# (kind, slot of the vector, list attribute, lookup method, any case)
LOOKUPS = [("http_req_call", 5, "headers", "header_values", True),
           ("http_req_call", 4, "args", "arg_values", False),
           ("http_resp_call", 2, "headers", "header_values", True)]


def lookup_outcome(codec, kind, lookup, payload, name):
    try:
        return getattr(getattr(codec, "decode_" + kind)(payload), lookup)(name)
    except DecodeError:
        return DecodeError


def list_outcome(codec, kind, attr, payload):
    try:
        return getattr(getattr(codec, "decode_" + kind)(payload), attr)
    except DecodeError:
        return DecodeError


@settings(max_examples=400, deadline=None)
@given(data=st.data(), which=st.integers(0, len(LOOKUPS) - 1), name=LOOKUP_NAMES,
       shape=st.sampled_from(["valid", "mutated", "shared"]))
def test_lookups_agree_and_are_the_lists_searched(data, which, name, shape):
    kind, slot, attr, lookup, any_case = LOOKUPS[which]
    if shape == "shared":
        entries = data.draw(st.lists(st.tuples(short_texts, short_texts), min_size=1,
                                     max_size=3))
        payload = shared_entries_payload(kind, (slot,), data.draw(st.integers(1, 400)), entries,
                                         data.draw(st.booleans()))
    else:
        message = MESSAGES[kind]
        payload = data.draw(message.map(lambda made: made[0]) if shape == "valid"
                            else mutated(message))
    found = [lookup_outcome(codec, kind, lookup, payload, name) for codec in CODECS]
    assert found[0] == found[1]
    entries = list_outcome(pure, kind, attr, payload)
    if entries is DecodeError:
        assert found[0] is DecodeError
    elif any_case:
        assert found[0] == [value for entry_name, value in entries
                            if entry_name is not None and entry_name.lower() == name.lower()]
    else:
        assert found[0] == [value for entry_name, value in entries if entry_name == name]


@pytest.mark.parametrize("cls,method", [("HTTPReqCallReq", "header_values"),
                                        ("HTTPReqCallReq", "arg_values"),
                                        ("HTTPRespCallReq", "header_values")])
def test_lookup_methods_have_the_same_signature_in_both(cls, method):
    assert inspect.signature(getattr(getattr(compiled, cls), method)) == inspect.signature(
        getattr(getattr(pure, cls), method))
