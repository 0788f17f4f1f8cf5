"""The floor tools (bench/floor/*.c) and bench/floor.py: built from this repository with CC, they
answer and count what they should.  Correctness only: no figure is checked against a threshold."""
import os
import re
import socket
import subprocess
import sys

import pytest

from a6fast import codec, gateway, loadgen
from a6fast.protocol import RPC_HTTP_REQ_CALL, RPC_PREPARE_CONF, SERVICE_UNAVAILABLE

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import floor  # noqa: E402
from harness import RunnerProcess  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll: Linux only")

PREPARE_ANSWER = codec.encode_prepare_conf_resp(0xA1B2C3D4)
CALL_ANSWER = codec.encode_stop(9, 200, None, b"floor")


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    """floor_runner and a6load built with CC, and the frames floor.py writes."""
    return floor.OwnTools(str(tmp_path_factory.mktemp("floor-tools")))


class FloorRunner:
    def __init__(self, tools, directory, prepare_answer=PREPARE_ANSWER, call_answer=CALL_ANSWER):
        self.path = os.path.join(directory, "floor.sock")
        answers = []
        for name, frame in (("p.bin", prepare_answer), ("c.bin", call_answer)):
            answers.append(os.path.join(directory, name))
            with open(answers[-1], "wb") as f:
                f.write(frame)
        self.log_path = os.path.join(directory, "floor.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([tools.floor_runner, self.path] + answers, stdout=log,
                                         stderr=subprocess.STDOUT)
        floor.wait_listening(self.path, self.proc, self.log_path)

    def stop(self):
        self.proc.terminate()
        status = self.proc.wait(10)
        assert status == 0 and not os.path.exists(self.path)

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.path)
        return sock


@pytest.fixture
def floor_runner(tools, tmp_path):
    runner = FloorRunner(tools, str(tmp_path))
    yield runner
    runner.stop()


def a6load(tools, path, conns=2, seconds=0.2):
    out = subprocess.run(tools.load_argv(path, conns, seconds), capture_output=True, text=True,
                         timeout=60)
    return out.returncode, dict(re.findall(r"(\w+)=([\d.]+)", out.stdout)), out.stderr


def read_answers(sock, count):
    return [gateway.read_frame(sock) for _ in range(count)]


def test_floor_runner_answers_each_frame_by_its_type_in_order(floor_runner, tools):
    prepare = gateway.encode_prepare_conf_req([("stop", "{}")])
    call = loadgen.call_frame(loadgen.LoadSpec(listen=""), 1, 5)
    with floor_runner.connect() as sock:
        sock.sendall(prepare + call + call)              # three frames in one write
        answers = read_answers(sock, 3)
        sock.sendall(call[:3])                           # a header cut in two
        sock.sendall(call[3:])
        answers += read_answers(sock, 1)
        # a frame larger than one read, then one the floor does not answer (an ExtraInfo
        # answer): the next answer read is the call's
        big = gateway.encode_http_req_call_req(id=2, conf_token=5,
                                               headers=[("cookie", "a" * 300_000)])
        sock.sendall(big + gateway.encode_extra_info_resp(b"x") + call)
        answers += read_answers(sock, 2)
    assert answers == [(RPC_PREPARE_CONF, PREPARE_ANSWER[4:])] + \
        [(RPC_HTTP_REQ_CALL, CALL_ANSWER[4:])] * 5


def test_a6load_against_the_floor_counts_calls_and_latency(floor_runner, tools):
    status, out, err = a6load(tools, floor_runner.path, conns=3)
    assert status == 0, err
    assert set(out) == {"calls", "seconds", "calls_per_s", "p50_us", "p99_us", "max_us",
                        "non_call_answers"}
    assert float(out["calls"]) > 0 and float(out["non_call_answers"]) == 0
    assert 0 < float(out["p50_us"]) <= float(out["p99_us"]) <= float(out["max_us"])


def test_a6load_counts_answers_that_are_not_call_answers(tools, tmp_path):
    runner = FloorRunner(tools, str(tmp_path), call_answer=codec.encode_err(SERVICE_UNAVAILABLE))
    try:
        status, out, err = a6load(tools, runner.path)
    finally:
        runner.stop()
    assert status == 1, err
    assert float(out["calls"]) > 0 and out["non_call_answers"] == out["calls"]


@pytest.mark.parametrize("payload", [b"", b"\xff\xff\xff\x7f", b"\x08\x00\x00\x00\x10\x00\x00\x00",
                                     b"\x04\x00\x00\x00\x00\x00\x00\x80"])
def test_a6load_refuses_a_malformed_prepare_answer(tools, tmp_path, payload):
    frame = codec.encode_header(RPC_PREPARE_CONF, len(payload)) + payload
    runner = FloorRunner(tools, str(tmp_path), prepare_answer=frame)
    try:
        status, out, err = a6load(tools, runner.path)
    finally:
        runner.stop()
    assert status == 3 and "PrepareConf" in err, (status, out, err)


def test_the_floor_answers_what_a6fast_answers(tmp_path):
    """The floor's answer is byte for byte our runner's answer to the same call."""
    paths, offset = floor.write_frames(str(tmp_path))
    frames = {name: open(path, "rb").read() for name, path in paths.items()}
    runner = RunnerProcess(tmp_path, "--workers", "1")
    try:
        token = loadgen.prepare_conf(runner.path, [("stop", floor.STOP_CONF)], None)
        call = bytearray(frames["call"])
        call[offset:offset + 4] = token.to_bytes(4, "little")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(runner.path)
            sock.sendall(bytes(call))
            answer = gateway.read_frame(sock)
    finally:
        assert runner.stop() == 0, runner.log()
    assert answer == (RPC_HTTP_REQ_CALL, frames["call_answer"][4:])
    assert codec.decode_http_req_call(bytes(call)[4:]).conf_token == token


def test_floor_py_runs_both_scenes_from_a_plain_checkout():
    out = subprocess.run([sys.executable, os.path.join(HERE, "floor.py"), "--rounds", "1",
                          "--seconds", "0.2", "--connections", "2"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, A6FAST_SERVE_ARGS="--workers 1"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "from bench/floor" in out.stdout
    assert re.search(r"summary: ours/floor calls/s, median of 1 rounds: .*2 conns \d", out.stdout)
    assert "CPU per call (median): a6fast" in out.stdout
