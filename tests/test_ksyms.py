"""Kernel symbols (pybpf.ksyms): the BTF ids of BTF-typed programs' targets, kfuncs and ksyms,
checked against bpftool's dump of the kernel's BTF and the kernel's own bpf_prog_info; module
BTF (kfunc fd_array indexes, module fds) on a hand-made kernel; absent and mismatched externs.
"""

import os
import re

import pytest

import bpftool_btf
from bpftool_btf import VMLINUX, by_name
from pybpf import abi, elf, ksyms, syscalls
from pybpf.abi import AttachType, ProgType
from pybpf.asm import R0, Builder, Instruction
from pybpf.asm import opcodes as oc
from pybpf.btf import Kind
from pybpf.btf.kernel import KernelBTF
from pybpf.btf.writer import BTFWriter
from pybpf.collection import Collection
from pybpf.errors import ExternError, UsageError, VerifierError
from pybpf.program import Program
from pybpf.sections import section_program_type
from pybpf.spec import ExternSpec, ProgramSpec

OBJECTS = os.path.join(os.path.dirname(__file__), "objects")


def ret0():
    b = Builder()
    b.mov(R0, 0)
    b.exit()
    return b.instructions


def kernel_ids(kind, name):
    return by_name(bpftool_btf.dump_file(VMLINUX), kind, name)


# -- BTF-typed programs' targets ------------------------------------------------------------

@pytest.mark.parametrize("section, kind, name", [
    ("fentry/vfs_read", "FUNC", "vfs_read"),
    ("fexit.s/vfs_write", "FUNC", "vfs_write"),
    ("fmod_ret/security_file_open", "FUNC", "security_file_open"),
    ("tp_btf/sched_switch", "TYPEDEF", "btf_trace_sched_switch"),
    ("lsm/file_open", "FUNC", "bpf_lsm_file_open"),
    ("lsm.s/bprm_committed_creds", "FUNC", "bpf_lsm_bprm_committed_creds"),
    ("iter/task", "FUNC", "bpf_iter_task"),
])
def test_attach_targets_are_the_btf_ids_bpftool_shows(section, kind, name):
    spec = elf.load_spec(os.path.join(OBJECTS, "vfsstat.bpf.o")).programs["vfs_read_entry"]
    prog_type, attach_type, target = section_program_type(section)
    spec = spec.copy(section=section, type=prog_type, expected_attach_type=attach_type,
                     attach_target=target)
    with ksyms.Resolver() as resolver:
        assert resolver.attach_target(spec, prog_type) == (kernel_ids(kind, name), 0)


@pytest.mark.kernel
@pytest.mark.parametrize("section, attach_type, kind, name", [
    ("tp_btf/sched_switch", AttachType.TRACE_RAW_TP, "TYPEDEF", "btf_trace_sched_switch"),
    ("iter/task", AttachType.TRACE_ITER, "FUNC", "bpf_iter_task"),
])
def test_the_kernel_holds_the_attach_btf_id_pybpf_gave(section, attach_type, kind, name):
    b = Builder()
    b.mov(R0, 0)
    b.exit()
    spec = ProgramSpec(name="typed", type=ProgType.TRACING, insns=b.instructions,
                       section=section, expected_attach_type=attach_type)
    with Program(spec) as prog:
        info = prog.info()
    fd = ksyms._open_kernel_btf("vmlinux")
    try:
        vmlinux_id = syscalls.btf_info(fd)["id"]
    finally:
        os.close(fd)
    assert (info["attach_btf_id"], info["attach_btf_obj_id"]) == (kernel_ids(kind, name),
                                                                  vmlinux_id)


def test_targets_that_do_not_exist_or_are_not_named_are_clear_errors():
    spec = ProgramSpec(name="p", type=ProgType.TRACING, insns=ret0(),
                       section="fentry/pybpf_no_such_function",
                       expected_attach_type=AttachType.TRACE_FENTRY)
    with ksyms.Resolver() as resolver:
        with pytest.raises(ExternError, match="program 'p' \\(fentry/pybpf_no_such_function\\): "
                           "the kernel's BTF has no FUNC 'pybpf_no_such_function'"):
            resolver.attach_target(spec, ProgType.TRACING)
        with pytest.raises(UsageError, match="program 'p' \\(fentry\\) needs a target"):
            resolver.attach_target(spec.copy(section="fentry"), ProgType.TRACING)
        assert resolver.attach_target(spec, ProgType.KPROBE) == (0, 0)


