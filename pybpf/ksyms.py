"""Kernel symbols a program names: kfuncs, ``__ksym`` variables, and BTF-typed targets.

The kernel identifies its functions and variables to BPF by **BTF id**: the position of their
``FUNC`` or ``VAR`` in the kernel's BTF, vmlinux's or, for a module, that module's BTF object
(which a program names by an fd). A program meets them in three ways:

- a **kfunc call** (``bpf_task_acquire(p)``) is a ``call`` with ``src_reg`` =
  ``BPF_PSEUDO_KFUNC_CALL``, the FUNC's id in ``imm`` and, for a module's kfunc, an index
  into the load's ``fd_array`` (where the module's BTF fd is) in ``off``;
- a **typed ksym** (``extern const struct rq runqueues __ksym``) is a 64-bit load with
  ``src_reg`` = ``BPF_PSEUDO_BTF_ID``: the VAR's id, and the module's BTF fd in the second
  half; a **typeless** one (``extern const void sym __ksym``) is the symbol's address from
  /proc/kallsyms. A ``__weak`` ksym the kernel lacks loads as 0 (``bpf_ksym_exists()``);
- a **BTF-typed program** (fentry/fexit/fmod_ret, tp_btf, lsm, iter) is loaded with the id of
  what it attaches to (``attach_btf_id``): ``fentry/do_unlinkat`` -> FUNC ``do_unlinkat``,
  ``tp_btf/sched_switch`` -> TYPEDEF ``btf_trace_sched_switch``, ``lsm/file_open`` -> FUNC
  ``bpf_lsm_file_open``, ``iter/task`` -> FUNC ``bpf_iter_task``; for a module's function
  also ``attach_btf_obj_fd``.

:class:`Resolver` answers all three for one load, as libbpf does: the kernel's BTF
(:func:`pybpf.btf.kernel.running_kernel`) searched vmlinux first, then modules; the types
of the object's declaration checked against the kernel's (``bpf_core_types_are_compat``);
module BTF objects opened by name (``BPF_BTF_GET_NEXT_ID``) and kept open until
:meth:`Resolver.close`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from typing import Dict, List, NamedTuple, Optional

from . import abi, host, syscalls
from .abi import AttachType, ProgType
from .asm import opcodes as oc
from .btf import Kind, core
from .btf.kernel import running_kernel
from .errors import ExternError, NotSupportedError, SyscallError, UsageError
from .externs import kallsyms_addresses
from .fd import FD
from .sections import section_program_type

MAX_FD_ARRAY = 0x7FFF  # insn.off is a signed 16-bit index
# (name prefix, kind) of the kernel type a BTF-typed program's target names, by attach type
_TARGETS = {AttachType.TRACE_RAW_TP: ("btf_trace_", Kind.TYPEDEF),
            AttachType.LSM_MAC: ("bpf_lsm_", Kind.FUNC),
            AttachType.LSM_CGROUP: ("bpf_lsm_", Kind.FUNC),
            AttachType.TRACE_ITER: ("bpf_iter_", Kind.FUNC)}
BTF_TARGETED = (ProgType.TRACING, ProgType.LSM)
_SYSCALL_PREFIX = {"x86_64": "x64", "i686": "ia32", "aarch64": "arm64", "s390x": "s390x",
                   "riscv64": "riscv", "ppc64le": "powerpc"}


class Symbol(NamedTuple):
    """Where a kernel symbol is: ``btf_id`` in vmlinux (``module`` None) or a module's BTF,
    or (typeless ksyms) its ``address``."""

    btf_id: int = 0
    module: Optional[str] = None
    address: int = 0


class Resolver:
    """Kernel symbols for one load (a :class:`~pybpf.collection.Collection` or a program):
    BTF ids from ``kernel`` (a :class:`~pybpf.btf.kernel.KernelBTF`; the running kernel's by
    default), module BTF fds (owned: :meth:`close` closes them), kallsyms read once."""

    def __init__(self, kernel=None):
        self._kernel = kernel
        self._modules: Dict[str, FD] = {}
        self._fd_index: Dict[str, int] = {}  # module -> its index in fd_array (from 1)
        self._kallsyms: Optional[str] = None  # /proc/kallsyms, read once
        self._symbols: Dict[str, Optional[Symbol]] = {}

    @property
    def kernel(self):
        if self._kernel is None:
            self._kernel = running_kernel()
        return self._kernel

    # -- module BTF objects ---------------------------------------------------------------

    def module_fd(self, module: str) -> int:
        """The fd of module ``module``'s BTF object in the kernel (opened once)."""
        owned = self._modules.get(module)
        if owned is None:
            owned = self._modules[module] = FD(_open_kernel_btf(module),
                                               f"BTF of module {module!r}")
        return owned.fileno()

    def fd_array(self) -> List[int]:
        """``fd_array`` for BPF_PROG_LOAD: index 0 unused (0: vmlinux), then the module BTF
        fds that kfunc calls name by index."""
        fds = [0] * (len(self._fd_index) + 1)
        for module, index in self._fd_index.items():
            fds[index] = self.module_fd(module)
        return fds if len(fds) > 1 else []

    def _fd_slot(self, module, what):
        if module not in self._fd_index:
            if len(self._fd_index) + 1 > MAX_FD_ARRAY:
                raise ExternError(f"{what}: more module BTF objects than a kfunc call's 16-bit "
                                  f"fd_array index can name")
            self.module_fd(module)
            self._fd_index[module] = len(self._fd_index) + 1
        return self._fd_index[module]

    def close(self) -> None:
        """Close the module BTF fds opened for this load."""
        for owned in self._modules.values():
            owned.close()
        self._modules.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- ksyms and kfuncs -----------------------------------------------------------------

    def symbol(self, ext) -> Optional[Symbol]:
        """Where the ``.ksyms`` extern ``ext`` is (None: a __weak one the kernel lacks);
        ExternError for a strong one it lacks or whose type differs from the kernel's."""
        if ext.name not in self._symbols:
            self._symbols[ext.name] = self._find(ext)
        return self._symbols[ext.name]

    def _find(self, ext):
        if not ext.type_id and not ext.func:  # typeless: an address
            if self._kallsyms is None:
                self._kallsyms = host.kallsyms()
            address = kallsyms_addresses([ext.name], self._kallsyms).get(ext.name)
            if address is None:
                return self._absent(ext, "is not in /proc/kallsyms")
            if address == 0:
                raise ExternError(f"extern (ksym) {ext.name!r}: /proc/kallsyms shows address 0: "
                                  f"reading addresses needs CAP_SYSLOG (and kptr_restrict < 2)",
                                  ext.name)
            return Symbol(address=address)
        kind = Kind.FUNC if ext.func else Kind.VAR
        found = self.kernel.find(ext.name, (kind,))
        if not found:
            what = "kfunc" if ext.func else "variable"
            return self._absent(ext, f"is not a {what} in the kernel's BTF (vmlinux or a "
                                     f"module's)")
        module, btf, type_id = found[0]
        target = btf.type(type_id).type  # the FUNC's prototype, the VAR's type
        if not ext.func:
            target = btf.skip_qualifiers(target)
        if not core.compatible(ext.btf, ext.type_id, btf, target):
            raise ExternError(f"extern (ksym) {ext.name!r}: the object declares it as "
                              f"{_describe(ext.btf, ext.type_id)}, the kernel has "
                              f"{_describe(btf, target)} [{target}]"
                              f"{f' in module {module}' if module else ''}: rebuild against "
                              f"this kernel's vmlinux.h", ext.name)
        return Symbol(btf_id=type_id, module=module)

    @staticmethod
    def _absent(ext, why):
        if ext.weak:
            return None
        raise ExternError(f"extern (ksym) {ext.name!r} {why}; declare it __weak (and test "
                          f"bpf_ksym_exists()) if the program can do without it", ext.name)

    def bind(self, insns, externs, program: str = ""):
        """Copies of ``insns`` with every kfunc call and ksym load (``ref`` naming one of
        ``externs``) given the kernel's BTF id, module fd index or address, as libbpf 1.1 does:
        an absent __weak kfunc's call keeps imm 0 (the verifier accepts it only as dead
        code), an absent __weak ksym loads 0."""
        if not externs:
            return insns
        out = []
        for insn in insns:
            ext = externs.get(getattr(insn, "ref", None))
            if ext is None or not _is_extern_use(insn):
                out.append(insn)
                continue
            try:
                symbol = self.symbol(ext)
            except ExternError as exc:
                raise ExternError(f"program {program!r}: {exc}", ext.name) from None
            out.append(self._bound(insn, ext, symbol, program))
        return out

    def _bound(self, insn, ext, symbol, program):
        if insn.opcode == oc.JMP | oc.CALL:
            if symbol is None:
                return replace(insn, imm=0, off=0, ref=None)
            index = self._fd_slot(symbol.module, f"program {program!r}") if symbol.module else 0
            return replace(insn, imm=symbol.btf_id, off=index, ref=None)
        if symbol is None:
            return replace(insn, src=0, imm=0, ref=None)
        if symbol.address or not symbol.btf_id:
            return replace(insn, src=0, imm=symbol.address, ref=None)
        fd = self.module_fd(symbol.module) if symbol.module else 0
        return replace(insn, src=abi.PSEUDO_BTF_ID, imm=symbol.btf_id | fd << 32, ref=None)

    # -- BTF-typed programs ---------------------------------------------------------------

    def attach_target(self, spec, prog_type):
        """``(attach_btf_id, attach_btf_obj_fd)`` for a program of ``prog_type``: the kernel
        FUNC or TYPEDEF its section names (0, 0 for programs that need none)."""
        if prog_type == ProgType.EXT:
            raise NotSupportedError(
                f"program {spec.name!r} ({spec.section or 'freplace'}) replaces a function of "
                f"another loaded program: it needs that program's fd and BTF "
                f"(attach_prog_fd), which pybpf does not take yet; load it with libbpf")
        if prog_type == ProgType.STRUCT_OPS:
            raise NotSupportedError(
                f"program {spec.name!r} ({spec.section or 'struct_ops'}) implements a kernel "
                f"struct_ops operation, loaded with its struct_ops map, which pybpf does not "
                f"create yet")
        if prog_type not in BTF_TARGETED:
            return 0, 0
        section = section_program_type(spec.section) if spec.section else None
        target = spec.attach_target or (section[2] if section else "")
        if not target:
            raise UsageError(f"program {spec.name!r} ({spec.section or prog_type.name}) needs "
                             f"a target: name it in the section ({spec.section or 'fentry'}/"
                             f"<name>) or set ProgramSpec.attach_target")
        prefix, kind = _TARGETS.get(spec.expected_attach_type, ("", Kind.FUNC))
        name = prefix + target
        found = self.kernel.find(name, (kind,))
        if not found:
            raise ExternError(f"program {spec.name!r} ({spec.section}): the kernel's BTF has no "
                              f"{kind.name} {name!r} to attach to (check the name: bpftool btf "
                              f"dump file /sys/kernel/btf/vmlinux | grep \"'{name}'\")", name)
        module, _, type_id = found[0]
        return type_id, (self.module_fd(module) if module else 0)

    def has_syscall_wrapper(self) -> bool:
        """Whether system calls enter through ``__<arch>_sys_<name>(struct pt_regs *)``
        wrappers (LINUX_HAS_SYSCALL_WRAPPER): the kernel's BTF has ``__x64_sys_bpf``."""
        prefix = _SYSCALL_PREFIX.get(os.uname().machine)
        return bool(prefix and self.kernel.find(f"__{prefix}_sys_bpf", (Kind.FUNC,)))


