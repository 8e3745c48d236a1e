"""The text syntax of instructions: llvm-objdump's, both ways (format and parse).

The text is what plain ``llvm-objdump -d`` (LLVM 14, default features) prints: ``r1 += 5``,
``w1 = w2``, ``if w1 == 5 goto +1``, ``*(u32 *)(r10 - 4) = r1``, ``r0 = *(u8 *)(r1 + 4)``,
``lock *(u32 *)(r1 + 0) += r2``, ``call 14``, ``r1 = 4886718345 ll``. Loads, stores and the
atomic add name their value register ``r`` whatever the access width; ``llvm-objdump
--mattr=+alu32`` and llvm-mc also write ``w`` there (``*(u32 *)(r10 - 4) = w1``), and the
parser accepts both. Instructions LLVM 14 does not decode (without +alu32) use newer LLVM's
syntax: ``r1 s/= r3``, ``r1 = (s8)r4``, ``r0 = *(s8 *)(r1 + 0)``, ``r1 = bswap16 r1``,
``gotol +3``, ``may_goto +2``, ``*(u32 *)(r10 - 4) = 5``, ``r0 = load_acquire((u64 *)(r1 +
0))``, ``r1 = addr_space_cast(r2, 0, 1)``, and the ``w`` view for the 32-bit atomics other
than add (``w2 = atomic_fetch_add((u32 *)(r1 + 0), w2)``, ``lock *(u32 *)(r1 + 0) |= w2``,
``store_release((u8 *)(r1 + 0), w2)``).

Where LLVM 14's text drops information, one small extension keeps it (so that parsing the
text gives back the same instruction): ``call pc+N`` for a local call (LLVM: ``call N``; the
kernel's and bpftool's syntax), ``call kfunc ID`` for a kernel function call, a fourth
``ld_pseudo`` operand for a non-zero second immediate (``ld_pseudo r1, 2, 3, 8``),
``skb[r1 + 2]`` for a non-zero LD_IND immediate. Symbolic references print as names:
``goto out``, ``call func``, ``r1 = my_map ll`` (a map load by name), ``ld_pseudo r1, 2,
my_data, 8``. The parser ignores a trailing ``<symbol>`` annotation, as llvm-objdump and
:func:`pybpf.disasm.disassemble` print after a jump (``goto +4 <out>`` is ``goto +4``).
"""

from __future__ import annotations

import re

from pybpf import abi
from pybpf.asm import opcodes as oc
from pybpf.asm.insn import Instruction, check, validate
from pybpf.asm.operands import address_spaces, helper_id, imm32, imm64
from pybpf.errors import AssemblerError
from pybpf.limits import INSNS_LIMIT, MAX_INSNS

_ALU_NAME = {sym: name for name, _code, sym, _off, _sem in oc.ALU_OPS}
_JMP_NAME = {sym: name for name, _code, sym, _sem in oc.JMP_OPS}
_ATOMIC_NAME = {sym: name for name, _imm, sym in oc.ATOMIC_OPS}


# ---------------------------------------------------------------------------------- format

def format_insn(insn):
    """The instruction as llvm-objdump -d prints it (see the module docstring).

    An instruction the kernel would refuse prints too, as its operation shows it (``r10 +=
    r0``, ``r1 <<= 99``, ``callx r1``; :func:`pybpf.asm.opcodes.shown_as`); AssemblerError
    only when its fields name no operation at all.
    """
    op = oc.shown_as(insn.opcode, insn.src, insn.off, insn.imm)
    if op is None:
        raise AssemblerError(check(insn))
    return _FORMAT[op.form](insn, op)


def _reg(opcode, number):
    """``r3`` for 64-bit operations, ``w3`` for 32-bit ones."""
    return f"r{number}" if oc.is_alu64(opcode) else f"w{number}"


def _sized(size, number):
    """``w3`` for atomics narrower than 8 bytes (the alu32 view), ``r3`` for 8-byte ones."""
    return f"r{number}" if size == 8 else f"w{number}"


def _mem(base, off):
    return f"(r{base} {'-' if off < 0 else '+'} {abs(off)})"


def _target(insn, value):
    return insn.ref if insn.ref is not None else f"{value:+d}"


