"""Programs: eBPF bytecode that the kernel's verifier accepted and now owns.

``BPF_PROG_LOAD`` hands the kernel a program's instructions. Before it accepts them, the
verifier walks every path and proves the program safe (no uninitialised register read, no
out-of-bounds access, always terminates). When it refuses, its log explains why, one line per
instruction it simulated; :class:`Program` turns that log into a :class:`VerifierError` that
points at the instruction of *your* program (and the C line it implements) that failed.
"""

import errno
from collections import namedtuple
from collections.abc import Iterable, Mapping
from typing import Optional

from . import asm, features, ksyms, syscalls
from .abi import ProgType
from .btf import core
from .btf.kernel import running_kernel
from .errors import SyscallError, UsageError, VerifierError, errno_name
from .fd import FD, KernelObject
from .spec import ProgramSpec

EAGAIN_RETRIES = 5  # the verifier can be interrupted by a signal
_LOG_HINTS = {  # what a verifier message means for the program's author
    "failed to find the address for kernel symbol":
        "the kernel looks typed __ksym variables up in /proc/kallsyms, which lists variables "
        "only in kernels built with CONFIG_KALLSYMS_ALL=y",
}


class TestRun(namedtuple("TestRun", "retval duration_ns data ctx")):
    """What one BPF_PROG_TEST_RUN returned: retval, duration_ns, data (bytes), ctx (bytes)."""

    __slots__ = ()
    __test__ = False  # not a pytest test class


