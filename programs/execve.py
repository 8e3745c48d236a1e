"""Process-execution tracker: ``sudo python -m programs.execve [-interval N] [--events]``.

Counts execve() calls per process in the kernel (map ``exec_count``), remembers the name of
the program each process runs (map ``process_names``) and prints both every interval:

    2023/12/01 12:34:58 Tracked 3 processes:
    2023/12/01 12:34:58 PID: 1234, Name: bash, Executions: 2
    2023/12/01 12:34:58 ---

With ``--events`` it prints one line (or, with ``--json``, one JSON object) per exec instead,
as it happens: who ran what, with which arguments, from which parent, with what result
(:mod:`programs.events`); ``--top`` shows a live full-screen view (:mod:`programs.top`) and
``--tree`` the processes that exec'd under their parents (:mod:`programs.tree`). Filters
(``--pid``, ``--uid``, ``--comm``...) apply in the kernel, to the counts and the events alike.
``--metrics [ADDR:]PORT`` serves Prometheus metrics beside any of these
(:mod:`programs.metrics`).

The eBPF programs are in :mod:`programs.execve_bpf` (reference C: bpf/program.c) and, for
the event stream and filters, :mod:`programs.events_bpf`; those are built and loaded only
when asked for, so the table's start stays as quick as it was.
"""

import os
import sys

if __name__ == "__main__":  # before the imports below, which take most of the start-up
    from .console import quiet_interrupts

    quiet_interrupts()

import argparse  # noqa: E402 - after the handler, so an early Ctrl+C is quiet too
import contextlib  # noqa: E402
import time  # noqa: E402

from pybpf import BPFError, UsageError, VerifierError  # noqa: E402
from pybpf.argtypes import U32_MAX, bounded_int, positive_int, positive_seconds  # noqa: E402
from pybpf.attach import attach_all  # noqa: E402
from pybpf.collection import Collection  # noqa: E402
from pybpf.signals import StopSignal  # noqa: E402

from . import execve_bpf  # noqa: E402
from .output import emit, table_json, table_lines, write_json  # noqa: E402

PROG = "programs.execve"


