"""KernelBTF: the running kernel's types (/sys/kernel/btf/vmlinux) and split module BTF,
checked against bpftool's dump of the same files (an independent BTF reader, libbpf's)."""

import os
import random
import re

import pytest

import bpftool_btf
from bpftool_btf import VMLINUX, by_name, enumerators, members, number
from support import skip_or_fail
from pybpf.btf import BTF, Kind
from pybpf.btf.kernel import KernelBTF, running_kernel
from pybpf.btf.writer import BTFWriter
from pybpf.errors import BTFError

def require_vmlinux():
    if not os.path.exists(VMLINUX):
        skip_or_fail("the kernel has no BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF)")


def kernel_dump():
    require_vmlinux()
    return bpftool_btf.dump_file(VMLINUX)


# -- vmlinux ------------------------------------------------------------------------------

def test_every_type_id_and_kind_matches_bpftool():
    types = kernel_dump()
    btf = running_kernel().vmlinux
    assert len(btf) - 1 == max(types)
    sample = random.Random(9).sample(sorted(types), 3000)
    assert [(btf.kind(i).name, btf.name(i)) for i in sample] == \
        [(types[i][0], "" if types[i][1] == "(anon)" else types[i][1]) for i in sample]


def test_every_type_of_3000_names_is_found_as_bpftool_lists_them():
    types = kernel_dump()
    btf = KernelBTF.load().vmlinux  # a fresh one: its name lookups start from nothing
    ids = {}
    for type_id, (_, name, _, _) in types.items():
        if name != "(anon)":
            ids.setdefault(name, []).append(type_id)
    names = random.Random(5).sample(sorted(ids), 3000) + ["task_struct", "file", "int"]
    assert {name: btf.find_all(name) for name in names} == {name: ids[name] for name in names}


def test_struct_members_of_400_structs_match_bpftool():
    types = kernel_dump()
    btf = running_kernel().vmlinux
    structs = [i for i, t in types.items() if t[0] in ("STRUCT", "UNION")]
    for type_id in random.Random(3).sample(structs, 400):
        assert [tuple(m) for m in btf.members(type_id)] == [
            ("" if name == "(anon)" else name, t, off, bits)
            for name, t, off, bits in members(types, type_id)], type_id
        assert btf.type(type_id).size == number(types[type_id][2], "size")


