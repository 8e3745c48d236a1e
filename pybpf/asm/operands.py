"""Operands: the checks that turn a caller's value into an instruction field.

An immediate, a register number, a helper given by name or id, a pair of address spaces:
each function takes what a person wrote (a DSL argument, a number read from assembly text)
and returns the field value, or raises AssemblerError saying what was expected. The DSL
(:mod:`pybpf.asm.builder`) and the text parser (:mod:`pybpf.asm.text`) both use them, so an
operand means the same in both.
"""

from __future__ import annotations

import operator

from pybpf import helpers
from pybpf.asm.insn import Register, shown
from pybpf.errors import AssemblerError


def integer(value, expected):
    """``value`` as a plain int: an int, or any int-like object (an IntEnum member, anything
    with ``__index__``), converted before any range check so that the checks and the encoder
    only ever see a plain int. A bool is refused (``True`` as an operand is a slip, not 1),
    as is what is not an integer at all (a float, a string): AssemblerError saying
    ``expected`` and what was given."""
    number = int_like(value)
    if number is None:
        raise AssemblerError(f"expected {expected}, got {shown(value)}")
    return number


def int_like(value):
    """``value`` as a plain int when it is an int or int-like (``__index__``) but not a
    bool, else None: for callers that word their own error."""
    if isinstance(value, bool):
        return None
    try:
        return int(operator.index(value))  # int(): Python 3.9 returns int subclasses
    except TypeError:
        return None


def _immediate(value, bits, accepted):
    """``value`` as an int in -2**(bits-1)..2**bits-1 (signed or unsigned): AssemblerError
    for a register, a non-integer, or a number out of range (``accepted`` says the range)."""
    if isinstance(value, Register):
        raise AssemblerError(f"expected an integer immediate, got {shown(value)}")
    value = integer(value, "an integer immediate")
    if not -(1 << (bits - 1)) <= value < 1 << bits:
        raise AssemblerError(f"immediate {shown(value)} does not fit in {bits} bits {accepted}")
    return value


def imm32(value):
    """``value`` as a signed 32-bit immediate; accepts -2**31..2**32-1 (unsigned wraps)."""
    value = _immediate(value, 32, "(-2147483648..4294967295); load 64-bit constants with lddw")
    return value - (1 << 32) if value >= 1 << 31 else value


def imm64(value):
    """``value`` as the unsigned 64-bit immediate of lddw; accepts -2**63..2**64-1."""
    return _immediate(value, 64, "(-2**63..2**64-1)") & 0xFFFFFFFFFFFFFFFF


def address_spaces(dst_as, src_as):
    """The imm of addr_space_cast: ``dst_as << 16 | src_as``, each an int 0..65535."""
    spaces = [integer(value, "an address space, an int 0..65535") for value in (dst_as, src_as)]
    for value in spaces:
        if not 0 <= value <= 0xFFFF:
            raise AssemblerError(f"an address space is an int 0..65535, not {shown(value)}")
    return imm32(spaces[0] << 16 | spaces[1])


def offset(value):
    """``value`` as the offset of a load or store, a plain int (its range is the
    instruction's to check: 16 signed bits)."""
    return integer(value, "an int offset")


def register(value):
    """``value`` as a register number; Register or int 0..10."""
    number = integer(value, "a register R0-R10")
    if not 0 <= number <= 10:
        raise AssemblerError(f"expected a register R0-R10, got {shown(value)}")
    return number


def helper_id(helper):
    """The id of a helper given by name (``map_lookup_elem`` or ``bpf_...``) or number."""
    if not isinstance(helper, str):
        number = integer(helper, "a helper name or an int id")
        if not 0 <= number < 1 << 31:
            raise AssemblerError(f"helper id {shown(number)} is out of range 0..2**31-1")
        return number
    name = helper
    if name.startswith("bpf_"):
        name = name[4:]
    if name in helpers.HELPERS:
        return helpers.HELPERS[name]
    import difflib  # only an unknown helper name needs suggestions

    close = difflib.get_close_matches(name, helpers.HELPERS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise AssemblerError(f"unknown helper {helper!r}{hint}")
