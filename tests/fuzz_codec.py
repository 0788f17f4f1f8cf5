"""Fuzzing of the compiled codec's readers, checked against the pure twin.

Each input is one selector byte (which reader) and a payload.  The compiled reader decodes it and
every lazy field is read; anything but DecodeError escaping it, or a crash, is a finding, and so
is any difference from what the pure twin reads.  Seeds are valid messages from the gateway
encoders and vectors whose slots share one entry (under and over the decoding budget); a finding
is saved as ``crash-<sha1>`` in the working directory.

With atheris (``pip install atheris``) this is a libFuzzer target, guided by the coverage of the
pure twin: the Cython module is not built with ``-fsanitize=fuzzer``, but the twin follows the same
validation rules branch for branch.  Without atheris, or with ``--fallback``, a plain mutation
loop runs instead, keeping inputs that reach a new outcome.  Both take libFuzzer's options; with
no corpus directory atheris keeps its corpus in ``$TMPDIR/a6fast-fuzz-corpus``::

    python tests/fuzz_codec.py -max_total_time=600                # about 10 minutes
    python tests/fuzz_codec.py -max_total_time=3600 fuzz-corpus/  # keep the corpus between runs
    python tests/fuzz_codec.py -runs=1 crash-<sha1>               # replay one finding
    python tests/fuzz_codec.py --fallback -max_total_time=600 -seed=7
"""
import hashlib
import os
import random
import re
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from a6fast import _codec as compiled  # noqa: E402  (the repository's build comes first)
from a6fast.errors import DecodeError  # noqa: E402

# The pure twin (and the gateway, which imports it) load only once atheris may instrument it.
pure = None

FIELDS = {
    "prepare_conf_req": ("conf", "key"),
    "http_req_call": ("id", "method", "conf_token", "path", "src_ip", "args", "headers"),
    "http_resp_call": ("id", "status", "conf_token", "headers"),
    "extra_info_resp": None,
    "header": None,
}
KINDS = tuple(FIELDS)


def decode_all(codec, kind, payload):
    """Everything a reader makes of ``payload``: a tuple of field values, each a value or the
    DecodeError it raised, or the DecodeError of the decoder itself.  Lazy fields are read twice:
    a good one must come back equal, a corrupt one must raise again."""
    try:
        if kind == "header":
            return codec.decode_header(payload, 0)
        message = getattr(codec, "decode_" + kind)(payload)
    except DecodeError as exc:
        return exc
    if FIELDS[kind] is None:
        return (message,)
    values = []
    for _ in range(2):
        for name in FIELDS[kind]:
            try:
                values.append(getattr(message, name))
            except DecodeError as exc:
                values.append(exc)
    half = len(values) // 2
    assert [comparable(v) for v in values[:half]] == [comparable(v) for v in values[half:]], (
        "lazy fields read differently the second time")
    return tuple(values[:half])


def comparable(outcome):
    """An outcome with each DecodeError replaced by its class (messages differ between codecs)."""
    if isinstance(outcome, DecodeError):
        return DecodeError
    if isinstance(outcome, tuple):
        return tuple(comparable(value) for value in outcome)
    return outcome


def check(data):
    """Decode one fuzz input with both codecs; raise on anything that is a finding."""
    if not data:
        return None
    kind = KINDS[data[0] % len(KINDS)]
    payload = data[1:]
    ours = decode_all(compiled, kind, payload)
    theirs = decode_all(pure, kind, payload)
    if comparable(ours) != comparable(theirs):
        raise AssertionError("codecs disagree on %s %r:\n compiled %r\n pure     %r"
                             % (kind, payload, ours, theirs))
    return kind, theirs


def seeds():
    """Valid messages of every kind, with their selector byte."""
    from a6fast import gateway
    entries = [("host", "example.com"), ("flag", None), ("x", ""), ("\u00e9", "\udcff")]
    messages = {
        "prepare_conf_req": [gateway.encode_prepare_conf_req([("auth", '{"k":1}')], key="r#1"),
                             gateway.encode_prepare_conf_req([], key=None)],
        "http_req_call": [
            gateway.encode_http_req_call_req(0, 7, method=2, path="/a?", src_ip="10.0.0.1",
                                             args=entries, headers=entries),
            gateway.encode_http_req_call_req(1, 2, path="", src_ip="2001:db8::1", args=[])],
        "http_resp_call": [gateway.encode_http_resp_call_req(3, 4, status=502, headers=entries),
                           gateway.encode_http_resp_call_req(3, 4)],
        "extra_info_resp": [gateway.encode_extra_info_resp(b"body"),
                            gateway.encode_extra_info_resp(None)],
    }
    out = [bytes([KINDS.index("header")]) + b"\x02\x00\x01\x00"]
    for kind, frames in messages.items():
        out += [bytes([KINDS.index(kind)]) + frame[4:] for frame in frames]
    # Vectors whose slots all share one entry: within the decoding budget, and past it.
    for kind, nslots, slot in (("prepare_conf_req", 2, 0), ("http_req_call", 7, 5),
                               ("http_req_call", 7, 4), ("http_resp_call", 4, 2)):
        for count, value in ((16, "v" * 8), (300, "v" * 64)):
            out.append(bytes([KINDS.index(kind)])
                       + shared_entry_payload(nslots, slot, count, "x-shared", value))
    return out


