"""Benchmark of the execve tracker, side by side with its peers in one run.

    sudo python3 bench/bench_execve.py [--execs 2000] [--rounds 5]

1. cold start: from spawning the tracker to the first exec counted in its map, for
   ``programs.execve`` (with /usr/bin/python3 when it has construct, else this Python), run
   from a copy of the source tree (with its bytecode cached, and without any: a copy that has
   no __pycache__), and for bpftrace running the equivalent one-liner;
2. in-kernel cost per exec (BPF_ENABLE_STATS run_time_ns of every program of a design, divided
   by the number of execve calls it saw) for a chain storm (one PID re-execs itself) and a fork
   storm (a new PID per exec), for: the tracker's DSL programs, the straightforward design
   (lookup, atomic add or update, get_comm onto the stack, update the name map), the
   clang -O2 build of bpf/program.c loaded by pybpf's ELF loader, and bpftrace;
3. exactness: a chain storm of --execs execs in one PID, counted by the tracker and by bpftrace,
   every round;
4. peak memory (VmHWM) of the tracker process and of bpftrace through a fork storm.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table

from pybpf import syscalls  # noqa: E402 - after common puts the tree on the path
from pybpf.abi import TASK_COMM_LEN, UpdateFlags  # noqa: E402
from pybpf.asm import DW, R0, R1, R2, R3, R4, R6, R10, W, Builder  # noqa: E402
from pybpf.attach import attach  # noqa: E402
from pybpf.collection import Collection  # noqa: E402
from pybpf.host import held_bpf_ids  # noqa: E402
from programs import execve_bpf  # noqa: E402

BPFTRACE_ONE_LINER = "tracepoint:syscalls:sys_enter_execve { @c[pid] = count(); @n[pid] = comm; }"


# --- the designs compared -----------------------------------------------------------------


def straightforward_spec(name_at_exec=False):
    """The textbook design: everything at sys_enter_execve, two map writes per exec.

    It names a process by its caller (the name before the exec). ``name_at_exec`` adds what
    correct names need in that design: a second program at sched_process_exec that writes
    the new name with a map update.
    """
    b = Builder()
    _pid_on_stack(b)
    b.mov(R2, R10)
    b.add(R2, -4)
    b.ld_map_fd(R1, "exec_count")
    b.call("map_lookup_elem")
    b.jeq(R0, 0, "new")
    b.mov(R1, 1)
    b.atomic_add(DW, R0, 0, R1)
    b.ja("name")
    b.label("new")
    b.st(DW, R10, -16, 1)
    b.mov(R2, R10)
    b.add(R2, -4)
    b.mov(R3, R10)
    b.add(R3, -16)
    b.ld_map_fd(R1, "exec_count")
    b.mov(R4, UpdateFlags.ANY)
    b.call("map_update_elem")
    b.label("name")
    _update_name(b)
    spec = execve_bpf.collection_spec()
    programs = {"straight_count": spec.programs["count_execve"].copy(
        name="straight_count", insns=b.instructions)}
    if name_at_exec:
        b = Builder()
        _pid_on_stack(b)
        _update_name(b)
        programs["straight_name"] = spec.programs["name_process"].copy(
            name="straight_name", insns=b.instructions)
    spec.programs = programs
    del spec.maps["dropped_execs"]
    return spec


def _pid_on_stack(b):
    b.call("get_current_pid_tgid")
    b.rsh(R0, 32)
    b.stx(W, R10, -4, R0)


def _update_name(b):
    """get_comm onto the stack, update process_names[pid], return 0."""
    b.mov(R6, R10)
    b.add(R6, -32)
    b.mov(R1, R6)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    b.mov(R2, R10)
    b.add(R2, -4)
    b.ld_map_fd(R1, "process_names")
    b.mov(R3, R6)
    b.mov(R4, UpdateFlags.ANY)
    b.call("map_update_elem")
    b.mov(R0, 0)
    b.exit()


def clang_spec(workdir):
    """bpf/program.c built by clang -O2 and read by pybpf's ELF loader (None without clang)."""
    clang = shutil.which("clang")
    if clang is None:
        return None
    from pybpf import elf

    obj = Path(workdir) / "program.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-c", str(ROOT / "bpf/program.c"),
                    "-o", str(obj)], check=True)
    return elf.load_spec(str(obj))


