"""Event streams: pybpf's RingBuffer and PerfBuffer readers beside libbpf's C consumers.

The producer is a BPF program (tests/event_producers.py) run by ``BPF_PROG_TEST_RUN`` with
``repeat=N``: N records in one system call, so the rate is the kernel's, not the machine's
exec rate. Each record carries a per-CPU sequence number.

**Throughput.** The ring (64 MiB; perf: 64 MiB per CPU) is filled with N records, then a
consumer reads all of them; the time of the read alone is measured. The C consumer, compiled
here from the source below against libbpf (clang or cc and libbpf-dev), reads the same map
(the ring buffer: the very same map; the perf buffer: a map of its own written by the same
program) with ``ring_buffer__poll`` / ``perf_buffer__poll`` and a callback that counts, as
pybpf's does. The runs of the two alternate; the table gives medians.

**Loss and order.** Producers on both CPUs at once and the Python consumer reading meanwhile:
(1) with the producers held back while the ring lacks room for their next batch, 10 million
records must all arrive, in order per CPU, none twice; (2) unrestrained, the records that
arrive must be in order and the drops counted by the producer (ring buffer) or reported by
the kernel's LOST records (perf buffer) must add up exactly to what was produced.

Run as root: ``python bench/bench_events.py`` (``--quick`` for a short run).
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
sys.path.insert(0, str(ROOT))  # run from a source checkout
sys.path.insert(0, str(ROOT / "tests"))  # the producer programs

import event_producers as ep  # noqa: E402

from pybpf.abi import MapType  # noqa: E402
from pybpf.maps import PAGE_SIZE, Map  # noqa: E402
from pybpf.perfbuf import PerfBuffer  # noqa: E402
from pybpf.ringbuf import RingBuffer  # noqa: E402

SIZES = [16, 64, 256, 4096]
RING_BYTES = 64 << 20
PERF_PAGES = RING_BYTES // PAGE_SIZE
MAX_RECORDS = 1_000_000  # per timed read

C_CONSUMER = r"""
/* Reads a RINGBUF map (ring_buffer__poll) or a PERF_EVENT_ARRAY map (perf_buffer__poll)
 * given by id. For every line "N" on stdin it reads until N records arrived and prints
 * "records seconds cpu-seconds lost". */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long count, lost;

static int ring_sample(void *ctx, void *data, size_t size) { count++; return 0; }
static void perf_sample(void *ctx, int cpu, void *data, __u32 size) { count++; }
static void perf_lost(void *ctx, int cpu, __u64 n) { lost += n; }

