"""CO-RE in the DSL (pybpf.asm.core): declarations laid out as clang lays them out, field
references as instruction operands, relocated by the loader against the running kernel, the
pointer-chain conveniences run in the kernel, and errors that name what is wrong."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import bpftool_btf
from bpftool_btf import VMLINUX, by_name, member, members, number
from support import require_tool
from pybpf.abi import MapType, ProgType
from pybpf.asm import DW, R0, R1, R2, R3, R4, R6, R7, R8, R10, W, Builder, core
from pybpf.attach import attach_tracepoint
from pybpf.btf.core import CoreKind, relocate
from pybpf.btf.kernel import running_kernel
from pybpf.disasm import disassemble
from pybpf.errors import AssemblerError, VerifierError
from pybpf.maps import Map
from pybpf.program import Program

DECLARATIONS = """
struct task_struct {
    char pad[5];
    unsigned int sched_reset_on_fork: 1;
    unsigned int in_execve: 1;
    int tgid;
    unsigned short flags;
    struct task_struct *real_parent;
    struct mm_struct *mm;
    long pybpf_missing;
    char comm[16];
    union { int u_int; struct { long u_long; u16 u_short; }; };
    unsigned char tail_bits: 3, more_bits: 7;
};
struct mm_struct { unsigned long arg_end, arg_start; };
enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_NONE___pybpf = 30 };
"""
C_PRELUDE = "typedef unsigned short u16;\n"


def struct_layouts(path):
    """[(size, [(member, bits_offset, bitfield_size)])] of every struct and union, from
    bpftool's dump of the BTF at ``path``."""
    types = bpftool_btf.dump_file(path)
    return sorted((number(t[2], "size"), [(m[0], m[2], m[3]) for m in members(types, i)])
                  for i, t in types.items() if t[0] in ("STRUCT", "UNION"))


@pytest.mark.oracle
def test_declarations_are_laid_out_as_clang_lays_them_out(tmp_path):
    clang = require_tool("clang")
    source = tmp_path / "types.c"
    source.write_text(C_PRELUDE + DECLARATIONS + "struct task_struct task; struct mm_struct mm;\n")
    subprocess.run([clang, "-g", "-target", "bpf", "-c", str(source), "-o",
                    str(tmp_path / "types.o")], check=True)
    types = core.Types(DECLARATIONS)
    (tmp_path / "dsl.btf").write_bytes(types.btf.encode())
    assert struct_layouts(tmp_path / "dsl.btf") == struct_layouts(tmp_path / "types.o")


def test_the_module_example_builds():
    lines = core.__doc__.split("::\n", 1)[1].splitlines()
    end = next(i for i, line in enumerate(lines) if line and not line.startswith(" "))
    example = "\n".join(lines[:end])
    namespace = {}
    exec(textwrap.dedent(example), namespace)  # noqa: S102 - our own docstring
    text = disassemble(namespace["b"].instructions)
    assert "; CO-RE task_struct.real_parent" in text and "BPF_CORE_READ" in text


TYPES = core.Types(DECLARATIONS)
TASK = TYPES.struct("task_struct")


def test_operands_give_the_local_value_and_record_the_relocation():
    b = Builder()
    b.ldx(DW, R1, R6, TASK.offsetof("real_parent"))
    b.mov(R2, TASK.sizeof("comm"))
    b.lddw(R3, TYPES.enum("pid_type").value("PIDTYPE_TGID"))
    b.stx(W, R10, TASK.offsetof("tgid"), R1)
    load, size, value, store = b.instructions
    # local layout, by hand: pad[5], the two bitfields in the u32 at byte 4, tgid at 8,
    # flags at 12, real_parent at 16
    assert (load.off, size.imm, value.imm, store.off) == (16, 16, 1, 8)
    assert (load.core.kind, load.core.access, load.core.btf) == \
        (CoreKind.FIELD_BYTE_OFFSET, "0:5", TYPES.btf)
    assert (size.core.kind, value.core.kind, value.core.access) == \
        (CoreKind.FIELD_BYTE_SIZE, CoreKind.ENUMVAL_VALUE, "1")
    # members: pad, the two bitfields, tgid, flags, real_parent, mm, pybpf_missing, comm
    # (8), the anonymous union (9) holding an anonymous struct (1) holding u_short (1)
    assert TASK.offsetof("u_short").relo.access == "0:9:1:1"
    assert TASK.offsetof("comm[3]").relo.access == "0:8:3"


def test_the_listing_shows_each_relocation():
    b = Builder()
    b.ldx(DW, R1, R6, TASK.offsetof("real_parent"))
    b.mov(R2, TASK.sizeof("comm"))
    b.mov(R3, TYPES.enum("pid_type").exists("PIDTYPE_NONE___pybpf"))
    assert disassemble(b.instructions).splitlines() == [
        "       0:\t79 61 10 00 00 00 00 00\tr1 = *(u64 *)(r6 + 16)  ; CO-RE "
        "task_struct.real_parent",
        "       1:\tb7 02 00 00 10 00 00 00\tr2 = 16  ; CO-RE sizeof(task_struct.comm)",
        "       2:\tb7 03 00 00 01 00 00 00\tr3 = 1  ; CO-RE "
        "exists(pid_type::PIDTYPE_NONE___pybpf)"]


