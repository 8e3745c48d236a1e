"""The :class:`Instruction` value type and its one encoder and one decoder.

An instruction is five numbers (opcode, dst, src, off, imm) plus metadata that does not take
part in equality: the labels defined at it, the label or map name it refers to (``ref``) and a
comment shown above it in listings. ``validate`` checks the numbers against the opcode tables
of :mod:`pybpf.asm.opcodes`; the builder, the text parser and the decoder all call it, so an
instruction they make is a valid one. The one exception is :func:`scan`, the disassembler's
walk over bytes, which decodes what the kernel would refuse too and says what is wrong.
"""

from __future__ import annotations

import functools
import struct
from collections import namedtuple
from dataclasses import dataclass, field

from pybpf.asm import opcodes as oc
from pybpf.errors import AssemblerError, DecodeError
from pybpf.limits import INSNS_LIMIT, MAX_INSN_BYTES

SLOT = struct.Struct("<BBhi")  # opcode, src<<4 | dst, off, imm
SLOT_SIZE = SLOT.size
_UNSIGNED_IMM = struct.Struct("<BBhI")  # the same slot with an unsigned imm, for ld_imm64


class Register(int):
    """A register number, kept apart from plain ints: ``add(R1, R2)`` is not ``add(R1, 2)``."""

    def __repr__(self):
        return f"R{int(self)}"


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = (Register(i) for i in range(11))
RFP = R10  # the read-only frame pointer
B, H, W, DW = 1, 2, 4, 8  # access sizes in bytes


@dataclass
class Instruction:
    """One eBPF instruction: the five encoded fields plus metadata excluded from ``==``.

    ``imm`` is signed 32-bit, except for the 64-bit immediate load where it holds the whole
    64-bit value as unsigned. ``ref`` names the label a jump, call or ld_func targets, or the
    map a map load refers to; it must be resolved (:func:`pybpf.asm.resolve`) before encoding.
    ``core`` is the CO-RE relocation of an instruction whose offset or immediate comes from the
    kernel's types (a :class:`pybpf.btf.CoreRelo`), applied when the program is loaded.
    """

    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    labels: tuple = field(default=(), compare=False)
    ref: str | None = field(default=None, compare=False)  # (annotations are not evaluated)
    comment: str | None = field(default=None, compare=False)
    core: object = field(default=None, compare=False)

    @property
    def slots(self):
        """Number of 8-byte slots: 2 for the 64-bit immediate load, else 1."""
        return 2 if self.opcode == oc.LD_IMM64 else 1

    @property
    def op(self):
        """The :class:`~pybpf.asm.opcodes.Op` this instruction is (None if invalid)."""
        return oc.lookup(self.opcode, self.src, self.off, self.imm)

    def encode(self):
        """The instruction's 8 (or 16) bytes, little endian."""
        if self.ref is not None:
            raise AssemblerError(
                f"unresolved reference to {self.ref!r}: link the program with "
                "pybpf.asm.resolve(insns, maps) before encoding")
        regs = self.src << 4 | self.dst
        try:
            if self.opcode == oc.LD_IMM64:
                return (_UNSIGNED_IMM.pack(self.opcode, regs, self.off, self.imm & 0xFFFFFFFF)
                        + _UNSIGNED_IMM.pack(0, 0, 0, self.imm >> 32))
            return SLOT.pack(self.opcode, regs, self.off, self.imm)
        except struct.error as exc:
            raise AssemblerError(f"field out of range ({exc}); check the instruction with "
                                 "pybpf.asm.validate") from None

    @classmethod
    def decode(cls, data, offset=0):
        """The instruction starting at byte ``offset`` of ``data``; raises DecodeError unless
        it is valid (:func:`scan` shows invalid ones too)."""
        insn, _size, problem = _decode_at(data, offset)
        if problem:
            raise DecodeError(f"{problem} (bytes {data[offset:offset + 8].hex(' ')})", offset)
        return insn


def _decode_at(data, offset):
    """(instruction, size in bytes, problem) of the bytes at ``offset``; the instruction is
    None where the bytes name no operation (:func:`~pybpf.asm.opcodes.shown_as`) or are too
    few for one, and then ``size`` is how far llvm-objdump moves on: 8, or 1 when too few."""
    left = len(data) - offset
    if left < SLOT_SIZE:
        return None, 1, f"{left} bytes left, an instruction needs 8"
    opcode, regs, off, imm = SLOT.unpack_from(data, offset)
    size, problem = SLOT_SIZE, None
    if opcode == oc.LD_IMM64:
        if left < 2 * SLOT_SIZE:
            return None, 1, "the 64-bit immediate load needs a second 8-byte slot"
        zero, zero_regs, zero_off, high = _UNSIGNED_IMM.unpack_from(data, offset + 8)
        if zero or zero_regs or zero_off:
            problem = ("the second slot of a 64-bit immediate load must have zero opcode, "
                       "registers and offset")
        imm, size = (high << 32) | (imm & 0xFFFFFFFF), 2 * SLOT_SIZE
    insn = Instruction(opcode, regs & 0x0F, regs >> 4, off, imm)
    problem = problem or check(insn)
    if problem and oc.shown_as(opcode, insn.src, off, imm) is None:
        return None, SLOT_SIZE, problem
    return insn, size, problem


