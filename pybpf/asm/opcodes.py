"""The eBPF opcode tables (RFC 9669 section 3 and 4, plus the Linux-only extensions).

An instruction is one 8-byte slot (two for the 64-bit immediate load)::

    byte 0      byte 1          bytes 2-3      bytes 4-7
    +--------+--------+--------+--------------+------------------------------+
    | opcode | src:4  | dst:4  | offset (s16) | immediate (s32)              |
    +--------+--------+--------+--------------+------------------------------+
             (high nibble: src, low nibble: dst, little endian)

The opcode byte is read in one of two ways, chosen by its class (the low three bits)::

    ALU / ALU64 / JMP / JMP32          LD / LDX / ST / STX
      7   6   5   4   3   2   1   0      7   6   5   4   3   2   1   0
    +---------------+---+-----------+  +-----------+-------+-----------+
    |     code      | s |   class   |  |   mode    | size  |   class   |
    +---------------+---+-----------+  +-----------+-------+-----------+
    code: the operation (ADD, JEQ...)  mode: IMM ABS IND MEM MEMSX ATOMIC
    s: source, K (0: use imm) or       size: W (4 bytes) H (2) B (1) DW (8)
       X (1: use the src register)

Some operations share an opcode byte and are told apart by another field: SDIV/SMOD, MOVSX
and ADDR_SPACE_CAST by ``off``, the atomic operations by ``imm``, the calls and the pseudo
64-bit loads by ``src``. Every operation is declared once below as an :class:`Op`; the
builder, the text parser, the disassembler and the decoder all read these tables.
"""

from __future__ import annotations

from collections import namedtuple

from pybpf import abi

# Instruction classes (low three bits of the opcode).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = ("LD", "LDX", "ST", "STX", "ALU", "JMP", "JMP32", "ALU64")

# Source bit of ALU and JMP opcodes.
K, X = 0x00, 0x08

# Size bits of load/store opcodes, by access width in bytes.
SIZE_BITS = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}

# Mode bits of load/store opcodes.
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0

LD_IMM64 = LD | IMM | SIZE_BITS[8]  # 0x18, the only two-slot instruction
FETCH = 0x01  # atomic imm flag: also return the old value in src


Op = namedtuple(
    "Op", "name opcode form key value size symbol semantics", defaults=(None, 0, 0, "", "")
)
Op.__doc__ = """One operation: name, opcode byte, operand form and (if shared) discriminator.

``form`` names the operand layout (see ``FIELDS`` and the text syntax in
:mod:`pybpf.asm.text`); ``key``/``value`` say which field tells this operation apart from
others with the same opcode byte (``("off", 1)`` for SDIV); ``size`` is the access width in
bytes for memory operations; ``symbol`` the operator used in the text syntax; ``semantics``
one line of C saying what it does.
"""


# What each form allows in each field: "reg" any register r0-r10, "wreg" a register written
# to (r0-r9), "zero" must be 0, "key" holds the discriminator, "s16"/"s32" a signed number,
# "shift" a shift count, "width" 16/32/64, "u64" the 64-bit immediate.
FIELDS = {
    #          dst      src     off     imm
    "alu_k": ("wreg", "zero", "zero", "s32"),
    "shift_k": ("wreg", "zero", "zero", "shift"),
    "alu_x": ("wreg", "reg", "zero", "zero"),
    "neg": ("wreg", "zero", "zero", "zero"),
    "movsx": ("wreg", "reg", "key", "zero"),
    "addr_space_cast": ("wreg", "reg", "key", "s32"),  # imm: dst_as << 16 | src_as
    "end": ("wreg", "zero", "zero", "width"),
    "ja": ("zero", "zero", "s16", "zero"),
    "gotol": ("zero", "zero", "zero", "s32"),
    "may_goto": ("zero", "key", "s16", "zero"),
    "jmp_k": ("reg", "zero", "s16", "s32"),
    "jmp_x": ("reg", "reg", "s16", "zero"),
    "call": ("zero", "key", "zero", "s32"),
    "call_kfunc": ("zero", "key", "s16", "s32"),
    "exit": ("zero", "zero", "zero", "zero"),
    "ldx": ("wreg", "reg", "s16", "zero"),
    "st": ("reg", "zero", "s16", "s32"),
    "stx": ("reg", "reg", "s16", "zero"),
    "atomic": ("reg", "reg", "s16", "key"),
    "atomic_fetch": ("reg", "wreg", "s16", "key"),
    "load_acquire": ("wreg", "reg", "s16", "key"),
    "lddw": ("wreg", "key", "zero", "u64"),
    "ld_abs": ("zero", "zero", "zero", "s32"),
    "ld_ind": ("zero", "reg", "zero", "s32"),
}