class Loaded:
    """A design loaded and attached in this process; its programs' run-time stats."""

    def __init__(self, spec):
        self.collection = Collection(spec)
        self.links = [attach(p, p.spec.section) for p in self.collection.programs.values()]
        self.programs = len(self.collection.programs)

    def stats(self):
        """(run_time_ns of all its programs, run_cnt of the sys_enter_execve program)."""
        total, execs = 0, 0
        for program in self.collection.programs.values():
            info = program.info()
            total += info["run_time_ns"]
            if program.spec.section.endswith("/sys_enter_execve"):
                execs = info["run_cnt"]
        return total, execs

    def close(self):
        for link in self.links:
            link.close()
        self.collection.close()


class TracerProcess:
    """A tracer running as a process of its own; every program it loaded, found by id."""

    def __init__(self, command, cwd=None):
        self.proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 30
        self.fds = []
        while time.monotonic() < deadline and not self.fds:
            self.fds = [syscalls.prog_get_fd_by_id(i) for i in held_bpf_ids(self.proc.pid, "prog")]
            time.sleep(0.01)
        if not self.fds:
            self.close()
            raise RuntimeError(f"{command[0]}'s programs did not show up")
        time.sleep(0.2)  # attached once it holds its programs; let it settle
        self.programs = len(self.fds)

    def stats(self):
        """(run_time_ns of all its programs, run_cnt of its busiest program: one per exec)."""
        total = execs = 0
        for fd in self.fds:
            info = syscalls.obj_get_info_by_fd(fd, "prog")
            total += info["run_time_ns"]
            execs = max(execs, info["run_cnt"])
        return total, execs

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate()


