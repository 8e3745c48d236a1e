"""Benchmark of the exec event stream (``--events``) beside its peers, in one run.

    sudo python3 bench/bench_exec_events.py [--execs 20000] [--rounds 3]

Peers: libbpf-tools' ``execsnoop`` (C + CO-RE, Debian's libbpf-tools), bpftrace's
``execsnoop.bt`` (Debian's bpftrace) and BCC's ``execsnoop-bpfcc`` (which needs kernel headers:
whether it starts is recorded). Each tool runs alone, with its default sizes, its output to a
file, while a storm of execs runs on both CPUs: two shells (one pinned to each CPU) that each
run ``/bin/true <marker>`` ``--execs / 2`` times. Measured per tool:

1. events: how many of the storm's execs it printed, and how many it says it lost;
2. in-kernel cost: BPF_ENABLE_STATS run time of every program the tool holds, divided by the
   execs the kernel saw meanwhile (the run count of the tool's busiest program: its program at
   the exec syscall's entry or exit runs once per exec, the storm's and any other's);
3. user-space CPU (utime + stime of the tool's process) per 1,000 events printed;
4. argument fidelity: of one exec with 1000 arguments of 64 bytes (64 KiB), how many of the
   arguments the tool shows.
"""

import argparse
import json
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
from pybpf.host import held_bpf_ids  # noqa: E402

