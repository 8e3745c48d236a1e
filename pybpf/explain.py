"""Explaining instructions: their bits, their meaning (RFC 9669), what the verifier checks.

``python -m pybpf explain`` prints, for one instruction, its 8 (or 16) bytes field by field as
RFC 9669 section 3 lays them out (the opcode byte split into class, size and mode, or code and
source; the two registers; the offset; the immediate; the second slot of a 64-bit load), what
the instruction does in the RFC's terms, and what the kernel's verifier checks before it lets
it run, each check with the line the verifier writes in its log when the check fails
(``R6 !read_ok``), so that a log can be read back against it. For a whole program it adds
the meaning and the checks under each line of the listing.

The checks and their messages are those of Linux 6.18's verifier; tests/test_explain.py
loads, for every one of them, a program that breaks it into the running kernel and finds the
message in the log. Pure: nothing here makes a system call.
"""

from __future__ import annotations

import re
import textwrap
from collections import namedtuple
from dataclasses import replace

from pybpf import abi
from pybpf.asm import opcodes as oc
from pybpf.asm.insn import SLOT, SLOT_SIZE, Instruction, check
from pybpf.errors import DecodeError
from pybpf.helpers import HELPER_NAMES

# -- names of the opcode's fields (RFC 9669 sections 3 and 4) --------------------------------

CLASS_MEANING = {  # RFC 9669 section 3.3, the instruction classes
    oc.LD: "non-standard load operations", oc.LDX: "load into register operations",
    oc.ST: "store from immediate operations", oc.STX: "store from register operations",
    oc.ALU: "32-bit arithmetic operations", oc.JMP: "64-bit jump operations",
    oc.JMP32: "32-bit jump operations", oc.ALU64: "64-bit arithmetic operations",
}
MODES = {  # RFC 9669 section 5, the mode modifier of loads and stores
    oc.IMM: ("IMM", "64-bit immediate instructions"),
    oc.ABS: ("ABS", "legacy BPF packet access (absolute)"),
    oc.IND: ("IND", "legacy BPF packet access (indirect)"),
    oc.MEM: ("MEM", "regular load and store operations"),
    oc.MEMSX: ("MEMSX", "sign-extension load operations"),
    oc.ATOMIC: ("ATOMIC", "atomic operations"),
}
SIZES = {bits: (name, size) for name, size, bits in
         (("W", 4, 0x00), ("H", 2, 0x08), ("B", 1, 0x10), ("DW", 8, 0x18))}
ALU_CODES = {code: name.upper() for name, code, _sym, off, _sem in oc.ALU_OPS if off == 0}
ALU_CODES.update({oc.NEG: "NEG", oc.END: "END"})
JMP_CODES = {code: name.upper() for name, code, _sym, _sem in oc.JMP_OPS}
JMP_CODES.update({oc.JA: "JA", oc.CALL: "CALL", oc.EXIT: "EXIT", oc.JCOND: "JCOND"})

# What RFC 9669 writes for each operation (sections 4 and 5), by name without the ``32`` of
# the 32-bit classes; None for Linux's additions that the RFC does not have.
RFC_TEXT = {
    "add": "dst += src", "sub": "dst -= src", "mul": "dst *= src",
    "div": "dst = (src != 0) ? (dst / src) : 0", "sdiv": "dst = (src != 0) ? (dst s/ src) : 0",
    "or": "dst |= src", "and": "dst &= src", "lsh": "dst <<= (src & mask)",
    "rsh": "dst >>= (src & mask)", "neg": "dst = -dst",
    "mod": "dst = (src != 0) ? (dst % src) : dst",
    "smod": "dst = (src != 0) ? (dst s% src) : dst", "xor": "dst ^= src", "mov": "dst = src",
    "movsx": "dst = (s8,s16,s32)src", "arsh": "sign extending dst >>= (src & mask)",
    "le": "dst = htole{imm}(dst)", "be": "dst = htobe{imm}(dst)", "bswap": "dst = bswap{imm}(dst)",
    "addr_space_cast": None,
    "ja": "PC += offset", "gotol": "PC += imm", "may_goto": None,
    "jeq": "PC += offset if dst == src", "jgt": "PC += offset if dst > src",
    "jge": "PC += offset if dst >= src", "jset": "PC += offset if dst & src",
    "jne": "PC += offset if dst != src", "jsgt": "PC += offset if dst > src",
    "jsge": "PC += offset if dst >= src", "jlt": "PC += offset if dst < src",
    "jle": "PC += offset if dst <= src", "jslt": "PC += offset if dst < src",
    "jsle": "PC += offset if dst <= src",
    "call": "call helper function by address", "call_local": "call PC += imm",
    "call_kfunc": "call helper function by BTF ID", "exit": "return",
    "ldx": "dst = *(unsigned size *) (src + offset)",
    "ldxsx": "dst = *(signed size *) (src + offset)",
    "st": "*(size *) (dst + offset) = imm", "stx": "*(size *) (dst + offset) = src",
    "atomic_add": "*(size *)(dst + offset) += src", "atomic_or": "*(size *)(dst + offset) |= src",
    "atomic_and": "*(size *)(dst + offset) &= src",
    "atomic_xor": "*(size *)(dst + offset) ^= src",
    "atomic_fetch_add": "*(size *)(dst + offset) += src, FETCH: src = the old value",
    "atomic_fetch_or": "*(size *)(dst + offset) |= src, FETCH: src = the old value",
    "atomic_fetch_and": "*(size *)(dst + offset) &= src, FETCH: src = the old value",
    "atomic_fetch_xor": "*(size *)(dst + offset) ^= src, FETCH: src = the old value",
    "xchg": "atomic exchange", "cmpxchg": "atomic compare and exchange",
    "load_acquire": None, "store_release": None,
    "lddw": "dst = (next_imm << 32) | imm", "ld_map_fd": "dst = map_by_fd(imm)",
    "ld_map_value": "dst = map_val(map_by_fd(imm)) + next_imm", "ld_btf_id": "dst = var_addr(imm)",
    "ld_func": "dst = code_addr(imm)", "ld_map_idx": "dst = map_by_idx(imm)",
    "ld_map_idx_value": "dst = map_val(map_by_idx(imm)) + next_imm",
    "ld_abs": "legacy BPF packet access (absolute)",
    "ld_ind": "legacy BPF packet access (indirect)",
}

