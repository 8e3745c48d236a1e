"""The eBPF instruction set: build, encode, decode, link and parse programs (RFC 9669).

Pure Python and no system calls: Python calls or assembly text become
:class:`Instruction` values, and those become bytes and back. Modules:

- :mod:`~pybpf.asm.opcodes`  the opcode tables (bit layout diagram there)
- :mod:`~pybpf.asm.insn`     the Instruction type, its encoder, decoder and checks
- :mod:`~pybpf.asm.operands` operand checks shared by the DSL and the parser: imm32, helper_id...
- :mod:`~pybpf.asm.builder`  the DSL: ``Builder`` methods, one instruction per call
- :mod:`~pybpf.asm.link`     labels and map names to numbers: resolve, assemble
- :mod:`~pybpf.asm.text`     llvm-objdump's text syntax: format_insn, parse
- :mod:`~pybpf.asm.core`     CO-RE: kernel struct fields by name as operands, relocated at load
"""

from pybpf.asm.builder import Builder
from pybpf.asm.insn import (
    B, DW, H, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, RFP, W, Instruction, Register,
    decode_all, validate,
)
from pybpf.asm.link import assemble, resolve, slot_to_index


def __getattr__(name):
    """``format_insn`` and ``parse`` come from :mod:`pybpf.asm.text`, imported on first use:
    its many regular expressions cost milliseconds that building and loading never need."""
    if name in ("format_insn", "parse"):
        from pybpf.asm import text

        return getattr(text, name)
    raise AttributeError(f"module 'pybpf.asm' has no attribute {name!r}")

__all__ = [
    "B", "H", "W", "DW", "R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "R10",
    "RFP", "Builder", "Instruction", "Register", "assemble", "decode_all", "format_insn",
    "parse", "resolve", "slot_to_index", "validate",
]
