"""Operands: the checks that turn a caller's value into an instruction field.

An immediate, a register number, a helper given by name or id, a pair of address spaces:
each function takes what a person wrote (a DSL argument, a number read from assembly text)
and returns the field value, or raises AssemblerError saying what was expected. The DSL
(:mod:`pybpf.asm.builder`) and the text parser (:mod:`pybpf.asm.text`) both use them, so an
operand means the same in both.
"""

from __future__ import annotations

from pybpf import helpers
from pybpf.asm.insn import Register, shown
from pybpf.errors import AssemblerError


def imm32(value):
    """``value`` as a signed 32-bit immediate; accepts -2**31..2**32-1 (unsigned wraps)."""
    if isinstance(value, Register) or not isinstance(value, int) or isinstance(value, bool):
        raise AssemblerError(f"expected an integer immediate, got {shown(value)}")
    if not -(1 << 31) <= value < 1 << 32:
        raise AssemblerError(f"immediate {shown(value)} does not fit in 32 bits "
                             "(-2147483648..4294967295); load 64-bit constants with lddw")
    value = int(value)  # a plain int: an IntEnum would print as its name on Python < 3.11
    return value - (1 << 32) if value >= 1 << 31 else value


def imm64(value):
    """``value`` as the unsigned 64-bit immediate of lddw; accepts -2**63..2**64-1."""
    if isinstance(value, Register) or not isinstance(value, int) or isinstance(value, bool):
        raise AssemblerError(f"expected an integer immediate, got {shown(value)}")
    if not -(1 << 63) <= value < 1 << 64:
        raise AssemblerError(f"immediate {shown(value)} does not fit in 64 bits "
                             "(-2**63..2**64-1)")
    return int(value) & 0xFFFFFFFFFFFFFFFF


def address_spaces(dst_as, src_as):
    """The imm of addr_space_cast: ``dst_as << 16 | src_as``, each an int 0..65535."""
    for value in (dst_as, src_as):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise AssemblerError(f"an address space is an int 0..65535, not {shown(value)}")
    return imm32(dst_as << 16 | src_as)


def register(value):
    """``value`` as a register number; Register or int 0..10."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise AssemblerError(f"expected a register R0-R10, got {shown(value)}")
    return int(value)


def helper_id(helper):
    """The id of a helper given by name (``map_lookup_elem`` or ``bpf_...``) or number."""
    if isinstance(helper, int) and not isinstance(helper, bool):
        if not 0 <= helper < 1 << 31:
            raise AssemblerError(f"helper id {shown(helper)} is out of range 0..2**31-1")
        return helper
    if not isinstance(helper, str):
        raise AssemblerError(f"a helper is a name or an int id, not {shown(helper)}")
    name = helper
    if name.startswith("bpf_"):
        name = name[4:]
    if name in helpers.HELPERS:
        return helpers.HELPERS[name]
    import difflib  # only an unknown helper name needs suggestions

    close = difflib.get_close_matches(name, helpers.HELPERS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise AssemblerError(f"unknown helper {helper!r}{hint}")
