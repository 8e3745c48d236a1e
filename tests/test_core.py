"""CO-RE: relocating tests/core/*.o (rebuilt by tests/core/build.sh) against the running
kernel, checked three ways: the values the programs record in the kernel are the true ones
(os.getpid(), /proc, sched_getscheduler, bpftool's dump of the kernel's BTF); libbpf, loading
the same objects (``bpftool prog loadall``), gives the same instructions after the verifier;
and the engine's answers on hand-made BTF are the ones derived by hand here.
"""

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

import bpftool_btf
from libbpf_oracle import bpftool_xlated, xlated_masked
from bpftool_btf import VMLINUX, by_name, enumerators, member, number
from support import require_tool
from pybpf import elf
from pybpf.asm.insn import Instruction
from pybpf.attach import attach
from pybpf.btf import CoreKind, Kind
from pybpf.btf.core import POISON_HELPER, CoreRelo, essential_name, relocate
from pybpf.btf.kernel import KernelBTF, running_kernel
from pybpf.btf.writer import BTFWriter
from pybpf.collection import Collection
from pybpf.errors import CoreError

HERE = os.path.join(os.path.dirname(__file__), "core")
OBJECTS = sorted(name for name in os.listdir(HERE) if name.endswith(".o"))
GETPPID = "tracepoint/syscalls/sys_enter_getppid"
RECORD_FIELDS = (
    "arg_start arg_end tgid parent_tgid flags reset_on_fork comm_offset comm_size task_size "
    "tgid_signed flags_signed pidtype_tgid pidtype_max_exists missing_exists missing_value "
    "type_exists type_matches type_mismatch type_id local_type_id comm2 comm_direct2 pad "
    "tgid_direct parent_tgid_direct reset_on_fork_direct flags_direct").split()


def path(name):
    return os.path.join(HERE, name)


# -- the records ----------------------------------------------------------------------------

def test_core_relo_records_are_parsed_from_btf_ext():
    obj = elf.open_object(path("local.o"))
    records = obj.btf_ext.core_relos[GETPPID]
    first = records[0]
    # local.c: `tgid = BPF_CORE_READ(task, tgid)`; tgid is member 2 of task_struct___pybpf
    # (after pad[5] and the bitfield), at byte 8: `r8 = 8` is the program's slot 19.
    assert (first.insn_off, CoreKind(first.kind), obj.btf.string(first.access_str_off)) == \
        (19 * 8, CoreKind.FIELD_BYTE_OFFSET, "0:2")
    assert obj.btf.name(first.type_id) == "task_struct___pybpf"
    assert len(records) == 37


# -- oracles: bpftool's view of the kernel's BTF, /proc ---------------------------------------

def proc_stat(pid):
    """Fields of /proc/PID/stat by their number in proc(5) (3 is the state)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return {number: int(value) for number, value in enumerate(rest, 3)
            if value.lstrip("-").isdigit()}


CHILD = ("import os, sys\n"
         "os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))\n"
         "os.getppid()\n"
         "sys.stdin.read()\n")


def run_child_and_read(records_map):
    """Run a child that sets SCHED_RESET_ON_FORK, calls getppid() and waits; its record (as a
    dict), its /proc/PID/stat fields and its comm, read while it is alive."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            value = records_map.get(child.pid)
            if value is not None:
                break
            assert time.monotonic() < deadline, "the program recorded nothing for the child"
            time.sleep(0.01)
        stat = proc_stat(child.pid)
        with open(f"/proc/{child.pid}/comm") as f:
            comm = f.read().rstrip("\n")
        policy = os.sched_getscheduler(child.pid)
        record = {name: value[name] for name in RECORD_FIELDS}  # decoded by the map's BTF
        return record, stat, comm, policy, child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=10)


@pytest.mark.kernel
@pytest.mark.parametrize("obj, program", [("task.o", "record_task"),
                                          ("local.o", "record_local")])