# The same operations said in words, with this instruction's operands: {dst}, {src}, {operand}
# (the source register, or the immediate), {imm}, {off}, {bytes} (access width), {mem} (the
# address, ``r6 + 8``), {target} (where a jump goes), {mask} (of a shift count), {helper}.
SAID = {
    "add": "adds {operand} to {dst}", "sub": "subtracts {operand} from {dst}",
    "mul": "multiplies {dst} by {operand}",
    "div": "divides {dst} by {operand}, unsigned; a divisor of 0 sets {dst} to 0",
    "sdiv": "divides {dst} by {operand}, signed; a divisor of 0 sets {dst} to 0",
    "or": "sets in {dst} the bits set in {operand}", "and": "keeps in {dst} the bits set in "
    "{operand}", "xor": "flips in {dst} the bits set in {operand}",
    "lsh": "shifts {dst} left by {operand} bits, the count masked to {mask}",
    "rsh": "shifts {dst} right by {operand} bits, filling with zeros, the count masked to {mask}",
    "arsh": "shifts {dst} right by {operand} bits, filling with its sign bit, the count masked "
    "to {mask}",
    "mod": "sets {dst} to the remainder of {dst} / {operand}, unsigned; a divisor of 0 leaves "
    "{dst} as it is",
    "smod": "sets {dst} to the remainder of {dst} / {operand}, signed and truncated as in C "
    "(-13 s% 3 == -1); a divisor of 0 leaves {dst} as it is",
    "mov": "copies {operand} into {dst}", "neg": "negates {dst}",
    "movsx": "copies {src} into {dst}, sign-extended from its low {off} bits",
    "le": "converts the low {imm} bits of {dst} from host order to little endian (on this "
    "little-endian host, keeps them) and zeroes the bits above",
    "be": "converts the low {imm} bits of {dst} from host order to big endian (on this "
    "little-endian host, swaps their bytes) and zeroes the bits above",
    "bswap": "swaps the bytes of the low {imm} bits of {dst} and zeroes the bits above",
    "addr_space_cast": "copies the pointer {src} into {dst}, converted from BPF arena address "
    "space {src_as} to {dst_as} (a Linux 6.9 addition: 1 is the user-space view, 0 the "
    "kernel's)",
    "ja": "continues with {target}", "gotol": "continues with {target} (a 32-bit distance)",
    "may_goto": "continues with the next instruction while the program's loop budget lasts, "
    "then with {target} (a Linux 6.9 addition; the budget is a quarter of a second of looping "
    "where the JIT times it, as x86-64 does since Linux 6.15, else 8388608 iterations)",
    "call": "calls helper function {imm}{helper} (Linux numbers its helpers rather than give "
    "addresses): arguments in r1-r5, the result in r0",
    "call_local": "calls the function that starts at {target}: arguments in r1-r5, the result "
    "in r0; its exit returns here",
    "call_kfunc": "calls the kernel function whose BTF id is {imm} (in the kernel's BTF, or a "
    "module's at fd_array[{off}])",
    "exit": "returns r0 to the caller: the kernel, or the function that called this one",
    "ldx": "loads the {bytes} bytes at {mem} into {dst}, zero-extended",
    "ldxsx": "loads the {bytes} bytes at {mem} into {dst}, sign-extended",
    "st": "stores {imm} in the {bytes} bytes at {mem}",
    "stx": "stores the low {bytes} bytes of {src} at {mem}",
    "atomic_add": "adds {src} to the {bytes} bytes at {mem}, atomically",
    "atomic_or": "ORs {src} into the {bytes} bytes at {mem}, atomically",
    "atomic_and": "ANDs {src} into the {bytes} bytes at {mem}, atomically",
    "atomic_xor": "XORs {src} into the {bytes} bytes at {mem}, atomically",
    "atomic_fetch_add": "adds {src} to the {bytes} bytes at {mem} and sets {src} to their value "
    "before, atomically",
    "atomic_fetch_or": "ORs {src} into the {bytes} bytes at {mem} and sets {src} to their value "
    "before, atomically",
    "atomic_fetch_and": "ANDs {src} into the {bytes} bytes at {mem} and sets {src} to their "
    "value before, atomically",
    "atomic_fetch_xor": "XORs {src} into the {bytes} bytes at {mem} and sets {src} to their "
    "value before, atomically",
    "xchg": "exchanges {src} with the {bytes} bytes at {mem}, atomically",
    "cmpxchg": "compares the {bytes} bytes at {mem} with r0 and, if equal, replaces them with "
    "{src}; either way r0 receives their value before (zero-extended), atomically",
    "load_acquire": "loads the {bytes} bytes at {mem} into {dst} with acquire ordering: no "
    "later memory access moves before it (a Linux 6.15 addition)",
    "store_release": "stores the low {bytes} bytes of {src} at {mem} with release ordering: no "
    "earlier memory access moves after it (a Linux 6.15 addition)",
    "lddw": "loads the 64-bit number {imm64} into {dst}",
    "ld_map_fd": "loads into {dst} the address of the map whose file descriptor is {imm} (the "
    "kernel puts the map's address in place of the fd)",
    "ld_map_value": "loads into {dst} the address of byte {next_imm} of the value of the map "
    "whose fd is {imm} (global variables live there)",
    "ld_btf_id": "loads into {dst} the address of the kernel variable whose BTF id is {imm}",
    "ld_func": "loads into {dst} the address of the function at {target} (a callback)",
    "ld_map_idx": "loads into {dst} the address of the map at fd_array[{imm}]",
    "ld_map_idx_value": "loads into {dst} the address of byte {next_imm} of the value of the "
    "map at fd_array[{imm}]",
    "ld_abs": "loads the {bytes} bytes at offset {imm} of the packet into r0, from network "
    "byte order (deprecated; a read past the packet's end ends the program, returning 0)",
    "ld_ind": "loads the {bytes} bytes at offset {src} + {imm} of the packet into r0, from "
    "network byte order (deprecated; a read past the packet's end ends the program, "
    "returning 0)",
}