class Tracker:
    """The loaded and attached programs, and the reading of their maps.

    Use as a context manager: leaving it detaches both programs and closes every fd.
    """

    def __init__(self, max_pids=execve_bpf.DEFAULT_MAX_PIDS, log_level=0, spec=None):
        if spec is None:
            spec = execve_bpf.collection_spec(max_pids)
        self.collection = Collection(spec, log_level=log_level)
        self.links = []
        try:
            self.links = attach_all(self.collection.programs)
        except BaseException:
            self.close()
            raise
        self.max_pids = max_pids
        self.exec_count = self.collection.maps["exec_count"]
        self.process_names = self.collection.maps["process_names"]
        self.dropped_execs = self.collection.maps["dropped_execs"]
        self.dropped_reported = 0
        # BPF sees the kernel's (initial namespace's) PIDs; /proc shows this namespace's
        self.sees_host_pids = in_initial_pid_namespace()

    def snapshot(self):
        """``(counts, names, dropped)``: executions and raw names by PID, and the lost count."""
        counts = dict(self.exec_count.lookup_batch())
        names = dict(self.process_names.lookup_batch())
        dropped = sum(self.dropped_execs[0])
        return counts, names, dropped

    def forget_exited(self, counts, names):
        """Delete the entries of processes that have exited, once printed (bounded memory).

        ``counts`` and ``names`` are what was just printed, by PID. A process is gone when
        /proc no longer lists it (``os.listdir`` lists processes, not threads, so a thread
        that reuses a PID does not keep a dead process alive). An entry that changed since it
        was printed (one more exec, or the new name of an exec that was under way) is kept
        for the next report, so what a process did last is always printed.
        """
        if not self.sees_host_pids:
            return []  # /proc cannot tell which of the kernel's PIDs are alive
        alive = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        exited = [pid for pid in counts if pid not in alive]
        if not exited:
            return []
        counts_now, names_now = self._entries(exited, len(counts))
        gone = [pid for pid in exited
                if counts_now.get(pid) == counts[pid] and names_now.get(pid) == names.get(pid)]
        if gone:
            self.exec_count.delete_batch(gone)
            self.process_names.delete_batch([pid for pid in gone if pid in names_now])
        return gone

    def _entries(self, pids, total):
        """``(counts, names)`` of ``pids`` as the maps hold them now. Read whole, in two
        batches, when ``pids`` are a large share of the ``total`` entries (a storm's exited
        processes), else key by key (a batch reads every entry)."""
        if len(pids) * 8 >= total:
            return dict(self.exec_count.lookup_batch()), dict(self.process_names.lookup_batch())
        return ({pid: self.exec_count.lookup(pid) for pid in pids},
                {pid: self.process_names.lookup(pid) for pid in pids})

    def verifier_logs(self):
        """The verifier's log of each program, by program name."""
        return {name: p.verifier_log for name, p in self.collection.programs.items()}

    def report(self, as_json=False):
        """Print one table (a JSON object with ``as_json``), then forget the processes that
        have exited since."""
        counts, names, dropped = self.snapshot()
        warning = self.lost_warning(dropped)
        if as_json:
            write_json(table_json(counts, names, dropped - self.dropped_reported, dropped))
        else:
            emit(([warning] if warning else []) + table_lines(counts, names))
        self.dropped_reported = dropped
        self.forget_exited(counts, names)

    def lost_warning(self, dropped):
        """The WARNING about executions the full maps could not count since the last report
        (None when there were none)."""
        if dropped <= self.dropped_reported:
            return None
        return (f"WARNING: {dropped - self.dropped_reported} executions were not counted "
                f"since the last report ({dropped} since start): the maps are full "
                f"(--max-pids {self.max_pids}); raise --max-pids")

    def close(self):
        """Detach the programs and close every fd (safe to call twice)."""
        for link in self.links:
            link.close()
        self.links = []
        self.collection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


PROC_PID_INIT_INO = 0xEFFFFFFC  # inode of the initial PID namespace (include/linux/proc_ns.h)


