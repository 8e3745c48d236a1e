"""Linking: turn symbolic references (labels, map names) into numbers, then into bytes.

Jump and call offsets count 8-byte slots from the instruction after the jump
(``target - here - 1``), so a 64-bit immediate load between them counts twice.
Conditional jumps, ``ja`` and ``may_goto`` keep the offset in the 16-bit ``off`` field;
``gotol``, local calls and ``ld_func`` keep it in the 32-bit ``imm``.
"""

from __future__ import annotations

from dataclasses import replace

from pybpf import abi
from pybpf.asm import opcodes as oc
from pybpf.asm.insn import Instruction
from pybpf.errors import AssemblerError


def _text(insn):
    """An instruction's assembly text for an error message (the text module loads on demand:
    programs that link cleanly never pay for its import)."""
    from pybpf.asm.text import format_insn

    return format_insn(insn)

_MAP_SOURCES = (abi.PSEUDO_MAP_FD, abi.PSEUDO_MAP_VALUE)  # ld_imm64 that name a map


def slot_to_index(insns):
    """For each raw 8-byte slot, the index in ``insns`` of the instruction it belongs to."""
    table = []
    for index, insn in enumerate(insns):
        table.extend([index] * insn.slots)
    return table


def label_slots(insns):
    """Label name -> slot number of the instruction it names; duplicates are an error."""
    slots, slot = {}, 0
    for index, insn in enumerate(insns):
        for name in insn.labels:
            if name in slots:
                raise AssemblerError(f"duplicate label {name!r}", index, _text(insn))
            slots[name] = slot
        slot += insn.slots
    return slots


def resolve(insns, maps=None):
    """Copies of ``insns`` with every label and map reference replaced by its number.

    ``maps`` maps map names to file descriptors (or objects with an ``fd``). Metadata other
    than the reference (labels, comment) is kept.
    """
    for index, insn in enumerate(insns):
        if not isinstance(insn, Instruction):
            raise AssemblerError(f"a program is a list of Instructions (from the Builder, "
                                 f"pybpf.asm.parse or Instruction.decode), not {insn!r}", index)
    targets = label_slots(insns)
    maps = maps or {}
    out, slot = [], 0
    for index, insn in enumerate(insns):
        if insn.ref is not None:
            if is_map_load(insn):
                insn = _bind_map(insn, index, maps)
            else:
                insn = bind_label(insn, index, slot, targets)
        out.append(insn)
        slot += insn.slots
    return out


def assemble(insns, maps=None):
    """The program's bytes: :func:`resolve` then encode every instruction."""
    return b"".join(insn.encode() for insn in resolve(insns, maps))


def is_map_load(insn):
    """True for a 64-bit load whose reference names a map (map fd or map value load)."""
    return insn.opcode == oc.LD_IMM64 and insn.src in _MAP_SOURCES


def _bind_map(insn, index, maps):
    if insn.ref not in maps:
        known = ", ".join(sorted(maps)) or "none given"
        raise AssemblerError(f"unknown map {insn.ref!r} (maps: {known}); pass it in maps=",
                             index, _text(insn))
    fd = getattr(maps[insn.ref], "fd", maps[insn.ref])
    return replace(insn, imm=(insn.imm & ~0xFFFFFFFF) | fd, ref=None)


def bind_label(insn, index, slot, targets):
    """A copy of ``insn`` (at ``index``, starting at ``slot``) with its label turned into the
    distance in slots; ``targets`` is :func:`label_slots`. Raises AssemblerError if it cannot."""
    if insn.ref not in targets:
        raise AssemblerError(f"undefined label {insn.ref!r}", index, _text(insn))
    distance = targets[insn.ref] - slot - 1
    if insn.op.form in oc.OFF_JUMP_FORMS:
        if not -(1 << 15) <= distance < 1 << 15:
            hint = ("use gotol" if insn.op.form == "ja" else
                    "invert the condition and jump over a gotol")
            raise AssemblerError(
                f"jump to {insn.ref!r} is {distance} slots away, more than a 16-bit offset "
                f"holds (-32768..32767); {hint}", index, _text(insn))
        return replace(insn, off=distance, ref=None)
    if insn.opcode == oc.LD_IMM64:
        return replace(insn, imm=distance & 0xFFFFFFFF, ref=None)
    return replace(insn, imm=distance, ref=None)
