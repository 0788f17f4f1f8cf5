"""Conf tokens: which number names which conf, for as long as the gateway may hold it.

A token the gateway holds must never name another conf: not another worker's, not one of an
earlier run of this runner (the gateway keeps tokens for APISIX_CONF_EXPIRE_TIME seconds, also
across a restart of a runner started by hand).  So, by construction:

- a token is ``sequence << LANE_BITS | lane``: each worker process has a lane of its own (a
  restarted worker takes over its predecessor's lane and goes on from where it stopped), so two
  workers can never hand out the same number, whatever any file says;
- within a run, a lane's sequence only grows (never past ``SEQUENCE_SPAN`` tokens: then
  PrepareConf fails closed rather than wrap);
- a run starts its sequences where the last run's reservation ended: the reservation's end is
  written to the state file *before* any token under it is handed out, so a crash loses nothing.

The state file is trusted only where no one else can write: a directory owned by the runner's
user and writable by no one else, a regular file owned by that user, opened without following
links.  Nothing ever locks it: one process (the supervisor, or the single worker) writes it.
Without usable state (no --state-file and no private default directory) sequences start from the
clock: unique across restarts only while the last run handed out fewer than CLOCK_RATE tokens a
second per worker over its life, the clock did not step back, and the sequence space (which the
clock goes round in 3.9 days) did not wrap in between.
"""
import logging
import mmap
import os
import stat
import struct
import time

LANE_BITS = 7
LANES = 1 << LANE_BITS
# A worker's lane is its slot; half the lanes are kept for workers started by a reload.
MAX_WORKERS = LANES // 2
SEQUENCE_BITS = 32 - LANE_BITS
SEQUENCE_SPAN = 1 << SEQUENCE_BITS
# The reservation runs ahead of the highest sequence handed out by as much as has been used,
# at least MIN_AHEAD and at most RESERVE_AHEAD.
MIN_AHEAD = 1 << 12
RESERVE_AHEAD = 1 << 17
CLOCK_RATE = 100  # sequences per second when starting from the clock
STATE_FILE_NAME = "tokens"

log = logging.getLogger("a6fast.server")

_CELL = struct.Struct("=I")  # aligned 4-byte cells: each is written by one process only


class StateError(Exception):
    """The state file cannot be trusted or used; the message says why."""


class TokensExhausted(Exception):
    """This lane handed out every token it may in one run (fail closed, never wrap)."""


def default_state_dir():
    """Where state lives when --state-file is not given: root's /var/lib/a6fast, or the user's
    $XDG_STATE_HOME/a6fast (~/.local/state/a6fast)."""
    if os.geteuid() == 0 and "XDG_STATE_HOME" not in os.environ:
        return "/var/lib/a6fast"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "a6fast")