class Program(KernelObject):
    """A loaded program, owned through its file descriptor (close it, or use ``with``).

    ``maps`` maps the map names used by the instructions to :class:`~pybpf.maps.Map` objects
    (or fds); ``btf_fd`` is the BTF object ``spec.func_info``/``line_info`` refer to. With
    ``log_level`` > 0 the verifier log is kept in :attr:`verifier_log` even on success.
    Instructions with CO-RE relocations are relocated against ``kernel_btf`` (a
    :class:`~pybpf.btf.kernel.KernelBTF`; by default the running kernel's, read on first need).
    Kernel symbols (kfunc calls, ``__ksym`` loads, the target of a fentry/tp_btf/lsm/iter
    program) are found by ``resolver`` (a :class:`~pybpf.ksyms.Resolver`; by default one for
    this load, on the running kernel).
    """

    def __init__(self, spec: ProgramSpec, maps: Optional[Mapping] = None, *, log_level: int = 0,
                 btf_fd: int = 0, kernel_btf=None, resolver=None):
        self.spec = spec
        self.name = spec.name
        self.type = _prog_type(spec.type)
        if not isinstance(spec.license, str):
            raise UsageError(f"program {self.name!r}: license must be a string such as "
                             f"\"GPL\", not {spec.license!r}")
        own = resolver is None
        resolver = resolver if resolver is not None else ksyms.Resolver()
        try:
            target = resolver.attach_target(spec, self.type)
            insns = resolver.bind(_relocated(spec, kernel_btf), spec.externs, self.name)
            self.insns = asm.resolve(insns, maps)
            options = self._load_options(btf_fd, target, resolver.fd_array())
            fd, self.verifier_log = self._load(asm.assemble(self.insns), log_level, options)
        finally:
            if own:
                resolver.close()
        self._fd = FD(fd, f"program {self.name!r}")

    @classmethod
    def from_instructions(cls, insns: Iterable, prog_type: int, *, maps: Optional[Mapping] = None,
                          name: str = "", license: str = "GPL", log_level: int = 0,
                          **spec_fields) -> "Program":
        """Load a list of :class:`~pybpf.asm.Instruction` (e.g. ``Builder().instructions``)."""
        spec = ProgramSpec(name=name, type=_prog_type(prog_type), insns=list(insns),
                           license=license, **spec_fields)
        return cls(spec, maps, log_level=log_level)

    # --- loading ------------------------------------------------------------------------

    def _load(self, code, log_level, options):
        """(fd, log): without a log first; with a growing one to explain a failure."""
        if log_level:
            return self._load_with_log(code, log_level, options)
        try:
            return _retry_eagain(code, self.type, options)
        except SyscallError:
            pass  # load again with a log, to say why
        return self._load_with_log(code, 1, options)

    def _load_options(self, btf_fd, target, fd_array):
        """The keyword arguments of :func:`syscalls.prog_load`: the spec's, the BTF-typed
        target ``(attach_btf_id, attach_btf_obj_fd)`` and the kfuncs' module BTF fds."""
        spec = self.spec
        attach_btf_id, attach_btf_obj_fd = target
        options = dict(license=spec.license, name=spec.name, kern_version=spec.kern_version,
                       expected_attach_type=spec.expected_attach_type, prog_flags=spec.flags,
                       attach_btf_id=attach_btf_id, attach_btf_obj_fd=attach_btf_obj_fd,
                       fd_array=fd_array or None)
        if btf_fd and spec.func_info:
            options.update(prog_btf_fd=btf_fd, func_info=spec.func_info,
                           line_info=spec.line_info or b"")
        return options

    def _load_with_log(self, code, log_level, options):
        """Load with a verifier log that grows until the whole log fits."""
        size, most = syscalls.LOG_SIZE, syscalls.LOG_SIZE_MAX
        while True:
            try:
                return _retry_eagain(code, self.type, options, log_level=log_level,
                                     log_size=size)
            except SyscallError as exc:
                if exc.errno != errno.ENOSPC or size >= most:
                    raise self._explain(exc) from None
                size = min(most, max(size * 4, getattr(exc, "log_true_size", 0)))

    def _explain(self, exc):
        """``exc`` naming the program; a verifier rejection with the failing instruction
        mapped back to the DSL and its comment."""
        if not isinstance(exc, VerifierError):
            exc.strerror = f"program {self.name!r}: {exc.strerror}"
            return exc
        index = where = source = None
        written = self.spec.insns  # CO-RE relocation keeps every slot where it was
        slots = asm.slot_to_index(written)
        if exc.insn_index is not None and exc.insn_index < len(slots):
            index = slots[exc.insn_index]
            source = _nearest_comment(written, index)
            loaded = self.insns[asm.slot_to_index(self.insns)[exc.insn_index]]
            where = f"instruction {index} `{asm.format_insn(loaded)}`"
            if source:
                where += f" from {source!r}"
            if loaded.core is not None and loaded.imm == core.POISON_HELPER:
                where += (f": the kernel has no {loaded.core.describe()} (a CO-RE relocation "
                          "that could not be applied; guard this code with an exists() check)")
        message = (f"program {self.name!r} rejected by the verifier ({errno_name(exc.errno)}): "
                   f"{exc.summary}" + (f"; at {where}" if where else "")
                   + "".join(f"; {hint}" for text, hint in _LOG_HINTS.items()
                             if text in exc.summary))
        err = VerifierError(exc.errno, message, log=exc.log, summary=exc.summary,
                            insn_index=exc.insn_index, source_index=index, source=source)
        err.log_true_size = exc.log_true_size
        err.insns = self.spec.insns
        return err

    # --- use ----------------------------------------------------------------------------

    def test_run(self, data=b"", ctx=None, repeat=1, data_size_out=None) -> TestRun:
        """Run the program in the kernel (BPF_PROG_TEST_RUN) on ``data`` and/or ``ctx``.

        ``data_size_out`` defaults to room for ``data`` plus 256 bytes (XDP may grow it).
        """
        for what, value in (("data", data), ("ctx", ctx)):
            if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
                raise UsageError(f"test_run: {what} must be bytes, not {type(value).__name__}")
        if data_size_out is None:
            data_size_out = len(data) + 256 if data else 0
        ctx = ctx or b""
        retval, duration, data_out, ctx_out = syscalls.prog_test_run(
            self.fd, data, data_size_out, ctx, len(ctx), repeat)
        return TestRun(retval, duration, data_out, ctx_out)

    def info(self) -> dict:
        """``bpf_prog_info`` as a dict: id, tag, run_time_ns, run_cnt, verified_insns...

        run_time_ns/run_cnt count only while stats are on (:func:`syscalls.enable_stats`
        or ``sysctl kernel.bpf_stats_enabled=1``).
        """
        return syscalls.obj_get_info_by_fd(self.fd, "prog")

    def xlated_insns(self):
        """The program's bytes as the kernel runs them before JIT, after the verifier's
        rewrites (``bpftool prog dump xlated``; map loads hold map ids). Show them with
        :func:`pybpf.disasm.disassemble`."""
        return syscalls.prog_xlated_insns(self.fd)

    @property
    def id(self) -> int:
        """The kernel's id for this program (``bpftool prog show id N``)."""
        return self.info()["id"]

    def pin(self, path: str) -> None:
        """Pin the program at ``path`` on a bpf file system so it outlives this process
        (UsageError, saying how to mount one, when ``path`` is elsewhere)."""
        syscalls.obj_pin(self.fd, path)

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<Program {self.name!r} {self.type.name} {state}>"


def _prog_type(value):
    """``value`` as a ProgType; UsageError naming the known types otherwise."""
    try:
        return ProgType(value)
    except ValueError:
        known = ", ".join(t.name.lower() for t in ProgType if t != ProgType.UNSPEC)
        raise UsageError(f"unknown program type {value!r}; known: {known}") from None


def _retry_eagain(code, prog_type, options, **log):
    """:func:`syscalls.prog_load`, retried when a signal interrupted the verifier (EAGAIN)."""
    features.ensure_memlock()
    for attempt in range(EAGAIN_RETRIES):
        try:
            return syscalls.prog_load(prog_type, code, **options, **log)
        except SyscallError as exc:
            if exc.errno != errno.EAGAIN or attempt == EAGAIN_RETRIES - 1:
                raise


def _relocated(spec, kernel_btf):
    """The spec's instructions with their CO-RE relocations applied (against the running
    kernel's BTF unless ``kernel_btf`` is given); the instructions themselves if none."""
    if all(getattr(insn, "core", None) is None for insn in spec.insns):
        return spec.insns  # (what is not an Instruction is reported by asm.resolve)
    return core.relocate(spec.insns, kernel_btf or running_kernel(), spec.name)


def _nearest_comment(insns, index):
    """The comment on ``insns[index]`` or the closest instruction before it, else None."""
    for insn in reversed(insns[:index + 1]):
        if insn.comment:
            return insn.comment
    return None
