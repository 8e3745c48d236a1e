"""Reading every element of a hash map: batch lookup vs key by key vs ``bpftool map dump``.

The map has u32 keys and u64 values decoded to ints (``Int32ul``/``Int64ul``). Each method
runs several times; the table gives the best and the median time in milliseconds and the
ratio of each median to the batch median. Run as root: ``python bench/bench_maps.py``.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from construct import Int32ul, Int64ul  # noqa: E402

from pybpf.abi import MapType  # noqa: E402
from pybpf.maps import Map  # noqa: E402


def timed(fn, repeat):
    """Milliseconds taken by each of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def methods(m, bpftool):
    """The readers to compare, by name; each must return (or print) every element."""
    found = {
        "batch (lookup_batch)": m.lookup_batch,
        "key by key (items)": lambda: list(m.items()),
    }
    if bpftool:
        map_id = m.id
        found["bpftool map dump -j"] = lambda: subprocess.run(
            [bpftool, "map", "dump", "id", str(map_id), "-j"], check=True,
            stdout=subprocess.DEVNULL)
    return found


def bench(sizes, repeat):
    """Rows (entries, method, best ms, median ms, median / batch median) for each size."""
    bpftool = shutil.which("bpftool")
    rows = []
    for n in sizes:
        with Map.create(MapType.HASH, 4, 8, n, name="bench", key_type=Int32ul,
                        value_type=Int64ul) as m:
            m.update_batch((k, k * k) for k in range(n))
            assert len(m.lookup_batch()) == n
            base = None
            for name, fn in methods(m, bpftool).items():
                times = timed(fn, repeat)
                median = statistics.median(times)
                base = base or median
                rows.append((n, name, min(times), median, median / base))
    return rows


def table(rows):
    """The rows as a Markdown table."""
    lines = ["| entries | method | best ms | median ms | x batch (median) |",
             "|--------:|--------|--------:|----------:|-----------------:|"]
    for n, name, best, median, ratio in rows:
        lines.append(f"| {n:,} | {name} | {best:.1f} | {median:.1f} | {ratio:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(table(bench(args.sizes, args.repeat)))


if __name__ == "__main__":
    main()