# Conditional jumps (RFC 9669 section 4.3): the condition under which each one jumps.
_CONDITIONS = {
    "jeq": "{dst} == {operand}", "jne": "{dst} != {operand}", "jset": "{dst} & {operand} is not 0",
    "jgt": "{dst} > {operand} (unsigned)", "jge": "{dst} >= {operand} (unsigned)",
    "jlt": "{dst} < {operand} (unsigned)", "jle": "{dst} <= {operand} (unsigned)",
    "jsgt": "{dst} > {operand} (signed)", "jsge": "{dst} >= {operand} (signed)",
    "jslt": "{dst} < {operand} (signed)", "jsle": "{dst} <= {operand} (signed)",
}
SAID.update({name: f"continues with {{target}} if {condition}, else with the next instruction"
             for name, condition in _CONDITIONS.items()})

# What each operand field is for, per operand form (see opcodes.FIELDS): dst, src, off, imm.
ROLES = {
    "alu_k": ("operand and result", None, None, "the operand"),
    "shift_k": ("operand and result", None, None, "the shift count"),
    "alu_x": ("operand and result", "the operand", None, None),
    "neg": ("operand and result", None, None, None),
    "movsx": ("result", "the value", "the width to sign-extend from", None),
    "addr_space_cast": ("result", "the pointer", "1 selects addr_space_cast",
                        "address spaces: dst_as << 16 | src_as"),
    "end": ("operand and result", None, None, "the width in bits"),
    "ja": (None, None, "jump distance in slots, from the next one", None),
    "gotol": (None, None, None, "jump distance in slots, from the next one"),
    "may_goto": (None, "0 selects may_goto", "jump distance in slots, from the next one",
                 None),
    "jmp_k": ("left operand", None, "jump distance in slots, from the next one",
              "right operand"),
    "jmp_x": ("left operand", "right operand", "jump distance in slots, from the next one",
              None),
    "call": (None, "what imm is: 0 a helper id, 1 a distance", None, None),
    "call_kfunc": (None, "2: imm is a BTF id", "index of a module's BTF in fd_array (0: the "
                   "kernel's)", "the function's BTF id"),
    "exit": (None, None, None, None),
    "ldx": ("loaded value", "base address", "added to the base", None),
    "st": ("base address", None, "added to the base", "the value stored"),
    "stx": ("base address", "the value stored", "added to the base", None),
    "atomic": ("base address", "the operand", "added to the base", "which atomic operation"),
    "atomic_fetch": ("base address", "the operand; receives the old value", "added to the base",
                     "which atomic operation"),
    "load_acquire": ("loaded value", "base address", "added to the base", "LOAD_ACQ"),
    "lddw": ("result", "what imm is (0: a number)", None, "low 32 bits"),
    "ld_abs": (None, None, None, "offset in the packet"),
    "ld_ind": (None, "added to the offset", None, "offset in the packet"),
}
_CALL_IMM = {oc.CALL_HELPER: "the helper's id", abi.PSEUDO_CALL: "jump distance in slots"}
_LDDW_IMM = {0: "low 32 bits of the number", abi.PSEUDO_MAP_FD: "a map's fd",
             abi.PSEUDO_MAP_VALUE: "a map's fd", abi.PSEUDO_BTF_ID: "a kernel variable's BTF id",
             abi.PSEUDO_FUNC: "jump distance in slots", abi.PSEUDO_MAP_IDX: "index in fd_array",
             abi.PSEUDO_MAP_IDX_VALUE: "index in fd_array"}
_LDDW_NEXT = {0: "high 32 bits of the number", abi.PSEUDO_MAP_VALUE: "offset in the value",
              abi.PSEUDO_MAP_IDX_VALUE: "offset in the value"}


# -- what the verifier checks ------------------------------------------------------------------

Check = namedtuple("Check", "key text message fails", defaults=(None, False))
Check.__doc__ = """One thing the verifier checks about an instruction.

``key`` names the kind of check, ``text`` says it with this instruction's operands,
``message`` is what the verifier's log says when it fails (None for a rule it enforces by the
result, such as a run-time division by zero), with ``N`` for numbers only the log knows;
``fails`` is True when the check can be seen to fail from the instruction alone.
"""

STACK_SIZE = 512  # MAX_BPF_STACK: a frame's stack, below r10
# Helpers that return a pointer the program must compare with NULL first, and its type.
MAYBE_NULL = {1: "map_value_or_null", 131: "ringbuf_mem_or_null"}
# Fields RFC 9669 says are unused (pybpf writes 0) that Linux 6.18 does not check.
UNCHECKED = {("exit", "off")}


def base_name(op):
    """The operation's name without the ``32`` of the 32-bit classes: ``add32`` is ``add``."""
    return op.name[:-2] if op.name.endswith("32") else op.name


def reserved_message(op, insn):
    """The verifier's complaint about a non-zero field ``op`` does not use."""
    if op.name == "may_goto":
        return f"invalid may_goto imm {insn.imm}"
    kind = {"neg": "NEG", "end": "END", "ja": "JA", "gotol": "JA", "call": "CALL",
            "call_kfunc": "CALL", "exit": "EXIT", "jmp_k": "JMP/JMP32", "jmp_x": "JMP/JMP32",
            "ldx": "LDX", "st": "ST", "stx": "STX", "ld_abs": "LD_[ABS|IND]",
            "ld_ind": "LD_[ABS|IND]", "lddw": "LD_IMM64"}.get(op.form, "ALU")
    if base_name(op) in ("mov", "movsx"):
        kind = "MOV"
    return f"BPF_{kind} uses reserved fields"


def unused_fields(op):
    """The fields ``op`` does not use and the verifier requires to be 0."""
    return [name for name, rule in zip(("dst", "src", "off", "imm"), oc.field_rules(op))
            if rule == "zero" and (op.name, name) not in UNCHECKED]


def checks(insn, slot=None, length=None, raw=None):
    """What the verifier checks about ``insn``: a list of :class:`Check`.

    ``slot`` (where the instruction is) and ``length`` (the program's size in slots), when
    known, let the jump checks say where a jump lands and whether that is inside; ``raw``,
    the instruction's bytes when it was decoded, shows a second slot that is not all 0.
    """
    op = insn.op
    if op is None:
        return [_no_such_operation(insn)]
    view = _Operands(insn, op, slot)
    found = _broken_fields(insn, op)
    if raw is not None and insn.opcode == oc.LD_IMM64 and any(raw[8:12]):
        found.append(Check("second_slot", "the second slot is all 0 but for next_imm",
                           "invalid bpf_ld_imm64 insn", True))
    found.extend(_RULES[op.form](view))
    return [c for c in found if c is not None] + _jump_checks(view, slot, length)


