"""Disassembly text against llvm-objdump (LLVM 14), and the listing format.

Oracle: every sample instruction LLVM 14 decodes is written as ``.byte`` data into one
object (``llvm-mc -triple bpfel -filetype=obj``) and disassembled with plain
``llvm-objdump -d`` (default features: no +alu32, so loads and stores of any width print
``r`` registers). llvm-objdump appends ``<.text+0x..>`` to jumps, a symbolisation of the
target, not instruction text; it is stripped before comparing.
"""

import random
import re
import struct
import subprocess

import pytest
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from llvm14 import compare_chunks, llvm14_decodes, objdump_lines
from pybpf.asm import R0, R1, Builder, decode_all, parse, resolve
from pybpf.asm.text import format_insn
from pybpf.disasm import disassemble
from pybpf.errors import AssemblerError, DecodeError
from support import ROOT, all_samples, random_llvm_line, require_tool

def test_text_matches_llvm_objdump(tmp_path):
    llvm_mc = require_tool("llvm-mc")
    objdump = require_tool("llvm-objdump")
    insns = [i for i in all_samples() if llvm14_decodes(i)]
    data = b"".join(i.encode() for i in insns)
    source = ".text\n" + "".join(
        ".byte " + ",".join(str(b) for b in data[k:k + 8]) + "\n" for k in range(0, len(data), 8))
    (tmp_path / "all.s").write_text(source)
    subprocess.run([llvm_mc, "-triple", "bpfel", "-filetype=obj", "-o", str(tmp_path / "all.o"),
                    str(tmp_path / "all.s")], check=True)
    out = subprocess.run([objdump, "-d", str(tmp_path / "all.o")],
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if re.match(r"\s+\d+:\t", line)]
    assert len(lines) == len(insns)
    mine = disassemble(insns, annotate=False).splitlines()
    assert len(mine) == len(lines) == len(insns)
    mismatches = [(got, expected) for expected, got in zip(lines, mine)
                  if got != re.sub(r" <[^<>]*>$", "", expected)]
    assert not mismatches, "\n".join(f"{g!r} != {e!r}" for g, e in mismatches[:40])


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(2))
def test_random_text_disassembles_like_llvm_objdump(tmp_path, seed):
    """Lines written from LLVM's syntax with operands over their whole ranges, assembled by
    llvm-mc: pybpf decodes and prints the object's bytes as llvm-objdump does."""
    llvm_mc = require_tool("llvm-mc")
    objdump = require_tool("llvm-objdump")
    rng = random.Random(seed)
    (tmp_path / "random.s").write_text(
        "".join(random_llvm_line(rng) + "\n" for _ in range(2000)))
    subprocess.run([llvm_mc, "-triple", "bpfel", "-filetype=obj", "-o", str(tmp_path / "r.o"),
                    str(tmp_path / "random.s")], check=True)
    sections = _objdump_sections(objdump, tmp_path / "r.o")
    assert len(sections[".text"]) == 2000
    with open(tmp_path / "r.o", "rb") as stream:
        text = ELFFile(stream).get_section_by_name(".text").data()
    assert [line.split("\t")[-1] for line in disassemble(text, annotate=False).splitlines()] \
        == sections[".text"]


def _objdump_sections(objdump, path):
    """Section name -> the instruction texts of plain ``llvm-objdump -d``, symbols stripped."""
    out = subprocess.run([objdump, "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    sections, texts = {}, None
    for line in out.splitlines():
        title = re.match(r"Disassembly of section (.*):$", line)
        if title:
            texts = sections.setdefault(title.group(1), [])
        insn = re.match(r"\s+\d+:\t[^\t]*\t(.*)", line)
        if insn:
            texts.append(re.sub(r" <[^<>]*>$", "", insn.group(1)))
    return sections


def _pybpf_sections(path):
    """Section name -> format_insn of every instruction of each executable section."""
    with open(path, "rb") as stream:
        sections = [s for s in ELFFile(stream).iter_sections()
                    if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s.data_size]
        return {s.name: [_llvm14_call(format_insn(i)) for i in decode_all(s.data())]
                for s in sections}


def _llvm14_call(text):
    """LLVM 14 prints a local call as ``call N``; pybpf writes ``call pc+N`` (see asm.text)."""
    return re.sub(r"^call pc([+-]\d+)$", lambda m: f"call {int(m.group(1))}", text)


def test_clang_objects_match_llvm_objdump(tmp_path):
    clang = require_tool("clang")
    objdump = require_tool("llvm-objdump")
    program = tmp_path / "program.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-c", str(ROOT / "bpf/program.c"),
                    "-o", str(program)], check=True)
    for path in [program, *sorted((ROOT / "tests/elf").glob("*.o"))]:
        assert _pybpf_sections(path) == _objdump_sections(objdump, path), path.name


