"""Encodings of every instruction: against llvm-mc (LLVM 14) and against RFC 9669 by hand.

Oracle flags: ``llvm-mc -triple bpfel -show-encoding``, fed the disassembler's text (plain
``llvm-objdump -d`` syntax) and, for loads, stores and atomics narrower than 8 bytes, the same
text in the ``w`` view that ``llvm-objdump --mattr=+alu32`` prints. LLVM 14 cannot assemble
the newer instructions (v4 ISA, acquire/release, may_goto, pseudo loads) nor, because of
parser limits, ``%=`` and ``&`` (jset) and the fetch atomics; those are checked against
hand-derived RFC 9669 encodings below.
"""

import os
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pybpf.asm import (
    B, DW, H, R0, R1, R2, R3, R4, R10, W, Builder, Instruction, assemble, decode_all,
    format_insn, opcodes as oc, parse, resolve, slot_to_index,
)
from pybpf.errors import AssemblerError
from support import all_samples, instructions, require_tool, skip_or_fail

# Forms and operations LLVM 14's assembler does not accept.
_NOT_IN_LLVM14_MC = {"st", "atomic_fetch", "load_acquire", "movsx", "gotol", "may_goto",
                     "call_kfunc", "addr_space_cast"}
_NOT_IN_LLVM14_MC_OPS = {"sdiv", "sdiv32", "smod", "smod32", "mod", "mod32", "jset",
                         "jset32", "ldxsx", "bswap", "cmpxchg", "store_release", "call_local",
                         "ld_map_fd", "ld_map_value", "ld_btf_id", "ld_func", "ld_map_idx",
                         "ld_map_idx_value"}


def llvm14_assembles(insn):
    op = insn.op
    if op.form == "ld_ind" and insn.imm:  # pybpf's extension: skb[r1 + 2]
        return False
    return op.form not in _NOT_IN_LLVM14_MC and op.name not in _NOT_IN_LLVM14_MC_OPS


def test_encodings_match_llvm_mc():
    llvm_mc = require_tool("llvm-mc")
    insns = [i for i in all_samples() if llvm14_assembles(i)]
    source = "\n".join(format_insn(i) for i in insns) + "\n"
    for insn, expected in zip(insns, _llvm_mc_encodings(llvm_mc, source)):
        assert insn.encode() == expected, format_insn(insn)