def test_relocated_programs_record_the_true_values(obj, program):
    """task.o was built against this kernel's vmlinux.h; local.o against hand-written types
    that are wrong everywhere (reordered, padded, a narrower field, a flavour): relocated,
    both read the same true values."""
    kernel = bpftool_btf.dump_file(VMLINUX)
    task_id = by_name(kernel, "STRUCT", "task_struct")
    local_task = "task_struct" if obj == "task.o" else "task_struct___pybpf"
    local_id = by_name(bpftool_btf.dump_file(path(obj)), "STRUCT", local_task)
    pid_type = enumerators(kernel, by_name(kernel, "ENUM", "pid_type"))
    with Collection(elf.load_spec(path(obj))) as coll:
        with attach(coll.programs[program]):
            record, stat, comm, policy, pid = run_child_and_read(coll.maps["records"])
    reset_on_fork = int(bool(policy & os.SCHED_RESET_ON_FORK))
    assert reset_on_fork == 1
    expected = dict(
        tgid=pid, parent_tgid=os.getpid(), tgid_direct=pid, parent_tgid_direct=os.getpid(),
        arg_start=stat[48], arg_end=stat[49], flags_direct=stat[9],
        flags=stat[9] if obj == "task.o" else 0,  # local.c reads flags directly only
        reset_on_fork=reset_on_fork, reset_on_fork_direct=reset_on_fork,
        comm2=ord(comm[2]), comm_direct2=ord(comm[2]),
        comm_offset=member(kernel, task_id, "comm")[1] // 8,
        comm_size=16, task_size=number(kernel[task_id][2], "size"),
        tgid_signed=1, flags_signed=0,
        pidtype_tgid=pid_type["PIDTYPE_TGID"],
        pidtype_max_exists=1 if obj == "task.o" else 0,  # local.o asks for PIDTYPE_NONE
        missing_exists=0, missing_value=7 if obj == "local.o" else 0,
        type_exists=1, type_matches=1, type_mismatch=0,
        type_id=task_id, local_type_id=local_id, pad=0)
    assert record == expected


@pytest.mark.kernel
def test_a_called_function_is_relocated_for_each_program_that_calls_it():
    spec = elf.load_spec(path("subprog.o"))
    for name in ("on_getppid", "on_getpgid"):  # each has its own copy of record_parent
        insns = spec.programs[name].insns
        # clang computes tgid's offset once (`r8 = 0x20`, used for both reads) and
        # real_parent's once (`r1 = 0x18`): two relocations in the copy
        assert [i.core.access for i in insns if i.core is not None] == ["0:2", "0:1"], name
    with Collection(spec) as coll:
        with attach(coll.programs["on_getppid"]):
            child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while (parent := coll.maps["parents"].get(child.pid)) is None:
                    assert time.monotonic() < deadline, "nothing recorded for the child"
                    time.sleep(0.01)
            finally:
                child.stdin.close()
                child.wait(timeout=10)
    assert parent == os.getpid()


# -- libbpf as the oracle: the same instructions after relocation and verification ------------

# Every CO-RE object, and the ELF loader's objects that libbpf 1.1 (bpftool's) loads too: not
# legacy.o (a legacy "maps" section) nor progtypes.o (program types libbpf refuses there).
XLATED = [os.path.join(HERE, name) for name in OBJECTS] + [
    os.path.join(HERE, "..", "elf", name) for name in ("calls.o", "execve.o", "globals.o",
                                                       "maps.o")]


@pytest.mark.kernel
@pytest.mark.oracle
@pytest.mark.parametrize("obj", XLATED, ids=os.path.basename)
def test_pybpf_loads_the_instructions_libbpf_loads(obj, bpffs):
    bpftool = require_tool("bpftool")
    subprocess.run([bpftool, "prog", "loadall", obj, str(bpffs / "libbpf")], check=True)
    with Collection(elf.load_spec(obj)) as coll:
        assert coll.programs and sorted(coll.programs) == sorted(os.listdir(bpffs / "libbpf"))
        for name, prog in coll.programs.items():
            ours = prog.xlated_insns()
            assert ours == bpftool_xlated("id", str(prog.id))  # pybpf reads it right
            theirs = bpftool_xlated("pinned", str(bpffs / "libbpf" / name))
            assert xlated_masked(ours) == xlated_masked(theirs), name