def _no_such_operation(insn):
    """The verifier's complaint about bytes that name no operation."""
    opcode = insn.opcode
    entry = oc.BY_OPCODE.get(opcode)
    if entry is None:
        return Check("opcode", "the opcode names an instruction",
                     f"unknown opcode {opcode:02x}", True)
    field, choices = entry
    if opcode == oc.LD_IMM64:
        message = "unrecognized bpf_ld_imm64 insn"
    elif field == "imm":
        message = f"BPF_ATOMIC uses invalid atomic opcode {insn.imm & 0xFF:02x}"
    else:
        plain = choices.get(0) or next(iter(choices.values()))
        message = reserved_message(plain, insn)
    return Check("discriminator", f"{field} names one of the operations of opcode "
                 f"{opcode:#04x}", message, True)


def _broken_fields(insn, op):
    """Checks the instruction's own fields fail: a register past r10, a used 'unused' field."""
    found = [Check("register", f"{name} is a register, r0 to r10", f"R{value} is invalid", True)
             for name, value in (("dst", insn.dst), ("src", insn.src))
             if value > 10 and oc.field_rules(op)[name == "src"] in ("reg", "wreg")]
    unused = [name for name in unused_fields(op) if getattr(insn, name)]
    if unused:
        found.append(Check("reserved", f"{' and '.join(unused)}, unused by {op.name}, "
                           f"{'is' if len(unused) == 1 else 'are'} 0",
                           reserved_message(op, insn), True))
    return found


class _Operands:
    """An instruction's operands named as the explanations say them (r1 or w1, r6 + 8...)."""

    def __init__(self, insn, op, slot=None):
        self.insn, self.op, self.slot = insn, op, slot
        cls = insn.opcode & 0x07
        narrow = cls == oc.JMP32 or (cls == oc.ALU and op.form != "end")
        prefix = "w" if narrow else "r"
        self.dst, self.src = f"{prefix}{insn.dst}", f"{prefix}{insn.src}"
        self.r_dst, self.r_src = f"r{insn.dst}", f"r{insn.src}"
        self.bits = 64 if oc.is_alu64(insn.opcode) else 32
        self.size = op.size

    def mem(self, base):
        """The address ``base + off`` as the listing writes it: ``r6 + 8``, ``r10 - 4``."""
        off = self.insn.off
        return f"r{base} {'-' if off < 0 else '+'} {abs(off)}"

    def target(self):
        """Where a jump or call goes: a slot number when the instruction's slot is known."""
        insn = self.insn
        distance = insn.off if self.op.form in oc.OFF_JUMP_FORMS else insn.imm
        if insn.opcode == oc.LD_IMM64:
            distance = insn.imm & 0xFFFFFFFF
            distance -= 1 << 32 if distance >= 1 << 31 else 0
        if self.slot is None:
            if distance == 0:
                return None, "the next instruction"
            slots = f"{abs(distance)} slot{'s' if abs(distance) > 1 else ''}"
            return None, f"the instruction {slots} {'after' if distance > 0 else 'before'} the next"
        where = self.slot + 1 + distance
        return where, f"slot {where}"


def _initialised(reg_name, number):
    """A register is read: it must hold a value on every path (``R6 !read_ok``)."""
    return Check("init", f"{reg_name} holds a value on every path that reaches here",
                 f"R{number} !read_ok")


def _frame_pointer(reg_name, number):
    """A register is written: it must not be r10."""
    return Check("frame_pointer", f"{reg_name} is written, so it is not r10, the read-only "
                 f"frame pointer", "frame pointer is read only", number == 10)


def _pointer_arithmetic(v):
    """On a pointer only 64-bit += and -= of a number are allowed, the verifier's messages."""
    name = base_name(v.op)
    if v.bits == 32:
        return Check("pointer_alu32", f"if {v.r_dst} holds a pointer, 32-bit arithmetic on it "
                     "is refused", f"R{v.insn.dst} 32-bit pointer arithmetic prohibited")
    if name in ("and", "or", "xor"):
        sym = v.op.symbol
        return Check("pointer_bitwise", f"if {v.dst} holds a pointer, {sym}= on it is refused",
                     f"R{v.insn.dst} bitwise operator {sym}= on pointer prohibited")
    if name in ("add", "sub"):
        if v.op.form == "alu_x" and name == "add":
            return Check("pointer_plus_pointer", f"{v.dst} and {v.src} are not both pointers",
                         f"R{v.insn.dst} pointer += pointer prohibited")
        return Check("pointer_null_arith", f"if {v.dst} may be NULL (a map lookup's result), "
                     "it is compared with 0 before any arithmetic",
                     f"R{v.insn.dst} pointer arithmetic on map_value_or_null prohibited, "
                     "null-check it first")
    sym = {"sdiv": "/", "smod": "%"}.get(name, v.op.symbol)
    if sym:
        return Check("pointer_arith", f"if {v.dst} holds a pointer, {sym}= on it is refused",
                     f"R{v.insn.dst} pointer arithmetic with {sym}= operator prohibited")
    return None


def _alu_rules(v):
    """Arithmetic: operands written before, r10 kept, divisors and shift counts, pointers."""
    insn, name = v.insn, base_name(v.op)
    found = []
    if v.op.form == "alu_x" or name == "movsx":
        found.append(_initialised(v.src, insn.src))
    if name not in ("mov", "movsx"):
        found.append(_initialised(v.dst, insn.dst))
    found.append(_frame_pointer(v.dst, insn.dst))
    if name in ("div", "sdiv", "mod", "smod"):
        if v.op.form == "alu_k":
            found.append(Check("div_by_zero", "the divisor imm is not 0", "div by zero",
                               insn.imm == 0))
        else:
            result = "0" if name in ("div", "sdiv") else f"{v.dst} unchanged"
            found.append(Check("div_by_zero_at_run_time", f"{v.src} may be 0 when the program "
                               f"runs: that is no error, the result is then {result}"))
    if v.op.form == "shift_k":
        found.append(Check("shift", f"the shift count is below {v.bits}",
                           f"invalid shift {insn.imm}", not 0 <= insn.imm < v.bits))
    if name not in ("mov", "neg", "movsx"):
        found.append(_pointer_arithmetic(v))
    return found


