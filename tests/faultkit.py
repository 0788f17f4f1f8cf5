"""Tools for the hostile-input, fault and socket-safety tests: frame surgery, what a runner's
processes hold (/proc), and good calls on another connection while something else goes on."""
import contextlib
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import a6fast
from a6fast import gateway
from a6fast.protocol import RPC_HTTP_REQ_CALL

FAULT_PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "faults")


# Frames -----------------------------------------------------------------------------------------

def frame(rpc_type, payload):
    """A frame around ``payload`` with an honest length."""
    return bytes([rpc_type]) + len(payload).to_bytes(3, "big") + payload


def u32(buf, at):
    return struct.unpack_from("<I", buf, at)[0]


def put_u32(buf, at, value):
    struct.pack_into("<I", buf, at, value)


def root_of(payload):
    return u32(payload, 0)


def vtable_of(payload):
    root = root_of(payload)
    return root - struct.unpack_from("<i", payload, root)[0]


def field_at(payload, table, slot):
    """Where field ``slot`` of the table at ``table`` sits (it must be present)."""
    vtable = table - struct.unpack_from("<i", payload, table)[0]
    offset = struct.unpack_from("<H", payload, vtable + 4 + 2 * slot)[0]
    assert offset, "slot %d is absent" % slot
    return table + offset


def target_of(payload, at):
    """The object a uoffset stored at ``at`` points to."""
    return at + u32(payload, at)


def req_call_payload(token, headers=(("a", "1"), ("b", "2")), path="/p", id=1):
    """A writable HTTPReqCall payload (no frame header) with headers and a path."""
    return bytearray(gateway.encode_http_req_call_req(id, token, path=path, headers=list(headers))[4:])


def req_call_frame(payload):
    return frame(RPC_HTTP_REQ_CALL, bytes(payload))


def prepare_conf_sharing_one_entry(count, name=b"echo", value=b"{}"):
    """A PrepareConf payload whose conf vector lists ``count`` plugins, every one of them the same
    TextEntry: about 4 bytes on the wire per entry, however many the runner makes of them."""
    out = bytearray(struct.pack("<I", 0))
    vtable = len(out)
    out += struct.pack("<HHH", 6, 8, 4)  # one field, conf, at +4
    out += bytes(-len(out) % 4)
    table = len(out)
    out += struct.pack("<iI", table - vtable, 0)
    put_u32(out, 0, table)
    vector = len(out)
    out += struct.pack("<I", count) + bytes(4 * count)
    entry_vtable = len(out)
    out += struct.pack("<HHHH", 8, 12, 4, 8)
    entry = len(out)
    out += struct.pack("<iII", entry - entry_vtable, 0, 0)
    for slot, text in ((4, name), (8, value)):
        out += bytes(-len(out) % 4)
        put_u32(out, entry + slot, len(out) - entry - slot)
        out += struct.pack("<I", len(text)) + text + b"\0"
    put_u32(out, table + 4, vector - table - 4)
    offsets = struct.pack("<%dI" % count, *(entry - (vector + 4 + 4 * i) for i in range(count)))
    out[vector + 4:vector + 4 + 4 * count] = offsets
    return bytes(out)


# Processes --------------------------------------------------------------------------------------

def children(pid):
    """Direct children of ``pid`` (its worker processes)."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def family(pid):
    """``pid`` and its workers."""
    return [pid] + children(pid)


def alive(pid):
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def fd_count(pids):
    """Open file descriptors of all ``pids`` together."""
    total = 0
    for pid in pids:
        total += len(os.listdir("/proc/%d/fd" % pid))
    return total


def rss_kib(pids):
    """Resident memory of all ``pids`` together, in KiB."""
    total = 0
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid):
    """User plus system CPU time ``pid`` has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate, timeout, interval=0.02):
    """Poll ``predicate`` until true or ``timeout`` s passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def settled_fd_count(pids, baseline, timeout=10.0):
    """The fd count once it is back at ``baseline`` (or whatever it is after ``timeout``)."""
    counts = []

    def back():
        counts.append(fd_count(pids))
        return counts[-1] <= baseline
    wait_until(back, timeout)
    return counts[-1]


def raise_fd_limit(need):
    """This test process must hold ``need`` sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