# ALU operations: name, code, operator in the text syntax, off value, semantics.
ALU_OPS = (
    ("add", 0x00, "+", 0, "dst += src"),
    ("sub", 0x10, "-", 0, "dst -= src"),
    ("mul", 0x20, "*", 0, "dst *= src"),
    ("div", 0x30, "/", 0, "dst = dst / src, unsigned; division by zero gives 0"),
    ("sdiv", 0x30, "s/", 1, "dst = dst / src, signed; division by zero gives 0"),
    ("or", 0x40, "|", 0, "dst |= src"),
    ("and", 0x50, "&", 0, "dst &= src"),
    ("lsh", 0x60, "<<", 0, "dst <<= src (count masked to the width)"),
    ("rsh", 0x70, ">>", 0, "dst >>= src, logical"),
    ("mod", 0x90, "%", 0, "dst = dst % src, unsigned; modulo zero leaves dst"),
    ("smod", 0x90, "s%", 1, "dst = dst % src, signed, truncated; modulo zero leaves dst"),
    ("xor", 0xA0, "^", 0, "dst ^= src"),
    ("mov", 0xB0, "", 0, "dst = src"),
    ("arsh", 0xC0, "s>>", 0, "dst >>= src, arithmetic (sign-filling)"),
)
SHIFTS = ("lsh", "rsh", "arsh")

# Conditional jumps: name, code, comparison in the text syntax, semantics.
JMP_OPS = (
    ("jeq", 0x10, "==", "jump if dst == src"),
    ("jgt", 0x20, ">", "jump if dst > src, unsigned"),
    ("jge", 0x30, ">=", "jump if dst >= src, unsigned"),
    ("jset", 0x40, "&", "jump if dst & src"),
    ("jne", 0x50, "!=", "jump if dst != src"),
    ("jsgt", 0x60, "s>", "jump if dst > src, signed"),
    ("jsge", 0x70, "s>=", "jump if dst >= src, signed"),
    ("jlt", 0xA0, "<", "jump if dst < src, unsigned"),
    ("jle", 0xB0, "<=", "jump if dst <= src, unsigned"),
    ("jslt", 0xC0, "s<", "jump if dst < src, signed"),
    ("jsle", 0xD0, "s<=", "jump if dst <= src, signed"),
)
JA, CALL, EXIT, JCOND = 0x00, 0x80, 0x90, 0xE0
NEG, END = 0x80, 0xD0
TO_LE, TO_BE = K, X  # the source bit of END selects the byte order

# Read-modify-write atomics: name, imm, operator.
ATOMIC_OPS = (("add", 0x00, "+"), ("or", 0x40, "|"), ("and", 0x50, "&"), ("xor", 0xA0, "^"))
XCHG = 0xE0 | FETCH
CMPXCHG = 0xF0 | FETCH
LOAD_ACQ, STORE_REL = 0x100, 0x110

# Pseudo source registers of the 64-bit immediate load and of calls (RFC 9669 4.4 and 5.3);
# their values are kernel ABI (BPF_PSEUDO_* in linux/bpf.h), defined in pybpf.abi.
LDDW_SOURCES = {
    0: ("lddw", "dst = imm64"),
    abi.PSEUDO_MAP_FD: ("ld_map_fd", "dst = address of the map with this fd"),
    abi.PSEUDO_MAP_VALUE: ("ld_map_value", "dst = address of the map's value + next_imm"),
    abi.PSEUDO_BTF_ID: ("ld_btf_id", "dst = address of the kernel variable with this BTF id"),
    abi.PSEUDO_FUNC: ("ld_func", "dst = address of the subprogram imm slots ahead"),
    abi.PSEUDO_MAP_IDX: ("ld_map_idx", "dst = address of the map at fd_array[imm]"),
    abi.PSEUDO_MAP_IDX_VALUE: ("ld_map_idx_value",
                               "dst = address of fd_array[imm]'s value + next_imm"),
}
CALL_HELPER = 0  # call src 0: imm is a helper id (the kernel has no name for this value)


