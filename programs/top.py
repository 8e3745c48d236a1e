"""``--top``: a live full-screen view of the execs, refreshed every interval (like top, biotop).

It shows the exec rate now and a sparkline of the last minute, the busiest programs (by
name, from the kernel's exact ``comm_execs`` counts) and processes (``exec_count``), the
recent failed execs with their errno (from the event stream), and the events lost and execs
untracked. Keys: ``q`` quits, ``s`` cycles the sort (rate, total, name), ``p`` pauses the
display (counting goes on), ``/`` filters by name (Enter applies, Esc cancels), Esc clears
the filter.

The terminal is put back as it was on every way out: ``q``, Ctrl+C and SIGTERM (through
:class:`pybpf.signals.StopSignal`, which only sets a flag the loop looks at) and an exception
(``curses.wrapper`` restores the terminal before the exception goes on).
"""

import collections
import os
import time
from typing import Deque, Dict, List, NamedTuple, Optional

from . import events_bpf
from .output import safe_text

SORTS = ("rate", "total", "name")
KEYS = "q quit  s sort  p pause  / filter  Esc clear filter"
BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"  # the sparkline's eight levels
ASCII_BLOCKS = "_.-=+*#@"  # the same where the terminal's encoding is not UTF-8
FAILURES_KEPT = 100
ESC = 27


class Row(NamedTuple):
    """One line of the programs or processes table: executions in the last interval and in
    all, and the name shown (safe for the terminal)."""

    key: object  # the name (bytes) or the PID
    name: str
    rate: float
    total: int


class Failure(NamedTuple):
    """A failed exec, as the failures table shows it."""

    clock: str
    pid: int
    comm: str
    errno: str
    filename: str


def sparkline(values, blocks=BLOCKS) -> str:
    """One character per value, its height proportional to the largest value."""
    top = max(values, default=0)
    if top <= 0:
        return blocks[0] * len(values)
    return "".join(blocks[round(value / top * (len(blocks) - 1))] for value in values)


class TopState:
    """What the view shows, updated once per interval from the tracker's maps (and between,
    from its events); no curses here, so that it can be tested as it is."""

    def __init__(self, interval):
        self.interval = interval
        self.rates: Deque[float] = collections.deque(maxlen=max(1, round(60 / interval)))
        self.programs: List[Row] = []
        self.processes: List[Row] = []
        self.failures: Deque[Failure] = collections.deque(maxlen=FAILURES_KEPT)
        self.total = 0
        self.lost = 0
        self.untracked = 0
        self._names: Dict[bytes, int] = {}
        self._pids: Dict[int, int] = {}
        self._names_full = 0
        self._last: Optional[float] = None

    def sample(self, names, names_full, counts, process_names, lost, untracked, now):
        """One interval's counts: executions by name (and of names the kernel map could not
        hold), by PID (with the PIDs' names), events lost, execs untracked; ``now`` in
        monotonic seconds."""
        elapsed = (now - self._last) if self._last is not None else self.interval
        self._last = now
        new = names_full - self._names_full
        self._names_full = names_full
        programs = []
        for name, count in names.items():
            growth = count - self._names.get(name, 0)
            new += growth
            programs.append(Row(name, safe_text(name), growth / elapsed, count))
        self._names = dict(names)
        processes = []
        for pid, count in counts.items():
            previous = self._pids.get(pid, 0)
            growth = count - previous if count >= previous else count  # a reused PID
            processes.append(Row(pid, safe_text(bytes(process_names.get(pid, b""))
                                                .split(b"\0", 1)[0]), growth / elapsed, count))
        self._pids = dict(counts)
        self.programs, self.processes = programs, processes
        self.rates.append(new / elapsed)
        self.total += new
        self.lost, self.untracked = lost, untracked

    def failed(self, clock, pid, comm, errno, filename):
        """A failed exec the event stream reported."""
        self.failures.append(Failure(clock, pid, safe_text(comm), errno, safe_text(filename)))


def _ordered(rows, sort, name_filter):
    rows = [row for row in rows if not name_filter or name_filter in row.name]
    if sort == "name":
        return sorted(rows, key=lambda row: (row.name, -row.total))
    if sort == "total":
        return sorted(rows, key=lambda row: (-row.total, -row.rate, row.name))
    return sorted(rows, key=lambda row: (-row.rate, -row.total, row.name))