Decoded = namedtuple("Decoded", "offset size insn problem")
Decoded.__doc__ = """One step of :func:`scan`: ``size`` bytes at ``offset``, decoded to ``insn``
(None: bytes that encode no instruction), and what the kernel would refuse in them (None if
nothing)."""


def scan(data):
    """Every instruction in ``data``, valid or not, walked as llvm-objdump walks bytes.

    Yields :class:`Decoded` steps. Bytes that name an operation decode to it whatever their
    other fields hold (a write to r10, a shift by 99), with the problem stated; bytes that
    name none are 8 unknown bytes; fewer than 8 bytes left (or than 16 for a 64-bit load) are
    unknown one byte at a time. Decoding always goes on after them.
    """
    offset, end = 0, len(data)
    while offset < end:
        insn, size, problem = _decode_at(data, offset)
        yield Decoded(offset, size, insn, problem)
        offset += size


def decode_all(data):
    """Every instruction in ``data`` (a multiple of 8 bytes), in order; raises DecodeError at
    the first invalid one."""
    if len(data) % SLOT_SIZE:
        raise DecodeError(f"{len(data)} bytes is not a whole number of 8-byte instructions")
    if len(data) > MAX_INSN_BYTES:
        raise DecodeError(f"{len(data):,} bytes of instructions are more than {INSNS_LIMIT}")
    insns, offset, decode = [], 0, Instruction.decode
    while offset < len(data):
        insn = decode(data, offset)
        insns.append(insn)
        offset += 16 if insn.opcode == oc.LD_IMM64 else 8
    return insns


def check(insn):
    """None if ``insn`` is a valid instruction, else a sentence saying what is wrong."""
    values = (insn.dst, insn.src, insn.off, insn.imm)
    for name, value in zip(("opcode", "dst", "src", "off", "imm"), (insn.opcode, *values)):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name} must be an int, not {shown(value)}"
    op = insn.op
    if op is None:
        return _why_no_op(insn)
    for name, rule, value in zip(("dst", "src", "off", "imm"), _rules_of(op), values):
        problem = rule(value, op, insn)
        if problem:
            return f"{name} {problem}"
    return None


@functools.lru_cache(maxsize=None)
def _rules_of(op):
    """The check functions of ``op``'s four fields (computed once per operation)."""
    return tuple(_RULES[rule] for rule in oc.field_rules(op))


def shown(value):
    """``repr(value)`` for an error message; an int longer than 128 bits (too long to read,
    and Python 3.11+ refuses str() of more than 4300 digits) as its first hex digits and its
    size in bits."""
    if isinstance(value, int) and value.bit_length() > 128:
        sign, digits = ("-", f"{-value:x}") if value < 0 else ("", f"{value:x}")
        return f"{sign}0x{digits[:16]}... ({value.bit_length()} bits)"
    return repr(value)


def validate(insn):
    """Raise AssemblerError (without position) unless ``insn`` is valid."""
    problem = check(insn)
    if problem:
        raise AssemblerError(problem)


def _why_no_op(insn):
    """Explain an opcode (or discriminator) that names no operation."""
    opcode = insn.opcode
    cls = oc.CLASS_NAMES[opcode & 0x07]
    if opcode == oc.CALLX:
        return "callx (opcode 0x8d, call through a register) is not part of Linux eBPF"
    entry = oc.BY_OPCODE.get(opcode)
    if entry is None:
        return f"opcode {opcode:#04x} (class {cls}) is not an eBPF instruction"
    field_name, choices = entry
    value = getattr(insn, field_name)
    if field_name == "imm":  # atomic operation codes, written in hex like the kernel's
        allowed = ", ".join(f"{v:#x}" for v in sorted(choices))
        given = hex(value & 0xFFFFFFFF)
    else:
        allowed, given = ", ".join(str(v) for v in sorted(choices)), shown(value)
    return f"opcode {opcode:#04x} needs {field_name} in {{{allowed}}}, not {given}"


def _register(value, op, insn, writable=False):
    top = 9 if writable else 10
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        if writable and value == 10:
            return "is r10, the read-only frame pointer; it cannot be written"
        return f"must be a register r0-r{top}, not {shown(value)}"
    return None


def _signed(bits):
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def rule(value, op, insn):
        if not low <= value <= high:
            return f"{shown(value)} does not fit in {bits} signed bits ({low}..{high})"
        return None
    return rule


def _shift(value, op, insn):
    top = 63 if insn.opcode & 0x07 == oc.ALU64 else 31
    if not 0 <= value <= top:
        return f"shift count {shown(value)} is out of range 0..{top}"
    return None


def _width(value, op, insn):
    if value not in (16, 32, 64):
        return f"byte swap width must be 16, 32 or 64, not {shown(value)}"
    return None


def _u64(value, op, insn):
    if not 0 <= value < 1 << 64:
        return f"{shown(value)} is not a 64-bit value stored unsigned (0..2**64-1)"
    return None


def _zero(value, op, insn):
    return None if value == 0 else f"must be 0 for {op.name}, not {shown(value)}"


_RULES = {
    "reg": _register,
    "wreg": lambda value, op, insn: _register(value, op, insn, writable=True),
    "zero": _zero,
    "key": lambda value, op, insn: None,
    "s16": _signed(16),
    "s32": _signed(32),
    "shift": _shift,
    "width": _width,
    "u64": _u64,
}
