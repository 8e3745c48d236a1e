"""Reading the kernel's BTF: pybpf's KernelBTF beside ``bpftool btf dump file vmlinux``.

Rows (each run ``--repeat`` times, in one process, beside bpftool in the same run):

- open: ``KernelBTF.load()``: read /sys/kernel/btf/vmlinux, walk its records once (where
  each type starts); no type decoded.
- open + name index: the same, then a first name lookup, which packs the types' name offsets
  and builds the index of the string table. Target: 60 ms.
- struct + member lookup: ``kernel.struct(name).member(field)`` for a struct not looked up
  before (10 different structs, on an opened instance). Target: under 1 ms each.
- member lookup on a struct already found.
- decode every type: what bpftool's dump does before printing.
- ``bpftool btf dump file vmlinux`` (a process, output discarded): libbpf parses and prints
  every type.

Memory: the Python allocations an opened KernelBTF keeps with its name index (tracemalloc)
and the growth of the process's resident memory (VmRSS) across opening it. Target: 30 MB.
"""

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from pybpf.btf.kernel import KernelBTF  # noqa: E402

HERE = Path(__file__).resolve().parent
VMLINUX = "/sys/kernel/btf/vmlinux"
LOOKUPS = [("task_struct", "real_parent"), ("mm_struct", "arg_start"), ("file", "f_mode"),
           ("sk_buff", "len"), ("inode", "i_ino"), ("sock", "sk_rcvbuf"), ("cred", "uid"),
           ("net_device", "ifindex"), ("super_block", "s_dev"), ("dentry", "d_name")]


def timed(fn, repeat, setup=None):
    """(wall ms, CPU ms) of each of ``repeat`` calls of ``fn`` (``setup()``'s result as its
    argument, prepared outside the timing). CPU time counts this process and the processes
    it waited for; on a shared machine it is the steadier of the two."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup else None
        gc.collect()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu, start = time.process_time(), time.perf_counter()
        fn(arg) if setup else fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        times.append((wall * 1000, cpu * 1000))
    return times


def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


_MEMORY = """
import gc, sys, tracemalloc
sys.path.insert(0, {root!r})
from bench_btf import opened, rss_kb
gc.collect()
before = rss_kb()
kernel = opened()
grown = rss_kb() - before
del kernel
gc.collect()
tracemalloc.start()
kernel = opened()
print(tracemalloc.get_traced_memory()[0], grown)
"""


def memory():
    """(MB kept by an opened KernelBTF with its name index per tracemalloc, MB of resident
    memory opening it added), each measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEMORY.format(root=str(HERE))], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1e6, int(out[1]) / 1e3


def opened():
    """A KernelBTF with its name index built (the first name lookup builds it)."""
    kernel = KernelBTF.load()
    kernel.struct("task_struct")
    return kernel


def bench(repeat):
    """Rows (what, [ms per run])."""
    rows = [("pybpf: open (KernelBTF.load: read, walk the records)",
             timed(KernelBTF.load, repeat)),
            ("pybpf: open + name index (load, then a first name lookup)", timed(opened, repeat))]

    def lookups(kernel):
        for struct, member in LOOKUPS:
            kernel.struct(struct).member(member)
    times = timed(lookups, repeat, opened)
    rows.append((f"pybpf: struct + member lookup, each further one ({len(LOOKUPS)} structs "
                 "not looked up before)", per_lookup(times, len(LOOKUPS))))

    kernel = opened()
    structs = [(kernel.struct(s), m) for s, m in LOOKUPS]

    def member_lookups():
        for struct, member in structs:
            struct.member(member)
    times = timed(member_lookups, repeat)
    rows.append(("pybpf: member lookup on a struct already found",
                 per_lookup(times, len(structs))))

    def decode_all(kernel):
        for type_id in range(1, len(kernel.vmlinux)):
            kernel.vmlinux.type(type_id)
    times = timed(decode_all, max(1, repeat // 3), KernelBTF.load)
    rows.append((f"pybpf: decode every type ({len(kernel.vmlinux) - 1:,})", times))

    bpftool = shutil.which("bpftool")
    if bpftool:
        times = timed(lambda: subprocess.run([bpftool, "btf", "dump", "file", VMLINUX],
                                             check=True, stdout=subprocess.DEVNULL), repeat)
        rows.append(("bpftool btf dump file vmlinux (a process: parse and print all)", times))
    return rows


def per_lookup(times, count):
    return [(wall / count, cpu / count) for wall, cpu in times]


def table(rows, kept, grown, repeat):
    lines = [f"| what | wall ms: best | wall ms: median | CPU ms: median ({repeat} runs) |",
             "|---|---:|---:|---:|"]
    for what, times in rows:
        walls, cpus = [t[0] for t in times], [t[1] for t in times]
        lines.append(f"| {what} | {min(walls):.3f} | {statistics.median(walls):.3f} | "
                     f"{statistics.median(cpus):.3f} |")
    lines.append("")
    lines.append(f"Memory of an opened KernelBTF with its name index: {kept:.1f} MB of Python "
                 f"allocations kept "
                 f"(tracemalloc), resident memory +{grown:.1f} MB (VmRSS).")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    before = os.getloadavg()[0]
    kept, grown = memory()
    rows = bench(args.repeat)
    print(table(rows, kept, grown, args.repeat))
    print(f"Load average (1 min) before and after the run: {before:.2f}, "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs.")


if __name__ == "__main__":
    main()
