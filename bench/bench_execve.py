"""Benchmark of the execve tracker, side by side with its peers in one run.

    sudo python3 bench/bench_execve.py [--execs 5000] [--rounds 3]

1. cold start: from spawning the tracker to the first exec counted in its map, for
   ``programs.execve`` (with /usr/bin/python3 when it has construct, else this Python) and for
   bpftrace running the equivalent one-liner;
2. in-kernel cost per exec (BPF_ENABLE_STATS run_time_ns of every program of a design, divided
   by the number of execve calls it saw) for a chain storm (one PID re-execs itself) and a fork
   storm (a new PID per exec), for: the tracker's DSL programs, the straightforward design
   (lookup, atomic add or update, get_comm onto the stack, update the name map), the
   clang -O2 build of bpf/program.c loaded by pybpf's ELF loader, and bpftrace;
3. exactness: a storm of --execs execs counted exactly, every round;
4. peak memory (VmHWM) of the tracker process.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pybpf import syscalls  # noqa: E402
from pybpf.abi import TASK_COMM_LEN, UpdateFlags  # noqa: E402
from pybpf.asm import DW, R0, R1, R2, R3, R4, R6, R10, W, Builder  # noqa: E402
from pybpf.attach import attach  # noqa: E402
from pybpf.collection import Collection  # noqa: E402
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

    def stats(self):
        """(total run_time_ns, run_cnt of the sys_enter_execve program)."""
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


class Bpftrace:
    """bpftrace running the equivalent one-liner; its program found by id."""

    def __init__(self):
        before = set(_prog_ids())
        self.proc = subprocess.Popen(["bpftrace", "-e", BPFTRACE_ONE_LINER],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        self.fds = []
        while time.monotonic() < deadline and not self.fds:
            for prog_id in set(_prog_ids()) - before:
                fd = syscalls.prog_get_fd_by_id(prog_id)
                info = syscalls.obj_get_info_by_fd(fd, "prog")
                if info["type"] == 5:  # BPF_PROG_TYPE_TRACEPOINT
                    self.fds.append(fd)
                else:
                    os.close(fd)
            time.sleep(0.01)
        if not self.fds:
            self.close()
            raise RuntimeError("bpftrace's program did not show up")

    def stats(self):
        total = execs = 0
        for fd in self.fds:
            info = syscalls.obj_get_info_by_fd(fd, "prog")
            total += info["run_time_ns"]
            execs = max(execs, info["run_cnt"])
        return total, execs

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.proc.terminate()
        self.proc.wait()


def _prog_ids():
    prog_id = 0
    while True:
        prog_id = syscalls.prog_get_next_id(prog_id)
        if prog_id is None:
            return
        yield prog_id


# --- storms -------------------------------------------------------------------------------


def chain_script(workdir):
    """A script that re-execs itself ``$1`` times in one PID."""
    script = Path(workdir) / "chain.sh"
    script.write_text('#!/bin/sh\nif [ "$1" -gt 0 ]; then exec "$0" $(($1 - 1)); fi\n')
    script.chmod(0o755)
    return script


def chain_storm(n, workdir):
    """One process that re-execs itself n times (n + 1 execve calls in one PID)."""
    subprocess.run([str(chain_script(workdir)), str(n)], check=True)


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


def _map_ids_named(name):
    map_id = 0
    found = []
    while True:
        map_id = syscalls.map_get_next_id(map_id)
        if map_id is None:
            return found
        try:
            fd = syscalls.map_get_fd_by_id(map_id)
        except OSError:
            continue
        try:
            if syscalls.obj_get_info_by_fd(fd, "map")["name"] == name:
                found.append(map_id)
        finally:
            os.close(fd)


def cold_start(command, map_name, env=None):
    """Seconds from spawning ``command`` to the first entry in its map ``map_name``.

    Meanwhile a shell execs ``/bin/sleep 0.001`` in a loop (an exec about every 2 ms, while
    leaving the CPUs to the process measured), and this process polls the kernel's map list
    every 0.2 ms; the result is exact to about 2 ms.
    """
    storm = subprocess.Popen(["/bin/sh", "-c", "while :; do /bin/sleep 0.001; done"])
    known = set(_map_ids_named(map_name))
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    elapsed = None
    try:
        fd = None
        while fd is None and time.perf_counter() - start < 30:
            new = set(_map_ids_named(map_name)) - known
            if new:
                fd = syscalls.map_get_fd_by_id(new.pop())
            time.sleep(0.0002)
        key_size = syscalls.obj_get_info_by_fd(fd, "map")["key_size"] if fd is not None else 0
        while fd is not None and time.perf_counter() - start < 30:
            if syscalls.map_get_next_key(fd, None, key_size) is not None:
                elapsed = time.perf_counter() - start
                break
            time.sleep(0.0002)
        if fd is not None:
            os.close(fd)
    finally:
        proc.terminate()
        proc.wait()
        storm.kill()
        storm.wait()
    return elapsed


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


def exactness(n, workdir):
    """Run a chain storm of n execs under a fresh tracker: was every exec counted?"""
    design = Loaded(execve_bpf.collection_spec())
    try:
        proc = subprocess.Popen([str(chain_script(workdir)), str(n - 1)])
        proc.wait()
        counts = dict(design.collection.maps["exec_count"].items())
        return counts.get(proc.pid, 0)
    finally:
        design.close()


def tracker_peak_memory_kib(python, n, workdir):
    proc = subprocess.Popen([python, "-m", "programs.execve", "-interval", "0.5"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    parser.add_argument("--execs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.execs
    have_bpftrace = shutil.which("bpftrace") is not None
    stats_fd = syscalls.enable_stats()
    python = python_for_tracker()
    with tempfile.TemporaryDirectory() as workdir:
        print(f"# execve tracker benchmark ({n} execs per storm, {args.rounds} rounds,"
              f" tracker run with {python})\n")

        print("## cold start: spawn -> first exec counted in the map (ms)\n")
        print("| tool | best | median |\n|---|---:|---:|")
        tracker = [python, "-m", "programs.execve", "-interval", "3600"]
        rows = [
            ("pybpf programs.execve (bytecode cached, as installed)", tracker, "exec_count",
             cached_bytecode_env(workdir)),
            ("pybpf programs.execve (no .pyc: compiles its source)", tracker, "exec_count",
             dict(os.environ, PYTHONDONTWRITEBYTECODE="1")),
        ]
        if have_bpftrace:
            rows.append(("bpftrace one-liner", ["bpftrace", "-e", BPFTRACE_ONE_LINER], "AT_c",
                         None))
        for label, command, map_name, env in rows:
            cold_start(command, map_name, env)  # warm-up: page cache, and .pyc files if cached
            times = [cold_start(command, map_name, env) for _ in range(max(args.rounds, 7))]
            times = [t * 1000 for t in times if t is not None]
            if times:
                print(f"| {label} | {min(times):.1f} | {statistics.median(times):.1f} |")
            else:
                print(f"| {label} | (map never filled) | |")

        print("\n## in-kernel cost per exec (ns; BPF_ENABLE_STATS run_time_ns / execs)\n")
        designs = {
            "pybpf DSL (programs/execve_bpf.py)": lambda: Loaded(execve_bpf.collection_spec()),
            "straightforward design (DSL)": lambda: Loaded(straightforward_spec()),
            "straightforward + name at sched_process_exec": lambda: Loaded(
                straightforward_spec(name_at_exec=True)),
        }
        c_spec = clang_spec(workdir)
        if c_spec is not None:
            designs["clang -O2 bpf/program.c via pybpf.elf"] = lambda: Loaded(c_spec)
        if have_bpftrace:
            designs["bpftrace one-liner"] = Bpftrace
        samples = {label: ([], []) for label in designs}
        for _ in range(args.rounds):  # rounds interleave the designs, so drift hits all alike
            for label, load in designs.items():
                design = load()
                try:
                    samples[label][0].append(cost_per_exec(design, lambda: chain_storm(n, workdir)))
                    samples[label][1].append(cost_per_exec(design, lambda: fork_storm(n)))
                finally:
                    design.close()
        results = {label: (statistics.median(c), statistics.median(f))
                   for label, (c, f) in samples.items()}
        base = results["straightforward design (DSL)"]
        print("| design | chain storm | x straightforward | fork storm | x straightforward |")
        print("|---|---:|---:|---:|---:|")
        for label, (chain, fork) in results.items():
            print(f"| {label} | {chain:.0f} | {chain / base[0]:.2f} | {fork:.0f} |"
                  f" {fork / base[1]:.2f} |")

        print("\n## exactness: chain storm of %d execs in one PID\n" % n)
        counted = [exactness(n, workdir) for _ in range(args.rounds)]
        print(f"counted: {counted} (expected {n} each): "
              f"{'exact' if all(c == n for c in counted) else 'NOT EXACT'}")

        print("\n## peak memory of the tracker process\n")
        print(f"VmHWM: {tracker_peak_memory_kib(python, n, workdir) / 1024:.1f} MiB "
              f"({python}, through a fork storm of {n} execs)")
    os.close(stats_fd)


if __name__ == "__main__":
    main()