def in_initial_pid_namespace():
    """True when this process sees the kernel's own PIDs (not inside a container's PID ns)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino == PROC_PID_INIT_INO
    except OSError:
        return True  # no namespace support: there is only one


def help_formatter(prog):
    """argparse's help formatter, given the terminal's width so that it need not find it.

    Left to itself, every formatter argparse makes (one per option, even when no help is
    printed) asks ``shutil.get_terminal_size()``, and importing shutil costs about 2 ms of the
    tracker's start; this asks the same (``$COLUMNS``, else the terminal, else 80) directly.
    """
    try:
        columns = int(os.environ.get("COLUMNS") or os.get_terminal_size().columns)
    except (OSError, ValueError):
        columns = 80
    return argparse.HelpFormatter(prog, width=columns - 2)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}", formatter_class=help_formatter,
        description="Count process executions per process with eBPF and print them.",
    )
    parser.add_argument(
        "-interval", "--interval", type=positive_seconds, default=2.0, metavar="N",
        help="seconds between two reports (default 2)",
    )
    parser.add_argument(
        "--max-pids", type=positive_int, default=execve_bpf.DEFAULT_MAX_PIDS, metavar="N",
        help="processes the maps can hold; executions beyond are counted as lost "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--dump", action="store_true",
        help="print the programs' disassembly with their C source lines and exit (no root)",
    )
    parser.add_argument(
        "--compare-c", nargs="?", const="", default=None, metavar="OBJECT",
        help="print the DSL programs beside clang's build of bpf/program.c (or OBJECT), "
        "instruction by instruction, and exit (no root)",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--verifier-log", action="store_true",
        help="print the kernel verifier's log of each program after loading",
    )
    shown.add_argument(
        "--explain-verifier", action="store_true",
        help="load the programs, print each beside what the verifier knew after every "
        "instruction, on each path it followed, and exit",
    )
    output = parser.add_argument_group("events and output")
    mode = output.add_mutually_exclusive_group()
    mode.add_argument(
        "--events", action="store_true",
        help="print one line per exec as it happens (time, UID, PID, PPID, return, name, "
        "command line) instead of the periodic table",
    )
    mode.add_argument(
        "--top", action="store_true",
        help="a live full-screen view: execs/s, the busiest programs and processes, recent "
        "failures (keys: q quit, s sort, p pause, / filter by name)",
    )
    mode.add_argument(
        "--tree", action="store_true",
        help="every interval, the processes that exec'd drawn as a tree under their parents, "
        "with their exec counts and last command line",
    )
    output.add_argument(
        "--json", action="store_true",
        help="print JSON objects, one per line: each exec (with --events) or each table",
    )
    times = output.add_mutually_exclusive_group()
    times.add_argument("-T", "--time", dest="time_format", action="store_const", const="clock",
                       default="log", help="events: HH:MM:SS time column")
    times.add_argument("-t", "--timestamp", dest="time_format", action="store_const",
                       const="elapsed", help="events: seconds since the start")
    output.add_argument("-q", "--quote", action="store_true",
                        help="events: quote every argument, not only those that need it")
    output.add_argument(
        "--max-args", type=lambda text: bounded_int(text, 1, 1 << 16), metavar="N",
        default=execve_bpf.DEFAULT_MAX_ARGS,
        help="events: arguments shown at most (default %(default)s)",
    )
    output.add_argument(
        "--max-args-size", type=lambda text: bounded_int(text, 64, 1 << 20), metavar="BYTES",
        default=execve_bpf.DEFAULT_MAX_ARGS_SIZE,
        help="events: bytes of arguments captured at most (default %(default)s)",
    )
    output.add_argument(
        "--buffer-size", type=ring_size, default=execve_bpf.DEFAULT_BUFFER_SIZE, metavar="BYTES",
        help="events: the ring buffer's size, a power of 2 times the page size (default "
        "%(default)s; K and M suffixes work)",
    )
    metrics = parser.add_argument_group("Prometheus metrics (beside any output mode)")
    metrics.add_argument(
        "--metrics", type=metrics_address, metavar="[ADDR:]PORT",
        help="serve /metrics on this port (127.0.0.1 unless ADDR is given; 0.0.0.0 for "
        "all); needs prometheus_client (pip install pybpf[metrics])",
    )
    metrics.add_argument(
        "--metrics-top", type=lambda text: bounded_int(text, 1, 1000), default=20,
        metavar="N", help="process names with a series of their own in execs_total; the "
        "others count under comm=\"other\" (default %(default)s)",
    )
    filters = parser.add_argument_group(
        "filters (applied in the kernel, to the counts and the events alike)")
    filters.add_argument("--pid", type=positive_int, help="only this process")
    filters.add_argument("--ppid", type=positive_int, help="only children of this process")
    filters.add_argument("--uid", type=user_id, help="only this user (a number or a name)")
    filters.add_argument("--comm", type=comm_name, metavar="NAME",
                         help="only processes with this name after the exec (15 bytes at most)")
    filters.add_argument("--cgroup", metavar="PATH",
                         help="only processes in this cgroup v2 directory (not its children)")
    outcome = filters.add_mutually_exclusive_group()
    outcome.add_argument("--failed-only", action="store_true", help="only execs that failed")
    outcome.add_argument("--success-only", action="store_true",
                         help="only execs that succeeded")
    args = parser.parse_args(argv)
    if args.json and (args.top or args.tree):
        parser.error("--json goes with the table and --events, not with --top or --tree")
    return args


FILTERS = ("pid", "ppid", "uid", "comm", "cgroup", "failed_only", "success_only")


def metrics_address(text):
    """``--metrics``'s [ADDR:]PORT (parsed by programs.metrics, imported only then)."""
    from .metrics import listen_address

    return listen_address(text)


