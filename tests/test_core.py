"""CO-RE: relocating tests/core/*.o (rebuilt by tests/core/build.sh) against the running
kernel, checked three ways: the values the programs record in the kernel are the true ones
(os.getpid(), /proc, sched_getscheduler, bpftool's dump of the kernel's BTF); libbpf, loading
the same objects (``bpftool prog loadall``), gives the same instructions after the verifier;
and the engine's answers on hand-made BTF are the ones derived by hand here.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import require_tool
from pybpf import elf, syscalls
from pybpf.attach import attach
from pybpf.btf import CoreKind
from pybpf.btf.kernel import running_kernel
from pybpf.collection import Collection
from pybpf.errors import CoreError

HERE = os.path.join(os.path.dirname(__file__), "core")
OBJECTS = sorted(name for name in os.listdir(HERE) if name.endswith(".o"))
GETPPID = "tracepoint/syscalls/sys_enter_getppid"
VMLINUX = "/sys/kernel/btf/vmlinux"
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

def bpftool_btf(path_):
    """``bpftool btf dump file PATH`` (raw format) as {(kind, name): (id, header, members)}."""
    bpftool = require_tool("bpftool")
    dump = subprocess.run([bpftool, "btf", "dump", "file", path_], capture_output=True,
                          text=True, check=True).stdout
    types, current = {}, None
    for line in dump.splitlines():
        head = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
        if head:
            current = (int(head.group(1)), head.group(4), {})
            types.setdefault((head.group(2), head.group(3)), current)
        elif current is not None:
            item = re.match(r"\s+'([^']*)' (.*)", line)
            if item:
                current[2][item.group(1)] = item.group(2)
    return types


def field_of(text, name):
    return int(re.search(rf"{name}=(-?\d+)", text).group(1))


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
    kernel = bpftool_btf(VMLINUX)
    task_id, task_header, task_members = kernel[("STRUCT", "task_struct")]
    local_task = "task_struct" if obj == "task.o" else "task_struct___pybpf"
    local_id = bpftool_btf(path(obj))[("STRUCT", local_task)][0]
    pid_type = kernel[("ENUM", "pid_type")][2]
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
        comm_offset=field_of(task_members["comm"], "bits_offset") // 8,
        comm_size=16, task_size=field_of(task_header, "size"),
        tgid_signed=1, flags_signed=0,
        pidtype_tgid=field_of(pid_type["PIDTYPE_TGID"], "val"),
        pidtype_max_exists=1 if obj == "task.o" else 0,  # local.o asks for PIDTYPE_NONE
        missing_exists=0, missing_value=7 if obj == "local.o" else 0,
        type_exists=1, type_matches=1, type_mismatch=0,
        type_id=task_id, local_type_id=local_id, pad=0)
    assert record == expected


# -- libbpf as the oracle: the same instructions after relocation and verification ------------

def xlated_masked(raw):
    """Program bytes with the ids of maps (64-bit loads of map fds and values) zeroed."""
    out = bytearray(raw)
    for offset in range(0, len(out), 8):
        if out[offset] == 0x18 and out[offset + 1] >> 4 in (1, 2) and offset + 16 <= len(out):
            out[offset + 4:offset + 8] = bytes(4)
    return bytes(out)


def bpftool_xlated(bpftool, *program):
    """A program (``id N`` or ``pinned PATH``) as raw bytes, from ``bpftool prog dump
    xlated``."""
    dump = json.loads(subprocess.run(
        [bpftool, "prog", "dump", "xlated", *program, "opcodes", "-j"],
        capture_output=True, text=True, check=True).stdout)
    raw = bytearray()
    for insn in dump:
        ops = insn["opcodes"]
        raw.append(int(ops["code"], 16))
        raw.append(int(ops["src_reg"], 16) << 4 | int(ops["dst_reg"], 16))
        raw.extend(int(b, 16) for b in ops["off"] + ops["imm"])
    return bytes(raw)


@pytest.mark.kernel
@pytest.mark.oracle
@pytest.mark.parametrize("obj", OBJECTS)
def test_pybpf_loads_the_instructions_libbpf_loads(obj, bpffs):
    bpftool = require_tool("bpftool")
    subprocess.run([bpftool, "prog", "loadall", path(obj), str(bpffs / "libbpf")], check=True)
    with Collection(elf.load_spec(path(obj))) as coll:
        assert coll.programs and sorted(coll.programs) == sorted(os.listdir(bpffs / "libbpf"))
        for name, prog in coll.programs.items():
            ours = prog.xlated_insns()
            assert ours == bpftool_xlated(bpftool, "id", str(prog.id))  # pybpf reads it right
            theirs = bpftool_xlated(bpftool, "pinned", str(bpffs / "libbpf" / name))
            assert xlated_masked(ours) == xlated_masked(theirs), name


# -- errors ---------------------------------------------------------------------------------

def test_a_relocation_of_a_missing_local_type_names_program_instruction_and_access():
    spec = elf.load_spec(path("local.o")).programs["record_local"]
    insn = next(i for i in spec.insns if i.core is not None)
    broken = spec.copy()
    index = spec.insns.index(insn)
    from dataclasses import replace
    broken.insns[index] = replace(insn, core=replace(insn.core, type_id=9999))
    from pybpf.btf import core
    with pytest.raises(CoreError, match=r"program 'record_local' instruction 19: .*\[9999\].*"
                       r"0:2.*not in the program's BTF") as info:
        core.relocate(broken.insns, running_kernel(), "record_local")
    assert (info.value.program, info.value.index, info.value.access) == \
        ("record_local", 19, "0:2")