class Bpftrace(TracerProcess):
    """bpftrace running the equivalent one-liner."""

    def __init__(self):
        super().__init__(["bpftrace", "-e", BPFTRACE_ONE_LINER])

    def counts(self):
        """Stop bpftrace; the ``@c[pid]: N`` lines it prints at exit, as {pid: N}."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        return {int(pid): int(n) for pid, n in re.findall(r"^@c\[(\d+)\]: (\d+)$", out, re.M)}


# --- storms -------------------------------------------------------------------------------


def chain_script(workdir):
    """A script that re-execs itself ``$1`` times in one PID."""
    script = Path(workdir) / "chain.sh"
    script.write_text('#!/bin/sh\nif [ "$1" -gt 0 ]; then exec "$0" $(($1 - 1)); fi\n')
    script.chmod(0o755)
    return script


def chain_storm(n, workdir):
    """One process that execs n times in one PID (Popen's exec, then n - 1 re-execs); its
    PID."""
    proc = subprocess.Popen([str(chain_script(workdir)), str(n - 1)])
    proc.wait()
    return proc.pid


def fork_storm(n):
    """One shell that forks n children, each exec-ing /bin/true (n + 1 execve calls)."""
    subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"],
                   check=True)


def cost_per_exec(design, storm):
    before_ns, before_cnt = design.stats()
    storm()
    after_ns, after_cnt = design.stats()
    execs = after_cnt - before_cnt
    return (after_ns - before_ns) / execs if execs else float("nan")


# --- cold start ---------------------------------------------------------------------------


def _map_named(pid, name):
    """An fd of the map called ``name`` that process ``pid`` holds, or None."""
    for map_id in held_bpf_ids(pid, "map"):
        try:
            fd = syscalls.map_get_fd_by_id(map_id)
        except OSError:
            continue
        if syscalls.obj_get_info_by_fd(fd, "map")["name"] == name:
            return fd
        os.close(fd)
    return None


def cold_start(command, map_name, env=None, cwd=ROOT):
    """Seconds from spawning ``command`` to the first entry in its map ``map_name``.

    Meanwhile a shell execs ``/bin/sleep 0.001`` in a loop (an exec about every 2 ms, while
    leaving the CPUs to the process measured), and this process polls the maps the command
    holds every 0.2 ms; the result is exact to about 2 ms.
    """
    storm = subprocess.Popen(["/bin/sh", "-c", "while :; do /bin/sleep 0.001; done"])
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    elapsed = fd = None
    try:
        while fd is None and time.perf_counter() - start < 30:
            fd = _map_named(proc.pid, map_name)
            time.sleep(0.0002)
        key_size = syscalls.obj_get_info_by_fd(fd, "map")["key_size"] if fd is not None else 0
        while fd is not None and time.perf_counter() - start < 30:
            if syscalls.map_get_next_key(fd, None, key_size) is not None:
                elapsed = time.perf_counter() - start
                break
            time.sleep(0.0002)
    finally:
        if fd is not None:
            os.close(fd)
        proc.terminate()
        proc.wait()
        storm.kill()
        storm.wait()
    return elapsed


def source_copy(workdir):
    """A copy of the tracker's source (pybpf/, programs/) without any __pycache__."""
    copy = Path(workdir) / "tree"
    for package in ("pybpf", "programs"):
        shutil.copytree(ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


def tree_at(revision, workdir):
    """pybpf/ and programs/ as they were at git ``revision`` (for before/after rows)."""
    copy = Path(workdir) / "before"
    copy.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "pybpf", "programs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    return copy


def cached_bytecode_env(workdir):
    """The environment of an installed tracker: Python may write and read its .pyc files
    (kept under ``workdir``, not in the source tree)."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(Path(workdir) / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def python_for_tracker():
    """/usr/bin/python3 when it can import construct and pyelftools, else this Python."""
    system = "/usr/bin/python3"
    if os.path.exists(system) and subprocess.run(
            [system, "-c", "import construct, elftools"], capture_output=True).returncode == 0:
        return system
    return sys.executable


# --- exactness and memory -----------------------------------------------------------------


def tracker_count(n, workdir):
    """Executions the tracker's programs counted for a chain storm of n execs in one PID."""
    design = Loaded(execve_bpf.collection_spec())
    try:
        pid = chain_storm(n, workdir)
        return dict(design.collection.maps["exec_count"].items()).get(pid, 0)
    finally:
        design.close()


def bpftrace_count(n, workdir):
    """Executions bpftrace's one-liner counted (``@c[pid]``) for the same storm."""
    tracer = Bpftrace()
    try:
        pid = chain_storm(n, workdir)
        return tracer.counts().get(pid, 0)
    finally:
        tracer.close()


def peak_memory_kib(command, n, cwd=ROOT):
    """VmHWM of ``command`` (started, given 1.5 s, then a fork storm of n execs)."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        fork_storm(n)
        time.sleep(1.5)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])
    finally:
        proc.terminate()
        proc.wait()


# --- main ---------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", metavar="REVISION",
                        help="also measure the tracker as it was at this git revision (cold "
                             "start, in-kernel cost), beside the tracker of the checkout")
    args = parser.parse_args()
    n, rounds = args.execs, args.rounds
    have_bpftrace = shutil.which("bpftrace") is not None
    stats_fd = syscalls.enable_stats()
    python = python_for_tracker()
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as workdir:
        tree = source_copy(workdir)
        before = tree_at(args.before, workdir) if args.before else None
        print("### The execve tracker (`bench/bench_execve.py`)\n")
        print(f"`bench/bench_execve.py --execs {n} --rounds {rounds}`: the tracker run with "
              f"{python} ({version.strip()}); bpftrace runs the equivalent one-liner "
              f"`{BPFTRACE_ONE_LINER}`.\n")

        runs = max(rounds, 7)
        print("#### Cold start: spawn -> first exec counted in the map\n")
        print(f"Milliseconds; median and best of {runs} runs each after one warm-up run. A "
              "shell execs `/bin/sleep 0.001` in a loop meanwhile and the maps the process "
              "holds are polled every 0.2 ms (exact to about 2 ms). Both pybpf rows run from a "
              "copy of pybpf/ and programs/ made by this script: one with Python's bytecode "
              "cache (written by the warm-up run), one from a copy that has no __pycache__ "
              "and may not write one (`PYTHONDONTWRITEBYTECODE=1`), so every start compiles "
              "pybpf's source. The standard library's own cached bytecode is used by both.\n")
        tracker = [python, "-m", "programs.execve", "-interval", "3600"]
        if before:
            print(f"The rows 'at {args.before}' run the tracker as it was at that revision "
                  f"(`--before {args.before}`), from a copy made by `git archive`.\n")
        starts = [
            ("pybpf programs.execve (bytecode cached, as installed)", tracker, "exec_count",
             cached_bytecode_env(workdir), tree),
            ("pybpf programs.execve (no .pyc: compiles its source)", tracker, "exec_count",
             dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), tree),
        ]
        if before:
            starts.append((f"pybpf programs.execve at {args.before} (bytecode cached)", tracker,
                           "exec_count", cached_bytecode_env(workdir), before))
        if have_bpftrace:
            starts.append(("bpftrace one-liner", ["bpftrace", "-e", BPFTRACE_ONE_LINER], "AT_c",
                           None, tree))
        rows = []
        for label, command, map_name, env, cwd in starts:
            cold_start(command, map_name, env, cwd=cwd)  # warm-up: page cache, .pyc if cached
            times = [cold_start(command, map_name, env, cwd=cwd) for _ in range(runs)]
            done = [t * 1000 for t in times if t is not None]
            if done:
                rows.append([label, len(done), f"{statistics.median(done):.1f}",
                             f"{min(done):.1f}"])
            else:
                rows.append([label, 0, "map never filled", ""])
        print(table(["tool", "runs:", "median ms:", "best ms:"], rows))

        print("\n#### In-kernel cost per exec\n")
        print(f"Nanoseconds per exec: BPF_ENABLE_STATS run_time_ns of *all* the programs of a "
              f"design, divided by the runs of its sys_enter_execve program, so every design "
              f"is charged for all the work it does per exec. Chain storm: one process execs "
              f"{n} times in one PID (its entries exist). Fork storm: a shell forks {n} "
              f"children, each execs /bin/true (a new PID per exec). Median of {rounds} "
              f"rounds; the rounds interleave the designs.\n")
        designs = {
            "pybpf DSL (programs/execve_bpf.py)": lambda: Loaded(execve_bpf.collection_spec()),
            "straightforward design (DSL)": lambda: Loaded(straightforward_spec()),
            "straightforward + name at sched_process_exec": lambda: Loaded(
                straightforward_spec(name_at_exec=True)),
        }
        c_spec = clang_spec(workdir)
        if c_spec is not None:
            designs["clang -O2 bpf/program.c via pybpf.elf"] = lambda: Loaded(c_spec)
        if before:
            designs["pybpf programs.execve (its process)"] = lambda: TracerProcess(tracker, tree)
            designs[f"pybpf programs.execve at {args.before} (its process)"] = \
                lambda: TracerProcess(tracker, before)
        if have_bpftrace:
            designs["bpftrace one-liner"] = Bpftrace
        samples = {label: ([], [], 0) for label in designs}
        for _ in range(rounds):  # rounds interleave the designs, so drift hits all alike
            for label, load in designs.items():
                design = load()
                try:
                    chain, fork, _ = samples[label]
                    chain.append(cost_per_exec(design, lambda: chain_storm(n, workdir)))
                    fork.append(cost_per_exec(design, lambda: fork_storm(n)))
                    samples[label] = (chain, fork, design.programs)
                finally:
                    design.close()
        results = {label: (statistics.median(c), statistics.median(f), programs)
                   for label, (c, f, programs) in samples.items()}
        base = results["straightforward design (DSL)"]
        print(table(["design", "programs counted:", "chain storm ns:", "x straightforward:",
                     "fork storm ns:", "x straightforward:"],
                    [[label, programs, f"{chain:.0f}", f"{chain / base[0]:.2f}", f"{fork:.0f}",
                      f"{fork / base[1]:.2f}"]
                     for label, (chain, fork, programs) in results.items()]))

        print("\n#### Exactness and memory\n")
        print(f"Executions counted for a chain storm of {n} execs in one PID ({rounds} rounds, "
              f"each under a fresh tracer), and the peak resident memory (VmHWM) of the tracer "
              f"process through a fork storm of {n} execs.\n")
        tracers = [("pybpf programs.execve", tracker_count, tracker[:3] + ["-interval", "0.5"])]
        if have_bpftrace:
            tracers.append(("bpftrace one-liner", bpftrace_count,
                            ["bpftrace", "-e", BPFTRACE_ONE_LINER]))
        rows = []
        for label, count, command in tracers:
            counted = [count(n, workdir) for _ in range(rounds)]
            rows.append([label, ", ".join(map(str, counted)),
                         f"{peak_memory_kib(command, n, tree) / 1024:.1f}"])
        print(table(["tracer", f"counted (expected {n} each)", "peak memory MiB:"], rows))
        if not have_bpftrace:
            print("\nbpftrace is not installed: no bpftrace rows.")
    os.close(stats_fd)


if __name__ == "__main__":
    main()