def _end_rules(v):
    """Byte swaps: the register written before, r10 kept, a width of 16, 32 or 64."""
    return [_initialised(v.r_dst, v.insn.dst), _frame_pointer(v.r_dst, v.insn.dst),
            Check("end_width", "the width imm is 16, 32 or 64", "BPF_END uses reserved fields",
                  v.insn.imm not in (16, 32, 64))]


def _arena_rules(v):
    """addr_space_cast: only in a program that uses a BPF arena."""
    return [_initialised(v.r_src, v.insn.src), _frame_pointer(v.r_dst, v.insn.dst),
            Check("arena", "the program uses a BPF arena map",
                  "addr_space_cast insn can only be used in a program that has an associated "
                  "arena")]


def _cond_jump_rules(v):
    """Conditional jumps: the compared registers written before; both ways followed."""
    insn = v.insn
    found = [_initialised(v.dst, insn.dst)]
    if v.op.form == "jmp_x":
        found.append(_initialised(v.src, insn.src))
    found.append(Check("both_ways", f"both ways are followed, and on each the verifier "
                       f"narrows what it knows of {v.dst} (its range, or whether a pointer is "
                       f"NULL)"))
    return found


def _call_rules(v):
    """Calls of helpers (by id) and of the program's own functions (by distance)."""
    insn = v.insn
    if insn.src == abi.PSEUDO_CALL:
        return [Check("call_target", "the target is the first instruction of a function",
                      "call to invalid destination"),
                Check("call_depth", "at most 8 frames are nested",
                      "the call stack of N frames is too deep"),
                Check("call_stack", f"the frames' stacks add up to at most {STACK_SIZE} bytes",
                      "combined stack size of N calls is N. Too large")]
    name = HELPER_NAMES.get(insn.imm)
    label = f"bpf_{name}#{insn.imm}" if name else f"unknown#{insn.imm}"
    found = [Check("helper_exists", f"helper {insn.imm} exists",
                   f"invalid func unknown#{insn.imm}", name is None),
             Check("helper_allowed", "the program's type may call it",
                   f"program of this type cannot use helper {label}"),
             Check("helper_gpl", "a GPL-only helper is called from a GPL-compatible program",
                   "cannot call GPL-restricted function from non-GPL compatible program"),
             Check("helper_args", "r1-r5 hold what the helper's prototype asks for (a map "
                   "pointer, a pointer to initialised memory of the right size, a constant...)",
                   "RN type=N expected=N")]
    kind = MAYBE_NULL.get(insn.imm)
    if kind:
        found.append(Check("null_check", "r0 may be NULL: the program compares it with 0 "
                           "before it reads or writes through it",
                           f"R0 invalid mem access '{kind}'"))
    found.append(Check("scratched", "after the call r1-r5 hold nothing: they are written "
                       "before they are read again", "RN !read_ok"))
    return found


def _kfunc_rules(v):
    """Calls of kernel functions by BTF id."""
    return [Check("kfunc", f"BTF id {v.insn.imm} names a kernel function",
                  f"kernel btf_id {v.insn.imm} is not a function"),
            Check("kfunc_allowed", "the function is a kfunc this program type may call",
                  "calling kernel function N is not allowed")]


def _exit_rules(v):
    """exit: r0 holds the result (in range for some types), no reference is held."""
    return [Check("exit_r0", "r0, the value returned, holds a value", "R0 !read_ok"),
            Check("exit_range", "for some program types r0 lies in a range (cgroup programs: "
                  "0 or 1)", "At program exit the register R0 has N should have been in [0, 1]"),
            Check("exit_references", "every reference taken (a ring buffer reservation, a "
                  "socket) has been released",
                  "BPF_EXIT instruction in main prog would lead to reference leak")]


def _memory_rules(v, base, number, access):
    """The checks of an access of ``v.size`` bytes at ``base + off`` (read or write)."""
    insn = v.insn
    found = [_initialised(base, number)]
    if number == 10:  # the stack: the bounds are known from the instruction alone
        off, size = insn.off, v.size
        inside = -STACK_SIZE <= off and off + size <= 0
        found.append(Check("stack_bounds", f"the {size} bytes at {v.mem(number)} lie in the "
                           f"stack, r10 - {STACK_SIZE} to r10 - 1",
                           f"invalid {access} stack R10 off={off} size={size}", not inside))
        found.append(Check("stack_alignment", f"r10 {off:+d} is a multiple of {size}",
                           f"misaligned stack access off 0+0+{off} size {size}", off % size != 0))
        return found
    found += [
        Check("pointer", f"{base} is a pointer: to the stack, a map value, the context, "
              "packet data...; a number is refused", f"R{number} invalid mem access 'scalar'"),
        Check("null", f"if {base} may be NULL (a map lookup's result), it was compared with 0",
              f"R{number} invalid mem access 'map_value_or_null'"),
        Check("map_bounds", f"in a map value, the {v.size} bytes at {v.mem(number)} lie inside "
              "value_size", "invalid access to map value, value_size=N off=N size=N"),
        Check("context", f"in the context, {v.mem(number)} is a field this program type may "
              f"{access.split()[0]} with {v.size} bytes",
              f"invalid bpf_context access off={insn.off} size={v.size}"),
        Check("packet_bounds", "in packet data, the bytes lie before data_end, as a comparison "
              "has shown", f"R{number} offset is outside of the packet"),
    ]
    return found


def _load_rules(v):
    """Loads: the memory rules for the source address, r10 not the destination."""
    insn = v.insn
    return _memory_rules(v, v.r_src, insn.src, "read from") + [
        _frame_pointer(v.r_dst, insn.dst)]


def _store_rules(v):
    """Stores: the memory rules for the destination address, the stored register written."""
    insn = v.insn
    found = _memory_rules(v, v.r_dst, insn.dst, "write to")
    if v.op.form == "stx":
        found.insert(0, _initialised(v.r_src, insn.src))
    return found


