"""What a failed system call means: errno + command -> a typed exception that says what to do.

The kernel answers every failure with one number (``errno``); what it means depends on the
command. ``ENOENT`` is "no such key" for a map lookup, "nothing pinned there" for
``BPF_OBJ_GET``; ``E2BIG`` is "map full" for an update, "index out of range" for an array,
"unknown attr fields" elsewhere; ``EACCES`` is a missing capability, or the verifier refusing a
program. This module is the one place that knows: :data:`RULES` picks the exception type and
message for a command's errno, :data:`EINVAL_FIELDS` and :data:`HINTS` say what to check. A
caller adds what only it knows through :class:`Context` (the map's name and size, the key).
"""

import errno
import os

from .abi import Cmd, MapType, ProgType
from .errors import (
    BPFPermissionError,
    KeyExistsError,
    MapError,
    MapFullError,
    MapKeyError,
    SyscallError,
    errno_name,
)
from .host import missing_capabilities

ENOTSUPP = 524  # kernel-internal "operation not supported" that leaks to user space

KEY_COMMANDS = frozenset({Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_DELETE_ELEM,
                          Cmd.MAP_LOOKUP_AND_DELETE_ELEM, Cmd.MAP_UPDATE_ELEM})
UPDATE_COMMANDS = frozenset({Cmd.MAP_UPDATE_ELEM, Cmd.MAP_UPDATE_BATCH})
DELETE_COMMANDS = frozenset({Cmd.MAP_DELETE_ELEM, Cmd.MAP_DELETE_BATCH})
MAP_COMMANDS = frozenset(c for c in Cmd if c.name.startswith("MAP_"))
ADMIN_COMMANDS = frozenset({Cmd.PROG_GET_NEXT_ID, Cmd.MAP_GET_NEXT_ID, Cmd.LINK_GET_NEXT_ID,
                            Cmd.BTF_GET_NEXT_ID, Cmd.PROG_GET_FD_BY_ID, Cmd.MAP_GET_FD_BY_ID,
                            Cmd.LINK_GET_FD_BY_ID, Cmd.BTF_GET_FD_BY_ID, Cmd.ENABLE_STATS})
TRACING_COMMANDS = frozenset({Cmd.RAW_TRACEPOINT_OPEN})
TRACING_PROG_TYPES = frozenset({ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT,
                                ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE,
                                ProgType.TRACING})
ARRAY_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY})

VERIFIER_HINT = ("rejected by the verifier; load with log_level > 0 (or use "
                 "pybpf.program.Program) to see why")


class Context:
    """What the caller of a failed command knows that the kernel's errno does not say.

    ``subject`` names the object (``map 'exec_count'``), ``key`` the key of a map operation
    (omitted: not known; None: one of the keys of a batch), ``map_type`` and ``max_entries``
    describe a map, so that "full" and "index out of range" can be told apart.
    """

    NO_KEY = object()

    def __init__(self, subject, key=NO_KEY, map_type=None, max_entries=None):
        self.subject = subject
        self.key = key
        self.map_type = map_type
        self.max_entries = max_entries

    @property
    def which(self):
        """How the message names the key."""
        if self.key is Context.NO_KEY:
            return "the key"
        return "one of the keys" if self.key is None else f"key {self.key!r}"

    @property
    def indexes(self):
        """`` (array indexes are 0..N-1)`` for an array map, else nothing."""
        if self.map_type in ARRAY_TYPES and self.max_entries:
            return f" (array indexes are 0..{self.max_entries - 1})"
        return ""


# (errno, commands it applies to, array maps only?, exception, message). Messages are
# formatted with ``where`` (the subject, or the command's name), ``which``, ``indexes`` and
# ``max_entries``. The first matching rule wins; EPERM/EACCES are decided by
# :func:`_permission` and everything else gets the generic text with a hint.
RULES = [
    (errno.ENOENT, KEY_COMMANDS | {Cmd.MAP_DELETE_BATCH}, False, MapKeyError,
     "{which} is not in {where}{indexes}"),
    (errno.E2BIG, UPDATE_COMMANDS, True, MapKeyError, "{which} is not in {where}{indexes}"),
    (errno.E2BIG, UPDATE_COMMANDS, False, MapFullError,
     "{where} is full{max_entries}: delete elements, raise max_entries, or use an LRU map"),
    (errno.EEXIST, UPDATE_COMMANDS, False, KeyExistsError,
     "{which} is already in {where} (the update asked for NOEXIST)"),
]