# -- errors ---------------------------------------------------------------------------------

def test_a_relocation_of_a_missing_local_type_names_program_instruction_and_access():
    spec = elf.load_spec(path("local.o")).programs["record_local"]
    insn = next(i for i in spec.insns if i.core is not None)
    broken = spec.copy()
    index = spec.insns.index(insn)
    broken.insns[index] = replace(insn, core=replace(insn.core, type_id=9999))
    with pytest.raises(CoreError, match=r"program 'record_local' instruction 19: .*\[9999\].*"
                       r"0:2.*not in the program's BTF") as info:
        relocate(broken.insns, running_kernel(), "record_local")
    assert (info.value.program, info.value.index, info.value.access) == \
        ("record_local", 19, "0:2")


# -- the engine on hand-made BTF (values derived by hand) --------------------------------------

K = CoreKind
CALL_POISON = (0x85, 0, 0, 0, POISON_HELPER)  # call 0xbad2310


def mov(imm):
    """r1 = imm (BPF_ALU64 | BPF_MOV | BPF_K)."""
    return Instruction(0xB7, 1, 0, 0, imm)


def ldx(size_code, off):
    """r1 = *(size *)(r2 + off): 0x61 u32, 0x69 u16, 0x71 u8, 0x79 u64."""
    return Instruction(size_code, 1, 2, off)


def lddw(imm):
    """r1 = imm ll (BPF_LD | BPF_IMM | BPF_DW)."""
    return Instruction(0x18, 1, 0, 0, imm)


def fields(insn):
    return (insn.opcode, insn.dst, insn.src, insn.off, insn.imm)


def apply(insn, kind, local, type_id, access, target, modules=None):
    """Relocate one instruction; the instruction(s) it becomes, as field tuples."""
    insn.core = CoreRelo(kind, type_id, access, local)
    kernel = KernelBTF(target, modules)
    return [fields(i) for i in relocate([insn], kernel, "prog")]


def task_types(w, name, pid_bit_offset, extra=()):
    """struct NAME { long x; ...; int pid at pid_bit_offset; }"""
    i32 = w.add_int("int", 4, signed=True)
    i64 = w.add_int("long", 8, signed=True)
    return w.add_struct(name, 16, [("x", i64, 0, 0), *extra, ("pid", i32, pid_bit_offset, 0)])


def local_task():
    w = BTFWriter()
    i32 = w.add_int("int", 4, signed=True)
    task = w.add_struct("task___old", 8, [("pad", i32, 0, 0), ("pid", i32, 32, 0)])
    return w.btf(), task