def test_listing_format():
    b = Builder()
    b.comment("int pid = bpf_get_current_pid_tgid();")
    b.call("get_current_pid_tgid")
    b.label("out")
    b.lddw(R1, 16)
    b.mov(R0, 0)
    b.exit()
    text = disassemble(b.instructions)
    assert text == (
        "; int pid = bpf_get_current_pid_tgid();\n"
        "       0:\t85 00 00 00 0e 00 00 00\tcall 14 ; bpf_get_current_pid_tgid\n"
        "\n"
        "<out>:\n"
        "       1:\t18 01 00 00 10 00 00 00 00 00 00 00 00 00 00 00\tr1 = 16 ll\n"
        "       3:\tb7 00 00 00 00 00 00 00\tr0 = 0\n"
        "       4:\t95 00 00 00 00 00 00 00\texit\n")
    assert "call 14\n" in disassemble(b.instructions, annotate=False)


def _labelled_program():
    b = Builder()
    b.ld_map_fd(R1, "counts")
    b.jeq(R1, 0, "out")
    b.call_local("sub")
    b.label("top")
    b.ja("out")
    b.comment("two\nlines")
    b.label("out")
    b.jne32(R1, 2, "top")
    b.exit()
    b.label("sub")
    b.exit()
    return b.instructions


def test_listing_shows_resolved_offsets_and_labels():
    assert disassemble(_labelled_program()).splitlines() == [
        "       0:\t18 11 00 00 00 00 00 00 00 00 00 00 00 00 00 00\tr1 = counts ll",
        "       2:\t15 01 02 00 00 00 00 00\tif r1 == 0 goto +2 <out>",
        "       3:\t85 10 00 00 03 00 00 00\tcall pc+3 <sub>",
        "",
        "<top>:",
        "       4:\t05 00 00 00 00 00 00 00\tgoto +0 <out>",
        "",
        "<out>:",
        "; two",
        "; lines",
        "       5:\t56 01 fe ff 02 00 00 00\tif w1 != 2 goto -2 <top>",
        "       6:\t95 00 00 00 00 00 00 00\texit",
        "",
        "<sub>:",
        "       7:\t95 00 00 00 00 00 00 00\texit",
    ]


def test_listing_parses_back():
    insns = _labelled_program()
    again = parse(disassemble(insns))
    assert resolve(again, {"counts": 0}) == resolve(insns, {"counts": 0})
    assert [(i.labels, i.comment) for i in again] == [(i.labels, i.comment) for i in insns]
    assert again[0].ref == "counts" and again[1].ref is None  # map by name, jump by offset


def test_unresolvable_label_prints_by_name():
    b = Builder()
    b.ja("nowhere")
    b.exit()
    assert disassemble(b.instructions).splitlines()[0] == \
        "       0:\t05 00 00 00 00 00 00 00\tgoto nowhere"


def test_parse_llvm_objdump_symbols():
    insns = parse("0000000000000000 <prog>:\n"
                  "       0:\t15 00 01 00 00 00 00 00\tif r0 == 0 goto +1 <LBB0_2>\n"
                  "\n0000000000000008 <LBB0_1>:\n"
                  "       1:\tb7 00 00 00 00 00 00 00\tr0 = 0\n"
                  "LBB0_2: exit\n")
    assert [i.labels for i in insns] == [("prog",), ("LBB0_1",), ("LBB0_2",)]
    assert insns[0].off == 1 and insns[0].ref is None


def test_long_listing_has_every_instruction():
    b = Builder()
    for _ in range(4999):
        b.mov(R0, 0)
    b.exit()
    lines = disassemble(b.instructions).splitlines()
    assert len(lines) == 5000
    assert lines[0] == "       0:\tb7 00 00 00 00 00 00 00\tr0 = 0"
    assert lines[-1] == "    4999:\t95 00 00 00 00 00 00 00\texit"


