"""Fuzz the text assembler: parse arbitrary and almost-valid assembly text.

Every case must parse or raise AssemblerError (the parser's one documented error). Where it
parses, each instruction must survive the round trip through its text (format_insn, then
parse again: the same instruction), and the program must link, encode and decode back to the
same instructions. Inputs: arbitrary text; a valid instruction's text with one word replaced
(by an almost-valid word, a 4000-digit number, or arbitrary text); programs of several such
lines with labels, comments and valid instructions mixed in.

    python bench/fuzz_asm.py [--cases 20000] [--seed S]
"""

import os
import sys

from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "tests")]

from support import almost_instructions, instructions  # noqa: E402
from fuzzing import Failure, run  # noqa: E402
from pybpf.asm import decode_all, parse  # noqa: E402
from pybpf.asm.link import is_map_load, resolve  # noqa: E402
from pybpf.asm.text import format_insn  # noqa: E402
from pybpf.errors import AssemblerError  # noqa: E402

LINE = (almost_instructions() | instructions().map(format_insn) | st.text(max_size=40)
        | st.sampled_from(["out:", "loop: exit", "goto out", "if r1 == 0 goto loop", "; note",
                           "r1 = counts ll", "call sub", "sub: r0 = 0", "exit"]))
TEXT = (st.text() | almost_instructions() | instructions().map(format_insn)
        | st.lists(LINE, max_size=12).map("\n".join))


def check(text, args):
    insns = parse(text)
    for insn in insns:
        again = parse(format_insn(insn))[0]
        if (again, again.ref) != (insn, insn.ref):
            raise Failure(f"{format_insn(insn)!r} parses back as {again!r}")
    maps = {insn.ref: 3 for insn in insns if is_map_load(insn) and insn.ref is not None}
    linked = resolve(insns, maps)
    data = b"".join(insn.encode() for insn in linked)
    if decode_all(data) != linked:
        raise Failure("the linked program does not decode back to itself")
    return "parsed" if insns else "parsed (no instructions)"


if __name__ == "__main__":
    sys.exit(run("Text assembler (pybpf.asm.parse)", TEXT, check, AssemblerError))