def test_a_flavoured_local_type_is_found_by_its_essential_name():
    local, task = local_task()
    w = BTFWriter()
    task_types(w, "task", 96)
    assert apply(mov(4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf()) == \
        [fields(mov(12))]


def test_kernel_flavours_are_candidates_too_and_must_agree():
    local, task = local_task()
    w = BTFWriter()
    task_types(w, "task", 96)
    w.add_struct("task___2", 16, [("pid", 1, 96, 0)])  # the same offset: fine
    assert apply(mov(4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf()) == \
        [fields(mov(12))]
    w.add_struct("task___3", 16, [("pid", 1, 64, 0)])  # another offset: ambiguous
    with pytest.raises(CoreError, match=r"program 'prog' instruction 0: CO-RE "
                       r"field_byte_offset of task___old access '0:1' \(task___old.pid\): "
                       r"ambiguous: kernel types \[3\] and \[5\] .* \(96 and 64 bits\)"):
        apply(mov(4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf())


def test_members_are_found_through_anonymous_structs_and_unions():
    w = BTFWriter()
    i32 = w.add_int("int", 4, signed=True)
    inner = w.add_struct("", 8, [("c", i32, 0, 0), ("d", i32, 32, 0)])
    union = w.add_struct("", 8, [("b", i32, 0, 0), ("", inner, 0, 0)], union=True)
    w.add_struct("outer", 12, [("a", i32, 0, 0), ("", union, 32, 0)])
    lw = BTFWriter()
    li32 = lw.add_int("int", 4, signed=True)
    local = lw.add_struct("outer___mine", 4, [("d", li32, 0, 0)])
    # d: the union at bit 32, the struct at 0 in it, d at 32 in that: byte 8
    assert apply(mov(0), K.FIELD_BYTE_OFFSET, lw.btf(), local, "0:0", w.btf()) == \
        [fields(mov(8))]


def array_types(nelems):
    w = BTFWriter()
    i32 = w.add_int("int", 4, signed=True)
    i64 = w.add_int("long", 8, signed=True)
    arr = w.add_array(i32, nelems, i32)
    w.add_struct("s", 8 + 4 * nelems, [("x", i64, 0, 0), ("arr", arr, 64, 0)])
    return w.btf()


def local_array():
    w = BTFWriter()
    i32 = w.add_int("int", 4, signed=True)
    arr = w.add_array(i32, 4, i32)
    s = w.add_struct("s___l", 16, [("arr", arr, 0, 0)])
    return w.btf(), s


def test_array_elements_relocate_and_bounds_are_checked():
    local, s = local_array()
    # arr[3]: at byte 12 locally, 8 + 12 = 20 in the kernel's; element size 4 both
    assert apply(mov(12), K.FIELD_BYTE_OFFSET, local, s, "0:0:3", array_types(8)) == \
        [fields(mov(20))]
    assert apply(mov(4), K.FIELD_BYTE_SIZE, local, s, "0:0:3", array_types(8)) == \
        [fields(mov(4))]
    # the kernel's array is too short for index 3: no match, the instruction is poisoned
    assert apply(mov(12), K.FIELD_BYTE_OFFSET, local, s, "0:0:3", array_types(2)) == \
        [CALL_POISON]
    with pytest.raises(CoreError, match="array index 9 .* out of range: the array has 4"):
        apply(mov(12), K.FIELD_BYTE_OFFSET, local, s, "0:0:9", array_types(8))


def bitfield_types(bit_offset, size):
    w = BTFWriter()
    u32 = w.add_int("unsigned int", 4)
    w.add_struct("bits", 8, [("x", u32, 0, 0), ("f", u32, bit_offset, size)])
    return w.btf()


def local_bitfield():
    w = BTFWriter()
    u32 = w.add_int("unsigned int", 4)
    bits = w.add_struct("bits", 4, [("f", u32, 3, 1)])
    return w.btf(), bits


@pytest.mark.parametrize("bit_offset, size, expected", [
    # a 1-bit field at bit 9504 of a u32 (task_struct.sched_reset_on_fork on Linux 6.18):
    # the u32 holding it starts at byte 1188; shift left 64-(9504+1-9504)=63, right 64-1
    (9504, 1, {K.FIELD_BYTE_OFFSET: 1188, K.FIELD_BYTE_SIZE: 4, K.FIELD_LSHIFT_U64: 63,
               K.FIELD_RSHIFT_U64: 63, K.FIELD_SIGNED: 0}),
    # 4 bits at bit 30 cross the u32's end: read 8 bytes from byte 0; 64-(30+4)=30, 64-4=60
    (30, 4, {K.FIELD_BYTE_OFFSET: 0, K.FIELD_BYTE_SIZE: 8, K.FIELD_LSHIFT_U64: 30,
             K.FIELD_RSHIFT_U64: 60, K.FIELD_SIGNED: 0}),
    # 4 bits at bit 28 end exactly where the u32 ends: it stays a u32; 64-(28+4)=32, 64-4=60
    (28, 4, {K.FIELD_BYTE_OFFSET: 0, K.FIELD_BYTE_SIZE: 4, K.FIELD_LSHIFT_U64: 32,
             K.FIELD_RSHIFT_U64: 60, K.FIELD_SIGNED: 0}),
])
def test_bitfields_give_the_load_and_shifts_that_extract_them(bit_offset, size, expected):
    local, bits = local_bitfield()
    # locally f is bit 3 of a u32 at byte 0: offset 0, size 4, lshift 64-4=60, rshift 63
    local_values = {K.FIELD_BYTE_OFFSET: 0, K.FIELD_BYTE_SIZE: 4, K.FIELD_LSHIFT_U64: 60,
                    K.FIELD_RSHIFT_U64: 63, K.FIELD_SIGNED: 0}
    target = bitfield_types(bit_offset, size)
    for kind, value in expected.items():
        assert apply(mov(local_values[kind]), kind, local, bits, "0:0", target) == \
            [fields(mov(value))], kind


def test_a_bitfield_no_64_bit_load_holds_is_an_error():
    local, bits = local_bitfield()
    target = bitfield_types(60, 8)  # bits 60..67; a u64 from byte 0 ends at bit 64 (E2BIG)
    with pytest.raises(CoreError, match="bitfield f cannot be read with one 64-bit load"):
        apply(mov(4), K.FIELD_BYTE_SIZE, local, bits, "0:0", target)


def test_a_load_widens_for_an_unsigned_field_and_is_poisoned_for_a_signed_one():
    lw = BTFWriter()
    u16 = lw.add_int("unsigned short", 2)
    s16 = lw.add_int("short", 2, signed=True)
    local = lw.add_struct("t", 4, [("flags", u16, 0, 0), ("count", s16, 16, 0)])
    w = BTFWriter()
    u32 = w.add_int("unsigned int", 4)
    s64 = w.add_int("long", 8, signed=True)
    w.add_struct("t", 64, [("count", s64, 0, 0), ("flags", u32, 352, 0)])
    # ldxh at 0 becomes ldxw at 44: the kernel's unsigned int, zero-extended either way
    assert apply(ldx(0x69, 0), K.FIELD_BYTE_OFFSET, lw.btf(), local, "0:0", w.btf()) == \
        [fields(ldx(0x61, 44))]
    # a signed short read as a long would lose its sign: poisoned instead
    assert apply(ldx(0x69, 2), K.FIELD_BYTE_OFFSET, lw.btf(), local, "0:1", w.btf()) == \
        [CALL_POISON]


def test_offsets_a_load_cannot_hold_are_an_error():
    local, task = local_task()
    w = BTFWriter()
    task_types(w, "task", 40000 * 8)
    with pytest.raises(CoreError, match="offset 40000 does not fit"):
        apply(ldx(0x61, 4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf())


def test_missing_fields_poison_and_existence_checks_say_0():
    local, task = local_task()
    w = BTFWriter()
    i64 = w.add_int("long", 8, signed=True)
    w.add_struct("task", 8, [("x", i64, 0, 0)])  # no pid
    assert apply(ldx(0x61, 4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf()) == \
        [CALL_POISON]
    assert apply(mov(1), K.FIELD_EXISTS, local, task, "0:1", w.btf()) == [fields(mov(0))]
    assert apply(mov(1), K.FIELD_EXISTS, local, task, "0:0", w.btf()) == [fields(mov(0))]


def enum_types(w, name, values, size=4, signed=False):
    return w.add_enum(name, size, values, signed)


def test_enumerators_match_by_essential_name_and_64_bit_loads_poison_whole():
    lw = BTFWriter()
    local = enum_types(lw, "state___x", [("S_RUN___x", 9), ("S_GONE___x", 4)])
    w = BTFWriter()
    enum_types(w, "state", [("S_IDLE", 0), ("S_RUN", 3)])
    target = w.btf()
    assert apply(lddw(9), K.ENUMVAL_VALUE, lw.btf(), local, "0", target) == [fields(lddw(3))]
    assert apply(lddw(1), K.ENUMVAL_EXISTS, lw.btf(), local, "1", target) == [fields(lddw(0))]
    # S_GONE is not there: its value cannot be had, both slots of the load are poisoned
    assert apply(lddw(4), K.ENUMVAL_VALUE, lw.btf(), local, "1", target) == [CALL_POISON] * 2


def test_enum_values_are_widened_like_the_kernels_s32():
    lw = BTFWriter()
    local = enum_types(lw, "big", [("BIG", 1)])
    w = BTFWriter()
    enum_types(w, "big", [("BIG", 0x80000000)])  # unsigned in BTF, an s32 in btf_enum
    assert apply(lddw(1), K.ENUMVAL_VALUE, lw.btf(), local, "0", w.btf()) == \
        [fields(lddw(0xFFFFFFFF80000000))]


def test_types_exist_have_sizes_and_kernel_ids():
    local, task = local_task()
    w = BTFWriter()
    target_id = task_types(w, "task", 96)
    target = w.btf()
    assert apply(mov(1), K.TYPE_EXISTS, local, task, "0", target) == [fields(mov(1))]
    assert apply(mov(8), K.TYPE_SIZE, local, task, "0", target) == [fields(mov(16))]
    assert apply(lddw(task), K.TYPE_ID_TARGET, local, task, "0", target) == \
        [fields(lddw(target_id))]
    assert apply(lddw(task), K.TYPE_ID_LOCAL, local, task, "0", target) == \
        [fields(lddw(task))]
    empty = BTFWriter()
    empty.add_int("int", 4)
    for kind in (K.TYPE_EXISTS, K.TYPE_SIZE, K.TYPE_MATCHES):
        assert apply(mov(1 if kind != K.TYPE_SIZE else 8), kind, local, task, "0",
                     empty.btf()) == [fields(mov(0))]


def list_head(w, name, next_kind="ptr"):
    self_id = w.add_struct(name, 16)
    if next_kind == "ptr":
        member = w.add_ptr(self_id)
    else:
        member = w.add_int("long", 8, signed=True)
    w.set_members(self_id, 16, [("next", member, 0, 0), ("prev", member, 64, 0)])
    return self_id


@pytest.mark.parametrize("local_kind, expected", [("ptr", 1), ("long", 0)])
def test_type_matches_compares_members_by_name_and_type(local_kind, expected):
    lw = BTFWriter()
    local = list_head(lw, "list_head___mine", local_kind)
    w = BTFWriter()
    list_head(w, "list_head")
    assert apply(mov(1), K.TYPE_MATCHES, lw.btf(), local, "0", w.btf()) == \
        [fields(mov(expected))]


def test_candidates_come_from_modules_when_vmlinux_has_none():
    local, task = local_task()
    vw = BTFWriter()
    vw.add_int("int", 4, signed=True)
    vmlinux = vw.btf()
    mw = BTFWriter(base=vmlinux)
    i64 = mw.add_int("long", 8, signed=True)
    module_task = mw.add_struct("task", 16, [("x", i64, 0, 0), ("pid", 1, 64, 0)])
    modules = {"m": mw.encode()}
    assert apply(mov(4), K.FIELD_BYTE_OFFSET, local, task, "0:1", vmlinux, modules) == \
        [fields(mov(8))]
    assert apply(lddw(task), K.TYPE_ID_TARGET, local, task, "0", vmlinux, modules) == \
        [fields(lddw(module_task))]
    assert module_task == len(vmlinux) + 1


@pytest.mark.parametrize("kind, type_id, access, message", [
    (K.FIELD_BYTE_OFFSET, 2, "0:x", "not a list of indexes"),
    (K.FIELD_BYTE_OFFSET, 2, "", "not a list of indexes"),
    (K.FIELD_BYTE_OFFSET, 2, "0:7", "member index 7 .* out of range: task___old has 2"),
    (K.FIELD_BYTE_OFFSET, 99, "0:1", r"local type \[99\] is not in the program's BTF"),
    (K.FIELD_BYTE_OFFSET, 0, "0:1", r"local type \[0\] is not in the program's BTF"),
    (77, 2, "0:1", "unknown relocation kind 77"),
    (K.TYPE_EXISTS, 2, "1", 'has access string "0"'),
    (K.ENUMVAL_VALUE, 2, "0", "needs one enumerator index of an enum"),
    (K.FIELD_BYTE_OFFSET, 2, "0:1:0", "neither a struct, a union nor an array"),
])
def test_malformed_relocations_are_core_errors_naming_the_instruction(kind, type_id, access,
                                                                       message):
    local, task = local_task()
    w = BTFWriter()
    task_types(w, "task", 96)
    with pytest.raises(CoreError, match=message) as info:
        apply(mov(4), kind, local, type_id, access, w.btf())
    assert (info.value.program, info.value.index, info.value.access) == ("prog", 0, access)


def test_an_instruction_that_does_not_hold_the_local_value_is_an_error():
    local, task = local_task()
    w = BTFWriter()
    task_types(w, "task", 96)
    with pytest.raises(CoreError, match="immediate is 5, but the local type gives 4"):
        apply(mov(5), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf())


def test_anonymous_local_types_cannot_be_relocated():
    lw = BTFWriter()
    i32 = lw.add_int("int", 4, signed=True)
    anon = lw.add_struct("", 4, [("pid", i32, 0, 0)])
    w = BTFWriter()
    task_types(w, "task", 96)
    with pytest.raises(CoreError, match="anonymous local types cannot be relocated"):
        apply(mov(0), K.FIELD_BYTE_OFFSET, lw.btf(), anon, "0:0", w.btf())


def test_relocations_of_one_type_keep_to_the_candidates_earlier_ones_matched():
    """libbpf prunes a local type's candidates to those that matched: here the first
    relocation (field a) matches only `pair`, so the second (field b, at different offsets in
    `pair` and `pair___2`) is not ambiguous."""
    lw = BTFWriter()
    i32 = lw.add_int("int", 4, signed=True)
    local = lw.add_struct("pair___l", 8, [("a", i32, 0, 0), ("b", i32, 32, 0)])
    w = BTFWriter()
    t32 = w.add_int("int", 4, signed=True)
    w.add_struct("pair", 8, [("a", t32, 0, 0), ("b", t32, 32, 0)])
    w.add_struct("pair___2", 12, [("x", t32, 0, 0), ("b", t32, 64, 0)])
    first, second, local_btf = mov(0), mov(4), lw.btf()
    first.core = CoreRelo(K.FIELD_BYTE_OFFSET, local, "0:0", local_btf)
    second.core = CoreRelo(K.FIELD_BYTE_OFFSET, local, "0:1", local_btf)
    relocated = relocate([first, second], KernelBTF(w.btf()), "prog")
    assert [fields(i) for i in relocated] == [fields(mov(0)), fields(mov(4))]


def test_old_style_bit_ints_are_not_compatible_fields():
    """An INT whose encoding has a bit offset (pre-bitfield BTF) matches no local int."""
    local, task = local_task()
    w = BTFWriter()
    bit_int = w.add(Kind.INT, "int", 4, tail=(1 << 24 | 8 << 16 | 24,))  # 24 bits at bit 8
    i64 = w.add_int("long", 8, signed=True)
    w.add_struct("task", 16, [("x", i64, 0, 0), ("pid", bit_int, 64, 0)])
    assert apply(mov(4), K.FIELD_BYTE_OFFSET, local, task, "0:1", w.btf()) == [CALL_POISON]


@pytest.mark.parametrize("name, essential", [
    ("task_struct___old", "task_struct"), ("foo___bar___baz", "foo___bar"),
    ("___GFP_DMA_BIT", "___GFP_DMA_BIT"), ("a____b", "a____b"), ("a___", "a___"),
    ("plain", "plain"), ("x___y", "x"),
])
def test_essential_names_drop_the_last_flavour(name, essential):
    assert essential_name(name) == essential


def test_kernel_enumerators_with_flavours_match_too():
    lw = BTFWriter()
    local = enum_types(lw, "state", [("S_RUN", 9)])
    w = BTFWriter()
    enum_types(w, "state", [("S_IDLE", 0), ("S_RUN___v2", 3)])
    assert apply(lddw(9), K.ENUMVAL_VALUE, lw.btf(), local, "0", w.btf()) == [fields(lddw(3))]


def test_flexible_array_members_take_any_index():
    lw = BTFWriter()
    i32 = lw.add_int("int", 4, signed=True)
    arr = lw.add_array(i32, 8, i32)
    local = lw.add_struct("msg", 36, [("len", i32, 0, 0), ("data", arr, 32, 0)])
    w = BTFWriter()
    t32 = w.add_int("int", 4, signed=True)
    i64 = w.add_int("long", 8, signed=True)
    flex = w.add_array(t32, 0, t32)  # int data[]: the struct's last member
    w.add_struct("msg", 16, [("len", i64, 0, 0), ("data", flex, 64, 0)])
    # data[5]: 4 + 20 = 24 locally, 8 + 20 = 28 in the kernel's
    assert apply(mov(24), K.FIELD_BYTE_OFFSET, lw.btf(), local, "0:1:5", w.btf()) == \
        [fields(mov(28))]


def one_member(w, name, member_type):
    return w.add_struct(name, 8, [("x", member_type, 0, 0)])


@pytest.mark.parametrize("local_member, target_member, expected", [
    (lambda w: w.add_int("int", 4, signed=True), lambda w: w.add_int("int", 4, signed=True), 1),
    # (names must match too: a 32-bit kernel's long, and an int without its sign)
    (lambda w: w.add_int("long", 8, signed=True), lambda w: w.add_int("long", 4, signed=True), 0),
    (lambda w: w.add_int("int", 4, signed=True), lambda w: w.add_int("int", 4), 0),
    (lambda w: w.add_enum("e", 4, [("A", 0)]), lambda w: w.add_enum("e", 8, [("A", 0)]), 0),
    (lambda w: w.add_enum("e", 4, [("A", 0)]), lambda w: w.add_enum("e", 4, [("B", 0)]), 0),
    (lambda w: w.add_enum("e", 4, [("A", 0)]),
     lambda w: w.add_enum("e", 4, [("B", 1), ("A", 7)]), 1),
    (lambda w: w.add_array(w.add_int("int", 4), 4), lambda w: w.add_array(w.add_int("int", 4),
                                                                            4), 1),
    (lambda w: w.add_array(w.add_int("int", 4), 4), lambda w: w.add_array(w.add_int("int", 4),
                                                                            8), 0),
])
def test_type_matches_compares_sizes_signs_enumerators_and_lengths(local_member, target_member,
                                                                    expected):
    lw, w = BTFWriter(), BTFWriter()
    local = one_member(lw, "thing___mine", local_member(lw))
    one_member(w, "thing", target_member(w))
    assert apply(mov(1), K.TYPE_MATCHES, lw.btf(), local, "0", w.btf()) == [fields(mov(expected))]


@pytest.mark.kernel
def test_a_collection_relocates_against_the_kernel_btf_it_is_given():
    """As libbpf's btf_custom_path: another kernel's types (here made up: real_parent at
    byte 80, tgid at 96) decide the offsets loaded."""
    w = BTFWriter()
    i32 = w.add_int("int", 4, signed=True)
    i64 = w.add_int("long", 8, signed=True)
    task = w.add_struct("task_struct", 104)
    pointer = w.add_ptr(task)
    pad = w.add_array(i64, 10, i32)
    w.set_members(task, 104, [("pad", pad, 0, 0), ("real_parent", pointer, 640, 0),
                              ("tgid", i32, 768, 0)])
    with Collection(elf.load_spec(path("subprog.o")), kernel_btf=KernelBTF(w.btf())) as coll:
        loaded = coll.programs["on_getppid"].insns
        assert [(i.imm, i.core.access) for i in loaded if i.core is not None] == \
            [(96, "0:2"), (80, "0:1")]