def _atomic_rules(v):
    """Atomic operations, load-acquire and store-release: memory rules, written registers."""
    insn, name = v.insn, v.op.name
    found = []
    if name != "load_acquire":
        found.append(_initialised(v.r_src, insn.src))
    if name == "cmpxchg":
        found.append(_initialised("r0", 0))
    if name == "load_acquire":
        found += _memory_rules(v, v.r_src, insn.src, "read from")
        found.append(_frame_pointer(v.r_dst, insn.dst))
    else:
        found += _memory_rules(v, v.r_dst, insn.dst, "write to")
    if v.op.form == "atomic_fetch":
        found.append(_frame_pointer(v.r_src, insn.src))
    direction = "loads from" if name == "load_acquire" else "stores into"
    found.append(Check("atomic_memory", "the memory is not the context or a packet",
                       f"BPF_ATOMIC {direction} R{insn.src if name == 'load_acquire' else insn.dst}"
                       " ctx is not allowed"))
    return found


def _lddw_rules(v):
    """64-bit loads: the second slot, and what the pseudo source says imm is (a map fd...)."""
    insn, src = v.insn, v.insn.src
    low = insn.imm & 0xFFFFFFFF
    found = [_frame_pointer(v.r_dst, insn.dst)]
    if src in (abi.PSEUDO_MAP_FD, abi.PSEUDO_MAP_VALUE):
        found.append(Check("map_fd", f"{low} is the fd of a map this process holds",
                           f"fd {low} is not pointing to valid bpf_map"))
    if src in (abi.PSEUDO_MAP_IDX, abi.PSEUDO_MAP_IDX_VALUE):
        found.append(Check("fd_array", "the load passes an fd_array, and a map at that index",
                           "fd_idx without fd_array is invalid"))
    if src in (abi.PSEUDO_MAP_VALUE, abi.PSEUDO_MAP_IDX_VALUE):
        found += [Check("direct_value", "the map has one value to point into (an array)",
                        "no direct value access support for this map type"),
                  Check("value_offset", f"{insn.imm >> 32} is inside the map's value",
                        f"invalid access to map value pointer, value_size=N off={insn.imm >> 32}")]
    if src == abi.PSEUDO_BTF_ID:
        found.append(Check("btf_var", f"BTF id {low} names a kernel variable",
                           f"pseudo btf_id {low} in ldimm64 isn't KIND_VAR or KIND_FUNC"))
    if src == abi.PSEUDO_FUNC:
        found.append(Check("call_target", "the target is the first instruction of a function",
                           "call to invalid destination"))
    return found


def _packet_rules(v):
    """The legacy packet loads: for skb programs only, the skb in r6, r1-r5 clobbered."""
    insn = v.insn
    found = [Check("packet_type", "the program is a socket filter or another kind that "
                   "receives an skb", "BPF_LD_[ABS|IND] instructions not allowed for this "
                   "program type"),
             Check("packet_r6", "r6 holds the context (the skb)",
                   "at the time of BPF_LD_ABS|IND R6 != pointer to skb")]
    if v.op.form == "ld_ind":
        found.append(_initialised(v.r_src, insn.src))
    found.append(Check("scratched", "afterwards r1-r5 hold nothing: they are written before "
                       "they are read again", "RN !read_ok"))
    return found


def _no_rules(v):
    """Nothing beyond where the jump lands (see _jump_checks)."""
    return []


def _may_goto_rules(v):
    """may_goto: both ways followed; the loop it ends needs no bound."""
    return [Check("both_ways", "both ways are followed; a loop around it is accepted however "
                  "often it would run, since the budget ends it")]


_RULES = {
    "alu_k": _alu_rules, "shift_k": _alu_rules, "alu_x": _alu_rules,
    "neg": _alu_rules, "movsx": _alu_rules, "addr_space_cast": _arena_rules,
    "end": _end_rules, "ja": _no_rules, "gotol": _no_rules,
    "may_goto": _may_goto_rules, "jmp_k": _cond_jump_rules,
    "jmp_x": _cond_jump_rules, "call": _call_rules, "call_kfunc": _kfunc_rules,
    "exit": _exit_rules, "ldx": _load_rules, "st": _store_rules,
    "stx": _store_rules, "atomic": _atomic_rules, "atomic_fetch": _atomic_rules,
    "load_acquire": _atomic_rules, "lddw": _lddw_rules, "ld_abs": _packet_rules,
    "ld_ind": _packet_rules,
}


def _jump_checks(v, slot, length):
    """Where a jump (or local call, or ld_func) lands must be an instruction of the program."""
    form, insn = v.op.form, v.insn
    jumps = form in oc.OFF_JUMP_FORMS or form == "gotol"
    if not jumps:
        return []
    where, said = v.target()
    inside = None if where is None or length is None else 0 <= where < length
    found = [Check("jump_range", f"the target, {said}, is inside the program",
                   f"jump out of range from insn {'N' if slot is None else slot} to "
                   f"{'N' if where is None else where}", inside is False),
             Check("jump_ldimm64", "the target is not the second slot of a 64-bit load",
                   "jump into the middle of ldimm64 insn N")]
    distance = insn.imm if form == "gotol" else insn.off
    if distance < 0:
        found.append(Check("loop", "a jump backwards makes a loop: the verifier follows it "
                           "round until it ends; one that comes back to a state it has seen "
                           "never ends", "infinite loop detected at insn N"))
    if form in ("ja", "gotol"):
        found.append(Check("reachable", "the instruction after it is the target of some jump",
                           "unreachable insn N"))
    return found


# -- the explanation ----------------------------------------------------------------------

Row = namedtuple("Row", "where hex bits field value note")
Row.__doc__ = """One line of the bit diagram: bytes ``where`` (``2-3``), their ``hex``, the
``bits`` of the opcode or register byte a field takes (``011.....``), the field's name, its
value and what it is for."""


def rfc_name(insn, op):
    """RFC 9669's name of an instruction: ``{ADD, K, ALU64}``, ``{MEM, W, LDX}``."""
    opcode = insn.opcode
    cls = opcode & 0x07
    if cls in (oc.LD, oc.LDX, oc.ST, oc.STX):
        name = f"{{{MODES[opcode & 0xE0][0]}, {SIZES[opcode & 0x18][0]}, {oc.CLASS_NAMES[cls]}}}"
    else:
        codes = ALU_CODES if cls in (oc.ALU, oc.ALU64) else JMP_CODES
        code = codes[opcode & 0xF0]
        if op.key == "off" and op.value:
            code = base_name(op).upper()
        source = _source_name(opcode)
        name = f"{{{code}, {source}, {oc.CLASS_NAMES[cls]}}}"
    if op.key == "imm":
        name += f" with imm {insn.imm:#x}"
    elif op.key == "src" and op.value:
        name += f" with src_reg {insn.src:#x}"
    return name