def _check_private(st, what, path):
    if st.st_uid != os.geteuid():
        raise StateError("%s %s is owned by uid %d, not by this runner's user (uid %d)"
                         % (what, path, st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        raise StateError("%s %s is writable by others (mode %04o)"
                         % (what, path, stat.S_IMODE(st.st_mode)))


class StateFile:
    """The last reservation's end, in a file only this runner's user can write."""

    def __init__(self, path, create_dir=False):
        self.path = os.path.abspath(path)
        directory, self.name = os.path.split(self.path)
        if create_dir:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StateError("cannot create state directory %s: %s" % (directory, exc))
        try:
            self.dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise StateError("state directory %s: %s" % (directory, exc.strerror or exc))
        try:
            _check_private(os.fstat(self.dir_fd), "state directory", directory)
            self._check_file()
        except BaseException:
            os.close(self.dir_fd)
            raise

    def _check_file(self):
        try:
            st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError("state file %s: %s" % (self.path, exc.strerror or exc))
        if not stat.S_ISREG(st.st_mode):
            raise StateError("state file %s is not a regular file" % self.path)
        _check_private(st, "state file", self.path)

    def read(self):
        """The stored reservation end, or None (no file yet, or not a number)."""
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=self.dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError("state file %s: %s" % (self.path, exc.strerror or exc))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError("state file %s is not a regular file" % self.path)
            _check_private(st, "state file", self.path)
            raw = os.read(fd, 64)
        finally:
            os.close(fd)
        try:
            value = int(raw.strip() or b"x")
        except ValueError:
            return None
        return value if value >= 0 else None

    def write(self, value):
        """Replace the stored value at once (a new file renamed over the old one); never with a
        lower one (runners of one user may share the file)."""
        stored = self.read()
        if stored is not None and stored > value:
            value = stored
        tmp = "%s.%d.tmp" % (self.name, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                     dir_fd=self.dir_fd)
        try:
            os.write(fd, b"%d\n" % value)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)

    def close(self):
        os.close(self.dir_fd)


def open_lanes(path):
    """The run's TokenLanes, with its state in ``path`` when given (StateError if that cannot
    be trusted or written), else in the default place, or from the clock (with a warning) when
    the default cannot be made private."""
    if path is not None:
        return TokenLanes(StateFile(path))
    default = os.path.join(default_state_dir(), STATE_FILE_NAME)
    try:
        return TokenLanes(StateFile(default, create_dir=True))
    except StateError as exc:
        log.warning("no private place for conf token state (%s); token sequences start from "
                    "the clock (give --state-file for restarts in quick succession)", exc)
        return TokenLanes(None)


class TokenLanes:
    """The runner's token space: made before any worker starts, shared with them (fork).

    Memory shared by the processes of one run holds, per lane, how far that lane's sequence has
    gone, and the reservation's end; only the lane's owner writes its cell, only the reserving
    process (supervisor or single worker) writes the end."""

    def __init__(self, state=None, clock=time.time):
        self.state = state
        stored = state.read() if state is not None else None
        if stored is None:
            stored = int(clock() * CLOCK_RATE)
        self.start = stored  # every lane's first sequence in this run
        self._cells = mmap.mmap(-1, _CELL.size * (LANES + 1))
        self.reserved = 0
        self._write_failed = False
        self.reserve()
        if self._write_failed:
            state.close()
            raise StateError("cannot write the state file %s" % state.path)

    def _get(self, index):
        return _CELL.unpack_from(self._cells, index * _CELL.size)[0]

    def _set(self, index, value):
        _CELL.pack_into(self._cells, index * _CELL.size, value)

    def reserve(self):
        """Move the reservation ahead of the lanes when they come near its end (the end is
        stored before it is published).  Cheap to call often."""
        used = max(self._get(lane) for lane in range(LANES))
        # ahead by as much as was used, between MIN_AHEAD and RESERVE_AHEAD: a run that hands
        # out few tokens uses up little of the sequence space, so that restarts in a loop wrap
        # around only after thousands of them
        ahead = min(max(MIN_AHEAD, used), RESERVE_AHEAD)
        if self.reserved and used + ahead // 2 < self.reserved:
            return
        reserved = min(used + ahead, SEQUENCE_SPAN)
        if reserved == self.reserved:
            return
        if self.state is not None:
            try:
                self.state.write(self.start + reserved)
            except OSError as exc:
                # unrecorded tokens could be handed out again after a restart: none are, and
                # PrepareConf fails closed once the lanes reach the recorded reservation
                if not self._write_failed:
                    log.error("cannot record conf token state in %s: %s", self.state.path, exc)
                self._write_failed = True
                return
            self._write_failed = False
        self.reserved = reserved
        self._set(LANES, reserved)

    def source(self, lane, reserve=False):
        """The tokens of ``lane`` for the process that now owns it."""
        if not 0 <= lane < LANES:
            raise ValueError("lane %d out of range" % lane)
        return TokenSource(self, lane, reserve)

    def close(self):
        if self.state is not None:
            self.state.close()


class TokenSource:
    """One worker's tokens: ``next()``."""

    def __init__(self, lanes, lane, reserve):
        self.lanes = lanes
        self.lane = lane
        self._reserve = reserve  # this process also keeps the reservation ahead (one worker)

    def next(self):
        lanes = self.lanes
        lane = self.lane
        used = lanes._get(lane)
        if self._reserve:
            lanes.reserve()
        if used >= lanes._get(LANES):
            raise TokensExhausted("conf token lane %d is at its reservation (%d); the runner "
                                  "must be restarted" % (lane, used))
        lanes._set(lane, used + 1)
        token = ((lanes.start + used) % SEQUENCE_SPAN) << LANE_BITS | lane
        return token or self.next()  # 0 is skipped: it reads as "no token"