@pytest.mark.parametrize("call, message", [
    (lambda b: b.st(W, R10, -8, TASK.offsetof("tgid")), "not the 'imm'"),
    (lambda b: b.jeq(R1, TASK.offsetof("tgid"), 1), "not the 'src'"),
    (lambda b: b.st(W, R10, TASK.offsetof("tgid"), TASK.sizeof("tgid")), "one CO-RE operand"),
    (lambda b: b.core_read(R7, R6, TASK, "comm", stack=-8), "is a array: a CO-RE read"),
    (lambda b: b.core_read(R7, R6, TASK, "tgid->x", stack=-8), "tgid is not a pointer"),
    (lambda b: b.core_read(R7, R6, TASK, "tgid", stack=-4), "multiple of 8"),
    (lambda b: b.core_read(R7, R6, TASK, "tgid", stack=-8.0), "multiple of 8"),
    (lambda b: b.core_read(R7, R6, TASK, "tgid", stack=True), "multiple of 8"),
    (lambda b: b.core_load(R7, R6, TASK, "sched_reset_on_fork"), "pass scratch="),
    (lambda b: b.ldx(W, R1, R6, TASK.offsetof("nope")), "has no member 'nope'"),
])
def test_misplaced_or_unknown_operands_are_assembler_errors(call, message):
    with pytest.raises(AssemblerError, match=message):
        call(Builder())


def test_an_int_like_stack_slot_reads_as_its_int():
    """An int-like stack offset (``__index__``, as numpy's ints) builds what the int builds."""
    class Slot:
        def __index__(self):
            return -8

    built = []
    for stack in (-8, Slot()):
        b = Builder()
        b.core_read(R7, R6, TASK, "real_parent->tgid", stack=stack)
        built.append(disassemble(b.instructions))
    assert built[0] == built[1] and "r10 - 8" in built[0]


@pytest.mark.parametrize("text, message", [
    ("struct a { foo x; };", "unknown type 'foo'"),
    ("struct a { struct b x; };", "struct b is used by value before it is defined"),
    ("struct a { int x: 40; };", "bitfield x: 40 bits"),
    ("struct a { int x; } $", "unexpected '\\$'"),
    ("struct a { int x; }", "expected ';'"),
    ("struct a { int x; }; struct a { int y; };", "defined twice"),
])
def test_bad_declarations_are_assembler_errors_with_a_line(text, message):
    with pytest.raises(AssemblerError, match=message):
        core.Types(text)


def test_relocated_against_the_running_kernel_offsets_are_the_kernels():
    b = Builder()
    b.ldx(DW, R1, R6, TASK.offsetof("real_parent"))
    b.ldx(DW, R1, R1, TYPES.struct("mm_struct").offsetof("arg_start"))
    relocated = relocate(b.instructions, running_kernel(), "dsl")
    kernel = bpftool_btf.dump_file(VMLINUX)
    task = by_name(kernel, "STRUCT", "task_struct")
    assert relocated[0].off == member(kernel, task, "real_parent")[1] // 8
    # the kernel's mm_struct keeps arg_start in an anonymous struct: its offset plus that
    anon_id, anon_bits, _ = member(kernel, by_name(kernel, "STRUCT", "mm_struct"), "(anon)")
    assert relocated[1].off == (anon_bits + member(kernel, anon_id, "arg_start")[1]) // 8


# -- in the kernel ---------------------------------------------------------------------------

def run_socket_filter(insns):
    """The return value of a socket filter program run once on a 64-byte packet."""
    with Program.from_instructions(insns, ProgType.SOCKET_FILTER) as prog:
        return prog.test_run(data=bytes(64)).retval


@pytest.mark.kernel
@pytest.mark.parametrize("operand, expected", [
    (lambda: TASK.exists("tgid"), 1),
    (lambda: TASK.exists("pybpf_missing"), 0),
    (lambda: TASK.sizeof("comm"), 16),  # TASK_COMM_LEN
    (lambda: TASK.signed("tgid"), 1),
    (lambda: TYPES.enum("pid_type").value("PIDTYPE_TGID"), 1),
    (lambda: TYPES.enum("pid_type").exists("PIDTYPE_NONE___pybpf"), 0),
    (lambda: TYPES.struct("mm_struct").matches(), 0),  # the kernel's has no arg_end here
])
def test_dsl_operands_take_the_kernels_values(operand, expected):
    b = Builder()
    b.mov(R0, operand())
    b.exit()
    assert run_socket_filter(b.instructions) == expected