def test_struct_member_lookup_with_offsets_bitfields_and_anonymous_members():
    types = kernel_dump()
    kernel = running_kernel()
    task = by_name(types, "STRUCT", "task_struct")
    task_members = {m[0]: m for m in members(types, task)}
    field = kernel.struct("task_struct").member("real_parent")
    _, type_id, bits, _ = task_members["real_parent"]
    assert (field.bit_offset, field.offset, field.type_id, field.size, field.bitfield_size) == \
        (bits, bits // 8, type_id, 8, 0)
    field = kernel.struct("task_struct").member("sched_reset_on_fork")
    _, type_id, bits, bitfield = task_members["sched_reset_on_fork"]
    assert (field.bit_offset, field.bitfield_size, field.type_id) == (bits, bitfield, type_id)
    assert bitfield == 1
    # mm_struct keeps its fields in an anonymous struct: look through it, adding offsets
    mm = by_name(types, "STRUCT", "mm_struct")
    anon = next(m for m in members(types, mm) if m[0] == "(anon)")
    inner = {m[0]: m for m in members(types, anon[1])}
    assert kernel.struct("mm_struct").member("arg_start").bit_offset == \
        anon[2] + inner["arg_start"][2]
    se = {m[0]: m for m in members(types, task_members["se"][1])}
    assert kernel.struct("task_struct").member("se.sum_exec_runtime").bit_offset == \
        task_members["se"][2] + se["sum_exec_runtime"][2]


def test_enums_and_functions_match_bpftool():
    types = kernel_dump()
    kernel = running_kernel()
    pid_type = by_name(types, "ENUM", "pid_type")
    assert kernel.enum("pid_type").values == enumerators(types, pid_type)
    func_id = by_name(types, "FUNC", "do_sys_openat2")
    func = kernel.func("do_sys_openat2")
    proto_id = number(types[func_id][2], "type_id")
    params = [(re.match(r"'(\w+)'", p).group(1), number(p, "type_id"))
              for p in types[proto_id][3]]
    assert (func.id, func.proto_id, func.module, list(map(tuple, func.params))) == \
        (func_id, proto_id, None, params)
    assert func.return_type == number(types[proto_id][2], "ret_type_id")


def test_lookups_that_find_nothing_are_btf_errors():
    kernel = running_kernel()
    with pytest.raises(BTFError, match="has no struct 'pybpf_no_such_struct'"):
        kernel.struct("pybpf_no_such_struct")
    with pytest.raises(BTFError, match=r"struct task_struct has no member 'pybpf'.*real_parent"):
        kernel.struct("task_struct").member("pybpf")
    with pytest.raises(BTFError, match="PIDTYPE_PID"):
        kernel.enum("pid_type").value("PIDTYPE_NONE")


def test_running_kernel_is_read_once():
    require_vmlinux()
    assert running_kernel() is running_kernel()


# -- split (module) BTF --------------------------------------------------------------------

def synthetic_module(vmlinux):
    """A module's split BTF: a struct of its own pointing at vmlinux's task_struct."""
    w = BTFWriter(base=vmlinux)
    first = w.add_ptr(vmlinux.find("task_struct", Kind.STRUCT))
    w.add_struct("pybpf_mod_thing", 16, [("task", first, 0, 0),
                                         ("count", vmlinux.find("int", Kind.INT), 64, 0)])
    w.add_enum("pybpf_mod_state", 4, [("PYBPF_MOD_IDLE", 0), ("PYBPF_MOD_BUSY", 5)])
    proto = w.add_func_proto(0, [("thing", first)])
    w.add_func("pybpf_mod_poke", proto)
    return w.encode()


def test_split_btf_continues_vmlinux_ids_and_strings(tmp_path):
    kernel = running_kernel()
    blob = synthetic_module(kernel.vmlinux)
    reads = []

    def read():
        reads.append(1)
        return blob

    split = KernelBTF(kernel.vmlinux, {"pybpf_mod": read})
    assert reads == []  # not read until a query needs it
    assert split.struct("task_struct").id == kernel.struct("task_struct").id and reads == []
    thing = split.struct("pybpf_mod_thing")
    first = len(kernel.vmlinux)
    assert (thing.id, thing.member("count").offset, split.module("pybpf_mod").first_id) == \
        (first + 1, 8, first) and reads == [1]
    assert split.enum("pybpf_mod_state").value("PYBPF_MOD_BUSY") == 5
    func = split.func("pybpf_mod_poke")
    assert (func.module, func.params[0].type) == ("pybpf_mod", first)
    # bpftool (libbpf) reads the same blob on top of vmlinux the same way
    (tmp_path / "split.btf").write_bytes(blob)
    types = bpftool_btf.dump("-B", VMLINUX, "btf", "dump", "file", str(tmp_path / "split.btf"))
    assert by_name(types, "STRUCT", "pybpf_mod_thing") == thing.id
    assert members(types, thing.id) == [tuple(m) for m in thing.members]
    assert by_name(types, "FUNC", "pybpf_mod_poke") == func.id


def test_split_btf_names_may_use_the_base_strings():
    """A module's types may name strings of vmlinux's table (dedup puts them there)."""
    base = BTFWriter()
    base.add_int("int", 4, signed=True)
    base.add_struct("shared", 4, [("x", 1, 0, 0)])
    vmlinux = base.btf()
    split = BTFWriter(base=vmlinux)
    split.add_int("int", 4, signed=True)
    raw = bytearray(split.encode())
    raw[24:28] = (1).to_bytes(4, "little")  # name_off 1: "int" in the base's strings
    module = BTF.parse(bytes(raw), base=vmlinux)
    assert module.find_all("int") == [1, 3] and module.name(3) == "int"