@contextlib.contextmanager
def child_fd_limit(limit):
    """Processes started inside may open at most ``limit`` file descriptors (soft and hard limit,
    so the runner cannot raise it)."""
    real = subprocess.Popen

    def popen(*args, **kwargs):
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        return real(*args, **kwargs)
    subprocess.Popen = popen
    try:
        yield
    finally:
        subprocess.Popen = real


@contextlib.contextmanager
def low_priority(niceness=10):
    """This thread runs at a lower CPU priority inside: on a machine of two cores, a test's own
    load generator must not take the CPU from the runner it loads (on Linux, nice is per
    thread; root may restore it afterwards)."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, before + niceness)
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, before)
        except PermissionError:
            pass


# Another connection ---------------------------------------------------------------------------

class LatencyProbe:
    """Another process making one good call every ``interval`` s on its own connection, checking
    each answer and timing it (a process of its own, so that this one's threads and GIL do not add
    to its timings).  ``wait_for_answers(n)`` waits for n more answers: while a fault holds, that
    says the runner still serves others; the timings are for the perf copies of the tests."""

    def __init__(self, path, token, interval=0.005, min_calls=5):
        self.args = [path, str(token), str(interval), str(min_calls)]
        self.latencies = []
        self.failures = []
        self._proc = None
        self._reader = None
        self._answered = 0
        self._ended = False  # the probe stopped counting (its report follows)
        self._report = bytearray()
        self._changed = threading.Condition()

    def __enter__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(a6fast.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "probe"] + self.args,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        with self._changed:
            self._changed.wait_for(lambda: self._answered or self._ended, 30)
        return self

    def _read(self):
        # one "+" per answered call, then a newline and the report (JSON)
        while True:
            chunk = self._proc.stdout.read1(4096)
            with self._changed:
                if not chunk:
                    self._ended = True
                elif self._ended:
                    self._report += chunk
                else:
                    counted, newline, rest = chunk.partition(b"\n")
                    self._answered += counted.count(b"+")
                    if newline:
                        self._ended = True
                        self._report += rest
                self._changed.notify_all()
            if not chunk:
                return

    def answered(self):
        """Good calls answered so far."""
        with self._changed:
            return self._answered

    def wait_for_answers(self, more, timeout=20.0):
        """Wait (at most ``timeout`` s) until ``more`` calls more than now were answered; True
        if they were."""
        with self._changed:
            target = self._answered + more
            self._changed.wait_for(lambda: self._answered >= target or self._ended, timeout)
            return self._answered >= target

    def __exit__(self, *exc):
        self._proc.stdin.close()
        self._proc.wait(30)
        self._reader.join(30)
        result = json.loads(bytes(self._report))
        self.latencies = result["latencies"]
        self.failures = result["failures"]

    def summary(self):
        """(calls, median s, 90th percentile s, max s)."""
        values = sorted(self.latencies)
        if not values:
            return 0, None, None, None
        return (len(values), values[len(values) // 2], values[int(len(values) * 0.9)], values[-1])


def _probe(path, token, interval, min_calls):
    token, interval, min_calls = int(token), float(interval), int(min_calls)
    latencies, failures = [], []
    stopping = False
    out = sys.stdout.buffer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10.0)
        sock.connect(path)
        n = 0
        while not (stopping and len(latencies) >= min_calls) and len(failures) < 5:
            n += 1
            request = gateway.encode_http_req_call_req(n, token, path="/probe")
            start = time.perf_counter()
            try:
                sock.sendall(request)
                rpc_type, payload = gateway.read_frame(sock)
            except (OSError, EOFError) as exc:
                failures.append(repr(exc))
                break
            latencies.append(time.perf_counter() - start)
            if rpc_type != RPC_HTTP_REQ_CALL or gateway.decode_http_req_call_resp(payload).id != n:
                failures.append(repr((rpc_type, payload)))
            else:
                out.write(b"+")
                out.flush()
            if not stopping and select.select([sys.stdin], [], [], interval)[0]:
                stopping = not sys.stdin.buffer.read1(64)
    out.write(b"\n" + json.dumps({"latencies": latencies, "failures": failures}).encode())
    out.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["probe"]:
    _probe(*sys.argv[2:])