def test_disassemble_bytes():
    assert disassemble(bytes.fromhex("b7000000010000009500000000000000")).splitlines()[1] \
        .endswith("\texit")


def test_format_examples():
    b = Builder()
    examples = [
        (b.jeq(R1, 0, 2), "if r1 == 0 goto +2"),
        (b.stx(4, 10, -4, R1), "*(u32 *)(r10 - 4) = r1"),
        (b.ldx(4, R0, R1, 4), "r0 = *(u32 *)(r1 + 4)"),
        (b.ldx(1, R0, R1, 4), "r0 = *(u8 *)(r1 + 4)"),
        (b.atomic_add(4, R1, 0, 2), "lock *(u32 *)(r1 + 0) += r2"),
        (b.atomic_or(4, R1, 0, 2), "lock *(u32 *)(r1 + 0) |= w2"),
        (b.add32(R1, 1), "w1 += 1"),
        (b.jeq32(R1, 5, 1), "if w1 == 5 goto +1"),
        (b.be(R1, 16), "r1 = be16 r1"),
        (b.sdiv(R1, 3), "r1 s/= 3"),
        (b.movsx32(R1, 2, 16), "w1 = (s16)w2"),
        (b.load_acquire(8, R0, R1, 0), "r0 = load_acquire((u64 *)(r1 + 0))"),
        (b.store_release(1, R1, 0, 2), "store_release((u8 *)(r1 + 0), w2)"),
        (b.atomic_fetch_add(8, R1, 0, 2), "r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)"),
        (b.may_goto(2), "may_goto +2"),
        (b.gotol(3), "gotol +3"),
        (b.ldxsx(1, R0, R1, 0), "r0 = *(s8 *)(r1 + 0)"),
        (b.addr_space_cast(R1, 2, 0, 1), "r1 = addr_space_cast(r2, 0, 1)"),  # as newer LLVM
    ]
    for insn, text in examples:
        assert format_insn(insn) == text


# -- what is there: instructions the kernel refuses, bytes that encode none -------------------

def _llvm_tools():
    return require_tool("llvm-mc"), require_tool("llvm-objdump")


def _pybpf_lines(data):
    """The same triples from pybpf's listing, its ``; invalid: ...`` notes cut off."""
    lines = disassemble(data, annotate=False).splitlines()
    return [re.match(r"\s+(\d+):\t([0-9a-f ]+)\t(.*?)(?: ; invalid: .*)?$", line).groups()
            for line in lines]


def test_instructions_the_kernel_refuses_are_shown_and_marked():
    data = bytes.fromhex("0f0a000000000000" "c701000063000000" "6401000020000000"
                         "8d00000001000000" "3f21020000000000" "8531000007000000"
                         "1801000005000000" "9500000000000000" "b70b000001000000")
    texts = [
        "r10 += r0 ; invalid: dst is r10, the read-only frame pointer; it cannot be written",
        "r1 s>>= 99 ; invalid: imm shift count 99 is out of range 0..63",
        "w1 <<= 32 ; invalid: imm shift count 32 is out of range 0..31",
        ("callx r1 ; invalid: callx (opcode 0x8d, call through a register) is not part of "
         "Linux eBPF"),
        "r1 /= r2 ; invalid: opcode 0x3f needs off in {0, 1}, not 2",
        "call 7 ; invalid: opcode 0x85 needs src in {0, 1, 2}, not 3",
        ("r1 = 5 ll ; invalid: the second slot of a 64-bit immediate load must have zero "
         "opcode, registers and offset"),
        "r11 = 1 ; invalid: dst must be a register r0-r9, not 11",
    ]
    slots = [0, 1, 2, 3, 4, 5, 6, 8]
    raws = [data[8 * s:8 * s + 8].hex(" ") for s in slots]
    raws[6] = data[48:64].hex(" ")
    assert disassemble(data).splitlines() == [
        f"{slot:>8}:\t{raw}\t{text}" for slot, raw, text in zip(slots, raws, texts)]