def shared_entry_payload(nslots, slot, count, name, value):
    """A payload whose root has a vector at ``slot`` of ``count`` slots naming one entry."""
    import flatbuffers
    builder = flatbuffers.Builder(0)
    name_off, value_off = builder.CreateString(name), builder.CreateString(value)
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, name_off, 0)
    builder.PrependUOffsetTRelativeSlot(1, value_off, 0)
    entry = builder.EndObject()
    builder.StartVector(4, count, 4)
    for _ in range(count):
        builder.PrependUOffsetTRelative(entry)
    vector = builder.EndVector()
    builder.StartObject(nslots)
    builder.PrependUOffsetTRelativeSlot(slot, vector, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


def save_finding(data):
    name = "crash-" + hashlib.sha1(data).hexdigest()
    with open(name, "wb") as f:
        f.write(data)
    return name


# ---------------------------------------------------------------------------------------------
# Without atheris: a mutation loop

INTERESTING_U32 = (0, 1, 3, 4, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)


def mutate(rnd, data, pool):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if len(data) < 2:
            data += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
            continue
        at = rnd.randrange(1, len(data))
        how = rnd.randrange(8)
        if how == 0:
            data[at] = rnd.randrange(256)
        elif how == 1:
            data[at] ^= 1 << rnd.randrange(8)
        elif how == 2 and at + 4 <= len(data):
            value = rnd.choice(INTERESTING_U32) if rnd.random() < 0.5 else rnd.randrange(len(data) + 8)
            struct.pack_into("<I", data, at, value)
        elif how == 3 and at + 2 <= len(data):
            struct.pack_into("<H", data, at, rnd.randrange(0x10000))
        elif how == 4:
            del data[at:]
        elif how == 5:
            del data[at:at + rnd.randint(1, 8)]
        elif how == 6:
            data[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 8)))
        else:
            other = rnd.choice(pool)
            cut = rnd.randrange(len(other) + 1)
            data[at:] = other[cut:]
    if rnd.random() < 0.02:
        data[:1] = bytes([rnd.randrange(len(KINDS))])
    return bytes(data)


def signature(result):
    """A coarse shape of an outcome, standing in for coverage: which check refused what."""
    if result is None:
        return None
    kind, outcome = result

    def shape(value):
        if isinstance(value, DecodeError):
            return re.sub(r"\d+", "#", str(value))
        if isinstance(value, (list, bytes, str)):
            return type(value).__name__, min(len(value), 3)
        return type(value).__name__
    if isinstance(outcome, tuple):
        return kind, tuple(shape(value) for value in outcome)
    return kind, shape(outcome)


def fallback(argv):
    options = {"max_total_time": 0, "runs": -1, "seed": 0}
    inputs = []
    for arg in argv:
        match = re.fullmatch(r"-(\w+)=(-?\d+)", arg)
        if match:
            if match.group(1) in options:
                options[match.group(1)] = int(match.group(2))
        elif not arg.startswith("-"):
            inputs.append(arg)
    files = [os.path.join(arg, name) for arg in inputs if os.path.isdir(arg)
             for name in sorted(os.listdir(arg))] + [arg for arg in inputs if os.path.isfile(arg)]
    pool = seeds()
    for name in files:
        with open(name, "rb") as f:
            pool.append(f.read())
    rnd = random.Random(options["seed"] or None)
    seen = set()
    start = time.monotonic()
    runs = 0
    # As libFuzzer: the corpus first, then mutations until a limit (none: forever).
    queue = list(pool)
    while True:
        if options["runs"] >= 0 and runs >= options["runs"]:
            break
        if options["max_total_time"] and time.monotonic() - start >= options["max_total_time"]:
            break
        data = queue.pop() if queue else mutate(rnd, rnd.choice(pool), pool)
        try:
            found = signature(check(data))
        except Exception:
            print("finding saved as", save_finding(data), file=sys.stderr)
            raise
        runs += 1
        if found not in seen:
            seen.add(found)
            if len(pool) < 10000:
                pool.append(data)
    print("Done %d runs in %d second(s), %d outcome shapes"
          % (runs, time.monotonic() - start, len(seen)))


# ---------------------------------------------------------------------------------------------
# With atheris

def load_pure():
    global pure
    from a6fast import _codec_py
    pure = _codec_py


def fuzz_with_atheris(atheris, argv):
    with atheris.instrument_imports(include=["a6fast._codec_py", "a6fast._flatbuffers"]):
        load_pure()
    corpus = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not corpus:
        corpus = [os.path.join(tempfile.gettempdir(), "a6fast-fuzz-corpus")]
        os.makedirs(corpus[0], exist_ok=True)
        argv = argv + corpus
    if os.path.isdir(corpus[0]):
        for data in seeds():
            with open(os.path.join(corpus[0], hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)
    atheris.Setup(argv, check)
    atheris.Fuzz()


def main():
    argv = list(sys.argv)
    use_fallback = "--fallback" in argv
    argv = [arg for arg in argv if arg != "--fallback"]
    if not use_fallback:
        try:
            import atheris
        except ImportError:
            print("atheris is not installed: running the mutation loop", file=sys.stderr)
            use_fallback = True
    if use_fallback:
        load_pure()
        fallback(argv[1:])
    else:
        fuzz_with_atheris(atheris, argv)


if __name__ == "__main__":
    main()