def _alu(insn, op):
    dst = _reg(insn.opcode, insn.dst)
    src = _reg(insn.opcode, insn.src) if op.form == "alu_x" else str(insn.imm)
    return f"{dst} {op.symbol}= {src}" if op.symbol else f"{dst} = {src}"


def _jmp(insn, op):
    src = _reg(insn.opcode, insn.src) if op.form == "jmp_x" else str(insn.imm)
    return (f"if {_reg(insn.opcode, insn.dst)} {op.symbol} {src} "
            f"goto {_target(insn, insn.off)}")


def _call(insn, op):
    if insn.src != abi.PSEUDO_CALL:  # a helper (or an unknown src, shown as LLVM 14 does)
        return f"call {insn.imm}"
    return f"call {insn.ref}" if insn.ref is not None else f"call pc{insn.imm:+d}"


def _call_kfunc(insn, op):
    return f"call kfunc {insn.imm}" + (f", {insn.off}" if insn.off else "")


def _ldx(insn, op):
    if op.name == "ldxsx":
        return f"r{insn.dst} = *(s{op.size * 8} *){_mem(insn.src, insn.off)}"
    return f"r{insn.dst} = *(u{op.size * 8} *){_mem(insn.src, insn.off)}"


def _atomic(insn, op):
    ptr = f"(u{op.size * 8} *){_mem(insn.dst, insn.off)}"
    # LLVM 14 decodes a 32-bit atomic add without +alu32 (``r`` view); the other 32-bit
    # atomics only with it, so they keep the ``w`` view that newer LLVM prints too.
    src = f"r{insn.src}" if op.name == "atomic_add" else _sized(op.size, insn.src)
    if op.name == "store_release":
        return f"store_release({ptr}, {src})"
    if op.name == "cmpxchg":
        name, r0 = ("cmpxchg_64", "r0") if op.size == 8 else ("cmpxchg32_32", "w0")
        return f"{r0} = {name}({_mem(insn.dst, insn.off)[1:-1]}, {r0}, {src})"
    return f"lock *{ptr} {op.symbol}= {src}"


def _atomic_fetch(insn, op):
    src = _sized(op.size, insn.src)
    if op.name == "xchg":
        name = "xchg_64" if op.size == 8 else "xchg32_32"
        return f"{src} = {name}({_mem(insn.dst, insn.off)[1:-1]}, {src})"
    return f"{src} = {op.name}((u{op.size * 8} *){_mem(insn.dst, insn.off)}, {src})"


def _lddw(insn, op):
    if insn.src == 0:
        value = insn.imm - (1 << 64) if insn.imm >= 1 << 63 else insn.imm
        return f"r{insn.dst} = {value} ll"
    if insn.src == abi.PSEUDO_MAP_FD and insn.ref is not None and insn.imm >> 32 == 0:
        return f"r{insn.dst} = {insn.ref} ll"
    low = insn.ref if insn.ref is not None else insn.imm & 0xFFFFFFFF
    high = insn.imm >> 32
    return f"ld_pseudo\tr{insn.dst}, {insn.src}, {low}" + (f", {high}" if high else "")


def _ld_ind(insn, op):
    index = f"r{insn.src}" if not insn.imm else _mem(insn.src, insn.imm)[1:-1]
    return f"r0 = *(u{op.size * 8} *)skb[{index}]"


