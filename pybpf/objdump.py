"""``llvm-objdump -dr`` for BPF objects: programs by section, symbols, relocations, C lines.

The listing shows an object as clang left it: instructions unrelocated (map loads read
``r1 = 0 ll``, with the ``R_BPF_64_64`` relocation that names the map on the next line),
symbols as ``<name>:`` headings, and, from the object's ``.BTF.ext`` line info, the C source
line above the instructions it compiled to.
"""

from . import abi
from .asm import opcodes as oc
from .asm.insn import scan
from .disasm import UNKNOWN, format_insn
from .elf import INSN_SIZE, RELOC_NAMES, line_comments, open_object


# -- disassembly ---------------------------------------------------------------------------

def disassemble(source, *, source_lines=True, name=None) -> str:
    """An ``llvm-objdump -dr`` style listing of every executable section of an object.

    Symbols head their instructions, relocations follow the instruction they patch, and (with
    ``source_lines``) the C source lines from ``.BTF.ext`` appear as ``; text`` above theirs.
    ``name`` is the file name in the heading (default: the path, or ``<bytes>``).
    The instruction text is :func:`pybpf.disasm.format_insn`'s, on the unrelocated bytes;
    every instruction the bytes encode is shown, one the kernel would refuse followed by
    ``; invalid: <why>``, and bytes that encode none as ``<unknown>`` (as llvm-objdump).
    """
    obj = open_object(source)
    title = name or ("<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else source)
    out = [f"\n{title}:\tfile format elf64-bpf\n"]
    for section in obj.elf.sections:
        if section.executable and section.size:
            out.append(f"\nDisassembly of section {section.name}:\n")
            out.extend(_disassemble_section(obj, section, source_lines))
    return "".join(out)


def _disassemble_section(obj, section, source_lines):
    symbols = {}
    for symbol in obj.elf.symbols_in(section):
        symbols.setdefault(symbol.value, symbol.name)
    relocations = {r.offset: r for r in obj.elf.relocations.get(section.index, [])}
    comments = {}
    if source_lines:
        for function in obj.functions.values():
            if function.section is section:
                comments.update(line_comments(obj, function))
    for offset, size, insn, problem in scan(section.data):
        if offset in symbols:
            yield f"\n{offset:016x} <{symbols[offset]}>:\n"
        if offset in comments:
            yield f"; {comments[offset]}\n"
        if insn is None:
            text = UNKNOWN
        else:
            text = _objdump_text(insn) + _jump_target(insn, offset, symbols)
            text += f" ; invalid: {problem}" if problem else ""
        raw = section.data[offset:offset + size].hex(" ")
        yield f"{offset // INSN_SIZE:>8}:\t{raw}\t{text}\n"
        relocation = relocations.get(offset) or relocations.get(offset + 4)
        if relocation is not None:
            kind = RELOC_NAMES.get(relocation.type, str(relocation.type))
            target = _symbol_label(obj, relocation.symbol)
            yield f"\t\t{relocation.offset:016x}:  {kind}\t{target}\n"


def _symbol_label(obj, symbol):
    """A symbol's name; section symbols are nameless and print as their section's name."""
    if symbol.name or symbol.shndx <= 0:
        return symbol.name
    return obj.elf.sections[symbol.shndx].name


def _objdump_text(insn):
    """format_insn's text, but a local call as LLVM 14 prints it: ``call 2``, not ``call pc+2``."""
    if insn.opcode == oc.JMP | oc.CALL and insn.src == abi.PSEUDO_CALL:
        return f"call {insn.imm}"
    return format_insn(insn)


def _jump_target(insn, offset, symbols):
    """`` <LBB0_2>`` after a jump whose target has a symbol, as llvm-objdump prints it."""
    form = oc.shown_as(insn.opcode, insn.src, insn.off, insn.imm).form
    if form == "gotol":
        delta = insn.imm
    elif form in oc.OFF_JUMP_FORMS:
        delta = insn.off
    else:
        return ""
    target = offset + (delta + 1) * INSN_SIZE
    return f" <{symbols[target]}>" if target in symbols else ""
