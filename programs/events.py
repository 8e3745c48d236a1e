"""The exec event stream in user space: one record per exec from the kernel, as a line or JSON.

The kernel programs (:mod:`programs.events_bpf`) write one self-contained record per exec
into a BPF ring buffer: a fixed header (:data:`HEADER`) followed by the file name as passed
and the argument bytes (NUL-separated, as in ``/proc/PID/cmdline``). This module turns a
record into an :class:`ExecEvent`, adds what only user space knows (the wall-clock time of
the kernel timestamp, the cgroup's path, ids that stay unique over time and hosts, the exec
of the parent) and prints it: one terminal-safe line, or one JSON object (the schema is in
``docs/events.md``).
"""

import errno
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import events_bpf
from .output import json_text, rfc3339, safe_text, shell_quote, write_json

HEADER = struct.Struct(events_bpf.HEADER_FORMAT)  # the record header, little endian
DATA = events_bpf.DATA  # the file name starts here, the arguments right after it
SYSCALLS = {events_bpf.SYSCALL_NONE: None, events_bpf.SYSCALL_EXECVE: "execve",
            events_bpf.SYSCALL_EXECVEAT: "execveat"}


@dataclass
class ExecEvent:
    """One exec, as the kernel recorded it (see docs/events.md for each field)."""

    ktime: int  # CLOCK_BOOTTIME ns of the exec
    pid: int
    tid: int
    ppid: int
    uid: int
    gid: int
    ret: int
    syscall: Optional[str]
    comm: bytes
    old_comm: bytes
    filename: bytes
    argv: List[bytes]
    argv_truncated: bool
    argv_bytes: Optional[int]  # None: more arguments than the kernel walked
    cgroup_id: int
    ns_pid: int
    start_time: int  # the process's start (boot ns): with pid, what identifies it
    parent_start_time: int
    flags: int = 0
    exec_id: str = ""
    parent_exec_id: Optional[str] = None
    cgroup: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def errno(self) -> Optional[str]:
        """The errno name of a failed exec (``ENOENT``), None for a successful one."""
        if self.ret >= 0:
            return None
        return errno.errorcode.get(-self.ret, f"E{-self.ret}")


def decode(record) -> ExecEvent:
    """An :class:`ExecEvent` from one ring-buffer record (bytes or a memoryview)."""
    (ktime, cgroup_id, start_time, parent_start, pid, tid, ppid, uid, gid, ns_pid, ret,
     syscall, flags, comm, old_comm, filename_len, argv_len, argv_total) = \
        HEADER.unpack_from(record)
    data = bytes(record[DATA:DATA + filename_len + argv_len])
    filename, args = data[:filename_len].split(b"\0", 1)[0], data[filename_len:]
    argv = args.split(b"\0") if args else []
    if args.endswith(b"\0"):
        argv.pop()  # after the last argument's NUL
    truncated = bool(flags & events_bpf.ARGV_TRUNCATED) and (
        argv_total > argv_len or bool(flags & events_bpf.ARGV_TOTAL_UNKNOWN))
    return ExecEvent(
        ktime=ktime, pid=pid, tid=tid, ppid=ppid, uid=uid, gid=gid, ret=ret,
        syscall=SYSCALLS.get(syscall), comm=comm.split(b"\0", 1)[0],
        old_comm=old_comm.split(b"\0", 1)[0], filename=filename, argv=argv,
        argv_truncated=truncated,
        argv_bytes=None if flags & events_bpf.ARGV_TOTAL_UNKNOWN else max(argv_total, argv_len),
        cgroup_id=cgroup_id, ns_pid=ns_pid, start_time=start_time,
        parent_start_time=parent_start, flags=flags)


class Clock:
    """Wall-clock time of a kernel CLOCK_BOOTTIME timestamp: the offset between the two
    clocks is measured once, at start (the kernel stamps events with boot time, which keeps
    counting through suspend). The text of the current second is made once per second."""

    def __init__(self):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        wall = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self.offset = wall - (before + after) // 2
        self.start = before
        self._seconds = {}  # (format, second) -> its text, for the latest second only

    def wall_ns(self, ktime):
        return ktime + self.offset

    def rfc3339(self, ktime):
        """``2026-11-30T12:34:56.123456789Z``: RFC 3339, UTC, nanoseconds."""
        seconds, fraction = divmod(self.wall_ns(ktime), 1_000_000_000)
        return f"{self.second('%Y-%m-%dT%H:%M:%S', seconds, utc=True)}.{fraction:09d}Z"

    def second(self, pattern, seconds, utc=False):
        """``time.strftime(pattern)`` of a whole second (local time unless ``utc``)."""
        key = (pattern, seconds)
        text = self._seconds.get(key)
        if text is None:
            convert = time.gmtime if utc else time.localtime
            text = time.strftime(pattern, convert(seconds))
            self._seconds = {key: text}
        return text


