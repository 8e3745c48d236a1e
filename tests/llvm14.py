"""llvm-objdump 14 as the disassembler's oracle: what it decodes, how to run it on raw bytes,
and where pybpf shows bytes differently on purpose (pybpf/disasm.py's docstring says why).

Shared by tests/test_disasm.py and bench/fuzz_disasm.py.
"""

import re
import subprocess

from pybpf.asm import opcodes as oc
from pybpf.asm.insn import scan
from pybpf.asm.text import format_insn

# Instructions LLVM 14 does not decode, or decodes losing information (pybpf then uses newer
# LLVM syntax or its documented extension, see pybpf/asm/text.py).
NOT_IN_LLVM14 = {"st", "load_acquire", "movsx", "gotol", "may_goto", "call_kfunc",
                 "addr_space_cast"}
NOT_IN_LLVM14_OPS = {"sdiv", "sdiv32", "smod", "smod32", "ldxsx", "bswap", "store_release",
                     "call_local", "mod", "mod32", "jset", "jset32"}  # LLVM 14: <unknown>


def llvm14_decodes(insn):
    """True if plain llvm-objdump 14 prints the valid ``insn`` as pybpf does."""
    op = insn.op
    if op.form in ("atomic", "atomic_fetch") and op.size == 4 and op.name != "atomic_add":
        return False  # decoded only with --mattr=+alu32
    if op.form == "ld_ind" and insn.imm:
        return False
    if op.form == "lddw" and insn.src and insn.imm >> 32:
        return False
    if op.form == "lddw" and insn.src == 2 and insn.dst == 0:  # LLVM 14 bug: "lea r0, r0 + 1"
        return False
    return op.form not in NOT_IN_LLVM14 and op.name not in NOT_IN_LLVM14_OPS


def objdump_lines(data, directory, llvm_mc="llvm-mc", llvm_objdump="llvm-objdump"):
    """(slot column, hex bytes, text) of every line ``llvm-objdump -d -z`` prints for raw
    bytes (-z: runs of zero bytes are disassembled, not skipped as ``...``); ``directory``
    holds the object llvm-mc makes of them."""
    source = ".text\n" + "".join(
        ".byte " + ",".join(str(b) for b in data[k:k + 64]) + "\n"
        for k in range(0, len(data), 64))
    (directory / "bytes.s").write_text(source)
    subprocess.run([llvm_mc, "-triple", "bpfel", "-filetype=obj", "-o",
                    str(directory / "bytes.o"), str(directory / "bytes.s")], check=True)
    out = subprocess.run([llvm_objdump, "-d", "-z", str(directory / "bytes.o")],
                         capture_output=True, text=True, check=True).stdout
    return [re.match(r"\s+(\d+):\t([0-9a-f ]+)\t(.*)", line).groups()
            for line in out.splitlines() if re.match(r"\s+\d+:\t", line)]


def documented_difference(chunk, step, llvm_text, pybpf_text):
    """True where pybpf shows ``chunk`` (first step ``step``) differently from LLVM 14 on
    purpose."""
    insn, problem = step.insn, step.problem
    if pybpf_text == "<unknown>":  # an atomic whose imm names no operation: LLVM 14 ignores
        return chunk[0] in (0xC3, 0xDB)  # the low bits and calls most of them an add
    op = oc.shown_as(insn.opcode, insn.src, insn.off, insn.imm)
    newer = (problem is None and not llvm14_decodes(insn)) or op.form in NOT_IN_LLVM14 or (
        op.name in NOT_IN_LLVM14_OPS | {"load_acquire", "atomic_fetch_add"})
    if llvm_text == "<unknown>":  # r12-r15, reserved fields LLVM checks, bad widths, newer ISA
        return problem is not None or newer
    extension = (op.form == "ld_ind" and insn.imm != 0) or (  # pybpf's text keeps the field
        op.form == "lddw" and insn.src != 0 and insn.imm >> 32 != 0)
    llvm_bug = op.form == "lddw" and insn.src == 2 and insn.dst == 0  # "lea r11, r0 + 0"
    return newer or extension or llvm_bug


def compare_chunks(chunks, directory, llvm_mc="llvm-mc", llvm_objdump="llvm-objdump"):
    """(differences, unexplained ones, chunks llvm-objdump crashes on) between pybpf's first
    step on each chunk of bytes and the line llvm-objdump 14 prints there.

    Each chunk is 8 or 16 bytes and is followed by an exit, so that every chunk starts an
    instruction for both (whatever the bytes before it were); llvm-objdump's
    ``<.text+0x..>`` after a jump (a symbolisation, not instruction text) is dropped. Where
    llvm-objdump dies of a signal (LLVM 14 has such bugs), the chunks are halved until the
    ones it dies on are found; they are left out of the comparison and returned.
    """
    assert all(len(chunk) in (8, 16) for chunk in chunks)
    try:
        llvm = _first_lines(chunks, directory, llvm_mc, llvm_objdump)
    except subprocess.CalledProcessError as exc:
        if exc.returncode >= 0 or len(chunks) == 1:
            if exc.returncode >= 0:
                raise
            return 0, [], list(chunks)
        half = len(chunks) // 2
        first, second = (compare_chunks(part, directory, llvm_mc, llvm_objdump)
                         for part in (chunks[:half], chunks[half:]))
        return tuple(a + b for a, b in zip(first, second))
    differences, unexplained = 0, []
    for chunk, (size, text) in zip(chunks, llvm):
        step = next(scan(chunk + SEPARATOR))
        mine = (step.size, "<unknown>" if step.insn is None else format_insn(step.insn))
        if mine == (size, text):
            continue
        differences += 1
        if not documented_difference(chunk, step, text, mine[1]):
            unexplained.append(f"{chunk.hex()}: llvm {(size, text)!r}, pybpf {mine!r}")
    return differences, unexplained, []


SEPARATOR = bytes.fromhex("9500000000000000")  # exit, after every chunk


def _first_lines(chunks, directory, llvm_mc, llvm_objdump):
    """(bytes, text) of the line llvm-objdump prints at the start of each chunk."""
    data, starts = b"", []
    for chunk in chunks:
        starts.append(len(data))
        data += chunk + SEPARATOR
    lines, offset = {}, 0
    for _slot, raw, text in objdump_lines(data, directory, llvm_mc, llvm_objdump):
        lines[offset] = (len(raw.split()), re.sub(r" <[^<>]*>$", "", text))
        offset += len(raw.split())
    return [lines[start] for start in starts]