def _build_ops():
    """Every operation of RFC 9669 and Linux 6.18, one :class:`Op` each."""
    ops = []
    for cls, suffix in ((ALU64, ""), (ALU, "32")):
        for name, code, sym, off, sem in ALU_OPS:
            key = "off" if code in (0x30, 0x90, 0xB0) else None  # shared with SDIV, SMOD, MOVSX
            kform = "shift_k" if name in SHIFTS else "alu_k"
            ops.append(Op(name + suffix, code | K | cls, kform, key, off, 0, sym, sem))
            ops.append(Op(name + suffix, code | X | cls, "alu_x", key, off, 0, sym, sem))
        ops.append(Op("neg" + suffix, NEG | K | cls, "neg", semantics="dst = -dst"))
        for width in (8, 16, 32) if cls == ALU64 else (8, 16):
            ops.append(Op("movsx" + suffix, 0xB0 | X | cls, "movsx", "off", width,
                          semantics="dst = src sign-extended from its low off bits"))
    ops.append(Op("addr_space_cast", 0xB0 | X | ALU64, "addr_space_cast", "off", 1,
                  semantics="dst = src, a pointer cast from address space imm & 0xffff "
                            "to imm >> 16 (BPF arena)"))
    ops.append(Op("le", END | TO_LE | ALU, "end", symbol="le",
                  semantics="dst = dst converted to little endian, imm bits"))
    ops.append(Op("be", END | TO_BE | ALU, "end", symbol="be",
                  semantics="dst = dst converted to big endian, imm bits"))
    ops.append(Op("bswap", END | ALU64, "end", symbol="bswap",
                  semantics="dst = dst with its low imm bits byte-swapped"))

    ops.append(Op("ja", JA | JMP, "ja", semantics="jump off slots ahead"))
    ops.append(Op("gotol", JA | JMP32, "gotol", semantics="jump imm slots ahead (32-bit)"))
    ops.append(Op("may_goto", JCOND | JMP, "may_goto", "src", 0,
                  semantics="jump off slots ahead once the loop budget runs out"))
    for cls, suffix in ((JMP, ""), (JMP32, "32")):
        for name, code, sym, sem in JMP_OPS:
            ops.append(Op(name + suffix, code | K | cls, "jmp_k", symbol=sym, semantics=sem))
            ops.append(Op(name + suffix, code | X | cls, "jmp_x", symbol=sym, semantics=sem))
    ops.append(Op("call", CALL | JMP, "call", "src", CALL_HELPER,
                  semantics="call the kernel helper with id imm"))
    ops.append(Op("call_local", CALL | JMP, "call", "src", abi.PSEUDO_CALL,
                  semantics="call the subprogram imm slots ahead"))
    ops.append(Op("call_kfunc", CALL | JMP, "call_kfunc", "src", abi.PSEUDO_KFUNC_CALL,
                  semantics="call the kernel function with BTF id imm (off: fd_array index)"))
    ops.append(Op("exit", EXIT | JMP, "exit", semantics="return r0"))

    for size, bits in SIZE_BITS.items():
        ops.append(Op("ldx", LDX | MEM | bits, "ldx", size=size,
                      semantics="dst = *(size *)(src + off)"))
        if size != 8:
            ops.append(Op("ldxsx", LDX | MEMSX | bits, "ldx", size=size,
                          semantics="dst = *(signed size *)(src + off), sign-extended"))
        ops.append(Op("st", ST | MEM | bits, "st", size=size,
                      semantics="*(size *)(dst + off) = imm"))
        ops.append(Op("stx", STX | MEM | bits, "stx", size=size,
                      semantics="*(size *)(dst + off) = src"))
        if size != 8:
            ops.append(Op("ld_abs", LD | ABS | bits, "ld_abs", size=size,
                          semantics="r0 = ntoh(*(size *)(skb data + imm)), legacy"))
            ops.append(Op("ld_ind", LD | IND | bits, "ld_ind", size=size,
                          semantics="r0 = ntoh(*(size *)(skb data + src + imm)), legacy"))
        atomic = STX | ATOMIC | bits
        if size in (4, 8):
            for name, imm, sym in ATOMIC_OPS:
                ops.append(Op("atomic_" + name, atomic, "atomic", "imm", imm, size, sym,
                              f"*(size *)(dst + off) {sym}= src, atomically"))
                ops.append(Op("atomic_fetch_" + name, atomic, "atomic_fetch", "imm",
                              imm | FETCH, size, sym,
                              f"src = old *(size *)(dst + off); memory {sym}= src, atomically"))
            ops.append(Op("xchg", atomic, "atomic_fetch", "imm", XCHG, size,
                          semantics="swap src and *(size *)(dst + off), atomically"))
            ops.append(Op("cmpxchg", atomic, "atomic", "imm", CMPXCHG, size,
                          semantics="if *(dst + off) == r0 then it = src; r0 = old value"))
        ops.append(Op("load_acquire", atomic, "load_acquire", "imm", LOAD_ACQ, size,
                      semantics="dst = *(size *)(src + off) with acquire ordering"))
        ops.append(Op("store_release", atomic, "atomic", "imm", STORE_REL, size,
                      semantics="*(size *)(dst + off) = src with release ordering"))

    for src, (name, sem) in LDDW_SOURCES.items():
        ops.append(Op(name, LD_IMM64, "lddw", "src", src, 8, semantics=sem))
    return tuple(ops)