def boot_id():
    """This boot's random id (``/proc/sys/kernel/random/boot_id``), without dashes."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


def cgroup2_mount():
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or on hybrid systems
    ``/sys/fs/cgroup/unified``), None without one."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
    return None


class CgroupPaths:
    """cgroup v2 ids to paths: a cgroup's id is the inode number of its directory in the
    cgroup2 file system, so a walk of that tree maps ids to paths. The walk is redone (at most
    once a second) when an id is not known: a cgroup created since the last walk."""

    def __init__(self, mount=None):
        self.mount = mount if mount is not None else cgroup2_mount()
        self._paths: Dict[int, str] = {}
        self._walked = 0.0

    def path(self, cgroup_id) -> Optional[str]:
        """The cgroup's path relative to the hierarchy's root (``/`` for the root), or None."""
        if self.mount is None:
            return None
        if cgroup_id not in self._paths and time.monotonic() - self._walked >= 1.0:
            self._walk()
        return self._paths.get(cgroup_id)

    def _walk(self):
        self._walked = time.monotonic()
        paths = {}
        for directory, _subdirs, _files in os.walk(self.mount):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue  # removed during the walk
            relative = os.path.relpath(directory, self.mount)
            paths[inode] = "/" if relative == "." else "/" + relative
        self._paths = paths

    def id_of(self, path) -> int:
        """The id of the cgroup at ``path`` (absolute, or relative to the hierarchy's root)."""
        if self.mount is None:
            raise FileNotFoundError("no cgroup v2 hierarchy is mounted")
        full = path if path.startswith(self.mount) else os.path.join(
            self.mount, path.lstrip("/"))
        return os.stat(full).st_ino


class Lineage:
    """Ids for execs that stay unique over time and hosts, and the exec of each parent.

    An exec's id joins this boot's id, the kernel timestamp and the PID. A process is known
    by its PID *and* its start time (a PID is reused, the pair is not), so the parent's exec
    is found exactly, or not at all: a parent whose exec happened before the tracker started
    has none. Only the latest exec of each live process is remembered, at most ``limit``.
    """

    def __init__(self, boot, limit=65536):
        self.boot = boot
        self.limit = limit
        self._latest: Dict[Tuple[int, int], str] = {}

    def assign(self, event: ExecEvent):
        event.exec_id = f"{self.boot}:{event.ktime}:{event.pid}"
        event.parent_exec_id = self._latest.get((event.ppid, event.parent_start_time))
        if event.ret == 0:  # the process now runs the new program
            key = (event.pid, event.start_time)
            self._latest.pop(key, None)
            self._latest[key] = event.exec_id
            if len(self._latest) > self.limit:
                del self._latest[next(iter(self._latest))]  # the oldest


def to_json(event: ExecEvent, clock: Clock) -> dict:
    """The JSON object of one event, in docs/events.md's schema."""
    return {
        "type": "exec",
        "time": clock.rfc3339(event.ktime),
        "pid": event.pid,
        "tid": event.tid,
        "ppid": event.ppid,
        "uid": event.uid,
        "gid": event.gid,
        "comm": json_text(event.comm),
        "old_comm": json_text(event.old_comm),
        "filename": json_text(event.filename),
        "argv": [json_text(arg) for arg in event.argv],
        "argv_truncated": event.argv_truncated,
        "argv_bytes": event.argv_bytes,
        "ret": event.ret,
        "errno": event.errno,
        "syscall": event.syscall,
        "cgroup_id": event.cgroup_id,
        "cgroup": event.cgroup,
        "ns_pid": event.ns_pid if event.ns_pid != event.pid else None,
        "exec_id": event.exec_id,
        "parent_exec_id": event.parent_exec_id,
    }


TIME_FORMATS = {  # --time: (column title, width)
    "log": ("TIME", 19),  # 2026/11/30 12:34:56, the table's (Go's log) format
    "clock": ("TIME", 8),  # 12:34:56 (execsnoop -T)
    "elapsed": ("TIME(s)", 9),  # seconds since the start (execsnoop -t)
}


def columns(time_format) -> str:
    """The column titles of the human event lines."""
    title, width = TIME_FORMATS[time_format]
    return (f"{title:<{width}} {'UID':>6} {'PID':>7} {'PPID':>7} {'RET':>7} {'COMM':<16} "
            f"ARGS")


def human_line(event: ExecEvent, clock: Clock, time_format="log", quote_all=False) -> str:
    """One event as a terminal-safe line: the time, UID, PID, PPID, return (0 or the errno
    name), the program's name, and its :func:`command_line`."""
    ret = "0" if event.ret >= 0 else event.errno
    return (f"{_stamp(event.ktime, clock, time_format)} {event.uid:>6} {event.pid:>7} "
            f"{event.ppid:>7} {ret:>7} {safe_text(event.comm):<16} "
            f"{command_line(event, quote_all)}")


def command_line(event: ExecEvent, quote_all=False) -> str:
    """The command line of an exec, terminal-safe, each argument quoted where needed (so
    that it reads back unambiguously, as a shell would split it). Notes follow in brackets,
    which an argument never shows unquoted: the file a failed exec tried, when it is not the
    first argument, and how much was cut."""
    if event.argv:
        args = " ".join(shell_quote(arg, always=quote_all) for arg in event.argv)
    else:
        args = shell_quote(event.filename, always=quote_all)
    if event.ret < 0 and event.filename and event.argv[:1] != [event.filename]:
        args += f" [file {shell_quote(event.filename, always=quote_all)}]"
    if event.argv_truncated:
        total = "an unknown number of" if event.argv_bytes is None else event.argv_bytes
        args += f" [truncated: {total} bytes of arguments in all]"
    return args


def _stamp(ktime, clock, time_format):
    if time_format == "elapsed":
        return f"{(ktime - clock.start) / 1e9:<9.3f}"
    seconds = clock.wall_ns(ktime) // 1_000_000_000
    return clock.second("%Y/%m/%d %H:%M:%S" if time_format == "log" else "%H:%M:%S", seconds)


class EventStream:
    """The events of the tracker's ring buffer, printed as they come: decoded, given their
    ids, parent exec and cgroup path, cut to ``max_args`` arguments, written as lines or
    JSON. ``stats`` is the kernel's per-CPU counters map (events lost, starts not seen)."""

    def __init__(self, stats, *, as_json=False, time_format="log", quote_all=False,
                 max_args=events_bpf.DEFAULT_MAX_ARGS, out=None):
        self.stats = stats
        self.as_json = as_json
        self.time_format = time_format
        self.quote_all = quote_all
        self.max_args = max_args
        self.out = out or sys.stdout
        self.clock = Clock()
        self.lineage = Lineage(boot_id())
        self.cgroups = CgroupPaths()
        self.events = 0
        self.lost_reported = 0

    def header(self):
        """The column titles (human lines only)."""
        if not self.as_json:
            self.out.write(columns(self.time_format) + "\n")
            self.out.flush()

    def handle(self, record):
        """Print one ring-buffer record (the ring buffer's callback)."""
        event = decode(record)
        if len(event.argv) > self.max_args:
            del event.argv[self.max_args:]
            event.argv_truncated = True
        self.lineage.assign(event)
        event.cgroup = self.cgroups.path(event.cgroup_id)
        self.events += 1
        if self.as_json:
            write_json(to_json(event, self.clock))
        else:
            self.out.write(human_line(event, self.clock, self.time_format, self.quote_all)
                           + "\n")

    def flush(self):
        self.out.flush()

    def counters(self) -> Dict[str, int]:
        """The kernel's counters, summed over the CPUs (events_lost, no_start)."""
        values = dict(self.stats.lookup_batch())
        return {name: sum(values.get(index, [0])) for index, name in enumerate(events_bpf.STATS)}

    def report(self, untracked_total):
        """The periodic word on what was lost: a JSON stats line, or a WARNING on stderr when
        events were lost since the last one."""
        counters = self.counters()
        lost = counters["events_lost"]
        if self.as_json:
            write_json({"type": "stats", "time": rfc3339(time.time_ns()), "events": self.events,
                        "events_lost": lost, "untracked_execs": untracked_total,
                        "starts_not_seen": counters["no_start"]})
        elif lost > self.lost_reported:
            sys.stderr.write(
                f"WARNING: {lost - self.lost_reported} events lost since the last report "
                f"({lost} since start): the ring buffer was full; raise --buffer-size "
                f"(the counts stay exact)\n")
            sys.stderr.flush()
        self.lost_reported = lost


def follow(events, stop, interval, handle, every, *, after_poll=None, sources=(), last=True):
    """Read the ``events`` ring buffer map's records into ``handle`` as they come, until
    ``stop`` (a :class:`pybpf.signals.StopSignal`) is requested; ``every()`` runs every
    ``interval`` seconds and, with ``last``, once more after the records that arrived before
    the stop. The ring wakes its reader only in bulk (:data:`events_bpf.READ_PERIOD`), so it
    is looked at that often. ``after_poll()`` runs after each look; ``sources`` are more
    ``(fd, callback)`` to wait on (a terminal's keys)."""
    from pybpf.events import Poller
    from pybpf.ringbuf import RingBuffer

    with RingBuffer(events) as ring, Poller() as poller:
        poller.add(ring, handle)
        poller.add(stop.fileno())
        for source, callback in sources:
            poller.add(source, callback)
        deadline = time.monotonic() + interval
        while not stop.requested:
            poller.poll(min(events_bpf.READ_PERIOD, max(0.0, deadline - time.monotonic())))
            if after_poll is not None:
                after_poll()
            if time.monotonic() >= deadline and not stop.requested:
                every()
                deadline = max(deadline + interval, time.monotonic())
        if last:
            ring.consume(handle)  # what arrived before the stop
            if after_poll is not None:
                after_poll()
            every()