def _source_name(opcode):
    """K or X; for byte swaps TO_LE or TO_BE (RFC 9669 section 4.2)."""
    if opcode & 0xF0 == oc.END and opcode & 0x07 in (oc.ALU, oc.ALU64):
        return "TO_BE" if opcode & oc.X else "TO_LE"
    return "X" if opcode & oc.X else "K"


def meaning(insn, slot=None):
    """What ``insn`` does, in one sentence: RFC 9669's name and formula, then in words."""
    op = insn.op
    v = _Operands(insn, op, slot)
    formula = RFC_TEXT[base_name(op)]
    words = SAID[base_name(op)].format(**_words(v))
    if op.form in ("alu_k", "shift_k", "alu_x", "neg", "movsx") and v.bits == 32:
        words += ", on the low 32 bits, zeroing the upper 32 bits of " + v.r_dst
    elif op.form in ("alu_k", "jmp_k") and v.bits == 64 and insn.imm < 0:
        words += f" (imm sign-extended to 64 bits: {insn.imm & 0xFFFFFFFFFFFFFFFF:#x})"
    elif op.form in ("jmp_k", "jmp_x") and v.bits == 32:
        words += ", comparing the low 32 bits"
    if formula is None:
        return f"{rfc_name(insn, op)} (Linux; not in RFC 9669) {words}."
    return f"{rfc_name(insn, op)} {formula.format(imm=insn.imm)}: {words}."


def _words(v):
    """The values :data:`SAID`'s sentences are filled with."""
    insn = v.insn
    operand = v.src if v.op.form in ("alu_x", "jmp_x") else str(insn.imm)
    helper = HELPER_NAMES.get(insn.imm)
    base = insn.src if v.op.form in ("ldx", "load_acquire") else insn.dst
    imm = insn.imm & 0xFFFFFFFF if v.op.form == "lddw" else insn.imm
    return dict(dst=v.dst, src=v.src, operand=operand, imm=imm, off=insn.off, bytes=v.size,
                mem=v.mem(base), target=v.target()[1], mask=v.bits - 1,
                helper=f", bpf_{helper}" if helper and v.op.name == "call" else "",
                imm64=f"{insn.imm:#x}" if insn.imm > 0xFFFF else insn.imm,
                next_imm=insn.imm >> 32, dst_as=insn.imm >> 16 & 0xFFFF,
                src_as=insn.imm & 0xFFFF)


def diagram(insn, raw=None):
    """The rows of the bit diagram of ``insn`` (valid or not); ``raw``: its bytes, if known
    (a 64-bit load's second slot may hold more than the instruction does)."""
    raw, op = raw or insn.encode(), insn.op
    rows = [Row("0" if i == 0 else "", f"{insn.opcode:02x}" if i == 0 else "",
                _bits(insn.opcode, mask), field, value, note)
            for i, (mask, field, value, note) in enumerate(_opcode_fields(insn.opcode, op))]
    if op is None:
        rules, roles, src, dst = ("reg",) * 4, (None,) * 4, f"r{insn.src}", f"r{insn.dst}"
    else:
        rules, roles = oc.field_rules(op), ROLES[op.form]
        v = _Operands(insn, op)
        src = v.src if rules[1] in ("reg", "wreg") else str(insn.src)
        dst = v.dst if rules[0] in ("reg", "wreg") else str(insn.dst)
    notes = [_field_note(op, insn, name, rule, role)
             for name, rule, role in zip(("dst", "src", "off", "imm"), rules, roles)]
    rows.append(Row("1", f"{raw[1]:02x}", _bits(raw[1], 0xF0), "src", src, notes[1]))
    rows.append(Row("", "", _bits(raw[1], 0x0F), "dst", dst, notes[0]))
    rows.append(Row("2-3", raw[2:4].hex(" "), "", "offset", f"{insn.off:+d}" if insn.off
                    else "0", notes[2]))
    low = int.from_bytes(raw[4:8], "little", signed=True)
    rows.append(Row("4-7", raw[4:8].hex(" "), "", "imm", str(low), notes[3]))
    if insn.opcode == oc.LD_IMM64:
        rows.append(Row("8-11", raw[8:12].hex(" "), "", "reserved",
                        str(int.from_bytes(raw[8:12], "little")),
                        "second slot: its opcode, regs and offset are 0"))
        high = int.from_bytes(raw[12:16], "little", signed=True)
        rows.append(Row("12-15", raw[12:16].hex(" "), "", "next_imm", str(high),
                        _LDDW_NEXT.get(insn.src, "unused: 0")))
    return rows


def _opcode_fields(opcode, op):
    """(mask, field, value, note) for the parts of the opcode byte."""
    cls = opcode & 0x07
    class_row = (0x07, "class", f"{oc.CLASS_NAMES[cls]} ({cls:#04x})", CLASS_MEANING[cls])
    if cls in (oc.LD, oc.LDX, oc.ST, oc.STX):
        mode = MODES.get(opcode & 0xE0, ("?", "no such mode"))
        size_name, size = SIZES[opcode & 0x18]
        return [(0xE0, "mode", f"{mode[0]} ({opcode & 0xE0:#04x})", mode[1]),
                (0x18, "size", f"{size_name} ({opcode & 0x18:#04x})",
                 f"{size} byte{'s' if size > 1 else ''}"), class_row]
    codes = ALU_CODES if cls in (oc.ALU, oc.ALU64) else JMP_CODES
    code = codes.get(opcode & 0xF0, "?")
    formula = "no such operation"
    if op is not None:
        formula = (RFC_TEXT[base_name(op)] or "a Linux addition").format(imm="N")
    source = _source_name(opcode)
    source_note = {"K": "the operand is imm", "X": "the operand is the src register",
                   "TO_LE": "to little endian", "TO_BE": "to big endian"}[source]
    if code == "END" and cls == oc.ALU64:
        source_note = "reserved: 0 (swap unconditionally)"
    elif code in ("JA", "CALL", "EXIT", "NEG", "JCOND"):
        source_note = "K (0) only"
    return [(0xF0, "code", f"{code} ({opcode & 0xF0:#04x})", formula),
            (0x08, "source", f"{source} ({opcode >> 3 & 1})", source_note), class_row]