def render(state: TopState, width, height, sort="rate", name_filter="", paused=False,
           editing=None, blocks=BLOCKS) -> List[str]:
    """The screen as lines of at most ``width`` characters, ``height`` of them at most."""
    now = state.rates[-1] if state.rates else 0.0
    flags = "  PAUSED" if paused else ""
    shown_filter = f"/{editing}_" if editing is not None else (name_filter or "-")
    lines = [
        f"execve-tracker --top  {time.strftime('%H:%M:%S')}  every {state.interval:g}s  "
        f"sort: {sort}  filter: {shown_filter}{flags}",
        f"execs/s {now:8.1f}  last minute {sparkline(list(state.rates), blocks)}",
        f"execs {state.total}  events lost {state.lost}  untracked (maps full) "
        f"{state.untracked}",
    ]
    sections = [
        ([f"{'PROGRAM':<16} {'EXECS/S':>9} {'TOTAL':>9}"],
         [f"{row.name:<16} {row.rate:9.1f} {row.total:9d}"
          for row in _ordered(state.programs, sort, name_filter)]),
        ([f"{'PID':>8} {'NAME':<16} {'EXECS/S':>9} {'TOTAL':>9}"],
         [f"{row.key:>8} {row.name:<16} {row.rate:9.1f} {row.total:9d}"
          for row in _ordered(state.processes, sort, name_filter)]),
        ([f"{'TIME':<8} {'PID':>8} {'COMM':<16} {'ERRNO':<8} FILE"],
         [f"{f.clock:<8} {f.pid:>8} {f.comm:<16} {f.errno:<8} {f.filename}"
          for f in reversed(state.failures) if not name_filter or name_filter in f.comm]),
    ]
    room = max(0, height - len(lines) - 1 - 2 * len(sections))  # titles, blank lines, keys
    share = room // len(sections)
    for index, (title, rows) in enumerate(sections):
        lines.append("")
        lines.extend(title)
        extra = room - share * len(sections) if index == len(sections) - 1 else 0
        lines.extend(rows[:share + extra])
    lines = lines[:max(0, height - 1)] + [KEYS]
    return [line[:width] for line in lines[:height]]


class Top:
    """The curses loop: sample and redraw every interval, read keys and events between."""

    def __init__(self, args, stop, tracker, screen):
        import curses
        import locale

        self.curses = curses
        self.args, self.stop, self.tracker, self.screen = args, stop, tracker, screen
        self.state = TopState(args.interval)
        self.sort, self.filter, self.paused, self.editing = "rate", "", False, None
        self.blocks = BLOCKS if locale.getpreferredencoding(False).upper() in (
            "UTF-8", "UTF8") else ASCII_BLOCKS
        self.maps = tracker.collection.maps
        screen.nodelay(True)
        try:
            curses.curs_set(0)
        except curses.error:
            pass  # a terminal that cannot hide the cursor

    def run(self):
        from .events import Clock, decode, follow

        clock = Clock()

        def handle(record):
            event = decode(record)
            if event.ret < 0:
                stamp = time.strftime("%H:%M:%S", time.localtime(
                    clock.wall_ns(event.ktime) // 1_000_000_000))
                self.state.failed(stamp, event.pid, event.comm, event.errno, event.filename)

        def every():
            self.sample()
            if not self.paused:
                self.draw()

        every()
        follow(self.maps["events"], self.stop, self.args.interval, handle, every,
               sources=[(0, lambda source: self.keys())], last=False)
        return 0

    def sample(self):
        """Read the maps into the state; forget the processes that have exited."""
        stats = dict(self.maps["stats"].lookup_batch())
        stat = {name: sum(stats.get(index, [0])) for index, name in enumerate(events_bpf.STATS)}
        names = {bytes(key).rstrip(b"\0"): value
                 for key, value in self.maps["comm_execs"].lookup_batch()}
        counts, process_names, dropped = self.tracker.snapshot()
        self.state.sample(names, stat["names_full"], counts, process_names,
                          stat["events_lost"], dropped, time.monotonic())
        self.tracker.forget_exited(counts, process_names)

    def keys(self):
        """Read every key typed since the last time."""
        while True:
            key = self.screen.getch()
            if key == -1:
                return
            if self.editing is not None:
                self._edit(key)
            elif key in (ord("q"), ord("Q")):
                self.stop.requested = True
            elif key == ord("s"):
                self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
            elif key == ord("p"):
                self.paused = not self.paused
            elif key == ord("/"):
                self.editing = ""
            elif key == ESC:
                self.filter = ""
            self.draw()

    def _edit(self, key):
        """A key typed into the filter: Enter applies, Esc cancels, Backspace erases."""
        if key in (10, 13, self.curses.KEY_ENTER):
            self.filter, self.editing = self.editing, None
        elif key == ESC:
            self.editing = None
        elif key in (8, 127, self.curses.KEY_BACKSPACE):
            self.editing = self.editing[:-1]
        elif 32 <= key < 127:
            self.editing += chr(key)

    def draw(self):
        height, width = self.screen.getmaxyx()
        self.screen.erase()
        for row, line in enumerate(render(self.state, width - 1, height, self.sort, self.filter,
                                          self.paused, self.editing, self.blocks)):
            try:
                self.screen.addstr(row, 0, line)
            except self.curses.error:
                pass  # a terminal too small for the line
        self.screen.refresh()


def run_top(args, stop, tracker):
    """Run the live view until q, Ctrl+C or SIGTERM; the terminal is restored on every way
    out, an exception's too."""
    import curses
    import locale

    locale.setlocale(locale.LC_ALL, "")  # so that curses writes UTF-8 where the locale is
    os.environ.setdefault("ESCDELAY", "25")  # ms curses waits after Esc for a key sequence
    return curses.wrapper(lambda screen: Top(args, stop, tracker, screen).run())
