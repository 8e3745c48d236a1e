"""Disassembly: instructions or raw bytes to an llvm-objdump style listing.

Each instruction is one line, ``{slot:>8}:\\t{hex bytes}\\t{text}``, where ``slot`` counts
8-byte slots (as the verifier does) and the text is :func:`format_insn`'s, identical to
``llvm-objdump -d --mattr=+alu32`` (LLVM 14). Labels print as ``name:`` lines, comments as
``; text`` lines above their instruction, and helper calls may be annotated with the
helper's name after the text (``call 14 ; bpf_get_current_pid_tgid``). The listing parses
back with :func:`pybpf.asm.parse`.
"""

from __future__ import annotations

from dataclasses import replace

from pybpf.asm import opcodes as oc
from pybpf.asm.insn import decode_all
from pybpf.asm.text import format_insn
from pybpf.helpers import HELPER_NAMES

__all__ = ["disassemble", "format_insn"]


def disassemble(insns_or_bytes, annotate=True):
    """The listing of a program given as a list of Instructions or as raw bytes."""
    if isinstance(insns_or_bytes, (bytes, bytearray, memoryview)):
        insns = decode_all(bytes(insns_or_bytes))
    else:
        insns = insns_or_bytes
    lines, slot = [], 0
    for insn in insns:
        lines.extend(f"{label}:" for label in insn.labels)
        if insn.comment:
            lines.extend(f"; {line}" for line in insn.comment.splitlines())
        lines.append(f"{slot:>8}:\t{_hex(insn)}\t{format_insn(insn)}{_note(insn, annotate)}")
        slot += insn.slots
    return "\n".join(lines) + "\n" if lines else ""


def _hex(insn):
    """The instruction's bytes as hex pairs; an unresolved reference shows as zeros."""
    data = insn.encode() if insn.ref is None else replace(insn, ref=None).encode()
    return data.hex(" ")


def _note(insn, annotate):
    """`` ; bpf_name`` after a helper call when annotating, else nothing."""
    if annotate and insn.opcode == oc.JMP | oc.CALL and insn.src == oc.CALL_HELPER:
        name = HELPER_NAMES.get(insn.imm)
        if name:
            return f" ; bpf_{name}"
    return ""
