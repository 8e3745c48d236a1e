"""The text assembler (parse) and every build-time error: type and message."""

import random
import re
import subprocess

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pybpf.asm import (
    B, DW, H, R0, R1, R2, R10, W, Builder, Instruction, parse, resolve, validate,
)
from pybpf.asm.text import format_insn
from pybpf.errors import AssemblerError, DecodeError
from support import LONG, almost_instructions, instructions, random_llvm_line, require_tool


@settings(max_examples=2000, deadline=None)
@given(instructions())
def test_parse_format_round_trip(insn):
    assert parse(format_insn(insn)) == [insn]


def test_parse_program_with_labels_maps_and_comments():
    insns = parse("""
        ; count calls
        r1 = counts ll
        start: r2 = 0   # trailing comments are dropped
        if r2 > 10 goto out
        call bpf_map_lookup_elem
        call helper_sub
        goto start
    out:
        exit
    helper_sub:
        exit
    """)
    assert insns[0].comment == "count calls" and insns[0].ref == "counts"
    assert insns[1].labels == ("start",)
    assert insns[3].imm == 1 and insns[3].src == 0
    assert insns[4].src == 1 and insns[4].ref == "helper_sub"
    resolved = resolve(insns, {"counts": 3})
    assert resolved[2].off == 3 and resolved[5].off == -5 and resolved[4].imm == 2


# --- the parser against llvm-mc, on text written without pybpf's tables --------------------

