"""The exceptions pybpf raises: one base class, one subclass per kind of failure.

Every message says what happened, where, and what to do about it. Catch :class:`BPFError` to
handle them all; the command-line tools print ``str(err)`` and exit non-zero, never a traceback.
"""

import errno as _errno
import os


class BPFError(Exception):
    """Base class of every error pybpf raises on purpose."""


class AssemblerError(BPFError, ValueError):
    """An instruction cannot be built or encoded: bad operand, unknown helper, unresolved label.

    ``index`` is the instruction's position in the program (None when not yet placed) and
    ``source`` its text (the DSL call or the assembly line) when known.
    """

    def __init__(self, message, index=None, source=None):
        self.message = message
        self.index = index
        self.source = source
        where = ""
        if index is not None:
            where = f"instruction {index}"
            if source:
                where += f" ({source})"
            where += ": "
        elif source:
            where = f"{source}: "
        super().__init__(where + message)


class DecodeError(BPFError, ValueError):
    """Bytes that are not a valid eBPF instruction (disassembler input, ELF program text)."""

    def __init__(self, message, offset=None):
        self.offset = offset
        prefix = f"at byte offset {offset}: " if offset is not None else ""
        super().__init__(prefix + message)


class UsageError(BPFError, ValueError):
    """pybpf was used wrongly, before any system call: a closed object, a key or value of the
    wrong type or size, a dict operation on a map without keys, a pin outside bpffs..."""


class SyscallError(BPFError, OSError):
    """A bpf() or perf_event_open() call failed; ``errno`` and the command are kept.

    ``log`` is the kernel's log of a command that writes one (BPF_PROG_LOAD, BPF_BTF_LOAD)
    and ``log_true_size`` the size the kernel wanted for it (0 before Linux 6.4).

    A batch map command that fails part way says what it did before: ``partial`` holds the
    (key, value) pairs a lookup batch read (for ``lookup_and_delete_batch``: read *and
    deleted*, so they exist only there), ``count`` how many elements an update or delete
    batch processed. Both are None on other failures.
    """

    log = ""
    log_true_size = 0
    partial = None
    count = None

    def __init__(self, err, command, message=None):
        self.command = command
        text = message or f"{command} failed: {os.strerror(err)}"
        OSError.__init__(self, err, text)

    def __str__(self):
        return self.strerror


class BPFPermissionError(SyscallError, PermissionError):
    """The caller lacks a capability (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) for this operation,
    named by ``capability``; None when a file's permissions refused it (``BPF_OBJ_GET``)."""

    def __init__(self, err, command, capability="CAP_BPF", message=None):
        self.capability = capability
        text = message or (
            f"{command}: {os.strerror(err)}: needs {capability} "
            f"(run as root, e.g. with sudo)"
        )
        super().__init__(err, command, text)


class MapError(SyscallError):
    """A map operation failed (the kernel refused it, or it failed part way: see
    :class:`SyscallError`'s ``partial`` and ``count``)."""


class MapKeyError(MapError, KeyError):
    """The key is not in the map (ENOENT on lookup or delete)."""

    def __str__(self):
        return self.strerror


class MapFullError(MapError):
    """The map has max_entries elements and cannot take a new key (E2BIG)."""


class KeyExistsError(MapError):
    """The key is already present and the update asked for NOEXIST (EEXIST)."""


class VerifierError(SyscallError):
    """The kernel's verifier rejected a program.

    ``log`` is the whole verifier log, ``summary`` its telling line(s), ``insn_index`` the raw
    instruction slot the verifier stopped at (None if unknown), ``source_index`` the index of
    the DSL instruction it maps to and ``source`` that instruction's comment or text;
    ``insns`` the program's instructions as written (for :func:`pybpf.verifier.interleave`),
    when the program is known.
    ``str(err)`` ends by saying where the full log is: ``log_hint`` (a tool sets it to its own
    option, e.g. ``--verifier-log``).
    """

    log_hint = "err.log"
    insns = None

    def __init__(self, err, message, log="", summary="", insn_index=None,
                 source_index=None, source=None):
        self.log = log
        self.summary = summary
        self.insn_index = insn_index
        self.source_index = source_index
        self.source = source
        super().__init__(err, "BPF_PROG_LOAD", message)

    def __str__(self):
        lines = len(self.log.splitlines())
        return f"{self.strerror}; full log ({lines} lines): {self.log_hint}"


class AttachError(BPFError):
    """A program could not be attached to its hook (unknown tracepoint, wrong program type...)."""


class TracefsError(AttachError):
    """tracefs is not mounted and could not be mounted; the message says how to mount it."""


class SymbolError(AttachError):
    """A function to probe cannot be found: the binary is missing or not a readable ELF
    file, or it has no such function (or several different ones of that name)."""


class NotSupportedError(BPFError):
    """The running kernel lacks a feature; the message names the minimum kernel version."""


class ExternError(BPFError):
    """An ``extern`` (``__kconfig``, ``__ksym``, a kfunc) that cannot be resolved on this
    kernel, or whose value does not fit its type; ``name`` is the extern."""

    def __init__(self, message, name=None):
        super().__init__(message)
        self.name = name


class ElfError(BPFError):
    """A malformed or unsupported ELF object; ``section`` and ``offset`` say where."""

    def __init__(self, message, section=None, offset=None):
        self.section = section
        self.offset = offset
        where = ""
        if section is not None:
            where = f"section {section}"
            if offset is not None:
                where += f"+{offset:#x}"
            where += ": "
        super().__init__(where + message)


class BTFError(ElfError):
    """Malformed BTF type information (bad type id, string offset, loop...)."""


class CoreError(BPFError):
    """A CO-RE relocation (a field offset, size, existence, type or enum value an instruction
    takes from the kernel's types) is malformed or cannot be applied.

    ``program`` and ``index`` say which instruction, ``local_type`` and ``access`` which
    access (``task_struct`` and ``0:57``) when known.
    """

    def __init__(self, message, program=None, index=None, local_type=None, access=None):
        self.program = program
        self.index = index
        self.local_type = local_type
        self.access = access
        where = []
        if program is not None:
            where.append(f"program {program!r}")
        if index is not None:
            where.append(f"instruction {index}")
        super().__init__((" ".join(where) + ": " if where else "") + message)


def errno_name(err):
    """``ENOENT`` for 2: the symbolic name of an errno value, for messages."""
    return _errno.errorcode.get(err, f"errno {err}")


class DependencyError(BPFError, ImportError):
    """An optional package a feature needs is not installed (``prometheus_client`` for the
    tracker's ``--metrics``); the message says how to install it."""