def _is_extern_use(insn):
    """A kfunc call or a 64-bit load of a ksym (as the ELF loader leaves them)."""
    if insn.opcode == oc.JMP | oc.CALL:
        return insn.src == abi.PSEUDO_KFUNC_CALL
    return insn.opcode == oc.LD_IMM64 and insn.src in (0, abi.PSEUDO_BTF_ID)


def _describe(btf, type_id):
    """A short C-like name of a type for messages: ``struct rq``, ``int``, a prototype."""
    t = btf.type(btf.skip_qualifiers(type_id))
    if t.kind == Kind.FUNC_PROTO:
        return f"a function of {len(t.params)} parameters"
    prefix = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ",
              Kind.PTR: "a pointer", Kind.ARRAY: "an array"}.get(t.kind, "")
    return f"{prefix}{t.name}" if t.name else (prefix.strip() or t.kind.name.lower())


def _open_kernel_btf(module: str) -> int:
    """An fd of the kernel BTF object called ``module`` ("vmlinux" or a module's name),
    found among the kernel's BTF objects (BPF_BTF_GET_NEXT_ID)."""
    btf_id = 0
    while True:
        btf_id = syscalls.btf_get_next_id(btf_id)
        if btf_id is None:
            raise ExternError(f"no BTF object of module {module!r} is loaded in the kernel "
                              f"(is the module loaded?)", module)
        try:
            fd = syscalls.btf_get_fd_by_id(btf_id)
        except SyscallError as exc:
            if exc.errno == errno.ENOENT:
                continue  # freed meanwhile
            raise
        try:
            info = syscalls.btf_info(fd)
        except BaseException:
            os.close(fd)
            raise
        if info["kernel_btf"] and info["name"] == module:
            return fd
        os.close(fd)
