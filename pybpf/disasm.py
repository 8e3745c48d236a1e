"""Disassembly: instructions or raw bytes to an llvm-objdump style listing.

Each instruction is one line, ``{slot:>8}:\\t{hex bytes}\\t{text}``, where ``slot`` counts
8-byte slots (as the verifier does) and the text is :func:`format_insn`'s, identical to plain
``llvm-objdump -d`` (LLVM 14). Comments print as ``; text`` lines above their instruction and
helper calls may be annotated with the helper's name (``call 14 ; bpf_get_current_pid_tgid``).

A program that still carries labels (the DSL's output, before :func:`pybpf.asm.resolve`) is
shown as the kernel will see it, yet readable:

- jumps and local calls show the resolved offset, then their label the way llvm-objdump
  shows a symbol: ``if r0 == 0 goto +4 <new_process>``, ``call pc+7 <square>``; the hex
  bytes hold that offset too. A label that cannot be resolved (undefined, or too far for the
  16-bit offset) prints by name, ``goto out``, with 0 in the bytes;
- a label heads its instruction after a blank line as ``<new_process>:``; llvm-objdump
  prints ``0000000000000068 <LBB0_2>:`` for a symbol inside a section, and the byte address
  is dropped here since the slot column of the next line gives it;
- a map load stays ``r1 = exec_count ll``, with fd 0 in the bytes (llvm-objdump shows an
  object's map load as ``r1 = 0 ll`` plus a relocation line naming the map);
- an instruction with a CO-RE relocation shows the local value and what the kernel will
  give instead: ``r1 = *(u64 *)(r6 + 8)  ; CO-RE task_struct.real_parent``.

The listing parses back with :func:`pybpf.asm.parse` (``<label>`` annotations after an
instruction are skipped, its offset is kept): the result resolves to the same program.

A disassembler is how one inspects what is wrong, so it shows every instruction the bytes
encode (:func:`pybpf.asm.insn.scan`), as llvm-objdump does, and marks what the kernel would
refuse: ``r10 += r0 ; invalid: dst is r10, the read-only frame pointer...``. Bytes that
encode no instruction print as ``<unknown>`` with their hex, 8 at a time, or one at a time
where fewer than 8 are left (or fewer than 16 at a 64-bit load), and decoding goes on: the
lines llvm-objdump 14 prints with ``-z`` (without it, it skips runs of zero bytes as
``...``). Where pybpf shows refused bytes differently from LLVM 14, on purpose:

- registers r12-r15, and fields LLVM's decoder insists are zero (exit's, ld_imm64's off),
  and byte swap widths other than 16/32/64: LLVM 14 prints ``<unknown>``, pybpf the
  instruction with what is wrong;
- an atomic operation whose imm names none (0xdb with imm 0x02): LLVM 14 ignores imm's low
  bits and prints an add; pybpf prints ``<unknown>``, as the kernel knows no such operation;
- callx (0x8d, not in Linux) prints as LLVM 14 prints it, the register taken from imm.

The assembler (the DSL, :func:`pybpf.asm.parse`) refuses all of these.
"""

from __future__ import annotations

from dataclasses import replace

from pybpf.asm import opcodes as oc
from pybpf.asm.insn import SLOT_SIZE, scan
from pybpf.asm.link import bind_label, is_map_load, label_slots
from pybpf.asm.text import format_insn
from pybpf.errors import AssemblerError, DecodeError
from pybpf.helpers import HELPER_NAMES
from pybpf.limits import INSNS_LIMIT, MAX_INSN_BYTES

__all__ = ["UNKNOWN", "disassemble", "format_insn"]

UNKNOWN = "<unknown>"  # the text of bytes that encode no instruction, as llvm-objdump prints


def disassemble(insns_or_bytes, annotate=True):
    """The listing of a program given as a list of Instructions or as raw bytes.

    Raw bytes are shown whatever they hold (see the module docstring); a list of
    Instructions is shown as built: the builder, the parser and the decoder made each one
    valid, and checking every one again would double the listing's time.
    """
    if isinstance(insns_or_bytes, (bytes, bytearray, memoryview)):
        return _bytes_listing(bytes(insns_or_bytes), annotate)
    insns = insns_or_bytes
    targets = label_slots(insns)
    lines, slot = [], 0
    for index, insn in enumerate(insns):
        if insn.labels and lines:
            lines.append("")
        lines.extend(f"<{label}>:" for label in insn.labels)
        if insn.comment:
            lines.extend(f"; {line}" for line in insn.comment.splitlines())
        linked, text = _link(insn, index, slot, targets)
        raw = linked.encode().hex(" ")
        lines.append(f"{slot:>8}:\t{raw}\t{text}{_note(insn, None, annotate)}")
        slot += insn.slots
    return "\n".join(lines) + "\n" if lines else ""


def _bytes_listing(data, annotate):
    """Every instruction the bytes encode, as :func:`pybpf.asm.insn.scan` walks them."""
    if len(data) > MAX_INSN_BYTES:
        raise DecodeError(f"{len(data):,} bytes of instructions are more than {INSNS_LIMIT}")
    lines = []
    for offset, size, insn, problem in scan(data):
        raw = data[offset:offset + size].hex(" ")
        text = UNKNOWN if insn is None else format_insn(insn) + _note(insn, problem, annotate)
        lines.append(f"{offset // SLOT_SIZE:>8}:\t{raw}\t{text}")
    return "\n".join(lines) + "\n" if lines else ""


def _link(insn, index, slot, targets):
    """(the instruction as the kernel will see it, its text in the listing)."""
    if insn.ref is None:
        return insn, format_insn(insn)
    if not is_map_load(insn):
        try:
            linked = bind_label(insn, index, slot, targets)
            return linked, f"{format_insn(linked)} <{insn.ref}>"
        except AssemblerError:  # undefined or too far: show the name, 0 in the bytes
            pass
    return replace(insn, ref=None), format_insn(insn)


def _note(insn, problem, annotate):
    """What follows the text: `` ; invalid: <why>`` for an instruction the kernel would
    refuse, ``  ; CO-RE task_struct.real_parent`` after an instruction with a CO-RE
    relocation, `` ; bpf_<name>`` after a helper call when annotating, else nothing."""
    if problem:
        return f" ; invalid: {problem}"
    if insn.core is not None:
        return f"  ; CO-RE {insn.core.describe()}"
    if annotate and insn.opcode == oc.JMP | oc.CALL and insn.src == oc.CALL_HELPER:
        name = HELPER_NAMES.get(insn.imm)
        if name:
            return f" ; bpf_{name}"
    return ""
