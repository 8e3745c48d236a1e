"""Helpers shared by the test files: CI mode, oracle tools, deadlines, instruction samples.

Test files import from here (``from support import require_tool``), never from each other
nor from ``conftest.py``, which only declares fixtures and hooks.
"""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from hypothesis import strategies as st

from pybpf.asm import opcodes as oc
from pybpf.asm.insn import Instruction
from pybpf.asm.text import format_insn

ROOT = Path(__file__).resolve().parent.parent
ELF_DIR = ROOT / "tests" / "elf"

_NOT_CI = ("", "false", "0", "no", "off")


def in_ci(environ=os.environ):
    """True when ``$CI`` is set to anything but empty, false, 0, no or off (any case).

    CI services set ``CI=true``, ``CI=1`` or ``CI=yes``; all of them must turn a missing
    capability or tool into a failure.
    """
    return environ.get("CI", "").strip().lower() not in _NOT_CI


def skip_or_fail(reason):
    """Skip with ``reason``; under CI a missing capability or tool fails the test instead."""
    if in_ci():
        pytest.fail(f"CI is set (CI={os.environ.get('CI')!r}), so this must run: {reason}",
                    pytrace=False)
    pytest.skip(reason)


def require_tool(name):
    """The path of an oracle tool (llvm-mc, llvm-objdump, clang, bpftool, bpftrace) or skip."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed (apt-get install llvm clang bpftool bpftrace)")
    return path


def require_file(path, why):
    """``path`` if it exists, else skip (fail under CI) saying ``why`` it may be missing."""
    if not os.path.exists(path):
        skip_or_fail(f"{path} does not exist ({why})")
    return path


_bpf_state = {}


def bpf_unavailable_reason():
    """None if bpf() works here (a tiny array map can be created), else why not."""
    if "reason" not in _bpf_state:
        reason = None
        try:
            from pybpf import syscalls
            from pybpf.abi import MapType

            os.close(syscalls.map_create(MapType.ARRAY, 4, 4, 1))
        except Exception as exc:  # any failure means: no usable bpf() here
            reason = f"bpf() is not usable here: {exc}"
        _bpf_state["reason"] = reason
    return _bpf_state["reason"]


def import_tool(name):
    """The module ``tools/<name>.py`` (the generators), imported from the source tree."""
    tools = str(ROOT / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return __import__(name)


class Background:
    """Base of a test's context manager around a process it started in the background
    (``self.proc``, a Popen): leaving the block kills the process if it still runs, so no
    test leaves one behind, whatever failed."""

    proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Deadline:
    """A time limit for a waiting loop in a test: ``while deadline.wait(what): ...``.

    ``wait`` returns True until ``seconds`` have passed, then fails the test naming what it
    was waiting for, so a loop that would spin forever on a bug is a failure instead.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self):
        """Seconds left (at least 0)."""
        return max(0.0, self.end - time.monotonic())

    def wait(self, what):
        """True while time is left; fails the test (``what`` did not happen) after that."""
        if time.monotonic() >= self.end:
            pytest.fail(f"gave up after {self.seconds} s waiting for {what}", pytrace=False)
        return True


def write_chain_script(directory, final="/bin/sleep 3"):
    """A script that re-execs itself ``$1`` times in the same PID, then execs ``final``.

    Absolute paths only: a bare name would be looked up in $PATH, and every failed attempt
    is an execve() call a tracker rightly counts.
    """
    script = Path(directory) / "chain.sh"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" -gt 0 ]; then exec "$0" $(($1 - 1)); fi\n'
        f"exec {final}\n"
    )
    script.chmod(0o755)
    return script


# --- instructions: samples of every operation, and a hypothesis strategy -------------------

# Sample values for each field rule (the hypothesis strategy draws from the full ranges).
_VALUES = {
    "reg": (0, 1, 10),
    "wreg": (0, 3, 9),
    "zero": (0,),
    "s16": (0, 2, -4, 32767, -32768),
    "s32": (0, 16, -1, 2147483647, -2147483648),
    "shift": (0, 31),
    "width": (16, 32, 64),
    "u64": (0, 1, 2**64 - 1, 2**63, 0x123456789),
}


def samples(op):
    """A few valid instructions of operation ``op``, varying one field at a time."""
    rules = oc.field_rules(op)
    base = [op.value if rule == "key" else _VALUES[rule][0] for rule in rules]
    out = [Instruction(op.opcode, *base)]
    for position, rule in enumerate(rules):
        if rule == "key":
            continue
        values = _VALUES[rule]
        if rule == "shift" and op.opcode & 0x07 == oc.ALU64:
            values = (0, 63)
        for value in values[1:]:
            fields = list(base)
            fields[position] = value
            out.append(Instruction(op.opcode, *fields))
    return out


def all_samples():
    """Samples of every operation in the opcode tables."""
    return [insn for op in oc.OPS for insn in samples(op)]