@pytest.mark.kernel
def test_a_sleepable_section_is_what_lets_a_program_sleep():
    """iter.s: bpf_copy_from_user_task may sleep; the verifier accepts it only with
    BPF_F_SLEEPABLE, which the section's name gives."""
    spec = elf.load_spec(os.path.join(OBJECTS, "iters.bpf.o"))
    program = spec.programs["dump_task_sleepable"]
    assert program.flags == abi.BPF_F_SLEEPABLE
    spec.programs = {program.name: program}
    with Collection(spec):
        pass
    spec.programs = {program.name: program.copy(flags=0)}
    with pytest.raises(VerifierError, match="sleep"):
        Collection(spec)


# -- kfuncs and ksyms on the running kernel ---------------------------------------------------

def test_kfuncs_resolve_to_their_btf_ids_and_typeless_ksyms_to_kallsyms():
    spec = elf.load_spec(os.path.join(OBJECTS, "tasks.bpf.o"))
    with ksyms.Resolver() as resolver:
        for name in ("bpf_task_acquire", "bpf_task_release", "bpf_rcu_read_lock"):
            assert resolver.symbol(spec.externs[name]) == (kernel_ids("FUNC", name), None, 0)
        kallsyms = open("/proc/kallsyms").read()
        address = int(re.search(r"^([0-9a-f]+) T do_unlinkat$", kallsyms, re.M).group(1), 16)
        assert resolver.symbol(spec.externs["do_unlinkat"]) == (0, None, address)
        for weak in ("bpf_pybpf_absent_kfunc", "pybpf_absent_var", "pybpf_absent_symbol"):
            assert resolver.symbol(spec.externs[weak]) is None


def test_bound_instructions_carry_ids_and_absent_weak_ones_zero():
    spec = elf.load_spec(os.path.join(OBJECTS, "tasks.bpf.o")).programs["lookup_parent"]
    with ksyms.Resolver() as resolver:
        bound = resolver.bind(spec.insns, spec.externs, spec.name)
        assert resolver.fd_array() == []  # vmlinux kfuncs only: no fd_array
    calls = [(old.ref, new) for old, new in zip(spec.insns, bound)
             if old.ref in spec.externs and old.opcode == oc.JMP | oc.CALL]
    acquire = kernel_ids("FUNC", "bpf_task_from_pid")
    assert ("bpf_task_from_pid", Instruction(0x85, 0, 2, 0, acquire)) in calls
    assert ("bpf_pybpf_absent_kfunc", Instruction(0x85, 0, 2, 0, 0)) in calls
    loads = {old.ref: new for old, new in zip(spec.insns, bound)
             if old.ref in spec.externs and old.opcode == oc.LD_IMM64}
    assert loads["pybpf_absent_var"].src == 0 and loads["pybpf_absent_var"].imm == 0
    assert all(insn.ref is None for insn in bound if insn.opcode in (0x85, 0x18)
               and insn.src in (0, 2, 3) and insn.ref in spec.externs)


@pytest.mark.kernel
def test_runqlen_typed_ksym_is_the_btf_id_the_kernel_then_names():
    """runqueues is a BTF VAR (bpftool's id) loaded with BPF_PSEUDO_BTF_ID; this kernel
    (no CONFIG_KALLSYMS_ALL) cannot find its address, and its message names the variable of
    the id pybpf gave."""
    spec = elf.load_spec(os.path.join(OBJECTS, "runqlen.bpf.o"))
    program = spec.programs["sample_runq"]
    with ksyms.Resolver() as resolver:
        bound = resolver.bind(program.insns, program.externs, program.name)
    loads = [new for old, new in zip(program.insns, bound) if old.ref == "runqueues"]
    assert loads and all((i.src, i.imm) == (abi.PSEUDO_BTF_ID, kernel_ids("VAR", "runqueues"))
                         for i in loads)
    with pytest.raises(VerifierError, match="kernel symbol 'runqueues'.*CONFIG_KALLSYMS_ALL"):
        Collection(spec)


# -- module BTF, on a hand-made kernel ------------------------------------------------------

def hand_made_kernel():
    """vmlinux with ``int``; module ``pybpf_mod`` with a kfunc ``pybpf_mod_kfunc(int)``, a
    variable ``pybpf_mod_var`` (int) and a function ``pybpf_mod_target``."""
    base = BTFWriter()
    integer = base.add_int("int", 4, signed=True)
    vmlinux = base.btf()
    module = BTFWriter(base=vmlinux)
    proto = module.add_func_proto(integer, [("x", integer)])
    kfunc = module.add_func("pybpf_mod_kfunc", proto)
    var = module.add(Kind.VAR, "pybpf_mod_var", integer, tail=(1,))
    target = module.add_func("pybpf_mod_target", proto)
    return KernelBTF(vmlinux, {"pybpf_mod": module.encode()}), kfunc, var, target


