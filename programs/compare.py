"""The DSL program beside clang's build of bpf/program.c, instruction by instruction.

A teaching view of what the compiler does: both programs are disassembled, aligned (jump
offsets set aside, since the two lay out their blocks differently) and printed side by side:

    =  the same instruction          |  different instructions at the same place
    <  only in the DSL program       >  only in clang's
"""

import difflib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pybpf.asm import format_insn, resolve
from pybpf.asm.link import is_map_load
from pybpf.errors import BPFError

REFERENCE_C = Path(__file__).resolve().parent.parent / "bpf" / "program.c"
COLUMN = 46
_OFFSET = re.compile(r"goto [+-]\d+")


class CompareError(BPFError):
    """The C side cannot be had: no clang to build it, or it has no such program."""


def build_reference(workdir):
    """Compile bpf/program.c with clang -O2 -g -target bpf; the object's path."""
    clang = shutil.which("clang")
    if clang is None:
        raise CompareError(
            "--compare-c needs clang to build bpf/program.c (apt-get install clang), "
            "or an object built elsewhere: --compare-c program.o"
        )
    if not REFERENCE_C.is_file():
        raise CompareError(
            f"--compare-c builds bpf/program.c, which an installed package does not carry "
            f"(no {REFERENCE_C}): run from a checkout, or pass an object: --compare-c program.o"
        )
    obj = Path(workdir) / "program.o"
    result = subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", "-c", str(REFERENCE_C), "-o", str(obj)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise CompareError(f"clang could not build {REFERENCE_C}:\n{result.stderr.strip()}")
    return obj


def listing(insns):
    """One text per instruction: llvm-objdump's, with map loads by name (``r1 = exec_count ll``)."""
    maps = {insn.ref: 0 for insn in insns if insn.ref and is_map_load(insn)}
    texts = []
    for original, insn in zip(insns, resolve(insns, maps)):
        if original.ref in maps and is_map_load(original):
            texts.append(f"r{insn.dst} = {original.ref} ll")
        else:
            texts.append(format_insn(insn))
    return texts


def side_by_side(name, dsl_insns, c_insns):
    """The lines of the comparison of one program, ending with a one-line summary."""
    left, right = listing(dsl_insns), listing(c_insns)
    matcher = difflib.SequenceMatcher(
        a=[_OFFSET.sub("goto", t) for t in left], b=[_OFFSET.sub("goto", t) for t in right],
        autojunk=False,
    )
    lines = [f"{name}: DSL (programs/execve_bpf.py) | clang -O2 (bpf/program.c)",
             f"{'':5}{'DSL':<{COLUMN}}   {'C'}"]
    same = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            a = left[i1 + k] if i1 + k < i2 else ""
            b = right[j1 + k] if j1 + k < j2 else ""
            mark = {"equal": "=", "replace": "|", "delete": "<", "insert": ">"}[tag]
            if tag == "replace" and not a:
                mark = ">"
            elif tag == "replace" and not b:
                mark = "<"
            same += mark == "="
            lines.append(f"{i1 + k if a else '':>4} {a:<{COLUMN}} {mark} {b}")
    lines.append(
        f"{name}: {same} instructions alike; DSL {len(left)} instructions, "
        f"clang {len(right)}; {len(left) - same} DSL-only or different, "
        f"{len(right) - same} clang-only or different"
    )
    return lines


def compare(dsl_spec, object_path=None):
    """The side-by-side lines for every program of ``dsl_spec`` and of the C object."""
    from pybpf import elf

    with tempfile.TemporaryDirectory() as workdir:
        c_spec = elf.load_spec(str(object_path or build_reference(workdir)))
    lines = []
    for name, program in dsl_spec.programs.items():
        if name not in c_spec.programs:
            raise CompareError(f"the C object has no program {name!r} "
                               f"(it has: {', '.join(sorted(c_spec.programs))})")
        lines += side_by_side(name, program.insns, c_spec.programs[name].insns)
        lines.append("")
    return lines