def _field_note(op, insn, name, rule, role):
    """What a register/offset/imm field is for, or that it is unused."""
    if op is None:
        return ""
    if rule == "zero":
        kernel = (f", else `{reserved_message(op, insn)}`"
                  if (op.name, name) not in UNCHECKED else " (Linux does not check it)")
        return f"unused: 0{kernel}"
    if rule == "key":
        return f"{op.value} selects {op.name}"
    if op.form == "call" and name == "imm":
        return _CALL_IMM.get(insn.src, role or "")
    if op.form == "lddw" and name == "imm":
        return _LDDW_IMM.get(insn.src, "")
    return role or ""


def _bits(byte, mask):
    """``byte``'s bits under ``mask``, the others as dots: ``011.....``."""
    return "".join(str(byte >> i & 1) if mask >> i & 1 else "." for i in range(7, -1, -1))


def explain(insn, slot=None, length=None, raw=None):
    """The whole explanation of one instruction: text, bit diagram, meaning and checks.

    ``raw`` is the instruction's bytes when it was decoded from bytes (see :func:`decode`).
    """
    from pybpf.asm.text import format_insn

    problem = check(insn)
    lines = [format_insn(insn) if insn.op is not None else "(bytes that name no instruction)"]
    lines += ["", *_table(diagram(insn, raw)), ""]
    if problem:
        lines += _wrapped("invalid: ", problem)
    if insn.op is not None:
        lines += _wrapped("meaning: ", meaning(insn, slot))
    lines.append("the verifier checks:")
    found = checks(insn, slot, length, raw)
    for one in found:
        lines += _wrapped("  - ", _check_text(one), indent="    ")
    if any(_FILLED_IN.search(one.message or "") for one in found):
        lines.append("(in the messages, N stands for what the verifier's log fills in)")
    return "\n".join(lines) + "\n"


_FILLED_IN = re.compile(r"\bN\b|\bRN\b")


def _check_text(found):
    """A check as one sentence, the verifier's message in backquotes."""
    text = ("FAILS here: " if found.fails else "") + found.text
    return f"{text} (else `{found.message}`)" if found.message else text


def _table(rows):
    """The diagram's rows as aligned text under a heading."""
    heads = Row("byte", "hex", "bits", "field", "value", "")
    widths = [max(len(getattr(r, f)) for r in (heads, *rows)) for f in Row._fields[:-1]]
    out = []
    for row in (heads, *rows):
        cells = [str(getattr(row, f)).ljust(w) for f, w in zip(Row._fields, widths)]
        out.append(("  " + "  ".join(cells) + "  " + row.note).rstrip())
    return out


WIDTH = 100


def _wrapped(head, text, indent=None):
    """``head + text`` wrapped at WIDTH columns, continuation lines indented."""
    indent = indent if indent is not None else " " * len(head)
    return textwrap.wrap(text, WIDTH, initial_indent=head, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


# -- whole programs ------------------------------------------------------------------------

_LISTING_LINE = re.compile(r"^\s*(\d+):\t")


def annotate(insns):
    """A program's listing (:func:`pybpf.disasm.disassemble`) with, under each instruction,
    its meaning and what the verifier checks about it."""
    from pybpf.asm.link import bind_label, is_map_load, label_slots
    from pybpf.disasm import disassemble

    targets = label_slots(insns)
    at_slot, slot = {}, 0
    for index, insn in enumerate(insns):
        if insn.ref is not None:  # labels become distances, map names stay (fd 0)
            insn = (replace(insn, ref=None) if is_map_load(insn)
                    else bind_label(insn, index, slot, targets))
        at_slot[slot] = insn
        slot += insn.slots
    out = []
    for line in disassemble(insns).splitlines():
        out.append(line)
        match = _LISTING_LINE.match(line)
        if match:
            where = int(match.group(1))
            insn = at_slot[where]
            out += _wrapped("\t  = ", meaning(insn, where), indent="\t    ")
            for found in checks(insn, where, slot):
                out += _wrapped("\t  ? ", _check_text(found), indent="\t    ")
    return "\n".join(out) + "\n"


# -- reading what to explain -----------------------------------------------------------------

_HEX_BYTE = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_PROGRAM_HEADING = re.compile(r'^(\S+):\s+SEC\("([^"]*)"\)\s*$')


def is_hex(words):
    """True when every word is hex digits in pairs (``61 61 08 00`` or ``61610800...``)."""
    return bool(words) and all(_HEX_BYTE.match(w) for w in words)


Decoded = namedtuple("Decoded", "insn raw")
Decoded.__doc__ = "An instruction read from bytes, valid or not, and its ``raw`` bytes."


def decode(data):
    """The instructions in raw bytes, valid or not: a list of :class:`Decoded`.

    Unlike :func:`pybpf.asm.decode_all` this keeps an instruction the kernel would refuse,
    so that it can be explained; only bytes that are not whole instructions are an error.
    """
    if not data or len(data) % SLOT_SIZE:
        raise DecodeError(f"{len(data)} bytes is not a whole number of 8-byte instructions")
    insns, offset = [], 0
    while offset < len(data):
        opcode, regs, off, imm = SLOT.unpack_from(data, offset)
        size = SLOT_SIZE
        if opcode == oc.LD_IMM64:
            if len(data) - offset < 2 * SLOT_SIZE:
                raise DecodeError("the 64-bit immediate load needs a second 8-byte slot", offset)
            imm = int.from_bytes(data[offset + 12:offset + 16], "little") << 32 | imm & 0xFFFFFFFF
            size = 2 * SLOT_SIZE
        insns.append(Decoded(Instruction(opcode, regs & 0x0F, regs >> 4, off, imm),
                             data[offset:offset + size]))
        offset += size
    return insns


def split_programs(text):
    """``[(name, text)]``: one program per ``name:  SEC("section")`` heading (the tracker's
    ``--dump``), or the whole text as one unnamed program."""
    programs, name, lines = [], None, []
    for line in text.splitlines():
        heading = _PROGRAM_HEADING.match(line)
        if heading:
            if name is not None or any(x.strip() for x in lines):
                programs.append((name, "\n".join(lines)))
            name, lines = f"{heading.group(1)} ({heading.group(2)})", []
        else:
            lines.append(line)
    programs.append((name, "\n".join(lines)))
    return programs