def test_bytes_that_encode_nothing_are_unknown_and_decoding_goes_on():
    # What llvm-objdump 14 prints (seen with -d -z): an 8-byte <unknown> where an opcode
    # names nothing; one byte at a time where fewer than 8 bytes are left, or fewer than 16
    # at a 64-bit load; the slot column is the byte offset divided by 8.
    exit_ = "9500000000000000"
    assert _pybpf_lines(bytes.fromhex("ff00000000000000" + exit_ + "950000")) == [
        ("0", "ff 00 00 00 00 00 00 00", "<unknown>"), ("1", "95 00 00 00 00 00 00 00", "exit"),
        ("2", "95", "<unknown>"), ("2", "00", "<unknown>"), ("2", "00", "<unknown>")]
    assert _pybpf_lines(bytes.fromhex(exit_ + "1801000000000000")) == [
        ("0", "95 00 00 00 00 00 00 00", "exit"), ("1", "18", "<unknown>"),
        ("1", "01", "<unknown>")] + [("1", "00", "<unknown>")] * 6
    assert _pybpf_lines(bytes.fromhex(exit_ + "18010000000000000000")) == [
        ("0", "95 00 00 00 00 00 00 00", "exit"), ("1", "18", "<unknown>"),
        ("1", "01 00 00 00 00 00 00 00", "<unknown>"), ("2", "00", "<unknown>")]


def test_the_assembler_still_refuses_what_the_disassembler_shows():
    for text in ("r10 += r0", "r1 s>>= 99", "w1 <<= 32", "r11 = 1"):
        with pytest.raises(AssemblerError):
            parse(text)
    with pytest.raises(DecodeError, match="read-only frame pointer"):
        decode_all(bytes.fromhex("0f0a000000000000"))


def test_listing_of_a_stream_matches_llvm_objdump(tmp_path):
    """One stream of bytes: valid instructions, ones the kernel refuses (that LLVM decodes),
    slots that encode nothing, and a 64-bit load cut short at the end."""
    valid = [i for i in all_samples() if llvm14_decodes(i)]
    refused = ["0f0a000000000000", "c701000063000000", "6401000020000000", "8d00000001000000",
               "8d0000000b000000", "3f21020000000000", "bf21020000000000", "8531000007000000",
               "b70b000001000000", "0721000005000000", "0501000003000000",
               "1801000005000000" + "9500000000000000", "18b1000005000000" + "0000000000000000"]
    unknown = ["ff00000000000000", "0001000000000000", "0e21000001000000", "8e00000000000000"]
    data = b"".join(i.encode() for i in valid) + bytes.fromhex("".join(refused + unknown))
    data += bytes.fromhex("9500000000000000" "1801000000000000" "0000")
    expected = [(slot, raw, re.sub(r" <[^<>]*>$", "", text))
                for slot, raw, text in objdump_lines(data, tmp_path, *_llvm_tools())]
    assert _pybpf_lines(data) == expected


def _oracle_chunks():
    """Every opcode byte with register, offset and immediate values that reach each kind of
    field check, and random bytes."""
    import random

    chunks = []
    for opcode in range(256):
        for regs in (0x21, 0x1A, 0xC1):
            for off in (0, 1, 8):
                for imm in (0, 1, -1, 16, 64, 99, 0x41, 0xE1, 0x100, 12):
                    chunk = struct.pack("<BBhi", opcode, regs, off, imm)
                    chunks.append(chunk + (bytes(8) if opcode == 0x18 else b""))
    rng = random.Random(7)
    chunks += [bytes(rng.randrange(256) for _ in range(16)) for _ in range(3000)]
    return chunks


def test_every_opcode_decodes_as_llvm_objdump_shows_it(tmp_path):
    """pybpf's first step on each chunk is LLVM 14's first line, or differs on purpose."""
    chunks = _oracle_chunks()
    differences, unexplained, llvm_crashes = compare_chunks(chunks, tmp_path, *_llvm_tools())
    assert not unexplained, "\n".join(unexplained[:30])
    assert not llvm_crashes
    assert differences < len(chunks) // 4


def test_more_bytes_than_one_program_can_hold_are_refused_before_decoding():
    message = ("8,000,008 bytes of instructions are more than the kernel's limit of 1,000,000 "
               "instructions per program (BPF_COMPLEXITY_LIMIT_INSNS)")
    for decode in (disassemble, decode_all):
        with pytest.raises(DecodeError, match=re.escape(message)):
            decode(bytes(8_000_008))
