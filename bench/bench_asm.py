"""Assembler throughput: build + encode, and decode + disassemble, a 100k-instruction program.

    python bench/bench_asm.py

The peer in the same run is the raw ``struct`` pack/unpack of the same slots, the floor any
Python encoder sits on.
"""

import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from pybpf.asm import DW, R0, R1, R2, R10, W, Builder, assemble, decode_all  # noqa: E402
from pybpf.disasm import disassemble  # noqa: E402

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


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main():
    insns, t_build = timed(build)
    data, t_encode = timed(assemble, insns)
    decoded, t_decode = timed(decode_all, data)
    _, t_disasm = timed(disassemble, decoded)
    slot = struct.Struct("<BBhi")
    raw = [slot.unpack_from(data, k) for k in range(0, len(data), 8)]
    _, t_pack = timed(lambda: b"".join(slot.pack(*r) for r in raw))
    _, t_unpack = timed(lambda: list(slot.iter_unpack(data)))
    n = len(insns)
    rows = [
        ("build (Builder calls)", t_build),
        ("encode (assemble)", t_encode),
        ("build + encode", t_build + t_encode),
        ("decode (decode_all)", t_decode),
        ("disassemble (text)", t_disasm),
        ("decode + disassemble", t_decode + t_disasm),
        ("peer: struct pack only", t_pack),
        ("peer: struct unpack only", t_unpack),
    ]
    print(f"{n} instructions ({len(data)} bytes)")
    print(f"{'step':<26}{'seconds':>10}{'insns/s':>14}")
    for name, seconds in rows:
        print(f"{name:<26}{seconds:>10.3f}{n / seconds:>14,.0f}")


if __name__ == "__main__":
    main()
