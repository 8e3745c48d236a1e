"""Process-execution tracker: ``sudo python -m programs.execve [-interval N]``.

Counts execve() calls per process in the kernel (map ``exec_count``), remembers the name of
the program each process runs (map ``process_names``) and prints both every interval:

    2023/12/01 12:34:58 Tracked 3 processes:
    2023/12/01 12:34:58 PID: 1234, Name: bash, Executions: 2
    2023/12/01 12:34:58 ---

The eBPF programs themselves are in :mod:`programs.execve_bpf` (reference C: bpf/program.c).
"""

import os
import sys

if __name__ == "__main__":  # before the imports below, which take most of the start-up
    from .console import quiet_interrupts

    quiet_interrupts()

import argparse  # noqa: E402 - after the handler, so an early Ctrl+C is quiet too
import time  # noqa: E402

from pybpf import BPFError, VerifierError  # noqa: E402
from pybpf.argtypes import positive_int, positive_seconds  # noqa: E402
from pybpf.attach import attach_all  # noqa: E402
from pybpf.collection import Collection  # noqa: E402
from pybpf.signals import StopSignal  # noqa: E402

from . import execve_bpf  # noqa: E402
from .output import emit, table_lines  # noqa: E402

PROG = "programs.execve"


class Tracker:
    """The loaded and attached programs, and the reading of their maps.

    Use as a context manager: leaving it detaches both programs and closes every fd.
    """

    def __init__(self, max_pids=execve_bpf.DEFAULT_MAX_PIDS, log_level=0):
        self.collection = Collection(execve_bpf.collection_spec(max_pids), log_level=log_level)
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
        gone = []
        for pid, count in counts.items():
            if pid in alive or self.exec_count.lookup(pid) != count:
                continue
            if self.process_names.lookup(pid) != names.get(pid):
                continue
            self.exec_count.pop(pid, None)
            self.process_names.pop(pid, None)
            gone.append(pid)
        return gone

    def verifier_logs(self):
        """The verifier's log of each program, by program name."""
        return {name: p.verifier_log for name, p in self.collection.programs.items()}

    def report(self):
        """Print one table, then forget the processes that have exited since."""
        counts, names, dropped = self.snapshot()
        lines = table_lines(counts, names)
        if dropped > self.dropped_reported:
            lines.insert(0, (
                f"WARNING: {dropped - self.dropped_reported} executions were not counted "
                f"since the last report ({dropped} since start): the maps are full "
                f"(--max-pids {self.max_pids}); raise --max-pids"
            ))
            self.dropped_reported = dropped
        emit(lines)
        self.forget_exited(counts, names)

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
    return parser.parse_args(argv)


def dump(max_pids):
    """The disassembly of both programs, each group of instructions under its C line."""
    from pybpf.disasm import disassemble  # --dump only: not on the tracker's start path

    spec = execve_bpf.collection_spec(max_pids)
    for name, program in spec.programs.items():
        print(f"{name}:  SEC(\"{program.section}\")")
        print(disassemble(program.insns))
        print()


def explain_verifier(max_pids):
    """Load the programs with the verifier's full log and print each program beside it."""
    from pybpf.verifier import interleave

    with Tracker(max_pids, log_level=2) as tracker:
        for name, program in tracker.collection.programs.items():
            print(f"{name}:  SEC(\"{program.spec.section}\")")
            print(interleave(program.spec.insns, program.verifier_log))


def run(args):
    """Load, attach, report every interval until stopped, report once more, detach."""
    with StopSignal() as stop:
        with Tracker(args.max_pids, log_level=2 if args.verifier_log else 0) as tracker:
            if args.verifier_log:
                for name, log in tracker.verifier_logs().items():
                    sys.stderr.write(f"--- verifier log of {name} ---\n{log}\n")
            emit(["Starting process execution tracker...", "Press Ctrl+C to exit"])
            if not tracker.sees_host_pids:
                emit(["WARNING: running in a PID namespace: PIDs are the host's, and entries "
                      "of exited processes are kept (run in the host's PID namespace)"])
            deadline = time.monotonic() + args.interval
            while not stop.requested:
                stop.sleep(deadline - time.monotonic())
                if stop.requested:
                    break
                tracker.report()
                deadline += args.interval
                if deadline < time.monotonic():  # the machine stalled: don't catch up
                    deadline = time.monotonic() + args.interval
            tracker.report()
    return 0


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
                dump(args.max_pids)
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
            explain_verifier(args.max_pids)
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