_FORMAT = {
    "alu_k": _alu,
    "shift_k": _alu,
    "alu_x": _alu,
    "neg": lambda i, op: f"{_reg(i.opcode, i.dst)} = -{_reg(i.opcode, i.dst)}",
    "movsx": lambda i, op: f"{_reg(i.opcode, i.dst)} = (s{i.off}){_reg(i.opcode, i.src)}",
    "addr_space_cast": lambda i, op: (f"r{i.dst} = addr_space_cast(r{i.src}, "
                                      f"{i.imm >> 16 & 0xFFFF}, {i.imm & 0xFFFF})"),
    "end": lambda i, op: f"r{i.dst} = {op.symbol}{i.imm} r{i.dst}",
    "ja": lambda i, op: f"goto {_target(i, i.off)}",
    "gotol": lambda i, op: f"gotol {_target(i, i.imm)}",
    "may_goto": lambda i, op: f"may_goto {_target(i, i.off)}",
    "jmp_k": _jmp,
    "jmp_x": _jmp,
    "call": _call,
    "call_kfunc": _call_kfunc,
    "callx": lambda i, op: f"callx r{i.imm}",  # LLVM 14's encoding: the register in imm
    "exit": lambda i, op: "exit",
    "ldx": _ldx,
    "st": lambda i, op: f"*(u{op.size * 8} *){_mem(i.dst, i.off)} = {i.imm}",
    "stx": lambda i, op: f"*(u{op.size * 8} *){_mem(i.dst, i.off)} = r{i.src}",
    "atomic": _atomic,
    "atomic_fetch": _atomic_fetch,
    "load_acquire": lambda i, op: (f"{_sized(op.size, i.dst)} = load_acquire("
                                   f"(u{op.size * 8} *){_mem(i.src, i.off)})"),
    "lddw": _lddw,
    "ld_abs": lambda i, op: f"r0 = *(u{op.size * 8} *)skb[{i.imm}]",
    "ld_ind": _ld_ind,
}


# ----------------------------------------------------------------------------------- parse

_R = r"([rw])(\d+)"  # a register: prefix, number
_NUM = r"-?(?:0x[0-9a-fA-F]+|0|[1-9]\d*)"  # a number: decimal without leading 0, or hex
_ID = r"[A-Za-z_.$][\w.$]*"  # a label or map name
_N, _NAME = f"({_NUM})", f"({_ID})"
_T = rf"([+-]\d+|{_ID})"  # a jump target: offset or label
_M = r"\(r(\d+) ([+-]) (\d+)\)"  # a memory operand (base + offset)
_SZ = r"(8|16|32|64)"


def _ops(symbols):
    return "|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True) if s)


_ALU_SYMS, _JMP_SYMS = _ops(_ALU_NAME), _ops(_JMP_NAME)


_MAX_DIGITS = 20  # 2**64 has 20 decimal digits: no instruction field holds a longer number


def _int(text):
    """The number ``text`` (decimal, or hex after ``0x``; a sign allowed), as every number the
    parser reads is converted: one longer than any field holds is refused before int() sees
    it (Python 3.11+ refuses str/int conversions of more than 4300 digits with ValueError)."""
    digits = text.lstrip("+-")
    hexadecimal = digits[:2] in ("0x", "0X")
    significant = digits[2 if hexadecimal else 0:].lstrip("0")
    if len(significant) > _MAX_DIGITS:
        raise AssemblerError(f"the number {text[:12]}... has {len(significant)} digits; no "
                             "instruction field holds more than 64 bits")
    return int(text, 16 if hexadecimal else 10)


def _disp(sign, digits):
    return -_int(digits) if sign == "-" else _int(digits)


def _suffix(prefix):
    return "" if prefix == "r" else "32"


def _p_alu(m):
    dp, d, sym, sp, s, n = m.groups()
    name = _ALU_NAME[sym or ""] + _suffix(dp)
    if sp is not None:
        _same_prefix(dp, sp)
        op = oc.find(name, x=True)
        return Instruction(op.opcode, _int(d), _int(s), op.value)
    op = oc.find(name, x=False)
    return Instruction(op.opcode, _int(d), 0, op.value, imm32(_int(n)))


def _p_jmp(m):
    dp, d, sym, sp, s, n, target = m.groups()
    off, ref = _p_target(target)
    name = _JMP_NAME[sym] + _suffix(dp)
    if sp is not None:
        _same_prefix(dp, sp)
        return Instruction(oc.find(name, x=True).opcode, _int(d), _int(s), off, ref=ref)
    return Instruction(oc.find(name, x=False).opcode, _int(d), 0, off, imm32(_int(n)), ref=ref)


def _p_target(text):
    return (_int(text), None) if text[0] in "+-" else (0, text)


def _p_jump_always(opcode, field, target):
    value, ref = _p_target(target)
    return Instruction(opcode, ref=ref, **{field: value})