MARKER = "pybpf-bench-storm"
READY = "pybpf-bench-ready"  # the canary exec that shows a tool is attached and printing
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tools(workdir):
    """name -> (command, the pattern of one storm line in its output, how it reports loss)."""
    tracker = [sys.executable, "-m", "programs.execve", "--events", "-interval", "1"]
    found = {
        "pybpf --events": (tracker, rf"/bin/true {MARKER}$"),
        "pybpf --events --json": (tracker + ["--json"],
                                  rf'"argv": \["/bin/true", "{MARKER}"\]'),
    }
    if shutil.which("execsnoop"):
        found["libbpf-tools execsnoop"] = (["execsnoop"], rf"/bin/true {MARKER}\s*$")
    if shutil.which("bpftrace") and os.path.exists("/usr/sbin/execsnoop.bt"):
        found["bpftrace execsnoop.bt"] = (["bpftrace", "/usr/sbin/execsnoop.bt"],
                                          rf"/bin/true {MARKER}\s*$")
    return found


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(command, out_path):
    """Start a tool (C stdio line-buffered by ``stdbuf -oL``, as on a terminal) and wait until
    it is attached and printing: until an exec of ``/bin/true READY`` shows in its output (a
    tool that has loaded its programs may still be attaching them); the process."""
    out = open(out_path, "wb")
    proc = subprocess.Popen(["stdbuf", "-oL", *command], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        subprocess.run(["/bin/true", READY])
        time.sleep(0.2)
        if READY.encode() in out_path.read_bytes():
            time.sleep(0.5)  # a quiet moment after the canaries
            return proc
    if proc.poll() is None:  # never showed the canary: reported as not started
        proc.terminate()
        proc.wait(timeout=60)
    return proc


def storm(execs):
    """Two shells, one per CPU, each running /bin/true MARKER execs/2 times."""
    script = f"i=0; while [ $i -lt {execs // 2} ]; do /bin/true {MARKER}; i=$((i+1)); done"
    shells = [subprocess.Popen(["taskset", "-c", str(cpu), "sh", "-c", script])
              for cpu in (0, 1)]
    for shell in shells:
        shell.wait()


def run_stats(ids):
    """``{program id: (run_time_ns, run_cnt)}`` of the programs ``ids``."""
    stats = {}
    for prog_id in ids:
        fd = syscalls.prog_get_fd_by_id(prog_id)
        try:
            info = syscalls.obj_get_info_by_fd(fd, "prog")
        finally:
            os.close(fd)
        stats[prog_id] = (info["run_time_ns"], info["run_cnt"])
    return stats


def ns_per_exec(before, after):
    """All programs' run time over the window, divided by the busiest program's run count."""
    time_ns = sum(after[i][0] - before[i][0] for i in after)
    runs = max(after[i][1] - before[i][1] for i in after)
    return time_ns / max(runs, 1)


def measure(name, command, pattern, execs, workdir):
    """One tool through one storm: a dict of what was measured (None: it did not start)."""
    out_path = Path(workdir) / "out.txt"
    proc = start(command, out_path)
    if proc.poll() is not None:
        return {"started": False, "output": out_path.read_text(errors="replace")[-500:]}
    ids = held_bpf_ids(proc.pid, "prog")
    stats_fd = syscalls.enable_stats()
    try:
        before_cpu, before = cpu_seconds(proc.pid), run_stats(ids)
        storm(execs)
        time.sleep(2.0)  # the consumer catches up
        after_cpu, after = cpu_seconds(proc.pid), run_stats(ids)
    finally:
        os.close(stats_fd)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    text = out_path.read_text(errors="replace")
    printed = len(re.findall(pattern, text, re.M))
    lost = sum(int(n) for n in re.findall(r"[Ll]ost (\d+) (?:events|samples)", text))
    stats = [json.loads(line) for line in text.splitlines() if line.startswith('{"type": "stats"')]
    if stats:
        lost = stats[-1]["events_lost"]
    return {"started": True, "printed": printed, "lost": lost,
            "ns_per_exec": ns_per_exec(before, after),
            "cpu_per_1000": (after_cpu - before_cpu) / max(printed, 1) * 1000}


def fidelity(command, workdir):
    """Of one exec with 1000 arguments of 64 bytes, how many arguments the tool printed."""
    out_path = Path(workdir) / "fidelity.txt"
    proc = start(command, out_path)
    if proc.poll() is not None:
        return None
    args = [f"{i:04d}" + "a" * 59 for i in range(1000)]  # 64 bytes each with the NUL
    subprocess.run(["/bin/true", *args])
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    text = out_path.read_text(errors="replace")
    return len(set(re.findall(r"\b(\d{4})a{59}\b", text)))


def bcc_starts(workdir):
    """Whether BCC's execsnoop-bpfcc starts here, and why not."""
    if not shutil.which("execsnoop-bpfcc"):
        return "not installed"
    proc = subprocess.Popen(["execsnoop-bpfcc"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        return "starts"
    reason = [line for line in out.splitlines() if "header" in line.lower()]
    return "fails: " + (reason[0].strip() if reason else out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execs", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        found = tools(workdir)
        results = {name: [] for name in found}
        for _ in range(args.rounds):  # interleaved, so that noise moves all alike
            for name, (command, pattern) in found.items():
                results[name].append(measure(name, command, pattern, args.execs, workdir))
        rows = []
        for name, runs in results.items():
            if not runs[0]["started"]:
                rows.append([name, "did not start", "", "", "", ""])
                continue
            rows.append([
                name,
                f"{statistics.median(r['printed'] for r in runs):.0f} of {args.execs}",
                f"{statistics.median(r['lost'] for r in runs):.0f}",
                f"{statistics.median(r['ns_per_exec'] for r in runs):.0f}",
                f"{statistics.median(r['cpu_per_1000'] for r in runs) * 1000:.1f}",
                fidelity(found[name][0], workdir),
            ])
        print(f"### Exec event stream (`bench/bench_exec_events.py`)\n\n"
              f"{args.execs} execs of /bin/true on 2 CPUs, median of {args.rounds} rounds "
              f"(each tool alone, with its default sizes; in-kernel ns: all of a tool's "
              f"programs per exec):\n")
        print(table(["tool", "storm execs printed:", "lost (its own report):",
                     "in-kernel ns per exec:", "user CPU ms per 1000 events:",
                     "arguments shown of 1000:"], rows))
        print(f"\nBCC execsnoop-bpfcc: {bcc_starts(workdir)}")


if __name__ == "__main__":
    main()