def _llvm_mc_encodings(llvm_mc, source):
    """The bytes llvm-mc assembles each line of ``source`` to."""
    result = subprocess.run([llvm_mc, "-triple", "bpfel", "-show-encoding"],
                            input=source, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr[:2000]
    encodings = re.findall(r"# encoding: \[([^\]]*)\]", result.stdout)
    assert len(encodings) == source.count("\n")
    return [bytes(int(b, 16) for b in encoding.split(",")) for encoding in encodings]


def _other_view(text):
    """The text with its value registers in the other view (r1 <-> w1); bases stay r."""
    return re.sub(r"(?<!\()\b([rw])(\d+)", lambda m: "wr"[m[1] == "w"] + m[2], text)


def test_both_register_views_parse_like_llvm_mc():
    llvm_mc = require_tool("llvm-mc")
    insns = [i for i in all_samples() if llvm14_assembles(i) and i.op.size in (1, 2, 4)
             and i.op.name in ("ldx", "stx", "atomic_add")]
    texts = [format_insn(i) for i in insns] + [_other_view(format_insn(i)) for i in insns]
    assert any(" = w" in t for t in texts) and any(" = r" in t for t in texts)
    encodings = _llvm_mc_encodings(llvm_mc, "\n".join(texts) + "\n")
    for text, expected in zip(texts, encodings):
        assert parse(text)[0].encode() == expected, text


# Hand-derived from RFC 9669 (and the Linux docs for the Linux-only instructions): opcode,
# regs byte (src << 4 | dst), off (LE s16), imm (LE s32).
RFC_ENCODINGS = [
    (lambda b: b.sdiv(R1, R3), "3f31010000000000"),
    (lambda b: b.sdiv32(R1, 7), "3401010007000000"),
    (lambda b: b.smod(R1, R3), "9f31010000000000"),
    (lambda b: b.smod32(R1, -3), "94010100fdffffff"),
    (lambda b: b.mod(R1, R2), "9f21000000000000"),
    (lambda b: b.movsx(R1, R4, 8), "bf41080000000000"),
    (lambda b: b.movsx(R1, R4, 32), "bf41200000000000"),
    (lambda b: b.movsx32(R1, R2, 16), "bc21100000000000"),
    # addr_space_cast: off 1, imm dst_as << 16 | src_as (LLVM's BPFInstrInfo.td)
    (lambda b: b.addr_space_cast(R1, R2, 0, 1), "bf21010001000000"),
    (lambda b: b.addr_space_cast(R3, R4, 1, 0), "bf43010000000100"),
    (lambda b: b.ldxsx(B, R0, R1, 0), "9110000000000000"),
    (lambda b: b.ldxsx(H, R0, R1, -2), "8910feff00000000"),
    (lambda b: b.ldxsx(W, R0, R1, 4), "8110040000000000"),
    (lambda b: b.bswap(R1, 16), "d701000010000000"),
    (lambda b: b.bswap(R1, 64), "d701000040000000"),
    (lambda b: b.gotol(3), "0600000003000000"),
    (lambda b: b.gotol(-100000), "060000006079feff"),
    (lambda b: b.may_goto(2), "e500020000000000"),
    (lambda b: b.load_acquire(DW, R0, R1, 0), "db10000000010000"),
    (lambda b: b.load_acquire(B, R0, R1, 8), "d310080000010000"),
    (lambda b: b.store_release(H, R1, 0, R2), "cb21000010010000"),
    (lambda b: b.store_release(W, R1, -4, R2), "c321fcff10010000"),
    (lambda b: b.atomic_fetch_add(DW, R1, 0, R2), "db21000001000000"),
    (lambda b: b.atomic_fetch_xor(W, R1, 0, R2), "c3210000a1000000"),
    (lambda b: b.xchg(DW, R1, 0, R2), "db210000e1000000"),
    (lambda b: b.cmpxchg(W, R1, 0, R2), "c3210000f1000000"),
    (lambda b: b.st(W, R10, -4, 5), "620afcff05000000"),
    (lambda b: b.st(DW, R10, -8, -1), "7a0af8ffffffffff"),
    (lambda b: b.jset(R1, R2, 1), "4d21010000000000"),
    (lambda b: b.call_local(-1), "85100000ffffffff"),
    (lambda b: b.call_kfunc(16, 2), "8520020010000000"),
    (lambda b: b.ld_map_fd(R1, 5), "1811000005000000" + "0000000000000000"),
    (lambda b: b.ld_map_value(R1, 5, 8), "1821000005000000" + "0000000008000000"),
    (lambda b: b.ld_btf_id(R2, 1234), "18320000d2040000" + "0000000000000000"),
    (lambda b: b.ld_func(R2, 4), "1842000004000000" + "0000000000000000"),
    (lambda b: b.ld_map_idx(R1, 0), "1851000000000000" + "0000000000000000"),
    (lambda b: b.ld_map_idx_value(R1, 1, 16), "1861000001000000" + "0000000010000000"),
    (lambda b: b.lddw(R1, -1), "18010000ffffffff" + "00000000ffffffff"),
    (lambda b: b.ld_abs(W, 12), "200000000c000000"),
    (lambda b: b.ld_ind(B, R1, 2), "5010000002000000"),
]


@pytest.mark.parametrize("build, expected", RFC_ENCODINGS)
def test_rfc_encodings(build, expected):
    insn = build(Builder())
    assert insn.encode().hex() == expected
    assert Instruction.decode(bytes.fromhex(expected)) == insn


# ------------------------------------------------------------------------ properties

@settings(max_examples=2000, deadline=None)
@given(instructions())
def test_decode_encode_round_trip(insn):
    data = insn.encode()
    assert len(data) == 8 * insn.slots
    assert Instruction.decode(data) == insn


@settings(max_examples=300, deadline=None)
@given(st.lists(instructions(), max_size=20))
def test_decode_all_and_slot_to_index(insns):
    assert decode_all(b"".join(i.encode() for i in insns)) == insns
    table = slot_to_index(insns)
    assert len(table) == sum(i.slots for i in insns)
    assert [table[sum(i.slots for i in insns[:k])] for k in range(len(insns))] == \
        list(range(len(insns)))


def test_every_operation_samples_round_trip():
    for insn in all_samples():
        assert Instruction.decode(insn.encode()) == insn


def test_register_and_immediate_forms_differ():
    b = Builder()
    assert b.add(R1, 5).opcode == 0x07
    assert b.add(R1, R2).opcode == 0x0F
    assert b.add(R1, 0xFFFFFFFF).imm == -1  # unsigned 32-bit accepted and normalised


# ------------------------------------------------------------------------ linking

def _program():
    b = Builder()
    b.mov(R0, 0)
    b.label("loop")
    b.lddw(R2, 1 << 40)  # two slots: jumps over it count 2
    b.jeq(R1, 0, "out")
    b.ld_map_fd(R1, "counts")
    b.call("map_lookup_elem")
    b.ja("loop")
    b.label("out")
    b.comment("return 0")
    b.exit()
    return b.instructions


def test_resolve_counts_slots():
    insns = resolve(_program(), {"counts": 9})
    assert insns[2].off == 4  # lddw at slot 1-2, jeq at 3, out at 8: 8 - 3 - 1
    assert insns[5].off == -7  # ja at slot 7, loop at slot 1: 1 - 7 - 1
    assert insns[3].imm == 9 and insns[3].ref is None
    assert insns[6].comment == "return 0" and insns[6].labels == ("out",)
    assert slot_to_index(insns) == [0, 1, 1, 2, 3, 3, 4, 5, 6]


def test_assemble_is_resolve_then_encode():
    data = assemble(_program(), {"counts": 9})
    assert data == b"".join(i.encode() for i in resolve(_program(), {"counts": 9}))
    assert len(data) == 9 * 8


def test_resolve_accepts_objects_with_fd():
    class FakeMap:
        fd = 42

    assert resolve(_program(), {"counts": FakeMap()})[3].imm == 42


def test_long_jumps_use_imm():
    b = Builder()
    b.gotol("end")
    b.call_local("sub")
    b.ld_func(R1, "sub")
    b.exit()
    b.label("sub")
    b.label("end")
    b.exit()
    insns = resolve(b.instructions)
    assert [i.imm for i in insns[:3]] == [4, 3, 2]


def test_kernel_constants_and_helpers_are_defined_once():
    """Pseudo source values come from pybpf.abi; opcode bytes from opcodes; no copies."""
    from pybpf import abi, elf, objdump, spec
    from pybpf.asm import link, operands, text

    assert oc.find("call_local").value == abi.PSEUDO_CALL
    assert oc.find("call_kfunc").value == abi.PSEUDO_KFUNC_CALL
    assert {name: src for src, (name, _) in oc.LDDW_SOURCES.items()} == {
        "lddw": 0, "ld_map_fd": abi.PSEUDO_MAP_FD, "ld_map_value": abi.PSEUDO_MAP_VALUE,
        "ld_btf_id": abi.PSEUDO_BTF_ID, "ld_func": abi.PSEUDO_FUNC,
        "ld_map_idx": abi.PSEUDO_MAP_IDX, "ld_map_idx_value": abi.PSEUDO_MAP_IDX_VALUE}
    assert link._MAP_SOURCES == (abi.PSEUDO_MAP_FD, abi.PSEUDO_MAP_VALUE)
    copies = [(module.__name__, name) for module, names in (
        (oc, ("CALL_LOCAL", "CALL_KFUNC")), (elf, ("LD_IMM64", "CALL")),
        (objdump, ("CALL",)), (link, ("_OFF_FORMS",)), (text, ("_imm64",)),
        (elf, ("_kernel_name",))) for name in names if hasattr(module, name)]
    assert not copies
    assert text.imm64 is operands.imm64 and elf.object_name is spec.object_name


@pytest.mark.kernel
def test_addr_space_cast_loads_with_an_arena():
    """The verifier accepts the casts between an arena's two address spaces (Linux 6.9)."""
    from pybpf import host
    from pybpf.abi import MapFlags, MapType, ProgType
    from pybpf.errors import SyscallError
    from pybpf.maps import Map
    from pybpf.program import Program
    from pybpf.spec import MapSpec

    spec = MapSpec(name="arena", type=MapType.ARENA, key_size=0, value_size=0, max_entries=1,
                   flags=MapFlags.MMAPABLE, map_extra=1 << 32)  # map_extra: user address
    try:
        arena = Map(spec)
    except SyscallError as exc:
        if host.kernel_release() >= (6, 9):
            raise  # the kernel has arenas: the map must be created
        skip_or_fail(f"no BPF arena before Linux 6.9 (this is {os.uname().release}): {exc}")
    b = Builder()
    b.ld_map_fd(R1, "arena")
    b.mov(R2, 0)
    b.addr_space_cast(R1, R2, 0, 1)
    b.addr_space_cast(R1, R1, 1, 0)
    b.mov(R0, 7)
    b.exit()
    with arena, Program.from_instructions(b.instructions, ProgType.SOCKET_FILTER,
                                          maps={"arena": arena}) as prog:
        assert prog.test_run(data=bytes(64)).retval == 7


def test_enum_immediates_are_plain_ints():
    """An IntEnum operand (a flag from pybpf.abi) is stored as an int: on Python < 3.11 an
    IntEnum formats as its name, and the listing would read ``r4 = UpdateFlags.NOEXIST``."""
    from pybpf.abi import UpdateFlags
    from pybpf.asm import R4, format_insn

    b = Builder()
    b.mov(R4, UpdateFlags.NOEXIST)
    b.lddw(R4, UpdateFlags.NOEXIST)
    assert [type(insn.imm) for insn in b.instructions] == [int, int]
    assert [format_insn(insn) for insn in b.instructions] == ["r4 = 1", "r4 = 1 ll"]


class _Index:
    """An int-like that is no int: it converts only through ``__index__`` (as numpy's
    integers, or a ctypes-free wrapper, do)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"_Index({self.value})"


def test_int_like_operands_are_converted_before_their_checks():
    """Every number operand of the DSL goes through operator.index before its range check,
    so an int-like value (``__index__``, an IntEnum member) encodes as the int it stands for;
    the bytes are hand-encoded from the eBPF instruction set (RFC 9669 section 3)."""
    from pybpf.abi import UpdateFlags

    b = Builder()
    b.mov(R4, _Index(7))
    b.lddw(R4, _Index(2**64 - 1))
    b.ldx(_Index(4), R1, R2, _Index(-4))
    b.st(W, R10, UpdateFlags.NOEXIST, _Index(-1))
    b.jeq(R1, _Index(3), _Index(1))
    b.call(_Index(1))
    b.exit()
    assert all(type(getattr(insn, field)) is int for insn in b.instructions
               for field in ("dst", "src", "off", "imm"))
    assert b"".join(insn.encode() for insn in b.instructions).hex(" ") == (
        "b7 04 00 00 07 00 00 00 "  # mov r4, 7
        "18 04 00 00 ff ff ff ff 00 00 00 00 ff ff ff ff "  # lddw r4, 2**64-1
        "61 21 fc ff 00 00 00 00 "  # r1 = *(u32 *)(r2 - 4)
        "62 0a 01 00 ff ff ff ff "  # *(u32 *)(r10 + 1) = -1
        "15 01 01 00 03 00 00 00 "  # if r1 == 3 goto +1
        "85 00 00 00 01 00 00 00 "  # call 1
        "95 00 00 00 00 00 00 00")  # exit


@pytest.mark.parametrize("call, message", [
    (lambda b: b.mov(R0, _Index(2**32)), "immediate 4294967296 does not fit in 32 bits"),
    (lambda b: b.lddw(R0, _Index(-2**63 - 1)), "does not fit in 64 bits"),
    (lambda b: b.mov(R0, True), "expected an integer immediate, got True"),
    (lambda b: b.mov(R0, 1.0), "expected an integer immediate, got 1.0"),
    (lambda b: b.ldx(4, R0, R1, "8"), "expected an int offset, got '8'"),
    (lambda b: b.ja(2.5), "expected a jump target: a label name or an int offset, got 2.5"),
    (lambda b: b.call(_Index(-1)), "helper id -1 is out of range 0..2\\*\\*31-1"),
    (lambda b: b.mov(_Index(11), 0), "expected a register R0-R10, got _Index\\(11\\)"),
])
def test_int_like_operands_are_range_checked_as_ints(call, message):
    with pytest.raises(AssemblerError, match=message):
        call(Builder())


def test_comments_and_labels_play_no_part_in_equality():
    assert Instruction(0x95) == Instruction(0x95, comment="return 0;")


@pytest.mark.parametrize("data, message", [
    ("9501000000000000", "dst must be 0 for exit, not 1"),  # dst of exit is reserved
    ("b70a000000000000", "read-only frame pointer"),
])
def test_decode_errors_show_where_and_the_instructions_bytes(data, message):
    from pybpf.errors import DecodeError

    with pytest.raises(DecodeError, match=message) as info:
        decode_all(bytes.fromhex("9500000000000000" + data))
    assert str(info.value).startswith("at byte offset 8: ")
    assert str(info.value).endswith(f" (bytes {bytes.fromhex(data).hex(' ')})")
    assert info.value.offset == 8


def test_a_wide_immediate_must_fit_in_64_bits():
    from pybpf.asm.insn import check

    assert check(Instruction(0x18, 1, 0, 0, 2**64 - 1)) is None  # the largest
    assert check(Instruction(0x18, 1, 0, 0, 2**64)) == \
        "imm 18446744073709551616 is not a 64-bit value stored unsigned (0..2**64-1)"


def _imported_modules(module):
    """The modules a pybpf source file imports (absolute names), read from its syntax tree."""
    import ast
    from pathlib import Path

    names = set()
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_text_syntax_and_dsl_share_operands_not_each_other():
    """The parser (asm.text) and the DSL (asm.builder) are siblings: the operand checks both
    need live in asm.operands, and neither imports the other."""
    from pybpf.asm import builder, operands, text

    assert "pybpf.asm.builder" not in _imported_modules(text)
    assert "pybpf.asm.text" not in _imported_modules(builder)
    assert {"pybpf.asm.operands.imm32"} <= _imported_modules(text) & _imported_modules(builder)
    assert builder.imm32 is text.imm32 is operands.imm32