def _p_call_name(m):
    """``call bpf_<helper>`` calls a helper (an unknown one is an error); any other name is
    a local call to that label."""
    name = m.group(1)
    if name.startswith("bpf_"):
        return Instruction(oc.JMP | oc.CALL, imm=helper_id(name))
    return Instruction(oc.JMP | oc.CALL, src=abi.PSEUDO_CALL, ref=name)


def _sized_reg(prefix, number, size):
    """A load/store/atomic value register, written ``rN`` (plain llvm-objdump) or ``wN``
    (llvm-objdump --mattr=+alu32) for accesses narrower than 8 bytes."""
    if prefix == "w" and size == 8:
        raise AssemblerError(f"w{number} is a 32-bit register; a 64-bit access needs r{number}")
    return _int(number)


def _p_mem_op(name, size, base, sign, digits, prefix, src, imm=None):
    op = oc.find(name, size=size)
    return Instruction(op.opcode, _int(base), _sized_reg(prefix, src, size), _disp(sign, digits),
                       op.value if imm is None else imm)


def _p_lock(m):
    bits, base, sign, digits, sym, p, src = m.groups()
    return _p_mem_op("atomic_" + _ATOMIC_NAME[sym], _int(bits) // 8, base, sign, digits, p, src)


def _p_fetch(m):
    p, dst, name, bits, base, sign, digits, p2, src = m.groups()
    _same_register(p + dst, p2 + src)
    return _p_mem_op("atomic_fetch_" + name, _int(bits) // 8, base, sign, digits, p, src)


def _p_xchg(m):
    p, dst, width, base, sign, digits, p2, src = m.groups()
    _same_register(p + dst, p2 + src)
    return _p_mem_op("xchg", 8 if width == "_64" else 4, base, sign, digits, p, src)


def _p_cmpxchg(m):
    _p, _r0, width, base, sign, digits, _p2, _r0b, p, src = m.groups()
    return _p_mem_op("cmpxchg", 8 if width == "_64" else 4, base, sign, digits, p, src)


def _p_load_acquire(m):
    p, dst, bits, base, sign, digits = m.groups()
    op = oc.find("load_acquire", size=_int(bits) // 8)
    return Instruction(op.opcode, _sized_reg(p, dst, op.size), _int(base), _disp(sign, digits),
                       op.value)


def _p_store_release(m):
    bits, base, sign, digits, p, src = m.groups()
    return _p_mem_op("store_release", _int(bits) // 8, base, sign, digits, p, src)


def _p_store(m):
    bits, base, sign, digits, p, src, n = m.groups()
    if p is not None:
        return _p_mem_op("stx", _int(bits) // 8, base, sign, digits, p, src)
    return Instruction(oc.find("st", size=_int(bits) // 8).opcode, _int(base), 0,
                       _disp(sign, digits), imm32(_int(n)))


def _p_load(m):
    p, dst, kind, bits, base, sign, digits = m.groups()
    op = oc.find("ldx" if kind == "u" else "ldxsx", size=_int(bits) // 8)
    return Instruction(op.opcode, _sized_reg(p, dst, op.size), _int(base), _disp(sign, digits))


def _p_ld_ind(m):
    bits, src, sign, digits = m.groups()
    imm = _disp(sign, digits) if sign else 0
    op = oc.find("ld_ind", size=_int(bits) // 8)
    return Instruction(op.opcode, 0, _int(src), 0, imm32(imm))


def _p_end(m):
    _p, dst, kind, bits, _p2, dst2 = m.groups()
    if dst != dst2:
        raise AssemblerError(f"byte swap must name one register twice (r{dst} = {kind} r{dst})")
    return Instruction(oc.find(kind).opcode, _int(dst), imm=_int(bits))


def _p_lddw(m):
    dst, value = m.groups()
    if value[0].isdigit() or value[0] == "-":
        return Instruction(oc.LD_IMM64, _int(dst), 0, 0, imm64(_int(value)))
    return Instruction(oc.LD_IMM64, _int(dst), abi.PSEUDO_MAP_FD, 0, 0, ref=value)


def _p_ld_pseudo(m):
    dst, src, low, high = m.groups()
    high_bits = (imm32(_int(high)) & 0xFFFFFFFF) << 32 if high else 0
    if low[0].isdigit() or low[0] == "-":
        return Instruction(oc.LD_IMM64, _int(dst), _int(src), 0,
                           high_bits | imm32(_int(low)) & 0xFFFFFFFF)
    return Instruction(oc.LD_IMM64, _int(dst), _int(src), 0, high_bits, ref=low)


def _p_neg(m):
    dp, dst, sp, dst2 = m.groups()
    _same_prefix(dp, sp)
    if dst != dst2:
        raise AssemblerError(f"negation must name one register twice ({dp}{dst} = -{dp}{dst})")
    return Instruction(oc.find("neg" + _suffix(dp)).opcode, _int(dst))


def _p_movsx(m):
    dp, dst, bits, sp, src = m.groups()
    _same_prefix(dp, sp)
    op = oc.find("movsx" + _suffix(dp), value=_int(bits))
    return Instruction(op.opcode, _int(dst), _int(src), op.value)


def _p_addr_space_cast(m):
    dst, src, dst_as, src_as = m.groups()
    op = oc.find("addr_space_cast")
    return Instruction(op.opcode, _int(dst), _int(src), op.value,
                       address_spaces(_int(dst_as), _int(src_as)))


def _same_prefix(*prefixes):
    if len(set(prefixes)) > 1:
        raise AssemblerError("mixes r (64-bit) and w (32-bit) registers in one instruction")


def _same_register(first, second):
    if first != second:
        raise AssemblerError(f"the result register must be the value register ({first} is "
                             f"not {second})")


_SYNTAX = [
    (rf"goto {_T}", lambda m: _p_jump_always(oc.JMP | oc.JA, "off", m.group(1))),
    (rf"gotol {_T}", lambda m: _p_jump_always(oc.JMP32 | oc.JA, "imm", m.group(1))),
    (rf"may_goto {_T}", lambda m: _p_jump_always(oc.JMP | oc.JCOND, "off", m.group(1))),
    (rf"if {_R} ({_JMP_SYMS}) (?:{_R}|{_N}) goto {_T}", _p_jmp),
    (r"call pc([+-]\d+)", lambda m: Instruction(oc.JMP | oc.CALL, 0, abi.PSEUDO_CALL, 0,
                                                _int(m.group(1)))),
    (rf"call kfunc {_N}(?:, {_N})?", lambda m: Instruction(oc.JMP | oc.CALL, 0,
        abi.PSEUDO_KFUNC_CALL, _int(m.group(2) or "0"), imm32(_int(m.group(1))))),
    (rf"call {_N}", lambda m: Instruction(oc.JMP | oc.CALL, imm=imm32(_int(m.group(1))))),
    (rf"call {_NAME}", _p_call_name),
    (r"exit", lambda m: Instruction(oc.JMP | oc.EXIT)),
    (rf"lock \*\(u{_SZ} \*\){_M} ({_ops(_ATOMIC_NAME)})= {_R}", _p_lock),
    (rf"{_R} = atomic_fetch_(add|or|and|xor)\(\(u{_SZ} \*\){_M}, {_R}\)", _p_fetch),
    (rf"{_R} = xchg(_64|32_32)\(r(\d+) ([+-]) (\d+), {_R}\)", _p_xchg),
    (rf"{_R} = cmpxchg(_64|32_32)\(r(\d+) ([+-]) (\d+), {_R}, {_R}\)", _p_cmpxchg),
    (rf"{_R} = load_acquire\(\(u{_SZ} \*\){_M}\)", _p_load_acquire),
    (rf"store_release\(\(u{_SZ} \*\){_M}, {_R}\)", _p_store_release),
    (rf"\*\(u{_SZ} \*\){_M} = (?:{_R}|{_N})", _p_store),
    (rf"{_R} = \*\(([us]){_SZ} \*\){_M}", _p_load),
    (rf"r0 = \*\(u{_SZ} \*\)skb\[{_N}\]", lambda m: Instruction(
        oc.find("ld_abs", size=_int(m.group(1)) // 8).opcode, imm=imm32(_int(m.group(2))))),
    (rf"r0 = \*\(u{_SZ} \*\)skb\[r(\d+)(?: ([+-]) (\d+))?\]", _p_ld_ind),
    (rf"{_R} = (le|be|bswap)(\d+) {_R}", _p_end),
    (rf"{_R} = -{_R}", _p_neg),
    (rf"{_R} = \(s(8|16|32)\){_R}", _p_movsx),
    (rf"r(\d+) = addr_space_cast\(r(\d+), {_N}, {_N}\)", _p_addr_space_cast),
    (rf"r(\d+) = ({_NUM}|{_ID}) ll", _p_lddw),
    (rf"ld_pseudo\s+r(\d+), (\d+), ({_NUM}|{_ID})(?:, {_N})?", _p_ld_pseudo),
    (rf"{_R} (?:({_ALU_SYMS})=|=) (?:{_R}|{_N})", _p_alu),
]
# ASCII: \d and \w must not match other scripts' digits and letters.
_SYNTAX = [(re.compile(pattern + r"\Z", re.ASCII), build) for pattern, build in _SYNTAX]


def parse_insn(text):
    """One instruction from its text (no label, no comment; a ``<symbol>`` after it is skipped)."""
    line = _ANNOTATION.sub("", " ".join(text.split()))
    for pattern, build in _SYNTAX:
        match = pattern.match(line)
        if match:
            try:
                insn = build(match)
            except KeyError as exc:
                raise AssemblerError(f"no such instruction form ({exc})") from None
            validate(insn)
            return insn
    raise AssemblerError("not an instruction in llvm-objdump syntax")


_ANNOTATION = re.compile(r" <[^<>\s]*>\Z")  # llvm-objdump's jump target: goto +4 <LBB0_2>
_LISTING = re.compile(r"\s*\d+:\s+(?:[0-9a-f]{2} ){7}(?:(?:[0-9a-f]{2} ){8})?[0-9a-f]{2}\s+",
                      re.ASCII)
_LABEL = re.compile(rf"(?:(?:[0-9a-fA-F]+ )?<{_NAME}>|{_NAME}):\s*(.*)\Z", re.ASCII)


def parse(text):
    """Instructions from assembly text: one per line, ``name:`` labels, ``;``/``#`` comments.

    A whole-line comment becomes the ``comment`` of the next instruction. Lines of an
    llvm-objdump style listing are accepted too: ``   3:\\tb7 01 ...\\tr1 = 0``, labels as
    ``<name>:`` or ``0000000000000048 <name>:``, and ``goto +4 <name>`` (the offset counts).
    """
    insns, labels, comment, seen, slots = [], [], None, set(), 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _LISTING.sub("", raw, count=1) if _LISTING.match(raw) else raw
        code, _, note = _split_comment(line)
        code = code.strip()
        if not code:
            if note is not None and note.strip():
                comment = note.strip() if comment is None else f"{comment}\n{note.strip()}"
            continue
        label = _LABEL.match(code)
        if label:
            bracketed, plain, code = label.groups()
            name = bracketed or plain
            if name in seen:
                raise AssemblerError(f"line {number}: duplicate label {name!r}", len(insns), raw)
            seen.add(name)
            labels.append(name)
            if not code:
                continue
        try:
            insn = parse_insn(code)
        except AssemblerError as exc:
            raise AssemblerError(f"line {number}: {exc.message}", len(insns),
                                 _quoted(raw.strip())) from None
        insn.labels, insn.comment = tuple(labels), comment
        labels, comment = [], None
        insns.append(insn)
        slots += insn.slots
        if slots > MAX_INSNS:
            raise AssemblerError(f"line {number}: the program is longer than {INSNS_LIMIT}",
                                 len(insns) - 1)
    if labels:
        raise AssemblerError(f"label {labels[0]!r} at the end names no instruction; "
                             "add one after it", len(insns))
    return insns


def _quoted(line, limit=60):
    """A source line as an error message quotes it: cut short if it is long."""
    return line if len(line) <= limit else line[:limit] + "..."


def _split_comment(line):
    """(code, separator, comment text or None) split at the first ``;`` or ``#``."""
    cut = min((i for i in (line.find(";"), line.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return line, "", None
    return line[:cut], line[cut], line[cut + 1:]