@pytest.mark.kernel
def test_the_task_struct_size_is_the_kernels():
    b = Builder()
    b.mov(R0, TASK.sizeof())
    b.exit()
    assert run_socket_filter(b.instructions) == running_kernel().struct("task_struct").size


def chain_program():
    """sys_enter_getppid: records[tgid] = (real_parent->tgid read with probe reads, the same
    with direct loads, the reset_on_fork bitfield both ways, flags: declared as a u16, read
    as the kernel's u32)."""
    b = Builder()
    b.call("get_current_task")
    b.mov(R6, R0)
    b.core_read(R7, R6, TASK, "tgid", stack=-8)
    b.stx(W, R10, -12, R7)  # the key
    b.core_read(R7, R6, TASK, "real_parent->tgid", stack=-8)
    b.stx(W, R10, -32, R7)
    b.core_read(R7, R6, TASK, "sched_reset_on_fork", stack=-8)
    b.stx(W, R10, -28, R7)
    b.core_read(R7, R6, TASK, "real_parent", stack=-8)  # leaves a pointer in the slot
    b.core_read(R7, R6, TASK, "flags", stack=-8)  # which must not show in the flags
    b.stx(DW, R10, -40, R7)  # all 64 bits
    b.call("get_current_task_btf")
    b.mov(R6, R0)
    b.core_load(R7, R6, TASK, "real_parent->tgid")
    b.stx(W, R10, -24, R7)
    b.core_load(R7, R6, TASK, "sched_reset_on_fork", scratch=R8)
    b.stx(W, R10, -20, R7)
    b.ld_map_fd(R1, "records")
    b.mov(R2, R10)
    b.add(R2, -12)
    b.mov(R3, R10)
    b.add(R3, -40)
    b.mov(R4, 0)
    b.call("map_update_elem")
    b.mov(R0, 0)
    b.exit()
    return b.instructions


@pytest.mark.kernel
def test_a_dsl_program_reads_the_real_parent_of_a_process():
    with Map.create(MapType.HASH, 4, 24, 64, name="records") as records:
        insns = chain_program()
        with Program.from_instructions(insns, ProgType.TRACEPOINT, maps={"records": records},
                                       name="dsl_core") as prog:
            with attach_tracepoint(prog, "syscalls", "sys_enter_getppid"):
                child = subprocess.Popen(
                    [sys.executable, "-c",
                     "import os, sys; os.sched_setscheduler(0, os.SCHED_OTHER | "
                     "os.SCHED_RESET_ON_FORK, os.sched_param(0)); os.getppid(); "
                     "sys.stdin.read()"], stdin=subprocess.PIPE)
                try:
                    key = child.pid.to_bytes(4, "little")
                    deadline = time.monotonic() + 10
                    while (value := records.get(key)) is None:
                        assert time.monotonic() < deadline, "nothing recorded for the child"
                        time.sleep(0.01)
                    reset = bool(os.sched_getscheduler(child.pid) & os.SCHED_RESET_ON_FORK)
                    with open(f"/proc/{child.pid}/stat") as f:
                        flags = int(f.read().rsplit(")", 1)[1].split()[6])  # field 9
                finally:
                    child.stdin.close()
                    child.wait(timeout=10)
    # value: flags (a u64), then parent tgid and bitfield through probe reads, then through
    # direct loads
    fields = [int.from_bytes(value[:8], "little")] + [
        int.from_bytes(value[i:i + 4], "little") for i in range(8, 24, 4)]
    assert fields == [flags, os.getpid(), 1, os.getpid(), 1] and reset and flags > 0xFFFF


@pytest.mark.kernel
def test_a_reachable_field_the_kernel_lacks_is_a_verifier_error_at_the_dsl_line():
    b = Builder()
    b.call("get_current_task_btf")
    b.comment("r0 = task->pybpf_missing")
    b.ldx(DW, R0, R0, TASK.offsetof("pybpf_missing"))
    b.exit()
    with pytest.raises(VerifierError, match=r"instruction 1 `call 195896080` from "
                       r"'r0 = task->pybpf_missing': the kernel has no "
                       r"task_struct.pybpf_missing") as info:
        Program.from_instructions(b.instructions, ProgType.TRACEPOINT, name="missing")
    assert info.value.source_index == 1


@pytest.mark.kernel
def test_a_guarded_field_the_kernel_lacks_loads():
    b = Builder()
    b.call("get_current_task_btf")
    b.mov(R1, TASK.exists("pybpf_missing"))
    b.mov(R2, 7)
    b.jeq(R1, 0, "skip")
    b.ldx(DW, R2, R0, TASK.offsetof("pybpf_missing"))
    b.label("skip")
    b.mov(R0, R2)
    b.exit()
    with Program.from_instructions(b.instructions, ProgType.TRACEPOINT, name="guarded") as p:
        assert p.insns[4].imm == 0xBAD2310  # poisoned, and never reached
