"""CO-RE: the relocation records of tests/core/*.o (rebuilt by tests/core/build.sh)."""

import os

import pytest

from pybpf import elf
from pybpf.btf import CoreKind
from pybpf.errors import CoreError
from pybpf.program import Program

HERE = os.path.join(os.path.dirname(__file__), "core")
GETPPID = "tracepoint/syscalls/sys_enter_getppid"


def path(name):
    return os.path.join(HERE, name)


def test_core_relo_records_are_parsed_from_btf_ext():
    obj = elf.open_object(path("local.o"))
    records = obj.btf_ext.core_relos[GETPPID]
    first = records[0]
    # local.c: `tgid = BPF_CORE_READ(task, tgid)`; tgid is member 2 of task_struct___pybpf
    # (after pad[5] and the bitfield), at byte 8: `r8 = 8` is the program's slot 19.
    assert (first.insn_off, CoreKind(first.kind), obj.btf.string(first.access_str_off)) == \
        (19 * 8, CoreKind.FIELD_BYTE_OFFSET, "0:2")
    assert obj.btf.name(first.type_id) == "task_struct___pybpf"


def test_a_program_with_core_relocations_refuses_to_load_with_compile_time_offsets():
    spec = elf.load_spec(path("local.o")).programs["record_local"]
    with pytest.raises(CoreError, match=r"program 'record_local' instruction 19: .*"
                       r"field_byte_offset of task_struct___pybpf access 0:2") as info:
        Program(spec)
    assert (info.value.local_type, info.value.access) == ("task_struct___pybpf", "0:2")