EINVAL_FIELDS = {
    Cmd.MAP_CREATE: "map_type, key_size, value_size, max_entries, map_flags or map_extra "
                    "(e.g. ARRAY keys are 4 bytes, RINGBUF max_entries is a power-of-2 "
                    "multiple of the page size)",
    Cmd.MAP_LOOKUP_ELEM: "flags, or this map type has no lookup from user space",
    Cmd.MAP_UPDATE_ELEM: "flags (ANY, NOEXIST, EXIST; F_LOCK needs a bpf_spin_lock value) or "
                         "the value",
    Cmd.MAP_DELETE_ELEM: "the key, or this map type (arrays) cannot delete elements",
    Cmd.MAP_GET_NEXT_KEY: "the key or the map fd",
    Cmd.MAP_LOOKUP_AND_DELETE_ELEM: "flags, or this map type has no lookup-and-delete",
    Cmd.MAP_LOOKUP_BATCH: "count, elem_flags, flags or in_batch",
    Cmd.MAP_LOOKUP_AND_DELETE_BATCH: "count, elem_flags, flags or in_batch",
    Cmd.MAP_UPDATE_BATCH: "count, elem_flags or flags",
    Cmd.MAP_DELETE_BATCH: "count, elem_flags or flags",
    Cmd.MAP_FREEZE: "map_fd (only maps without BPF_F_RDONLY_PROG writers can be frozen)",
    Cmd.PROG_LOAD: "prog_type, expected_attach_type, prog_flags, license, attach_btf_id or "
                   "the instructions (unknown opcode, non-zero reserved field), unless the "
                   "verifier rejected the program",
    Cmd.PROG_TEST_RUN: "data_size_in (socket filters need >= 14 bytes), ctx_in, repeat, "
                       "flags, cpu, or this program type has no test run",
    Cmd.OBJ_PIN: "pathname (must be inside a bpffs mount such as /sys/fs/bpf) or bpf_fd",
    Cmd.OBJ_GET: "pathname or file_flags",
    Cmd.OBJ_GET_INFO_BY_FD: "bpf_fd or info_len",
    Cmd.LINK_CREATE: "attach_type (must match the program type and target), target_fd, "
                     "flags or the bpf_cookie",
    Cmd.RAW_TRACEPOINT_OPEN: "name or prog_fd (needs a RAW_TRACEPOINT program)",
    Cmd.BTF_LOAD: "btf (header, type or string section) or the log fields",
    Cmd.ENABLE_STATS: "type (only BPF_STATS_RUN_TIME exists)",
}

HINTS = {
    errno.EBADF: "a file descriptor in the request is not an open bpf object of the right kind",
    errno.ENOMEM: "the kernel could not allocate memory (kernels < 5.11 charge RLIMIT_MEMLOCK: "
                  "raise it with `ulimit -l unlimited`)",
    errno.E2BIG: "the request has non-zero fields this kernel does not know (kernel too old) "
                 "or an object is too large",
    errno.EFAULT: "the kernel could not read or write a buffer: a bad pointer or size",
    errno.EOPNOTSUPP: "this kernel does not support the operation for this object type",
    ENOTSUPP: "the kernel does not support this operation for this object type (ENOTSUPP, "
              "524): check the map/program type and the kernel version",
    errno.ENOSYS: "this kernel has no bpf() system call (CONFIG_BPF_SYSCALL off)",
    errno.EBUSY: "the object is in use (already attached, or map frozen while mapped)",
    errno.EEXIST: "the path already exists: unpin it first (rm the file) or choose another path",
}

_COMMAND_HINTS = {  # (command, errno): what to check, where the errno alone says too little
    (Cmd.OBJ_GET, errno.ENOENT): "nothing is pinned at that path",
    (Cmd.OBJ_PIN, errno.ENOENT): "the directory does not exist (create it inside /sys/fs/bpf)",
    (Cmd.PROG_LOAD, errno.E2BIG): "the program is empty or longer than the kernel allows "
                                  "(1,000,000 instructions), or the request has fields this "
                                  "kernel does not know",
    (Cmd.PROG_LOAD, errno.ENOSPC): "the verifier log buffer is too small: pass a larger "
                                   "log_size",
    (Cmd.BTF_LOAD, errno.ENOSPC): "the BTF log buffer is too small: pass a larger log_size",
}


def capability_for(cmd, prog_type=None):
    """The capability a command needs: CAP_PERFMON for tracing, CAP_SYS_ADMIN for ids,
    else CAP_BPF."""
    if cmd in ADMIN_COMMANDS:
        return "CAP_SYS_ADMIN"
    if cmd in TRACING_COMMANDS or prog_type in TRACING_PROG_TYPES:
        return "CAP_PERFMON (and CAP_BPF)"
    return "CAP_BPF"


