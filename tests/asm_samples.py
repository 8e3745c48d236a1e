"""Instruction samples shared by the asm tests: every operation with several operand values."""

from pybpf.asm import opcodes as oc
from pybpf.asm.insn import Instruction

# Sample values for each field rule (the hypothesis tests draw from the full ranges).
_VALUES = {
    "reg": (0, 1, 10),
    "wreg": (0, 3, 9),
    "zero": (0,),
    "s16": (0, 2, -4, 32767, -32768),
    "s32": (0, 16, -1, 2147483647, -2147483648),
    "shift": (0, 31),
    "width": (16, 32, 64),
    "u64": (0, 1, 2**64 - 1, 2**63, 0x123456789),
}


def samples(op):
    """A few valid instructions of operation ``op``, varying one field at a time."""
    rules = oc.field_rules(op)
    base = []
    for rule in rules:
        base.append(op.value if rule == "key" else _VALUES[rule][0])
    out = [Instruction(op.opcode, *base)]
    for position, rule in enumerate(rules):
        if rule == "key":
            continue
        values = _VALUES[rule]
        if rule == "shift" and op.opcode & 0x07 == oc.ALU64:
            values = (0, 63)
        for value in values[1:]:
            fields = list(base)
            fields[position] = value
            out.append(Instruction(op.opcode, *fields))
    return out


def all_samples():
    """Samples of every operation in the opcode tables."""
    return [insn for op in oc.OPS for insn in samples(op)]