def object_btf():
    """The object's own declarations: ``int f(int)`` and ``int``."""
    w = BTFWriter()
    integer = w.add_int("int", 4, signed=True)
    proto = w.add_func_proto(integer, [("x", integer)])
    long_proto = w.add_func_proto(integer, [("x", integer), ("y", integer)])
    return w.btf(), integer, proto, long_proto


@pytest.fixture
def module_fds(monkeypatch):
    """Module BTF 'objects': a pipe's fd stands for each module's BTF fd."""
    opened = []

    def fake_open(module):
        read_end, write_end = os.pipe()
        os.close(write_end)
        opened.append((module, read_end))
        return read_end
    monkeypatch.setattr(ksyms, "_open_kernel_btf", fake_open)
    return opened


def test_module_kfuncs_use_an_fd_array_index_and_module_ksyms_the_fd(module_fds):
    kernel, kfunc_id, var_id, target_id = hand_made_kernel()
    btf, integer, proto, _ = object_btf()
    externs = {"pybpf_mod_kfunc": ExternSpec("pybpf_mod_kfunc", ".ksyms", func=True,
                                             type_id=proto, btf=btf),
               "pybpf_mod_var": ExternSpec("pybpf_mod_var", ".ksyms", type_id=integer, btf=btf)}
    insns = [Instruction(oc.JMP | oc.CALL, 0, abi.PSEUDO_KFUNC_CALL, ref="pybpf_mod_kfunc"),
             Instruction(oc.LD_IMM64, 1, abi.PSEUDO_BTF_ID, ref="pybpf_mod_var"),
             Instruction(oc.LD_IMM64, 2, abi.PSEUDO_BTF_ID, ref="pybpf_mod_kfunc")]
    with ksyms.Resolver(kernel) as resolver:
        call, var, func = resolver.bind(insns, externs, "prog")
        (module, fd), = module_fds
        assert module == "pybpf_mod" and resolver.fd_array() == [0, fd]
        assert (call.src, call.imm, call.off) == (abi.PSEUDO_KFUNC_CALL, kfunc_id, 1)
        assert (var.src, var.imm) == (abi.PSEUDO_BTF_ID, var_id | fd << 32)
        assert (func.src, func.imm) == (abi.PSEUDO_BTF_ID, kfunc_id | fd << 32)
        spec = ProgramSpec(name="p", type=ProgType.TRACING, insns=[],
                           section="fentry/pybpf_mod_target",
                           expected_attach_type=AttachType.TRACE_FENTRY)
        assert resolver.attach_target(spec, ProgType.TRACING) == (target_id, fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the resolver


def test_a_strong_extern_the_kernel_lacks_or_declares_otherwise_is_one_clear_error(module_fds):
    kernel, _, _, _ = hand_made_kernel()
    btf, integer, proto, long_proto = object_btf()
    missing = {"pybpf_gone": ExternSpec("pybpf_gone", ".ksyms", func=True, type_id=proto,
                                        btf=btf)}
    call = [Instruction(oc.JMP | oc.CALL, 0, abi.PSEUDO_KFUNC_CALL, ref="pybpf_gone")]
    with ksyms.Resolver(kernel) as resolver:
        with pytest.raises(ExternError, match="program 'prog': extern \\(ksym\\) 'pybpf_gone' is "
                           "not a kfunc in the kernel's BTF .*declare it __weak") as info:
            resolver.bind(call, missing, "prog")
        assert info.value.name == "pybpf_gone"
        wrong = {"pybpf_mod_kfunc": ExternSpec("pybpf_mod_kfunc", ".ksyms", func=True,
                                               type_id=long_proto, btf=btf)}
        call = [Instruction(oc.JMP | oc.CALL, 0, abi.PSEUDO_KFUNC_CALL, ref="pybpf_mod_kfunc")]
        with pytest.raises(ExternError, match="'pybpf_mod_kfunc': the object declares it as a "
                           "function of 2 parameters, the kernel has a function of 1 parameters"
                           ".* in module pybpf_mod"):
            resolver.bind(call, wrong, "prog")


@pytest.mark.kernel
def test_kernel_btf_objects_are_found_by_name():
    fd = ksyms._open_kernel_btf("vmlinux")
    try:
        info = syscalls.btf_info(fd)
    finally:
        os.close(fd)
    assert (info["name"], info["kernel_btf"]) == ("vmlinux", 1)
    assert info["btf_size"] == os.path.getsize(VMLINUX)
    with pytest.raises(ExternError, match="no BTF object of module 'pybpf_no_module'"):
        ksyms._open_kernel_btf("pybpf_no_module")