def error(cmd, err, capability=None, context=None):
    """The exception for bpf(``cmd``) failing with ``err``: typed, with a how-to-fix message.

    ``capability`` is what the command needed (default: :func:`capability_for`), ``context``
    a :class:`Context` with what the caller knows.
    """
    name = f"BPF_{Cmd(cmd).name}"
    permission = _permission(cmd, err, name, capability or capability_for(cmd), context)
    if permission is not None:
        return permission
    if context is not None or cmd in KEY_COMMANDS | UPDATE_COMMANDS | DELETE_COMMANDS:
        ctx = context or Context("the map")
        array = ctx.map_type in ARRAY_TYPES
        for rule_errno, commands, arrays_only, cls, template in RULES:
            if rule_errno == err and cmd in commands and (array or not arrays_only):
                limit = f" ({ctx.max_entries} entries)" if ctx.max_entries else ""
                return cls(err, name, template.format(
                    where=ctx.subject, which=ctx.which, indexes=ctx.indexes,
                    max_entries=limit))
    where = f"{context.subject}: " if context is not None else ""
    cls = MapError if cmd in MAP_COMMANDS else SyscallError
    return cls(err, name, f"{where}{name} failed: {errno_name(err)} ({os.strerror(err)}): "
                          f"{hint(cmd, err)}")


def _permission(cmd, err, name, capability, context):
    """The exception for EPERM/EACCES, which mean different things per command; else None."""
    if err not in (errno.EPERM, errno.EACCES):
        return None
    base = f"{name} failed: {errno_name(err)} ({os.strerror(err)})"
    if err == errno.EACCES and cmd == Cmd.PROG_LOAD and not missing_capabilities(capability):
        # the verifier says EACCES (or EINVAL) when it refuses a program
        return SyscallError(err, name, f"{base}: {VERIFIER_HINT}")
    if err == errno.EACCES and cmd == Cmd.OBJ_GET:  # the pinned file's mode, not a capability
        return BPFPermissionError(err, name, None, (
            f"{base}: the pinned file's permissions (or a directory's above it) do not let "
            f"this user open it; check them with ls -l, or run as their owner or root"))
    where = f"{context.subject}: " if context is not None else ""
    message = f"{where}{name}: {os.strerror(err)}: needs {capability} (run as root, e.g. with sudo)"
    if cmd in UPDATE_COMMANDS or cmd in DELETE_COMMANDS:
        message += ", or the map is frozen or read-only for user space (BPF_F_RDONLY)"
    elif err == errno.EPERM and not missing_capabilities(capability):
        message = (f"{where}{name}: {os.strerror(err)} although this process has {capability}: "
                   f"a security policy forbids it (kernel lockdown, a security module such as "
                   f"SELinux or a BPF LSM program, or a sysctl); dmesg may say which")
        if cmd == Cmd.PROG_LOAD:
            message += ("; some kernels refuse fentry/fexit/fmod_ret/lsm programs (BPF "
                        "trampolines) this way")
    return BPFPermissionError(err, name, capability, message)


def hint(cmd, err):
    """What to check or do when ``cmd`` fails with ``err``."""
    if (cmd, err) in _COMMAND_HINTS:
        return _COMMAND_HINTS[cmd, err]
    if err == errno.EINVAL and cmd == Cmd.PROG_LOAD:
        return f"{VERIFIER_HINT}; or check {EINVAL_FIELDS[cmd]}"
    if err == errno.EINVAL:
        return "check " + EINVAL_FIELDS.get(cmd, "the request's fields")
    if err == errno.ENOENT:
        return "no such object (it may have been closed, or the id/name does not exist)"
    if err == errno.ENOSPC:
        return ("the output buffer is too small (batch: a hash bucket has more elements than "
                "count; retry with a larger count)")
    return HINTS.get(err, "see bpf(2)")


_PERF_HINTS = {
    errno.ENOENT: "no such event (check the tracepoint id, or the probe's event type)",
    errno.EINVAL: "check type, config, sample_type, pid/cpu and flags",
    errno.EEXIST: "a BPF program is already attached to this event",
    errno.ENODEV: "this CPU or PMU does not exist (or is offline)",
    errno.EOPNOTSUPP: "this kernel or PMU does not support the requested event or sampling",
}


def perf_error(what, err):
    """The exception for a failed perf_event_open(2) or ioctl(2) on a perf event."""
    if err in (errno.EPERM, errno.EACCES):
        return BPFPermissionError(err, what, "CAP_PERFMON")
    text = _PERF_HINTS.get(err, HINTS.get(err, "see perf_event_open(2)"))
    return SyscallError(err, what, f"{what} failed: {errno_name(err)} ({os.strerror(err)}): "
                                   f"{text}")