static double now(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct ring_buffer *rb = NULL;
    struct perf_buffer *pb = NULL;
    int perf = strcmp(argv[1], "perf") == 0;
    int fd = bpf_map_get_fd_by_id(atoi(argv[2]));
    char line[64];

    if (fd < 0) { perror("bpf_map_get_fd_by_id"); return 1; }
    if (perf)
        pb = perf_buffer__new(fd, atoi(argv[3]), perf_sample, perf_lost, NULL, NULL);
    else
        rb = ring_buffer__new(fd, ring_sample, NULL, NULL);
    if (!rb && !pb) { perror("ring_buffer__new/perf_buffer__new"); return 1; }
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin)) {
        long want = atol(line);
        double start, cpu_start;
        count = lost = 0;
        start = now(CLOCK_MONOTONIC);
        cpu_start = now(CLOCK_THREAD_CPUTIME_ID);
        while (count < want) {
            int err = perf ? perf_buffer__poll(pb, 1000) : ring_buffer__poll(rb, 1000);
            if (err < 0) { fprintf(stderr, "poll: %d\n", err); return 1; }
        }
        printf("%ld %.9f %.9f %ld\n", count, now(CLOCK_MONOTONIC) - start,
               now(CLOCK_THREAD_CPUTIME_ID) - cpu_start, lost);
        fflush(stdout);
    }
    return 0;
}
"""


class CConsumer:
    """libbpf's consumer in a child process, compiled into a temporary directory."""

    def __init__(self, binary, mode, map_id, pages=0):
        self.process = subprocess.Popen([binary, mode, str(map_id), str(pages)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the C consumer did not start ({mode})")

    def read(self, records):
        """(seconds, CPU seconds) the C consumer took to read ``records`` records."""
        self.process.stdin.write(f"{records}\n")
        self.process.stdin.flush()
        got, seconds, cpu_seconds, _lost = self.process.stdout.readline().split()
        if int(got) != records:
            raise RuntimeError(f"the C consumer read {got} records, not {records}")
        return float(seconds), float(cpu_seconds)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def compile_consumer(directory):
    """The path of the compiled C consumer, or None (with the reason) without a compiler or
    libbpf-dev."""
    compiler = shutil.which("clang") or shutil.which("cc")
    if compiler is None or not Path("/usr/include/bpf/libbpf.h").exists():
        return None, "no C compiler or no libbpf-dev (/usr/include/bpf/libbpf.h)"
    source = Path(directory) / "consumer.c"
    source.write_text(C_CONSUMER)
    binary = Path(directory) / "consumer"
    result = subprocess.run([compiler, "-O2", "-o", str(binary), str(source), "-lbpf"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"compiling the C consumer failed: {result.stderr.strip()}"
    version = subprocess.run(["pkg-config", "--modversion", "libbpf"], capture_output=True,
                             text=True).stdout.strip() if shutil.which("pkg-config") else "?"
    return str(binary), f"{Path(compiler).name}, libbpf {version}"


def counting():
    """A callback that counts the records it is given, and the count."""
    seen = [0]

    def callback(record):
        seen[0] += 1

    return callback, seen


def timed_read(buffer, records, how):
    """(seconds, CPU seconds) pybpf took to read ``records`` records from ``buffer``."""
    cpu_start = time.thread_time()
    if how == "read() iterator":
        start = time.perf_counter()
        got = 0
        for _ in buffer.read(timeout=1):
            got += 1
            if got == records:
                break
        seconds = time.perf_counter() - start
    else:
        callback, seen = counting()
        start = time.perf_counter()
        while seen[0] < records:
            if buffer.poll(callback, timeout=1) == 0:
                break
        seconds = time.perf_counter() - start
        got = seen[0]
    cpu_seconds = time.thread_time() - cpu_start
    if got != records:
        raise RuntimeError(f"pybpf read {got} records, not {records}")
    return seconds, cpu_seconds


def fill(program, records):
    """Run the producer ``records`` times on CPU 0; every output must have worked."""
    retval = ep.run(program, records, cpu=0)
    if retval != 0:
        raise RuntimeError(f"the producer failed ({retval:#x})")


def ring_rows(size, runs, binary):
    """Throughput rows for ring buffer records of ``size`` bytes."""
    records = min(MAX_RECORDS, RING_BYTES // (size + 8))
    hows = ["poll(callback)"] + (["read() iterator", "poll, record_type='<QQ'"]
                                 if size == 64 else [])
    times = {how: [] for how in ["libbpf ring_buffer__poll"] * bool(binary) + hows}
    with ep.counters("seq") as seq, ep.counters("drops") as drops, \
            Map.create(MapType.RINGBUF, 0, 0, RING_BYTES, name="bench") as ring, \
            RingBuffer(ring) as plain, RingBuffer(ring, record_type="<QQ") as typed, \
            ep.load(ep.ringbuf_producer(size), events=ring, seq=seq, drops=drops) as prog:
        consumer = CConsumer(binary, "ring", plain.id) if binary else None
        try:
            for _ in range(runs):
                for how in times:
                    fill(prog, records)
                    if how.startswith("libbpf"):
                        times[how].append(consumer.read(records))
                    else:
                        buffer = typed if "record_type" in how else plain
                        times[how].append(timed_read(buffer, records, how))
        finally:
            if consumer:
                consumer.close()
    return _rows("ring buffer", size, records, times)


def perf_rows(size, runs, binary):
    """Throughput rows for perf buffer samples of ``size`` bytes."""
    records = min(MAX_RECORDS, (RING_BYTES - 1) // (size + 16))
    times = {how: [] for how in ["libbpf perf_buffer__poll"] * bool(binary) +
             ["poll(callback)"]}
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="bench") as ours, \
            Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="bench_c") as theirs, \
            ep.scratch(size) as scratch, ep.counters("seq") as seq, \
            PerfBuffer(ours, page_count=PERF_PAGES) as pb, \
            ep.load(ep.perf_producer(size), events=ours, scratch=scratch, seq=seq) as prog, \
            ep.load(ep.perf_producer(size), events=theirs, scratch=scratch,
                    seq=seq) as c_prog:
        consumer = CConsumer(binary, "perf", theirs.id, PERF_PAGES) if binary else None
        try:
            for _ in range(runs):
                for how in times:
                    if how.startswith("libbpf"):
                        fill(c_prog, records)
                        times[how].append(consumer.read(records))
                    else:
                        fill(prog, records)
                        times[how].append(timed_read(pb, records, how))
        finally:
            if consumer:
                consumer.close()
    return _rows("perf buffer", size, records, times)


def _rows(kind, size, records, times):
    """Table rows from each consumer's (seconds, CPU seconds) per run: medians, rates and
    ratios to the first consumer (libbpf when present)."""
    medians = {how: (statistics.median(t for t, _ in runs),
                     statistics.median(c for _, c in runs)) for how, runs in times.items()}
    base_wall, base_cpu = next(iter(medians.values()))
    return [(kind, size, how, records, records / wall, records * size / wall / 1e6,
             records / cpu, wall / base_wall, cpu / base_cpu)
            for how, (wall, cpu) in medians.items()]


def throughput_table(rows, peer):
    lines = [f"Peer: {peer}.", "",
             "| buffer | record bytes | consumer | records per read | records/s | MB/s "
             "| records/s of CPU time | time x libbpf | CPU time x libbpf |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for kind, size, how, records, rate, mbs, cpu_rate, ratio, cpu_ratio in rows:
        lines.append(f"| {kind} | {size} | {how} | {records:,} | {rate:,.0f} | {mbs:,.1f} "
                     f"| {cpu_rate:,.0f} | {ratio:.1f} | {cpu_ratio:.1f} |")
    return "\n".join(lines)


# --- loss and order ---------------------------------------------------------------------------


class Checker:
    """Checks sequence numbers per CPU as records arrive: each must be greater than the last
    (else it is out of order or a repeat); numbers skipped are counted as missing."""

    def __init__(self):
        self.expected = {}
        self.backwards = 0
        self.missing = {0: 0, 1: 0}
        self.records = 0
        self._head = ep.RECORD_HEAD.unpack_from

    def __call__(self, record):
        seq, cpu = self._head(record)
        expected = self.expected.get(cpu, 1)
        if seq != expected:
            if seq < expected:
                self.backwards += 1
                return
            self.missing[cpu] += seq - expected
        self.expected[cpu] = seq + 1
        self.records += 1

    def last(self, cpu):
        return self.expected.get(cpu, 1) - 1


def ring_loss_check(total, ring_bytes, flow_control):
    """One row: ``total`` 64-byte records from two CPUs through a ``ring_bytes`` ring. The
    producer numbers only the records it could reserve: numbers must arrive without gaps,
    and arrived + drops counted must be what each CPU produced."""
    per_cpu, chunk = total // 2, 500
    with ep.counters("seq") as seq, ep.counters("drops") as drops, \
            RingBuffer.create(ring_bytes, name="order", drops=drops) as rb, \
            ep.load(ep.ringbuf_producer(64), events=rb, seq=seq, drops=drops) as prog:
        # both producers may be writing a batch at once: each waits for room for two
        room = (lambda: rb.pending <= ring_bytes - 2 * chunk * 72) if flow_control else None
        checker = Checker()
        seconds = ep.read_while_producing(ep.produce_on_two_cpus(prog, per_cpu, chunk, room), rb,
                                            checker)
        drops = rb.drops_per_cpu
        exact = checker.backwards == 0 and all(
            checker.missing[cpu] == 0 and checker.last(cpu) + drops[cpu] == per_cpu
            for cpu in (0, 1))
    return ("ring buffer", "held back" if flow_control else "unrestrained", total,
            checker.records, drops[0] + drops[1], checker.backwards,
            sum(checker.missing.values()), exact, checker.records * 72 // ring_bytes, seconds)


def perf_loss_check(total, pages):
    """One row: ``total`` 64-byte samples from two CPUs, unrestrained. The producer numbers
    every sample, also those the kernel drops: the numbers missing on each CPU must be what
    its LOST records reported."""
    per_cpu = total // 2
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="order") as perf_map, \
            ep.scratch(64) as scratch, ep.counters("seq") as seq, \
            PerfBuffer(perf_map, page_count=pages) as pb, \
            ep.load(ep.perf_producer(64), events=perf_map, scratch=scratch, seq=seq) as prog:
        checker = Checker()
        seconds = ep.read_while_producing(ep.produce_on_two_cpus(prog, per_cpu, 2000), pb,
                                            checker)
        for cpu in (0, 1):  # a pending LOST count is written before the next sample
            ep.run(prog, 1, cpu=cpu)
        while pb.poll(checker, timeout=0):
            pass
        lost = pb.lost_per_cpu
        exact = checker.backwards == 0 and all(
            checker.last(cpu) == per_cpu + 1 and checker.missing[cpu] == lost[cpu]
            for cpu in (0, 1))
    return ("perf buffer", "unrestrained", total + 2, checker.records, lost[0] + lost[1],
            checker.backwards, sum(checker.missing.values()), exact,
            checker.records * 80 // (pages * PAGE_SIZE * 2), seconds)


def perf_stall_check(pages, produced):
    """A reader that reads nothing while ``produced`` samples are written, then reads: the
    ring holds what fits (perf keeps one byte free; 80-byte samples), LOST says the rest."""
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="stall") as perf_map, \
            ep.scratch(64) as scratch, ep.counters("seq") as seq, \
            PerfBuffer(perf_map, page_count=pages) as pb, \
            ep.load(ep.perf_producer(64), events=perf_map, scratch=scratch, seq=seq) as prog:
        ep.run(prog, produced, cpu=0)
        checker = Checker()
        pb.poll(checker, timeout=0)
        ep.run(prog, 1, cpu=0)
        pb.poll(checker, timeout=0)
        fits = (pages * PAGE_SIZE - 1) // 80
        exact = checker.records == fits + 1 and pb.lost == produced - fits == \
            checker.missing[0] and checker.backwards == 0
    return ("perf buffer", f"reader stalled ({pages} pages)", produced + 1, checker.records,
            pb.lost, checker.backwards, sum(checker.missing.values()), exact, 0, 0.0)


def loss_table(rows):
    lines = ["| buffer | producers | records produced | arrived | lost (counted) "
             "| out of order or repeated | numbers missing | exact | ring wraps | seconds |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for kind, mode, total, arrived, lost, backwards, missing, exact, wraps, seconds in rows:
        lines.append(f"| {kind} | {mode} | {total:,} | {arrived:,} | {lost:,} | {backwards:,} "
                     f"| {missing:,} | {'yes' if exact else 'NO'} | {wraps:,} "
                     f"| {seconds:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed reads per consumer")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--records", type=int, default=10_000_000,
                        help="records of the loss and order check")
    parser.add_argument("--quick", action="store_true", help="3 runs, 1 million records")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-loss", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.records = 3, min(args.records, 1_000_000)
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark needs two CPUs")
    print(f"Python {sys.version.split()[0]} ({sys.executable}), Linux {os.uname().release}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start.\n")
    with tempfile.TemporaryDirectory() as directory:
        binary, peer = compile_consumer(directory)
        if not args.skip_throughput:
            rows = []
            for size in args.sizes:
                rows += ring_rows(size, args.runs, binary)
            for size in args.sizes:
                rows += perf_rows(size, args.runs, binary)
            print(throughput_table(rows, peer if binary else f"none ({peer})"))
            print()
    if not args.skip_loss:
        rows = [ring_loss_check(args.records, 256 << 10, True),
                ring_loss_check(args.records, 256 << 10, False),
                perf_loss_check(args.records, 64),
                perf_stall_check(8, 10_000)]
        print(loss_table(rows))


if __name__ == "__main__":
    main()
