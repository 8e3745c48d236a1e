"""The tracker as a service: what a scrape costs, and the tracker's memory and CPU.

**A scrape at 10,000 tracked processes.** The tracker's programs are loaded with the metrics
maps (``--metrics``); 10,000 processes are written into its per-process maps (``exec_count``,
``process_names``: what 10,000 distinct processes that exec'd leave there) and 1,000 names
into ``comm_execs``. Then ``/metrics`` is asked for over HTTP, as Prometheus does (wall time
of the whole request, and the tracker's CPU time for it: the collector reads every map with
batch lookups, ``tracked_processes`` counts the 10,000 entries), beside the peer
``bpftool map dump`` of the same ``exec_count`` map (a process of its own: its wall time).

**In-kernel cost.** The ns per exec of the programs of the table's default, of the outcome
counting (what a filter loads) and of that with the metrics' counts (``--metrics``).

**Memory and CPU.** The tracker runs in a memory cgroup of its own (so that the kernel
memory of its maps and ring buffer, charged to the cgroup, is counted) in three modes, then
bpftrace counting execs by name in a map (the peer), each while the same workload of
``--execs`` execs runs (``/bin/true`` in a shell loop): peak RSS (VmHWM), the cgroup's peak
memory (process and kernel: BPF maps, ring buffer), and CPU seconds (user + system) spent
during the workload (the start excluded).

Run as root: ``python bench/bench_service.py [--execs N]``.
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

from programs import events_bpf, execve_bpf  # noqa: E402
from programs.execve import Tracker  # noqa: E402
from programs.metrics import MetricsServer, TrackerCollector  # noqa: E402
from pybpf import syscalls  # noqa: E402
from pybpf.host import possible_cpus  # noqa: E402

TRACKED = 10_000
NAMES = 1_000
RUNS = 15
TICK = os.sysconf("SC_CLK_TCK")


def scrape_table():
    options = events_bpf.Options(emit=False, metrics=True, max_pids=2 * TRACKED)
    spec = events_bpf.collection_spec(options, possible_cpus())
    with Tracker(options.max_pids, spec=spec) as tracker:
        maps = tracker.collection.maps
        pids = range(4_000_000, 4_000_000 + TRACKED)  # above pid_max: no live process
        maps["exec_count"].update_batch([(pid, 3) for pid in pids])
        maps["process_names"].update_batch([(pid, _comm(pid % NAMES)) for pid in pids])
        maps["comm_execs"].update_batch([(_comm(i), 30) for i in range(NAMES)])
        with MetricsServer(TrackerCollector(tracker), ("127.0.0.1", 0)) as server:
            body = _get(server.url)
            tracked = float(re.search(r"^execve_tracker_tracked_processes (\S+)$", body,
                                      re.M).group(1))
            assert tracked >= TRACKED, tracked  # ours, and the machine's own execs since
            walls, cpus = [], []
            for _ in range(RUNS):
                cpu = time.process_time()  # this process is the tracker: its CPU for a scrape
                start = time.perf_counter()
                _get(server.url)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
        bpftool = shutil.which("bpftool")
        peer = []
        if bpftool:
            map_id = str(maps["exec_count"].id)
            for _ in range(RUNS):
                start = time.perf_counter()
                subprocess.run([bpftool, "map", "dump", "id", map_id], check=True,
                               stdout=subprocess.DEVNULL)
                peer.append(time.perf_counter() - start)
    scrape = statistics.median(walls)
    print(f"**A scrape at {TRACKED:,} tracked processes.** The tracker's programs loaded with "
          f"the metrics maps; {TRACKED:,} processes written into its per-process maps "
          f"(`exec_count`, `process_names`: what {TRACKED:,} distinct processes that exec'd "
          f"leave there) and {NAMES:,} names into `comm_execs`. `GET /metrics` over HTTP as "
          f"Prometheus asks for it (the collector reads every map with batch lookups and counts "
          f"the {TRACKED:,} entries): its wall time and the tracker's CPU time for it, beside "
          f"the peer `bpftool map dump` of the same `exec_count` map (a process of its own: "
          f"its wall time). Medians of {RUNS} runs.\n")
    print("| what | wall ms | CPU ms | x scrape (wall) |")
    print("|------|--------:|-------:|----------------:|")
    print(f"| GET /metrics (the tracker's collector, over HTTP) | {scrape * 1e3:.1f} | "
          f"{statistics.median(cpus) * 1e3:.1f} | 1.0 |")
    if peer:
        print(f"| bpftool map dump of exec_count (peer) | {statistics.median(peer) * 1e3:.1f} "
              f"| | {statistics.median(peer) / scrape:.1f} |")
    else:
        print("| bpftool map dump (peer) | not installed | | |")
    print(f"\nThe response: {len(body):,} bytes.\n")


def _comm(number):
    """A process name as the kernel keeps it: 16 bytes, NUL-padded."""
    return (b"name%05d" % number).ljust(16, b"\0")


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


class MemoryCgroup:
    """A memory cgroup of our own (v2, else the v1 memory controller): its peak usage."""

    def __init__(self, name):
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists() and "memory" in v2.read_text().split():
            self.path, self.peak_file = Path("/sys/fs/cgroup") / name, "memory.peak"
        else:
            self.path = Path("/sys/fs/cgroup/memory") / name
            self.peak_file = "memory.max_usage_in_bytes"
        self.path.mkdir()

    def add(self, pid):
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak(self):
        file = self.path / self.peak_file
        return int(file.read_text()) if file.exists() else None

    def remove(self):
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.05)


def _cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _hwm_kib(pid):
    return int(re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(),
                         re.M).group(1))


def measure(name, command, ready, execs, scrape=None):
    """(peak RSS KiB, cgroup peak bytes, CPU s during the workload) of ``command``."""
    cgroup = MemoryCgroup(f"pybpf-bench-{os.getpid()}-{len(name)}-{time.monotonic_ns()}")
    out = tempfile.TemporaryFile()
    # started inside the cgroup: a shell that moves itself there, then execs the command
    proc = subprocess.Popen(["sh", "-c", f'echo $$ > {cgroup.path}/cgroup.procs && exec "$@"',
                             "sh", *command], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready(out):
            if proc.poll() is not None or time.monotonic() > deadline:
                out.seek(0)
                raise SystemExit(f"{name} did not start: {out.read().decode()[-2000:]}")
            time.sleep(0.1)
        cpu = _cpu_seconds(proc.pid)
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {execs} ]; do /bin/true; "
                        f"i=$((i+1)); done"], check=True)
        time.sleep(1.0)  # the last events and reports
        if scrape:
            scrape(out)
        used = _cpu_seconds(proc.pid) - cpu
        hwm = _hwm_kib(proc.pid)
        peak = cgroup.peak()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        cgroup.remove()
    return hwm, peak, used


def _printed(text):
    def ready(out):
        out.seek(0)
        return text.encode() in out.read()
    return ready


def _scrape_once(out):
    out.seek(0)
    url = re.search(rb"Serving metrics on (http://\S+)", out.read()).group(1).decode()
    _get(url)


def memory_table(execs):
    tracker = [sys.executable, "-m", "programs.execve", "-interval", "2"]
    rows = [
        ("tracker (table)", tracker, _printed("Press Ctrl+C"), None),
        ("tracker --metrics", tracker + ["--metrics", "127.0.0.1:0"], _printed("Serving"),
         _scrape_once),
        ("tracker --events --json --metrics (the service's)",
         tracker + ["--events", "--json", "--metrics", "127.0.0.1:0"], _printed("Serving"),
         _scrape_once),
    ]
    bpftrace = shutil.which("bpftrace")
    if bpftrace:
        rows.append(("bpftrace: @[comm] = count() at sched_process_exec (peer)",
                     [bpftrace, "-e", 'BEGIN { printf("ready\\n"); } '
                      "tracepoint:sched:sched_process_exec { @[comm] = count(); }"],
                     _printed("ready"), None))
    print(f"**Memory and CPU.** Each in a memory cgroup of its own (so that the kernel memory of "
          f"its BPF maps and ring buffer, charged to the cgroup, counts; the shared pages of "
          f"Python's files were charged where they were first read), while the same "
          f"{execs:,} execs run (`/bin/true` in a shell loop): peak RSS (VmHWM), the cgroup's "
          f"peak memory, and the CPU time (user + system) spent during the execs (the start "
          f"left out). One run each; the peer is bpftrace counting execs by name in a map.\n")
    print("| what | peak RSS MiB | cgroup peak MiB (with BPF maps) | CPU s during the execs |")
    print("|------|------------:|---------------------------------:|-----------------------:|")
    for name, command, ready, scrape in rows:
        hwm, peak, cpu = measure(name, command, ready, execs, scrape)
        shown_peak = f"{peak / 2**20:.1f}" if peak is not None else "n/a"
        print(f"| {name} | {hwm / 1024:.1f} | {shown_peak} | {cpu:.2f} |")
    print()


KERNEL_RUNS = 3


def kernel_cost_table(execs):
    """ns per exec in the kernel of each set of programs: the table's default, the outcome
    counting that filters use, and that with the metrics' counts by name and errno."""
    designs = {
        "table, no option (count_execve, name_process)":
            lambda: execve_bpf.collection_spec(),
        "outcome counts (what a filter loads)":
            lambda: events_bpf.collection_spec(events_bpf.Options(emit=False), possible_cpus()),
        "outcome counts + comm_execs, exec_errnos (--metrics)":
            lambda: events_bpf.collection_spec(events_bpf.Options(emit=False, metrics=True),
                                               possible_cpus()),
    }
    results = {name: [] for name in designs}
    stats = syscalls.enable_stats()
    try:
        for _ in range(KERNEL_RUNS):
            for name, spec in designs.items():  # alternating, so that noise spreads evenly
                with Tracker(spec=spec()) as tracker:
                    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {execs} ]; do /bin/true;"
                                    f" i=$((i+1)); done"], check=True)
                    infos = {n: p.info() for n, p in tracker.collection.programs.items()}
                total = sum(info["run_time_ns"] for info in infos.values())
                at_exec = next(info["run_cnt"] for n, info in infos.items()
                               if n in ("name_process", "exec_success"))
                results[name].append(total / at_exec)
    finally:
        os.close(stats)
    base = statistics.median(results[next(iter(designs))])
    print(f"**In-kernel cost per exec.** `run_time_ns` of all the programs of each set "
          f"(BPF_ENABLE_STATS, on only for this table), divided by the successful execs "
          f"(`run_cnt` of its sched_process_exec program), while {execs:,} execs run; "
          f"medians of {KERNEL_RUNS} alternating runs. The metrics' counts are loaded only "
          f"with --metrics: the table's default stays as it was.\n")
    print("| programs | ns per exec | x table |")
    print("|----------|------------:|--------:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} | "
              f"{statistics.median(values) / base:.2f} |")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--execs", type=int, default=5000)
    args = parser.parse_args()
    print("### The tracker as a service (`bench/bench_service.py`)\n")
    print(f"Load average at the start: {os.getloadavg()[0]:.2f}.\n")
    scrape_table()
    kernel_cost_table(args.execs)
    memory_table(args.execs)


if __name__ == "__main__":
    main()