def ring_size(text):
    """A ring buffer size: bytes, or with a K or M suffix; a power of 2 times the page."""
    units = {"k": 1 << 10, "m": 1 << 20}
    number, unit = (text[:-1], units[text[-1].lower()]) if text[-1:].lower() in units \
        else (text, 1)
    size = bounded_int(number, 1, 1 << 30) * unit
    page = os.sysconf("SC_PAGE_SIZE")
    if size % page or (size // page) & (size // page - 1) or size > 1 << 30:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be a power of 2 times the page size ({page}), at most 1G")
    return size


def user_id(text):
    """A user by number, or by name from the password database."""
    if text.isdigit():
        return bounded_int(text, 0, U32_MAX - 1)
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user named {text!r}") from None


def comm_name(text):
    """A process name as the kernel keeps it: at most 15 bytes."""
    raw = os.fsencode(text)
    if not raw or len(raw) > 15 or b"\0" in raw:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a process name is 1 to 15 bytes (the kernel cuts longer ones)")
    return raw


def dump(args):
    """The disassembly of the programs the options ask for (the table's, or with --events or
    filters the event mode's), each group of instructions under its C line."""
    from pybpf.disasm import disassemble  # --dump only: not on the tracker's start path

    spec = build_spec(args)
    for name, program in spec.programs.items():
        print(f"{name}:  SEC(\"{program.section}\")")
        print(disassemble(program.insns))
        print()


def explain_verifier(args):
    """Load the programs the options ask for with the verifier's full log and print each
    program beside it."""
    from pybpf.verifier import interleave

    with Tracker(args.max_pids, log_level=2, spec=build_spec(args)) as tracker:
        for name, program in tracker.collection.programs.items():
            print(f"{name}:  SEC(\"{program.spec.section}\")")
            print(interleave(program.spec.insns, program.verifier_log))
def build_spec(args):
    """The programs to load: the table's own (no filters, no events: the quickest start), or
    the event mode's, which filter in the kernel and can build events."""
    streams = args.events or args.top or args.tree
    if not streams and args.metrics is None and not any(getattr(args, name)
                                                        for name in FILTERS):
        return execve_bpf.collection_spec(args.max_pids)
    from pybpf.host import possible_cpus

    from . import events_bpf
    from .events import CgroupPaths

    cgroup_id = None
    if args.cgroup:
        try:
            cgroup_id = CgroupPaths().id_of(args.cgroup)
        except OSError as exc:
            raise UsageError(f"--cgroup {args.cgroup}: {exc.strerror or exc}: give a directory "
                             f"of the cgroup v2 hierarchy") from None
    options = events_bpf.Options(
        pid=args.pid, ppid=args.ppid, uid=args.uid, comm=args.comm, cgroup_id=cgroup_id,
        failed_only=args.failed_only, success_only=args.success_only,
        max_args=args.max_args, max_args_size=args.max_args_size,
        buffer_size=args.buffer_size, max_pids=args.max_pids, emit=streams,
        metrics=args.metrics is not None or args.top)
    return events_bpf.collection_spec(options, possible_cpus())


def status(args, lines):
    """Start-up lines: log lines on stdout with the table, on stderr when stdout carries
    events or JSON; none under --top, which has the whole screen."""
    if args.top:
        return
    if args.events or args.json:
        sys.stderr.write("".join(line + "\n" for line in lines))
    else:
        emit(lines)


def run(args):
    """Load, attach, report every interval until stopped, report once more, detach."""
    if args.metrics is not None:
        from .metrics import require_client

        require_client()  # before anything is loaded
    with StopSignal() as stop:
        spec = build_spec(args)
        with Tracker(args.max_pids, log_level=2 if args.verifier_log else 0,
                     spec=spec) as tracker, serve_metrics(args, tracker) as server:
            if args.verifier_log:
                for name, log in tracker.verifier_logs().items():
                    sys.stderr.write(f"--- verifier log of {name} ---\n{log}\n")
            status(args, ["Starting process execution tracker...", "Press Ctrl+C to exit"])
            if server is not None:
                status(args, [f"Serving metrics on {server.url}"])
            if not tracker.sees_host_pids:
                status(args, ["WARNING: running in a PID namespace: PIDs are the host's, and "
                              "entries of exited processes are kept (run in the host's PID "
                              "namespace)"])
            if args.events:
                return run_events(args, stop, tracker)
            if args.top:
                from .top import run_top

                return run_top(args, stop, tracker)
            if args.tree:
                from .tree import run_tree

                return run_tree(args, stop, tracker)
            for _ in every(args.interval, stop):
                tracker.report(args.json)
            tracker.report(args.json)
    return 0


@contextlib.contextmanager
def serve_metrics(args, tracker):
    """The metrics server for ``--metrics`` while the tracker runs (None without it); it
    stops before the tracker's maps close."""
    if args.metrics is None:
        yield None
        return
    from .metrics import MetricsServer, TrackerCollector

    with MetricsServer(TrackerCollector(tracker, args.metrics_top), args.metrics) as server:
        yield server


def every(interval, stop):
    """Yields every ``interval`` seconds until a stop signal (not catching up after a stall)."""
    deadline = time.monotonic() + interval
    while not stop.requested:
        stop.sleep(deadline - time.monotonic())
        if stop.requested:
            return
        yield
        deadline += interval
        if deadline < time.monotonic():  # the machine stalled: don't catch up
            deadline = time.monotonic() + interval


def run_events(args, stop, tracker):
    """Print each exec as it happens; every interval, say what was lost and forget the
    processes that have exited (their counts are kept until then, as in the table mode)."""
    from .events import EventStream, follow

    stream = EventStream(tracker.collection.maps["stats"], as_json=args.json,
                         time_format=args.time_format, quote_all=args.quote,
                         max_args=args.max_args)
    stream.header()
    follow(tracker.collection.maps["events"], stop, args.interval, stream.handle,
           lambda: periodic(tracker, stream), after_poll=stream.flush)
    return 0


def periodic(tracker, stream):
    """The event mode's periodic work: the word on losses; forgetting exited processes."""
    counts, names, dropped = tracker.snapshot()
    warning = tracker.lost_warning(dropped)
    if warning and not stream.as_json:
        sys.stderr.write(warning + "\n")
    tracker.dropped_reported = dropped
    stream.report(dropped)
    tracker.forget_exited(counts, names)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None:  # started with stdout closed (>&-)
        print(f"{PROG}: standard output is closed; nothing to print the reports to",
              file=sys.stderr)
        return 1
    try:
        return _main(args)
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): exit quietly like other Unix tools
        _silence_stdout()
        return 0
    except OSError as err:  # stdout full (/dev/full), or another write failure
        _silence_stdout()
        print(f"{PROG}: cannot write to standard output: {err.strerror or err}",
              file=sys.stderr)
        return 1


def _silence_stdout():
    """Point stdout at /dev/null, so the interpreter's last flush at exit cannot fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _main(args):
    if args.dump or args.compare_c is not None:
        try:
            if args.dump:
                dump(args)
            else:
                from .compare import compare

                spec = execve_bpf.collection_spec(args.max_pids)
                print("\n".join(compare(spec, args.compare_c or None)))
        except BPFError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            return 1
        return 0
    try:
        if args.explain_verifier:
            explain_verifier(args)
            return 0
        return run(args)
    except VerifierError as err:
        if args.verifier_log:
            sys.stderr.write(err.log)
        else:
            err.log_hint = "rerun with --verifier-log"
        if args.explain_verifier and err.insns is not None:
            from pybpf.verifier import interleave

            sys.stderr.write(interleave(err.insns, err.log, err.summary))
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except BPFError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
