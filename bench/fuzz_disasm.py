"""Fuzz the instruction decoder and the disassembler on random bytes and mutated programs.

Every case must:

- scan (pybpf.asm.insn.scan) into steps that cover the bytes exactly, and disassemble
  (pybpf.disasm.disassemble) without any exception;
- for each valid instruction: encode back to its bytes, and parse back from its text to
  the same instruction (a round trip through the assembler);
- decode strictly (decode_all) to the same instructions, or raise DecodeError (its one
  documented error) exactly when some step is invalid or unknown.

Inputs: random bytes, and valid programs (hypothesis draws them from the opcode tables)
with a few bytes overwritten, cut short or with bytes inserted. Then a sample of the inputs
(--oracle N, default 5000) goes to llvm-objdump 14 (-d -z): pybpf's first step on each must
be the line LLVM prints, or one of the differences pybpf/disasm.py documents.

    python bench/fuzz_disasm.py [--cases 20000] [--seed S] [--oracle 5000]
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests")]

from support import instructions  # noqa: E402
from fuzzing import Failure, run  # noqa: E402
from llvm14 import compare_chunks  # noqa: E402
from pybpf.asm import decode_all, parse  # noqa: E402
from pybpf.asm.insn import scan  # noqa: E402
from pybpf.asm.text import format_insn  # noqa: E402
from pybpf.disasm import disassemble  # noqa: E402
from pybpf.errors import DecodeError  # noqa: E402


@st.composite
def mutated_programs(draw):
    """A valid program's bytes with a few bytes overwritten, inserted, or the end cut off."""
    data = bytearray(b"".join(i.encode() for i in draw(st.lists(instructions(), min_size=1,
                                                                   max_size=12))))
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(("overwrite", "overwrite", "insert", "cut")))
        if action == "overwrite":
            data[where] = draw(st.integers(0, 255))
        elif action == "insert":
            data[where:where] = bytes([draw(st.integers(0, 255))])
        elif where:
            del data[where:]
    return bytes(data)


BYTES = st.binary(max_size=96) | mutated_programs()
SAMPLE = []  # the first 16 bytes of inputs, for the comparison with llvm-objdump


def check(data, args):
    steps, offset = list(scan(data)), 0
    for step in steps:
        if step.offset != offset or step.size not in (1, 8, 16):
            raise Failure(f"step at {step.offset} (size {step.size}), expected one at {offset}")
        offset += step.size
        if step.insn is not None and step.problem is None:
            if step.insn.encode() != data[step.offset:offset]:
                raise Failure(f"{format_insn(step.insn)!r} encodes to other bytes")
            if parse(format_insn(step.insn)) != [step.insn]:
                raise Failure(f"{format_insn(step.insn)!r} parses back to another instruction")
    if offset != len(data):
        raise Failure(f"the steps cover {offset} of {len(data)} bytes")
    disassemble(data)
    valid = all(s.insn is not None and s.problem is None for s in steps)
    if len(SAMPLE) < args.oracle and len(data) >= 16:
        SAMPLE.append(data[:16])
    try:
        insns = decode_all(data)
    except DecodeError:
        if valid and len(data) % 8 == 0:
            raise Failure("decode_all refuses bytes whose every step is valid") from None
        raise
    if not valid or insns != [s.insn for s in steps]:
        raise Failure("decode_all and scan disagree")
    return "valid program"


def arguments(parser):
    parser.add_argument("--oracle", type=int, default=5000, metavar="N",
                        help="compare the first instruction of N inputs with llvm-objdump")


def compare_with_llvm(tally, args):
    tools = shutil.which("llvm-mc"), shutil.which("llvm-objdump")
    if not all(tools) or not SAMPLE:
        tally.checks["llvm-objdump comparison skipped (llvm-mc or llvm-objdump missing)"] += 1
        return
    with tempfile.TemporaryDirectory() as directory:
        differences, unexplained, crashes = compare_chunks(SAMPLE, Path(directory), *tools)
    tally.checks["llvm-objdump: the same first line"] = len(SAMPLE) - differences - len(crashes)
    tally.checks["llvm-objdump: a documented difference"] = differences - len(unexplained)
    for chunk in crashes:  # a bug of the oracle, not of pybpf: shown, not failed
        tally.checks[f"llvm-objdump crashed (SIGSEGV) on {chunk.hex()}"] += 1
    for line in unexplained:
        try:
            raise Failure(f"differs from llvm-objdump: {line}")
        except Failure as exc:
            tally.problem("FAILED", exc, bytes.fromhex(line.split(":")[0]))


if __name__ == "__main__":
    sys.exit(run("Instruction decoder and disassembler (scan, decode_all, disassemble)", BYTES,
                 check, DecodeError, arguments=arguments, finish=compare_with_llvm))