OPS = _build_ops()


def _index(ops):
    """opcode byte -> Op, or -> (field, {field value: Op}) where operations share the byte."""
    table = {}
    for op in ops:
        if op.key is None:
            table[op.opcode] = op
        else:
            table.setdefault(op.opcode, (op.key, {}))[1][op.value] = op
    return table


BY_OPCODE = _index(OPS)
BY_NAME = {}
for _op in OPS:
    BY_NAME.setdefault(_op.name, []).append(_op)
del _op


# callx, a call through a register: LLVM assembles it (BPF_CALL | BPF_X, LLVM 14 keeping the
# register number in imm) but Linux has no such instruction. It is in no table above, so
# nothing builds or parses it; a disassembler names it (see shown_as).
CALLX = JMP | CALL | X
CALLX_OP = Op("callx", CALLX, "callx",
              semantics="call the function whose address is in register imm (not in Linux)")

# Opcode bytes whose variants are told apart by a field older eBPF kept zero: ``off`` for
# div, mod and mov (sdiv, smod, movsx, addr_space_cast), ``src`` for call and ld_imm64.
# Bytes naming none of the variants show as the plain one (value 0), as LLVM 14 shows them.
_PLAIN_VARIANT = {
    opcode: entry[1][0] for opcode, entry in BY_OPCODE.items()
    if entry.__class__ is tuple and 0 in entry[1]
    and (entry[0] == "off" or opcode in (JMP | CALL, LD_IMM64))
}


def field_rules(op):
    """The FIELDS rules of ``op`` for (dst, src, off, imm), its discriminator marked "key"."""
    names = ("dst", "src", "off", "imm")
    return tuple("key" if name == op.key else rule for name, rule in zip(names, FIELDS[op.form]))


def lookup(opcode, src, off, imm):
    """The Op an instruction's fields denote, or None if they denote none."""
    entry = BY_OPCODE.get(opcode)
    if entry is None or entry.__class__ is Op:
        return entry
    field, choices = entry
    return choices.get(src if field == "src" else off if field == "off" else imm)


def shown_as(opcode, src, off, imm):
    """The Op whose text a disassembler shows for these fields, valid or not: lookup()'s;
    else the plain variant of an opcode byte shared by variants (``r1 /= r2`` for 0x3f with
    an unknown off, ``call 5`` for 0x85 with an unknown src); else callx for 0x8d with a
    register number (0-15) in imm. None when the bytes name no operation at all."""
    op = lookup(opcode, src, off, imm)
    if op is None:
        op = _PLAIN_VARIANT.get(opcode)
        if op is None and opcode == CALLX and 0 <= imm <= 15:
            op = CALLX_OP
    return op


# Jump forms whose target offset is in the 16-bit ``off``; gotol, local calls and ld_func
# keep theirs in the 32-bit ``imm``.
OFF_JUMP_FORMS = ("ja", "may_goto", "jmp_k", "jmp_x")
KX_FORMS = {"alu_k": False, "shift_k": False, "jmp_k": False, "alu_x": True, "jmp_x": True}


def find(name, *, x=None, size=0, value=None):
    """The Op named ``name``: register form if ``x``, ``size`` bytes wide, key ``value``."""
    for op in BY_NAME[name]:
        if x is not None and KX_FORMS.get(op.form, x) != x:
            continue
        if size and op.size != size:
            continue
        if value is not None and op.value != value:
            continue
        return op
    raise KeyError(name)


def is_alu64(opcode):
    """True when the opcode is of class ALU64 or JMP (64-bit operands, ``r`` registers)."""
    return opcode & 0x07 in (ALU64, JMP)
