"""Reading every element of a hash map: pybpf's readers beside C with libbpf and bpftool.

    python3 bench/bench_maps.py [--sizes 1000 10000 100000] [--runs 7]

A ``HASH`` map with u32 keys and u64 values (``key_type="<I"``, ``value_type="<Q"``), full,
read whole by each reader in turn, in one run:

- pybpf ``Map.lookup_batch()`` (``BPF_MAP_LOOKUP_BATCH``, 16384 elements per call) -> a list
  of ``(int, int)``; and, to show where its time goes, the same system calls alone
  (``pybpf.syscalls.map_lookup_batch``, bytes out) and those plus ``struct.unpack`` of the
  keys and values (no tuples);
- pybpf ``list(Map.items())`` (``BPF_MAP_GET_NEXT_KEY`` + ``BPF_MAP_LOOKUP_ELEM``: two system
  calls per element);
- C with libbpf's ``bpf_map_lookup_batch()`` (bench/map_reader.c, built here with clang when
  libbpf-dev is installed), timed inside the C program around the reads only;
- ``bpftool map dump id N -j``, process start included (it walks key by key).

Every reader must return every element (the C reader's count and sum of values are checked).
"""

import argparse
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from common import ROOT, median, table, timed_runs

from pybpf import syscalls  # noqa: E402 - after common puts the tree on the path
from pybpf.abi import MapType  # noqa: E402
from pybpf.maps import DEFAULT_CHUNK, Map  # noqa: E402


def build_c_reader(work):
    """The path of bench/map_reader.c compiled against libbpf, or why it could not be built."""
    clang = shutil.which("clang") or shutil.which("cc")
    if clang is None or not Path("/usr/include/bpf/bpf.h").exists():
        return None, "no C reader: needs clang and libbpf-dev (apt-get install clang libbpf-dev)"
    exe = Path(work) / "map_reader"
    subprocess.run([clang, "-O2", "-o", str(exe), str(ROOT / "bench" / "map_reader.c"),
                    "-lbpf"], check=True)
    return exe, None


def raw_batches(fd, value_size):
    """Every key and value as two byte strings, by the batch system calls alone."""
    keys, values, cursor = [], [], None
    while True:
        k, v, _, cursor_out, done = syscalls.map_lookup_batch(fd, cursor, 4, value_size,
                                                              DEFAULT_CHUNK)
        keys.append(k)
        values.append(v)
        if done:
            return b"".join(keys), b"".join(values)
        cursor = cursor_out


def readers(m):
    """name -> a function reading the whole map ``m`` once, returning how many elements."""
    def unpacked():
        keys, values = raw_batches(m.fd, 8)
        decoded = (struct.unpack(f"<{len(keys) // 4}I", keys),
                   struct.unpack(f"<{len(values) // 8}Q", values))
        return len(decoded[0])

    return {
        "pybpf Map.lookup_batch() -> list of (int, int)": lambda: len(m.lookup_batch()),
        "of which: the bpf() calls alone (bytes)": lambda: len(raw_batches(m.fd, 8)[0]) // 4,
        "of which: bpf() calls + struct.unpack (no tuples)": unpacked,
        "pybpf list(Map.items()) (key by key)": lambda: len(list(m.items())),
    }


def c_times(c_reader, map_id, n, expected_sum, runs):
    """Milliseconds per run of the C reader (timed inside it); checks what it read."""
    out = subprocess.run([str(c_reader), str(map_id), str(runs), str(DEFAULT_CHUNK)],
                         check=True, capture_output=True, text=True).stdout.split("\n")
    times = []
    for line in filter(None, out):
        ms, count, total = line.split()
        if (int(count), int(total)) != (n, expected_sum):
            raise SystemExit(f"C reader read {count} elements summing to {total}, expected "
                             f"{n} summing to {expected_sum}")
        times.append(float(ms) / 1000)
    return times


def bench(sizes, runs):
    """Table rows for every size and reader, and the notes to print under the table."""
    rows, notes = [], []
    bpftool = shutil.which("bpftool")
    with tempfile.TemporaryDirectory() as work:
        c_reader, why = build_c_reader(work)
        if why:
            notes.append(why)
        if not bpftool:
            notes.append("no bpftool row: bpftool is not installed")
        for n in sizes:
            with Map.create(MapType.HASH, 4, 8, n, name="bench", key_type="<I",
                            value_type="<Q") as m:
                m.update_batch((k, k * k) for k in range(n))
                expected_sum = sum(k * k for k in range(n))
                results = []
                for name, read in readers(m).items():
                    times, count = timed_runs(read, runs)
                    assert count == n, f"{name} read {count} of {n} elements"
                    results.append((name, times))
                if c_reader:
                    results.append(("C: libbpf bpf_map_lookup_batch() (in-process time)",
                                    c_times(c_reader, m.id, n, expected_sum, runs)))
                if bpftool:
                    dump = [bpftool, "map", "dump", "id", str(m.id), "-j"]
                    times, _ = timed_runs(lambda dump=dump: subprocess.run(
                        dump, check=True, stdout=subprocess.DEVNULL), runs)
                    results.append(("bpftool map dump -j (process included)", times))
                base = median(results[0][1])
                for name, times in results:
                    rows.append([f"{n:,}", name, len(times), f"{median(times) * 1000:.1f}",
                                 f"{min(times) * 1000:.1f}", f"{median(times) / base:.2f}"])
    return rows, notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rows, notes = bench(args.sizes, args.runs)
    print("### Maps: reading every element of a hash map (`bench/bench_maps.py`)\n")
    print("A full `HASH` map, u32 keys and u64 values decoded to ints, read whole by each "
          f"reader {args.runs} times in one run. `x lookup_batch`: the median over pybpf "
          "`lookup_batch()`'s median for the same map. The rows \"of which\" are parts of "
          "`lookup_batch()`'s work done alone.\n")
    print(table(["entries:", "reader", "runs:", "median ms:", "best ms:", "x lookup_batch:"],
                rows))
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