def field_values(rule, opcode):
    """A hypothesis strategy for every valid value of a field of ``rule``."""
    if rule == "reg":
        return st.integers(0, 10)
    if rule == "wreg":
        return st.integers(0, 9)
    if rule == "zero":
        return st.just(0)
    if rule == "s16":
        return st.integers(-(1 << 15), (1 << 15) - 1)
    if rule == "s32":
        return st.integers(-(1 << 31), (1 << 31) - 1)
    if rule == "shift":
        return st.integers(0, 63 if opcode & 7 == oc.ALU64 else 31)
    if rule == "width":
        return st.sampled_from((16, 32, 64))
    return st.integers(0, (1 << 64) - 1)  # u64


@st.composite
def instructions(draw):
    """Any valid instruction: an operation from the tables, then valid operands for it."""
    op = draw(st.sampled_from(oc.OPS))
    fields = [st.just(op.value) if rule == "key" else field_values(rule, op.opcode)
              for rule in oc.field_rules(op)]
    return Instruction(op.opcode, *(draw(f) for f in fields))


LONG = "1" * 5000  # more digits than Python 3.11+ converts (4300); 3.9 converts any

# Words that are almost, or not at all, part of the syntax.
WORDS = ["r11", "w2", "=", "s>>=", "-", "0x", "0xzz", "0xq", "12ab", "010", "-0", "0x1f",
         "99999999999999999999", "ll", "ld_pseudo", ",", "kfunc", "pc+1", "bpf_", "bpf_nope",
         "goto", "+3", "*(u32", "(r1", ")", "x:", "<y>:", "<z>", ";", "\n", "skb[r1", "(s8)",
         "bswap16", "addr_space_cast(r1,", "\u0661", "\x00", "ü", LONG, "0x" + "f" * 4400,
         "r" + LONG, "+" + LONG]


@st.composite
def almost_instructions(draw):
    """A valid instruction's text with one word replaced, or arbitrary text."""
    words = format_insn(draw(instructions())).split(" ")
    words[draw(st.integers(0, len(words) - 1))] = draw(st.sampled_from(WORDS) | st.text())
    return " ".join(words)


# --- text in LLVM's syntax, for the llvm-mc and llvm-objdump oracles ------------------------

_ALU_OPS = ["+=", "-=", "*=", "/=", "|=", "&=", "^=", "="]
_SHIFTS = ["<<=", ">>=", "s>>="]
_CONDITIONS = ["==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<="]


def _spell(rng, value):
    """``value`` in decimal or hex, the ways LLVM's assembler reads a number."""
    if rng.random() < 0.5:
        return str(value)
    return f"-0x{-value:x}" if value < 0 else f"0x{value:x}"


def random_llvm_line(rng):
    """One line of llvm-objdump syntax, written from LLVM's syntax rather than pybpf's opcode
    table, with random operands over their whole ranges (``rng``: a ``random.Random``)."""
    d, s, w = rng.randint(0, 9), rng.randint(0, 10), rng.choice("rw")
    src = f"{w}{min(s, 9) if w == 'w' else s}"
    imm = _spell(rng, rng.choice([rng.randint(-2**31, 2**32 - 1), -2**31, 2**32 - 1, -1, 0]))
    off = rng.choice([rng.randint(-2**15, 2**15 - 1), -2**15, 2**15 - 1, 0])
    disp = f"+ {off}" if off >= 0 else f"- {-off}"
    size = rng.choice([8, 16, 32, 64])
    wide = rng.choice([rng.randint(-2**63, 2**64 - 1), -1, -2, 2**63, 2**64 - 1, 2**63 - 1,
                       -2**63, 2**32, -2**32])
    return rng.choice([
        f"{w}{d} {rng.choice(_ALU_OPS)} {src}",
        f"{w}{d} {rng.choice(_ALU_OPS)} {imm}",
        f"{w}{d} {rng.choice(_SHIFTS)} {rng.randint(0, 63 if w == 'r' else 31)}",
        f"{w}{d} = -{w}{d}",
        f"r{d} = {rng.choice(['be', 'le'])}{rng.choice([16, 32, 64])} r{d}",
        f"if {w}{d} {rng.choice(_CONDITIONS)} {src} goto {off:+d}",
        f"if {w}{d} {rng.choice(_CONDITIONS)} {imm} goto {off:+d}",
        f"goto {off:+d}",
        f"r{d} = *(u{size} *)(r{s} {disp})",
        f"*(u{size} *)(r{d} {disp}) = r{s}",
        f"lock *(u64 *)(r{d} {disp}) += r{s}",
        f"lock *(u32 *)(r{d} {disp}) += w{min(s, 9)}",
        f"r{d} = {_spell(rng, wide)} ll",
        f"call {rng.randint(0, 211)}",
        "exit",
    ])
