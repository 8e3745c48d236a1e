"""Assembler throughput: a 100k-instruction program, text to bytes and back, beside LLVM.

    python3 bench/bench_asm.py [--runs 5]

The same program goes through pybpf and through LLVM in one run: its text (llvm-objdump
syntax) is assembled by ``pybpf.asm.parse`` + ``assemble`` and by ``llvm-mc -filetype=obj``;
its bytes are disassembled by ``decode_all`` + ``disassemble`` and by ``llvm-objdump -d``.
The LLVM times include starting the tool (a few ms); pybpf runs inside this interpreter. Both
sides must agree: the same bytes, the same instruction text.
"""

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import median, table, timed_runs

from elftools.elf.elffile import ELFFile  # noqa: E402 - after common puts the tree on the path

from pybpf.asm import DW, R0, R1, R2, R10, W, Builder, assemble, decode_all, parse, resolve
from pybpf.disasm import disassemble

N = 100_000


def build():
    """A program of N instructions mixing ALU, memory, jumps, calls and 64-bit loads."""
    b = Builder()
    while len(b.instructions) < N - 1:
        b.mov(R1, 1)
        b.add(R1, R2)
        b.stx(DW, R10, -8, R1)
        b.ldx(W, R0, R10, -8)
        b.jeq(R1, 0, 2)
        b.lddw(R2, 1 << 40)
        b.call("ktime_get_ns")
        b.lsh32(R0, 3)
    b.exit()
    return b.instructions


def text_of(insns):
    """The program as llvm-mc reads it: one instruction per line, no addresses or bytes."""
    return "".join(line.split("\t")[-1] + "\n"
                   for line in disassemble(insns, annotate=False).splitlines())


def text_section(path):
    with open(path, "rb") as stream:
        return ELFFile(stream).get_section_by_name(".text").data()


def objdump_text(out):
    """The instruction texts of ``llvm-objdump -d`` output."""
    return [re.sub(r" <[^<>]*>$", "", m) for m in re.findall(r"^\s+\d+:\t[^\t]*\t(.*)$", out,
                                                             re.M)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = args.runs
    insns = resolve(build())
    source = text_of(insns)
    n = len(insns)
    rows, checks = [], []

    def row(step, tool, times, peer=None):
        rows.append([step, tool, runs, f"{median(times):.3f}", f"{n / median(times):,.0f}",
                     f"{median(times) / median(peer):.2f}" if peer else "1.00"])

    build_times, _ = timed_runs(lambda: assemble(build()), runs)
    parse_times, data = timed_runs(lambda: assemble(parse(source)), runs)
    disasm_times, listing = timed_runs(lambda: disassemble(decode_all(data), annotate=False),
                                       runs)
    llvm_mc, objdump = shutil.which("llvm-mc"), shutil.which("llvm-objdump")
    with tempfile.TemporaryDirectory() as work:
        src, obj = Path(work) / "prog.s", Path(work) / "prog.o"
        src.write_text(source)
        mc_times = objdump_times = None
        if llvm_mc and objdump:
            mc_times, _ = timed_runs(lambda: subprocess.run(
                [llvm_mc, "-triple", "bpfel", "-filetype=obj", "-o", str(obj), str(src)],
                check=True), runs)
            objdump_times, out = timed_runs(lambda: subprocess.run(
                [objdump, "-d", str(obj)], check=True, capture_output=True, text=True).stdout,
                runs)
            same_bytes = text_section(obj) == data
            mine = [line.split("\t")[-1] for line in listing.splitlines()]
            same_text = objdump_text(out) == mine
            checks.append(f"pybpf's bytes {'equal' if same_bytes else 'DIFFER FROM'} "
                          f"llvm-mc's .text ({len(data):,} bytes); its listing "
                          f"{'equals' if same_text else 'DIFFERS FROM'} llvm-objdump -d's "
                          f"({len(mine):,} instructions).")
    row("text -> bytes", "pybpf parse + assemble", parse_times, mc_times)
    if mc_times:
        row("text -> bytes", "llvm-mc -filetype=obj (peer)", mc_times)
    row("DSL calls -> bytes", "pybpf Builder + assemble", build_times, mc_times)
    row("bytes -> text", "pybpf decode_all + disassemble", disasm_times, objdump_times)
    if objdump_times:
        row("bytes -> text", "llvm-objdump -d (peer)", objdump_times)
    print("### Assembler throughput (`bench/bench_asm.py`)\n")
    print(f"A program of {n:,} instructions (ALU, memory, jumps, calls, 64-bit loads), its text "
          f"and bytes handled by pybpf and by LLVM 14 in the same run; median of {runs} runs "
          f"each. `x peer`: the median time over the peer's (LLVM's times include starting "
          f"the tool; pybpf runs inside the interpreter).\n")
    print(table(["step", "tool", "runs:", "median s:", "instructions/s:", "x peer:"], rows))
    print()
    print(" ".join(checks) if checks else "llvm-mc or llvm-objdump missing: no peer measured.")


if __name__ == "__main__":
    main()