@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(4))
def test_parse_matches_llvm_mc_on_random_text(seed):
    """2000 lines written from LLVM's syntax (not from pybpf's opcode table), with every
    operand drawn over its whole range and numbers spelled in decimal, hex and negative."""
    llvm_mc = require_tool("llvm-mc")
    rng = random.Random(seed)
    lines = [random_llvm_line(rng) for _ in range(2000)]
    result = subprocess.run([llvm_mc, "-triple", "bpfel", "-show-encoding"],
                            input="\n".join(lines) + "\n", capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr[:2000]
    encodings = re.findall(r"# encoding: \[([^\]]*)\]", result.stdout)
    assert len(encodings) == len(lines)
    wrong = []
    for line, encoding in zip(lines, encodings):
        expected = bytes(int(b, 16) for b in encoding.split(","))
        got = parse(line)[0].encode()
        if got != expected:
            wrong.append(f"{line}: pybpf {got.hex()}, llvm-mc {expected.hex()}")
    assert not wrong, "\n".join(wrong[:20])


def _error(build):
    with pytest.raises(AssemblerError) as info:
        build(Builder())
    return str(info.value)


@pytest.mark.parametrize("build, message", [
    (lambda b: b.mov(11, 1), "register R0-R10"),
    (lambda b: b.mov(R10, 1), "r10, the read-only frame pointer"),
    (lambda b: b.ldx(W, R10, R1, 0), "read-only frame pointer"),
    (lambda b: b.add(R1, 2**32), "does not fit in 32 bits (-2147483648..4294967295)"),
    (lambda b: b.add(R1, -2**31 - 1), "does not fit in 32 bits"),
    (lambda b: b.ldx(W, R1, R2, 40000), "does not fit in 16 signed bits"),
    (lambda b: b.ja(-40000), "does not fit in 16 signed bits"),
    (lambda b: b.lsh(R1, 64), "shift count 64 is out of range 0..63"),
    (lambda b: b.lsh32(R1, 32), "shift count 32 is out of range 0..31"),
    (lambda b: b.arsh(R1, -1), "out of range 0..63"),
    (lambda b: b.atomic_add(B, R1, 0, R2), "atomic_add has no 1-byte form"),
    (lambda b: b.xchg(H, R1, 0, R2), "xchg has no 2-byte form"),
    (lambda b: b.ldxsx(DW, R1, R2, 0), "ldxsx has no 8-byte form"),
    (lambda b: b.ldx(3, R1, R2, 0), "ldx has no 3-byte form"),
    (lambda b: b.be(R1, 8), "byte swap width must be 16, 32 or 64"),
    (lambda b: b.bswap(R1, 128), "byte swap width must be 16, 32 or 64"),
    (lambda b: b.movsx(R1, R2, 64), "movsx width must be one of 8, 16, 32"),
    (lambda b: b.movsx32(R1, R2, 32), "movsx32 width must be one of 8, 16"),
    (lambda b: b.call("map_lookup_elm"), "did you mean map_lookup_elem"),
    (lambda b: b.call("nope_nothing_like_it"), "unknown helper 'nope_nothing_like_it'"),
    (lambda b: b.st(W, R10, -4, R1), "expected an integer immediate"),
    (lambda b: b.lddw(R1, 2**64), "does not fit in 64 bits"),
])
def test_build_errors(build, message):
    text = _error(build)
    assert message in text
    assert text.startswith("instruction 0 (")  # index and the DSL call


def test_error_names_index_and_call():
    b = Builder()
    b.mov(R0, 0)
    with pytest.raises(AssemblerError) as info:
        b.add(R1, 2**40)
    assert info.value.index == 1 and info.value.source == "add(R1, 1099511627776)"


def test_label_errors():
    b = Builder()
    b.label("x")
    b.exit()
    with pytest.raises(AssemblerError, match="duplicate label 'x'"):
        b.label("x")
    b.label("end")
    with pytest.raises(AssemblerError, match="label 'end' at the end of the program"):
        b.instructions  # noqa: B018 - the property raises


def test_resolve_errors():
    b = Builder()
    b.jeq(R1, 0, "missing")
    b.ld_map_fd(R1, "nomap")
    b.exit()
    with pytest.raises(AssemblerError, match=r"instruction 0 \(if r1 == 0 goto missing\): "
                                             "undefined label 'missing'"):
        resolve(b.instructions)
    b2 = Builder()
    b2.ld_map_fd(R1, "nomap")
    b2.exit()
    with pytest.raises(AssemblerError, match="unknown map 'nomap'"):
        resolve(b2.instructions, {"other": 3})
    dup = [Instruction(0x95, labels=("a",)), Instruction(0x95, labels=("a",))]
    with pytest.raises(AssemblerError, match="duplicate label 'a'"):
        resolve(dup)


def test_jump_too_far_suggests_gotol():
    b = Builder()
    b.jeq(R1, 0, "far")
    b.ja("far")
    for _ in range(40000):
        b.mov(R0, 0)
    b.label("far")
    b.exit()
    with pytest.raises(AssemblerError, match="40001 slots away.*invert the condition"):
        resolve(b.instructions)
    with pytest.raises(AssemblerError, match="instruction 0.*40000 slots away.*use gotol"):
        resolve(b.instructions[1:])


def test_encode_unresolved():
    b = Builder()
    with pytest.raises(AssemblerError, match="unresolved reference to 'x'"):
        b.ja("x").encode()


@pytest.mark.parametrize("data, message", [
    ("8d01000000000000", "callx"),
    ("ff00000000000000", "opcode 0xff"),
    ("3f21020000000000", "needs off in {0, 1}"),
    ("bf21020000000000", "needs off in {0, 1, 8, 16, 32}, not 2"),  # decimal, like off
    ("b70a000000000000", "read-only frame pointer"),
    ("1801000000000000" + "0100000000000000", "second slot"),
    ("18010000000000", "7 bytes left"),
    ("c3210000ff000000", "needs imm in"),
    ("0f2b000000000000", "register r0-r9"),
])
def test_decode_errors(data, message):
    with pytest.raises(DecodeError, match=message):
        Instruction.decode(bytes.fromhex(data))


@pytest.mark.parametrize("text, message", [
    ("r1 += w2", r"mixes r \(64-bit\) and w \(32-bit\)"),
    ("r1 = -w1", r"line 1: mixes r \(64-bit\) and w \(32-bit\)"),
    ("w1 = -r1", r"line 1: mixes r \(64-bit\) and w \(32-bit\)"),
    ("r11 = 1", "register r0-r9"),
    ("r1 = 1 2", "not an instruction"),
    ("r1 <<= 64", "shift count 64"),
    ("r1 = 4294967296", "does not fit in 32 bits"),
    ("x:\n", "label 'x' at the end"),
    ("a: exit\na: exit", "duplicate label 'a'"),
    ("callx r1", "not an instruction"),
    ("w0 = *(u64 *)(r1 + 0)", "w0 is a 32-bit register; a 64-bit access needs r0"),
    ("w1 = atomic_fetch_add((u32 *)(r1 + 0), w2)", r"result register .* \(w1 is not w2\)"),
    ("exit\nr1 = 0xzz ll", r"instruction 1 \(r1 = 0xzz ll\): line 2: not an instruction"),
    ("r1 = 12ab ll", "line 1: not an instruction"),
    ("r1 = 1 ll\nr1 = 0x10000000000000000 ll", "line 2: immediate 18446744073709551616 does not"),
    ("call bpf_map_lookup_elm", "line 1: unknown helper 'bpf_map_lookup_elm'; did you mean map_"),
    ("call bpf_no_such_helper", "line 1: unknown helper"),  # not a local call
    ("ld_pseudo r1, 1, 0xq", "line 1: not an instruction"),
    ("r1 = 010", "line 1: not an instruction"),  # octal or decimal? neither
    ("r\u0661 = 1", "not an instruction"),  # an Arabic-Indic digit is not a register number
    ("r1 = addr_space_cast(r2, 65536, 0)", "address space is an int 0..65535, not 65536"),
    ("w1 = addr_space_cast(w2, 0, 1)", "not an instruction"),  # a 64-bit operation only
])
def test_parse_errors(text, message):
    with pytest.raises(AssemblerError, match=message):
        parse(text)


@pytest.mark.parametrize("text", [
    "call kfunc 1, 0x" + "f" * 4000,  # issue #7 item 14: hex has no digit limit in int()
    "call kfunc " + LONG, "r1 = 1" + "0" * 5000, "r1 = 0x" + "f" * 5000 + " ll",
    f"r{LONG} = 1", f"goto +{LONG}", f"call pc+{LONG}", f"r1 = *(u32 *)(r2 + {LONG})",
    f"r1 = be{LONG} r1", f"ld_pseudo r1, {LONG}, 0", f"ld_pseudo r1, 1, 0, {LONG}",
    f"r0 = *(u8 *)skb[r1 + {LONG}]", f"r1 = addr_space_cast(r2, {LONG}, 0)",
], ids=lambda text: text[:16])
def test_every_number_the_parser_reads_is_bounded(text):
    with pytest.raises(AssemblerError, match=r"line 1: the number \S+\.\.\. has \d+ digits; "
                                             "no instruction field holds more than 64 bits"):
        parse(text)


def test_leading_zeros_do_not_count_as_digits():
    assert parse("r1 = 0x" + "0" * 40 + "1 ll")[0].imm == 1


@pytest.mark.parametrize("build", [
    lambda b: b.mov(R1, 10**5000), lambda b: b.mov(R1, -10**5000), lambda b: b.ja(10**5000),
    lambda b: b.ldx(W, R1, R2, 10**5000), lambda b: b.ldx(10**5000, R1, R2, 0),
    lambda b: b.movsx(R1, R2, 10**5000), lambda b: b.call(10**5000),
    lambda b: b.mov(10**5000, 1), lambda b: b.lddw(R1, 10**5000),
    lambda b: b.addr_space_cast(R1, R2, 10**5000, 0),
])
def test_huge_ints_in_the_dsl_are_assembler_errors(build):
    # The messages show such a number by its first hex digits and its size.
    with pytest.raises(AssemblerError, match=r"0x31e20801036510f3\.\.\. \(16610 bits\)"):
        build(Builder())


def test_huge_fields_of_an_instruction_are_assembler_errors():
    for insn in (Instruction(0xB7, 1, 0, 0, 10**5000), Instruction(0xBF, 1, 2, 10**5000)):
        with pytest.raises(AssemblerError, match=r"\(16610 bits\)"):
            validate(insn)


@settings(max_examples=3000, deadline=None)
@given(almost_instructions() | st.text())
@example("r1 = 0xzz ll")
@example("r1 = 12ab ll")
@example("ld_pseudo r1, 1, 0xq")
@example("call kfunc 1, 0x" + "f" * 4000)
def test_parse_raises_only_assembler_errors(text):
    """Text is either valid instructions (each one decodes back from its bytes) or one
    AssemblerError naming the instruction and the line (as ``str.splitlines`` counts them)."""
    try:
        insns = parse(text)
    except AssemblerError as exc:
        message = str(exc)
        assert re.match(rf"instruction {exc.index}[ :]", message), message
        line = re.search(r": line (\d+): ", message)
        if line is None:  # the one error about no line: a label after the last instruction
            assert "at the end names no instruction" in message, message
        else:
            assert 1 <= int(line.group(1)) <= max(1, len(text.splitlines())), message
        return
    for insn in insns:
        assert isinstance(insn, Instruction)
        if insn.ref is None:
            assert Instruction.decode(insn.encode()) == insn, text


# Every numeric operand of every builder method, given something that is not an int.
# (Where a str is meaningful -- a label, a helper or map name -- only the non-str values.)
_NOT_INTS = ("x", 1.5, True, None)
_NOT_INTS_OR_STR = (1.5, True, None)
_OPERANDS = [  # method, arguments with X where the bad value goes, bad values
    ("add", (R1, "X"), _NOT_INTS), ("add32", (R1, "X"), _NOT_INTS),
    ("lsh", (R1, "X"), _NOT_INTS), ("mov", ("X", 1), _NOT_INTS),
    ("movsx", (R1, R2, "X"), _NOT_INTS), ("movsx32", (R1, R2, "X"), _NOT_INTS),
    ("le", (R1, "X"), _NOT_INTS), ("be", (R1, "X"), _NOT_INTS), ("bswap", (R1, "X"), _NOT_INTS),
    ("addr_space_cast", (R1, R2, "X", 0), _NOT_INTS),
    ("addr_space_cast", (R1, R2, 1, "X"), _NOT_INTS),
    ("jeq", (R1, "X", 1), _NOT_INTS), ("jeq32", (R1, 0, "X"), _NOT_INTS_OR_STR),
    ("ja", ("X",), _NOT_INTS_OR_STR), ("gotol", ("X",), _NOT_INTS_OR_STR),
    ("may_goto", ("X",), _NOT_INTS_OR_STR), ("call", ("X",), _NOT_INTS_OR_STR),
    ("call_local", ("X",), _NOT_INTS_OR_STR), ("call_kfunc", ("X", 0), _NOT_INTS),
    ("call_kfunc", (1, "X"), _NOT_INTS),
    ("ldx", ("X", R1, R2, 0), _NOT_INTS), ("ldx", (W, R1, R2, "X"), _NOT_INTS),
    ("ldxsx", (H, R1, R2, "X"), _NOT_INTS), ("st", (W, R10, "X", 0), _NOT_INTS),
    ("st", (W, R10, -4, "X"), _NOT_INTS), ("stx", (DW, R10, "X", R1), _NOT_INTS),
    ("ld_abs", (W, "X"), _NOT_INTS), ("ld_ind", (B, R1, "X"), _NOT_INTS),
    ("load_acquire", (DW, R0, R1, "X"), _NOT_INTS),
    ("store_release", ("X", R1, 0, R2), _NOT_INTS),
    ("store_release", (W, R1, "X", R2), _NOT_INTS),
    ("atomic_add", (DW, R1, "X", R2), _NOT_INTS), ("atomic_fetch_or", ("X", R1, 0, R2), _NOT_INTS),
    ("xchg", (W, R1, "X", R2), _NOT_INTS), ("cmpxchg", (DW, R1, "X", R2), _NOT_INTS),
    ("lddw", (R1, "X"), _NOT_INTS), ("ld_map_fd", (R1, "X"), _NOT_INTS_OR_STR),
    ("ld_map_value", (R1, "m", "X"), _NOT_INTS), ("ld_btf_id", (R1, "X"), _NOT_INTS),
    ("ld_btf_id", (R1, 1, "X"), _NOT_INTS), ("ld_func", (R1, "X"), _NOT_INTS_OR_STR),
    ("ld_map_idx", (R1, "X"), _NOT_INTS), ("ld_map_idx_value", (R1, "X", 0), _NOT_INTS),
    ("ld_map_idx_value", (R1, 0, "X"), _NOT_INTS),
]


@pytest.mark.parametrize("method, args, bad", [
    (method, args, bad) for method, args, values in _OPERANDS for bad in values])
def test_builder_operands_must_be_ints(method, args, bad):
    b = Builder()
    with pytest.raises(AssemblerError) as info:
        getattr(b, method)(*(bad if a == "X" else a for a in args))
    assert str(info.value).startswith(f"instruction 0 ({method}(")
    assert not b._insns


def test_map_index_is_not_a_name():
    with pytest.raises(AssemblerError, match="ld_map_idx takes an int, not the name 'm'; "
                                             "load a map by name with ld_map_fd"):
        Builder().ld_map_idx(R1, "m")


def test_parse_stops_at_the_kernels_instruction_limit(monkeypatch):
    from pybpf.asm import text

    monkeypatch.setattr(text, "MAX_INSNS", 4)  # 1,000,000 lines would take long to parse
    assert len(parse("r1 = 1 ll\nexit\nexit\n")) == 3  # 4 slots: a 64-bit load counts two
    with pytest.raises(AssemblerError, match=r"^instruction 2: line 3: the program is longer "
                                             r"than the kernel's limit of 1,000,000"):
        parse("r1 = 1 ll\nexit\nr2 = 2 ll\n")
