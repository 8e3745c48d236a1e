"""The bpf(2) and perf_event_open(2) system calls, one Python function per command.

Every eBPF object (map, program, link, BTF blob) is created and used through one system call,
``bpf(cmd, attr, size)``. ``attr`` points to ``union bpf_attr``: each command reads its own
member of that union, so each command here has its own layout named after that member, with
the kernel's field names, and passes only its own size (the kernel accepts a shorter attr
from older programs and rejects unknown non-zero bytes with E2BIG). Pointers inside an attr
are plain u64 addresses of ctypes buffers that stay alive across the call. The layouts are
declared with ``construct`` in :mod:`pybpf.attrs` and used here in their generated
``struct.Struct`` form, :mod:`pybpf.layouts`, so that this module does not import construct.

Failures come back as ``errno``; :func:`bpf` turns them into the typed exceptions of
:mod:`pybpf.errors` with a message that says what to do. Tests replace :func:`_sys_bpf`,
:func:`_sys_perf_event_open` and :func:`_sys_ioctl` (the only places that touch libc) to
exercise every error path without a kernel.
"""

import ctypes
import errno
import fcntl
import os
import re
import resource
import struct

from . import layouts
from .abi import BPF_OBJ_NAME_LEN, BPF_STATS_RUN_TIME, Cmd, MapFlags, MapType, ProgType
from .abi import PERF_FLAG_FD_CLOEXEC, PERF_SAMPLE_RAW
from .errors import (
    BPFPermissionError,
    KeyExistsError,
    MapError,
    MapFullError,
    MapKeyError,
    SyscallError,
    UsageError,
    VerifierError,
    errno_name,
)

ENOTSUPP = 524  # kernel-internal "operation not supported" that leaks to user space
BPFFS = "/sys/fs/bpf"  # where a bpf file system is mounted by convention
LOG_SIZE = 64 * 1024  # first verifier/BTF log buffer; grown on ENOSPC
LOG_SIZE_MAX = 0xFFFFFFFF >> 2  # the largest log the kernel accepts (UINT32_MAX >> 2)

# ---------------------------------------------------------------------------------------------
# The libc entry points. Syscall numbers differ per architecture (arch/*/syscall tables).

_SYSCALL_NUMBERS = {  # machine: (bpf, perf_event_open)
    "x86_64": (321, 298),
    "aarch64": (280, 241),
}


_MACHINE = os.uname().machine  # what platform.machine() says, without importing platform


def _syscall_number(index):
    """The bpf (0) or perf_event_open (1) syscall number here, or SyscallError saying so."""
    numbers = _SYSCALL_NUMBERS.get(_MACHINE)
    if numbers is None:
        raise SyscallError(errno.ENOSYS, "bpf", f"pybpf does not know the syscall numbers "
                           f"for {_MACHINE!r}; supported: x86_64, aarch64")
    return ctypes.c_long(numbers[index])


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_NR_BPF = _NR_PERF_EVENT_OPEN = None  # filled on first use by _sys_bpf/_sys_perf_event_open


def _sys_bpf(cmd, attr):
    """bpf(cmd, attr, len(attr)): the result, or -errno. ``attr`` is bytes or a ctypes array."""
    global _NR_BPF
    _NR_BPF = _NR_BPF or _syscall_number(0)
    # cmd and size are C ints in the kernel's prototype, so ctypes' default int conversion fits
    ret = _libc.syscall(_NR_BPF, int(cmd), attr, len(attr))
    return ret if ret >= 0 else -ctypes.get_errno()


def _sys_perf_event_open(attr, pid, cpu, group_fd, flags):
    """perf_event_open(attr, pid, cpu, group_fd, flags): an fd, or -errno."""
    global _NR_PERF_EVENT_OPEN
    _NR_PERF_EVENT_OPEN = _NR_PERF_EVENT_OPEN or _syscall_number(1)
    ret = _libc.syscall(_NR_PERF_EVENT_OPEN, attr, ctypes.c_long(pid),
                        ctypes.c_long(cpu), ctypes.c_long(group_fd), ctypes.c_ulong(flags))
    return ret if ret >= 0 else -ctypes.get_errno()


def _sys_ioctl(fd, request, arg):
    """ioctl(fd, request, arg): the result, or -errno."""
    ret = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg))
    return ret if ret >= 0 else -ctypes.get_errno()


# ---------------------------------------------------------------------------------------------
# Errors: errno + command -> an exception whose message says what to do.

_FD_COMMANDS = {Cmd.MAP_CREATE, Cmd.PROG_LOAD, Cmd.OBJ_GET, Cmd.PROG_GET_FD_BY_ID,
                Cmd.MAP_GET_FD_BY_ID, Cmd.LINK_GET_FD_BY_ID, Cmd.BTF_GET_FD_BY_ID,
                Cmd.LINK_CREATE, Cmd.RAW_TRACEPOINT_OPEN, Cmd.BTF_LOAD, Cmd.ENABLE_STATS}
_KEY_COMMANDS = {Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_DELETE_ELEM, Cmd.MAP_LOOKUP_AND_DELETE_ELEM,
                 Cmd.MAP_UPDATE_ELEM}  # ENOENT: no such key (update: flag EXIST)
_UPDATE_COMMANDS = {Cmd.MAP_UPDATE_ELEM, Cmd.MAP_UPDATE_BATCH}
_MAP_COMMANDS = {c for c in Cmd if c.name.startswith("MAP_")}
_ADMIN_COMMANDS = {Cmd.PROG_GET_NEXT_ID, Cmd.MAP_GET_NEXT_ID, Cmd.LINK_GET_NEXT_ID,
                   Cmd.PROG_GET_FD_BY_ID, Cmd.MAP_GET_FD_BY_ID, Cmd.LINK_GET_FD_BY_ID,
                   Cmd.BTF_GET_FD_BY_ID, Cmd.ENABLE_STATS}
_TRACING_COMMANDS = {Cmd.RAW_TRACEPOINT_OPEN}
_TRACING_PROG_TYPES = {ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT,
                       ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE,
                       ProgType.TRACING}

_EINVAL_FIELDS = {
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

_HINTS = {
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
}


# Capability numbers (include/uapi/linux/capability.h). CAP_SYS_ADMIN also grants what
# CAP_BPF and CAP_PERFMON grant (they were split out of it in Linux 5.8).
CAPABILITY_BITS = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
_VERIFIER_HINT = ("rejected by the verifier; load with log_level > 0 (or use "
                  "pybpf.program.Program) to see why")


def effective_capabilities():
    """This process's effective capability set as a bit mask (``CapEff`` in /proc/self/status);
    0 when it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_capabilities(capability):
    """The capabilities named in ``capability`` (e.g. ``"CAP_PERFMON (and CAP_BPF)"``) that
    this process lacks."""
    have = effective_capabilities()
    admin = have >> CAPABILITY_BITS["CAP_SYS_ADMIN"] & 1
    return [name for name in re.findall(r"CAP_[A-Z_]+", capability)
            if not (admin or have >> CAPABILITY_BITS[name] & 1)]


def capability_for(cmd, prog_type=None):
    """The capability a command needs: CAP_PERFMON for tracing, CAP_SYS_ADMIN for ids,
    else CAP_BPF."""
    if cmd in _ADMIN_COMMANDS:
        return "CAP_SYS_ADMIN"
    if cmd in _TRACING_COMMANDS or prog_type in _TRACING_PROG_TYPES:
        return "CAP_PERFMON (and CAP_BPF)"
    return "CAP_BPF"


def error(cmd, err, capability=None):
    """The exception for bpf(``cmd``) failing with ``err``: typed, with a how-to-fix message."""
    name = f"BPF_{Cmd(cmd).name}"
    base = f"{name} failed: {errno_name(err)} ({os.strerror(err)})"
    capability = capability or capability_for(cmd)
    if err == errno.EACCES and cmd == Cmd.PROG_LOAD and not missing_capabilities(capability):
        # the verifier says EACCES (or EINVAL) when it refuses a program
        return SyscallError(err, name, f"{base}: {_VERIFIER_HINT}")
    if err == errno.EACCES and cmd == Cmd.OBJ_GET:  # the pinned file's mode, not a capability
        return BPFPermissionError(err, name, None, (
            f"{base}: the pinned file's permissions (or a directory's above it) do not let "
            f"this user open it; check them with ls -l, or run as their owner or root"))
    if err in (errno.EPERM, errno.EACCES):
        return _permission_error(cmd, err, name, capability)
    if err == errno.ENOENT and cmd in _KEY_COMMANDS:
        return MapKeyError(err, name, f"{name}: key not found (ENOENT)")
    if err == errno.E2BIG and cmd in _UPDATE_COMMANDS:
        return MapFullError(err, name, f"{name}: map is full (E2BIG): raise max_entries, "
                            f"delete elements, or use an LRU map")
    if err == errno.EEXIST and cmd in _UPDATE_COMMANDS:
        return KeyExistsError(err, name, f"{name}: key already exists (EEXIST) and the update "
                              f"asked for NOEXIST")
    cls = MapError if cmd in _MAP_COMMANDS else SyscallError
    return cls(err, name, f"{base}: {_hint(cmd, err)}")


def _permission_error(cmd, err, name, capability):
    """BPFPermissionError naming the capability (and, for map writes, a frozen map)."""
    message = (f"{name}: {os.strerror(err)}: needs {capability} (run as root, e.g. with "
               f"sudo)")
    if cmd in _UPDATE_COMMANDS or cmd in (Cmd.MAP_DELETE_ELEM, Cmd.MAP_DELETE_BATCH):
        message += ", or the map is frozen or read-only for user space (BPF_F_RDONLY)"
    return BPFPermissionError(err, name, capability, message)


def _hint(cmd, err):
    """What to check or do when ``cmd`` fails with ``err``."""
    if err == errno.EINVAL and cmd == Cmd.PROG_LOAD:
        return f"{_VERIFIER_HINT}; or check {_EINVAL_FIELDS[cmd]}"
    if err == errno.EINVAL:
        return "check " + _EINVAL_FIELDS.get(cmd, "the request's fields")
    if err == errno.ENOENT:
        return {Cmd.OBJ_GET: "nothing is pinned at that path",
                Cmd.OBJ_PIN: "the directory does not exist (create it inside /sys/fs/bpf)"}.get(
            cmd, "no such object (it may have been closed, or the id/name does not exist)")
    if err == errno.E2BIG and cmd == Cmd.PROG_LOAD:
        return ("the program is empty or longer than the kernel allows (1,000,000 "
                "instructions), or the request has fields this kernel does not know")
    if err == errno.ENOSPC:
        return {Cmd.PROG_LOAD: "the verifier log buffer is too small: pass a larger log_size",
                Cmd.BTF_LOAD: "the BTF log buffer is too small: pass a larger log_size"}.get(
            cmd, "the output buffer is too small (batch: a hash bucket has more elements "
                 "than count; retry with a larger count)")
    if err == errno.EEXIST:
        return "the path already exists: unpin it first (rm the file) or choose another path"
    return _HINTS.get(err, "see bpf(2)")


def _good_fd(fd):
    """``fd`` moved to >= 3, so a daemon with closed stdin/stdout/stderr keeps its objects
    (and a later open() of "stdout" cannot land on a map). ``fd`` is closed either way."""
    if fd >= 3:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError as exc:
        raise SyscallError(exc.errno, "fcntl", (
            f"fcntl(F_DUPFD_CLOEXEC) could not move new fd {fd} above 2: "
            f"{errno_name(exc.errno)} ({exc.strerror}); raise the open-files limit "
            f"(ulimit -n) or close some files")) from None
    finally:
        os.close(fd)


def bpf(cmd, attr, *, capability=None):
    """Run bpf(``cmd``, ``attr``) and return its result (an fd for commands that create one).

    ``attr`` is ``bytes`` when the kernel only reads it, a ctypes char array when the kernel
    writes results back into it. Failures raise the exception :func:`error` picks.
    """
    ret = _sys_bpf(cmd, attr)
    if ret < 0:
        raise error(cmd, -ret, capability)
    return _good_fd(ret) if cmd in _FD_COMMANDS else ret


# ---------------------------------------------------------------------------------------------
# Buffers and names.


def _copy(data):
    """A ctypes copy of input bytes (bytes, bytearray, memoryview) or None for None/empty.

    Its address goes into an attr; the caller holds it until the system call returns.
    """
    if not data:
        return None
    return (ctypes.c_char * len(data)).from_buffer_copy(data)


def _ptr(buf):
    """The u64 address of a ctypes buffer, 0 for None."""
    return 0 if buf is None else ctypes.addressof(buf)


def _inout(attr_bytes):
    """A writable ctypes copy of an attr, for commands that write results into it."""
    return (ctypes.c_char * len(attr_bytes)).from_buffer_copy(attr_bytes)


def _buffer(size):
    """A zeroed ctypes buffer of ``size`` bytes for the kernel to fill."""
    return ctypes.create_string_buffer(size)


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")


def object_name(name):
    """``name`` as the kernel accepts it: characters outside ``[A-Za-z0-9_.]`` become ``_``,
    cut to 15 characters (BPF_OBJ_NAME_LEN - 1)."""
    return _NAME_BAD.sub("_", name)[:BPF_OBJ_NAME_LEN - 1]


# ---------------------------------------------------------------------------------------------
# Attr layouts: declared with construct in pybpf/attrs.py, compiled to struct formats in
# pybpf/layouts.py (importing construct would cost a third of the tracker's start).

_INFO_STRUCTS = {"prog": layouts.bpf_prog_info, "map": layouts.bpf_map_info,
                 "link": layouts.bpf_link_info}

# The per-element commands are the hot paths: their attrs are packed positionally.
_ELEM = layouts.MapElemAttr.struct
_BATCH = layouts.BatchAttr.struct
_BATCH_COUNT_OFFSET = 32  # offsetof(batch, count), checked against BatchAttr in the tests
_COUNT = struct.Struct("<I")
_LOOKUP, _UPDATE = Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_UPDATE_ELEM

# ---------------------------------------------------------------------------------------------
# RLIMIT_MEMLOCK: kernels before 5.11 charge bpf memory to it; later ones to the memory cgroup.

_memlock = {"checked": False}


def _memcg_accounting():
    """True if the kernel charges bpf memory to memcg: a map can be made with memlock at 0."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    attr = layouts.MapCreateAttr.pack(map_type=MapType.ARRAY, key_size=4, value_size=4,
                                      max_entries=1)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
    try:
        fd = _sys_bpf(Cmd.MAP_CREATE, attr)
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    if fd >= 0:
        os.close(fd)
    return fd >= 0


def ensure_memlock():
    """Once per process: raise RLIMIT_MEMLOCK if (and only if) the kernel still counts it.

    Never fails: without CAP_SYS_RESOURCE raising is refused, and loading goes on anyway.
    """
    if _memlock["checked"]:
        return
    _memlock["checked"] = True
    try:
        if not _memcg_accounting():
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------------
# Maps.


def map_create(map_type, key_size, value_size, max_entries, flags=0, name="", inner_map_fd=0,
               numa_node=None, btf_fd=0, btf_key_type_id=0, btf_value_type_id=0,
               map_extra=0):
    """BPF_MAP_CREATE: a new map's fd. ``numa_node`` sets BPF_F_NUMA_NODE when given."""
    ensure_memlock()
    if numa_node is not None:
        flags |= MapFlags.NUMA_NODE
    attr = layouts.MapCreateAttr.pack(
        map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
        map_flags=flags, inner_map_fd=inner_map_fd, numa_node=numa_node or 0,
        map_name=object_name(name).encode(), btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id, map_extra=map_extra)
    return bpf(Cmd.MAP_CREATE, attr)


def map_lookup_elem(fd, key, value_size, flags=0):
    """BPF_MAP_LOOKUP_ELEM: the value stored under ``key``; MapKeyError if absent."""
    key_buf, value = _copy(key), _buffer(value_size)
    bpf(_LOOKUP, _ELEM.pack(fd, _ptr(key_buf), ctypes.addressof(value), flags))
    return value.raw


def map_update_elem(fd, key, value, flags=0):
    """BPF_MAP_UPDATE_ELEM: store ``value`` under ``key`` (flags: ANY, NOEXIST, EXIST)."""
    key_buf, value_buf = _copy(key), _copy(value)
    bpf(_UPDATE, _ELEM.pack(fd, _ptr(key_buf), _ptr(value_buf), flags))


def map_delete_elem(fd, key):
    """BPF_MAP_DELETE_ELEM: remove ``key``; MapKeyError if absent."""
    key_buf = _copy(key)
    bpf(Cmd.MAP_DELETE_ELEM, _ELEM.pack(fd, _ptr(key_buf), 0, 0))


def map_get_next_key(fd, key, key_size):
    """BPF_MAP_GET_NEXT_KEY: the key after ``key`` (the first one for None), None at the end."""
    key_buf, next_key = _copy(key), _buffer(key_size)
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY, _ELEM.pack(fd, _ptr(key_buf), ctypes.addressof(next_key), 0))
    except MapError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return next_key.raw


def map_lookup_and_delete_elem(fd, key, value_size, flags=0):
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM: pop the value under ``key`` (or the head of a queue)."""
    key_buf, value = _copy(key), _buffer(value_size)
    bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM,
        _ELEM.pack(fd, _ptr(key_buf), ctypes.addressof(value), flags))
    return value.raw


def map_freeze(fd):
    """BPF_MAP_FREEZE: make the map read-only for user space from now on."""
    bpf(Cmd.MAP_FREEZE, _ELEM.pack(fd, 0, 0, 0))


def _batch_token_size(key_size):
    """Bytes for in_batch/out_batch: the kernel's cursor is a key (arrays) or a u32 bucket."""
    return max(key_size, 8)


def _batch_count(attr):
    """The ``count`` the kernel wrote back into a batch attr."""
    return _COUNT.unpack_from(attr, _BATCH_COUNT_OFFSET)[0]


def _lookup_batch(cmd, fd, in_batch, key_size, value_size, count, elem_flags, flags):
    """Shared body of the two lookup batch commands (see :func:`map_lookup_batch`)."""
    keys, values = _buffer(key_size * count), _buffer(value_size * count)
    in_buf, out_batch = _copy(in_batch), _buffer(_batch_token_size(key_size))
    attr = _inout(_BATCH.pack(_ptr(in_buf), ctypes.addressof(out_batch), ctypes.addressof(keys),
                              ctypes.addressof(values), count, fd, elem_flags, flags))
    done = False
    try:
        bpf(cmd, attr)
    except MapError as exc:
        if exc.errno != errno.ENOENT:
            raise
        done = True
    n = _batch_count(attr)
    return keys.raw[:n * key_size], values.raw[:n * value_size], n, out_batch.raw, done


def map_lookup_batch(fd, in_batch, key_size, value_size, count, elem_flags=0, flags=0):
    """BPF_MAP_LOOKUP_BATCH: up to ``count`` elements after the cursor ``in_batch`` (None:
    from the start). Returns (keys, values, n, out_batch, done); ENOSPC is raised."""
    return _lookup_batch(Cmd.MAP_LOOKUP_BATCH, fd, in_batch, key_size, value_size, count,
                         elem_flags, flags)


def map_lookup_and_delete_batch(fd, in_batch, key_size, value_size, count, elem_flags=0,
                                flags=0):
    """BPF_MAP_LOOKUP_AND_DELETE_BATCH: like :func:`map_lookup_batch`, deleting what it reads."""
    return _lookup_batch(Cmd.MAP_LOOKUP_AND_DELETE_BATCH, fd, in_batch, key_size, value_size,
                         count, elem_flags, flags)


def map_update_batch(fd, keys, values, count, elem_flags=0, flags=0):
    """BPF_MAP_UPDATE_BATCH: store ``count`` packed keys/values; returns how many were stored.

    ``elem_flags`` may only be 0 or BPF_F_LOCK: the batch has no NOEXIST/EXIST. The kernel
    goes in order and stops at the first failure; the exception's ``count`` says how many
    elements it stored before.
    """
    keys_buf, values_buf = _copy(keys), _copy(values)
    attr = _inout(_BATCH.pack(0, 0, _ptr(keys_buf), _ptr(values_buf), count, fd, elem_flags,
                              flags))
    return _run_counted(Cmd.MAP_UPDATE_BATCH, attr)


def map_delete_batch(fd, keys, count, elem_flags=0, flags=0):
    """BPF_MAP_DELETE_BATCH: delete ``count`` packed keys; returns how many were deleted.

    Like :func:`map_update_batch`, a failure's ``count`` says how many were deleted before.
    """
    keys_buf = _copy(keys)
    attr = _inout(_BATCH.pack(0, 0, _ptr(keys_buf), 0, count, fd, elem_flags, flags))
    return _run_counted(Cmd.MAP_DELETE_BATCH, attr)


def _run_counted(cmd, attr):
    """Run an update/delete batch; the count the kernel wrote back, also on failure."""
    try:
        bpf(cmd, attr)
    except SyscallError as exc:
        exc.count = _batch_count(attr)
        raise
    return _batch_count(attr)


_NO_BATCH_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})


def map_batch_supported(fd, cmd):
    """Whether this kernel runs the batch command ``cmd`` on map ``fd``.

    A batch command with ``count`` 0 checks its arguments and does nothing. It fails with
    ENOTSUPP where the map type has no such batch operation (the kernel's map ops leave it
    NULL: device maps, arrays for the deleting ones) and with EINVAL before Linux 5.6, which
    has no batch commands at all.
    """
    try:
        bpf(cmd, _inout(_BATCH.pack(0, 0, 0, 0, 0, fd, 0, 0)))
    except SyscallError as exc:
        if exc.errno in _NO_BATCH_ERRNOS:
            return False
        raise
    return True


# ---------------------------------------------------------------------------------------------
# Programs.

_STAT_LINE = re.compile(r"^(processed \d+ insns|verification time|stack depth)")
_INSN_LINE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")


def log_summary(log):
    """The telling last line(s) of a verifier log, without the statistics lines at its end."""
    lines = [line for line in log.rstrip("\0").splitlines()
             if line.strip() and not _STAT_LINE.match(line)]
    if not lines:
        return ""
    last = lines[-1]
    if len(lines) > 1 and (last[0].isspace() or last.startswith("invalid bpf_context")):
        return f"{lines[-2].strip()}: {last.strip()}"
    return last.strip()


def log_failing_slot(log):
    """The instruction slot the verifier stopped at: the last ``N: (op) ...`` line, or None."""
    slot = None
    for line in log.splitlines():
        match = _INSN_LINE.match(line)
        if match:
            slot = int(match.group(1))
    return slot


def _log_text(buf):
    """A log buffer's text up to its NUL."""
    return buf.value.decode("utf-8", "replace") if buf is not None else ""


def prog_load(prog_type, insns, license="GPL", *, name="", log_level=0, log_size=0,
              kern_version=0, prog_flags=0, expected_attach_type=0, prog_btf_fd=0,
              func_info=b"", func_info_rec_size=8, line_info=b"", line_info_rec_size=16,
              attach_btf_id=0, fd_array=None):
    """BPF_PROG_LOAD: (fd, verifier log) for raw instruction bytes ``insns``.

    A failure with a verifier log raises VerifierError; every failure's exception carries
    ``.log`` and ``.log_true_size`` (the log size the kernel wanted, 0 before 6.4).
    """
    ensure_memlock()
    insns_buf, license_buf = _copy(insns), _copy(license.encode() + b"\0")
    func_info_buf, line_info_buf = _copy(func_info), _copy(line_info)
    log_buf = _buffer(log_size) if log_size else None
    fds = (ctypes.c_int * len(fd_array))(*fd_array) if fd_array else None
    attr = _inout(layouts.ProgLoadAttr.pack(
        prog_type=prog_type, insn_cnt=len(insns) // 8, insns=_ptr(insns_buf),
        license=_ptr(license_buf), log_level=log_level if log_size else 0,
        log_size=log_size, log_buf=_ptr(log_buf), kern_version=kern_version,
        prog_flags=prog_flags, prog_name=object_name(name).encode(),
        expected_attach_type=expected_attach_type, prog_btf_fd=prog_btf_fd,
        func_info_rec_size=func_info_rec_size if func_info else 0, func_info=_ptr(func_info_buf),
        func_info_cnt=len(func_info) // func_info_rec_size if func_info else 0,
        line_info_rec_size=line_info_rec_size if line_info else 0, line_info=_ptr(line_info_buf),
        line_info_cnt=len(line_info) // line_info_rec_size if line_info else 0,
        attach_btf_id=attach_btf_id, fd_array=_ptr(fds)))
    try:
        fd = bpf(Cmd.PROG_LOAD, attr, capability=capability_for(Cmd.PROG_LOAD, prog_type))
    except SyscallError as exc:
        raise _load_error(exc, _log_text(log_buf),
                          layouts.ProgLoadAttr.unpack(attr)["log_true_size"]) from None
    return fd, _log_text(log_buf)


def _load_error(exc, log, log_true_size):
    """``exc`` from BPF_PROG_LOAD, as a VerifierError when the verifier wrote a log."""
    if log and exc.errno != errno.ENOSPC:
        summary = log_summary(log)
        exc = VerifierError(exc.errno, f"BPF_PROG_LOAD: verifier rejected the program "
                            f"({errno_name(exc.errno)}): {summary}",
                            log=log, summary=summary, insn_index=log_failing_slot(log))
    exc.log = log
    exc.log_true_size = log_true_size
    return exc


def prog_test_run(prog_fd, data_in=b"", data_size_out=0, ctx_in=b"", ctx_size_out=0,
                  repeat=1, flags=0, cpu=0):
    """BPF_PROG_TEST_RUN: run the program in the kernel on ``data_in``/``ctx_in``.

    Returns (retval, duration_ns, data_out, ctx_out).
    """
    data_buf, ctx_buf = _copy(data_in), _copy(ctx_in)
    data_out = _buffer(data_size_out) if data_size_out else None
    ctx_out = _buffer(ctx_size_out) if ctx_size_out else None
    attr = _inout(layouts.TestAttr.pack(
        prog_fd=prog_fd, data_size_in=len(data_in), data_size_out=data_size_out,
        data_in=_ptr(data_buf), data_out=_ptr(data_out), repeat=repeat,
        ctx_size_in=len(ctx_in), ctx_size_out=ctx_size_out, ctx_in=_ptr(ctx_buf),
        ctx_out=_ptr(ctx_out), flags=flags, cpu=cpu))
    bpf(Cmd.PROG_TEST_RUN, attr)
    out = layouts.TestAttr.unpack(attr)
    data = data_out.raw[:out["data_size_out"]] if data_out is not None else b""
    ctx = ctx_out.raw[:out["ctx_size_out"]] if ctx_out is not None else b""
    return out["retval"], out["duration"], data, ctx


# ---------------------------------------------------------------------------------------------
# Pinning, ids, info.


def obj_pin(fd, path):
    """BPF_OBJ_PIN: make the object live on as a file at ``path`` inside bpffs.

    Outside a bpf file system the kernel answers only EPERM, which would read as a missing
    capability: the file system is checked first, and the error says how to mount one.
    """
    require_bpffs(path)
    path_buf = _copy(os.fsencode(path) + b"\0")
    bpf(Cmd.OBJ_PIN, layouts.ObjAttr.pack(pathname=_ptr(path_buf), bpf_fd=fd))


def _filesystem_type(path):
    """The type of the file system ``path`` lives on (longest mount point in /proc/self/mounts)."""
    real = os.path.realpath(path)
    best, kind = "", None
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point, fstype = line.split()[1:3]
            point = point.replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def require_bpffs(path):
    """UsageError unless ``path`` is on a bpf file system; it says how to mount one."""
    directory = os.path.dirname(os.path.abspath(path))
    if _filesystem_type(directory) != "bpf":
        raise UsageError(f"cannot pin at {path}: {directory} is not on a bpf file system; "
                         f"mount one first, as root: mount -t bpf bpf {BPFFS}")


def obj_get(path, flags=0):
    """BPF_OBJ_GET: a new fd for the object pinned at ``path``."""
    path_buf = _copy(os.fsencode(path) + b"\0")
    return bpf(Cmd.OBJ_GET, layouts.ObjAttr.pack(pathname=_ptr(path_buf), file_flags=flags))


def obj_get_info_by_fd(fd, kind):
    """BPF_OBJ_GET_INFO_BY_FD: the ``"prog"``, ``"map"`` or ``"link"`` info struct as a dict."""
    layout = _INFO_STRUCTS[kind]
    info = _buffer(layout.size)
    bpf(Cmd.OBJ_GET_INFO_BY_FD, layouts.InfoAttr.pack(bpf_fd=fd, info_len=layout.size,
                                                      info=ctypes.addressof(info)))
    fields = layout.unpack(info)
    if "name" in fields:  # char name[BPF_OBJ_NAME_LEN], NUL-padded
        fields["name"] = fields["name"].rstrip(b"\0").decode("ascii")
    if "tag" in fields:
        fields["tag"] = fields["tag"].hex()
    return fields


def _get_next_id(cmd, start_id):
    """The id after ``start_id`` for a *_GET_NEXT_ID command, None after the last."""
    attr = _inout(layouts.GetIdAttr.pack(start_id=start_id))
    try:
        bpf(cmd, attr)
    except SyscallError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return layouts.GetIdAttr.unpack(attr)["next_id"]


def _get_fd_by_id(cmd, obj_id):
    """A new fd for the object with id ``obj_id``."""
    return bpf(cmd, layouts.GetIdAttr.pack(start_id=obj_id))


def prog_get_next_id(start_id):
    """BPF_PROG_GET_NEXT_ID: the next loaded program's id after ``start_id``, or None."""
    return _get_next_id(Cmd.PROG_GET_NEXT_ID, start_id)


def map_get_next_id(start_id):
    """BPF_MAP_GET_NEXT_ID: the next map's id after ``start_id``, or None."""
    return _get_next_id(Cmd.MAP_GET_NEXT_ID, start_id)


def link_get_next_id(start_id):
    """BPF_LINK_GET_NEXT_ID: the next link's id after ``start_id``, or None."""
    return _get_next_id(Cmd.LINK_GET_NEXT_ID, start_id)


def prog_get_fd_by_id(prog_id):
    """BPF_PROG_GET_FD_BY_ID: an fd for the program with this id."""
    return _get_fd_by_id(Cmd.PROG_GET_FD_BY_ID, prog_id)


def map_get_fd_by_id(map_id):
    """BPF_MAP_GET_FD_BY_ID: an fd for the map with this id."""
    return _get_fd_by_id(Cmd.MAP_GET_FD_BY_ID, map_id)


def link_get_fd_by_id(link_id):
    """BPF_LINK_GET_FD_BY_ID: an fd for the link with this id."""
    return _get_fd_by_id(Cmd.LINK_GET_FD_BY_ID, link_id)


# ---------------------------------------------------------------------------------------------
# Links, BTF, stats.


def link_create(prog_fd, target_fd, attach_type, flags=0, bpf_cookie=0):
    """BPF_LINK_CREATE: attach ``prog_fd`` to ``target_fd``; the link's fd (close = detach)."""
    return bpf(Cmd.LINK_CREATE, layouts.LinkCreateAttr.pack(
        prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags,
        bpf_cookie=bpf_cookie), capability="CAP_PERFMON (and CAP_BPF)")


def raw_tracepoint_open(name, prog_fd):
    """BPF_RAW_TRACEPOINT_OPEN: attach a raw tracepoint program to tracepoint ``name``."""
    name_buf = _copy(name.encode() + b"\0")
    return bpf(Cmd.RAW_TRACEPOINT_OPEN, layouts.RawTracepointAttr.pack(name=_ptr(name_buf),
                                                                       prog_fd=prog_fd))


def btf_load(btf, log_level=0, log_size=0):
    """BPF_BTF_LOAD: (fd, log) for raw BTF type information."""
    ensure_memlock()
    btf_buf, log_buf = _copy(btf), (_buffer(log_size) if log_size else None)
    attr = layouts.BtfLoadAttr.pack(btf=_ptr(btf_buf), btf_log_buf=_ptr(log_buf),
                                    btf_size=len(btf), btf_log_size=log_size,
                                    btf_log_level=log_level if log_size else 0)
    try:
        fd = bpf(Cmd.BTF_LOAD, _inout(attr))
    except SyscallError as exc:
        exc.log = _log_text(log_buf)
        raise
    return fd, _log_text(log_buf)


def enable_stats(type=BPF_STATS_RUN_TIME):
    """BPF_ENABLE_STATS: turn on run_time_ns/run_cnt accounting while the returned fd is open."""
    return bpf(Cmd.ENABLE_STATS, layouts.EnableStatsAttr.pack(type=type))


# ---------------------------------------------------------------------------------------------
# perf events (tracepoints are perf events a BPF program can be attached to).


def perf_event_open(type, config, pid=-1, cpu=0, group_fd=-1, flags=PERF_FLAG_FD_CLOEXEC,
                    sample_period=1, sample_type=PERF_SAMPLE_RAW, wakeup_events=1):
    """perf_event_open(2): an fd for the event ``type``/``config`` (a tracepoint id...)."""
    layout = layouts.PerfEventAttr
    attr = layout.pack(type=type, size=layout.size, config=config, sample_period=sample_period,
                       sample_type=sample_type, wakeup_events=wakeup_events)
    ret = _sys_perf_event_open(attr, pid, cpu, group_fd, flags)
    if ret < 0:
        raise _perf_error("perf_event_open", -ret)
    return _good_fd(ret)


def perf_event_ioctl(fd, request, arg=0):
    """ioctl(2) on a perf event fd: PERF_EVENT_IOC_SET_BPF, _ENABLE, _DISABLE."""
    ret = _sys_ioctl(fd, request, arg)
    if ret < 0:
        raise _perf_error(f"ioctl({request:#x})", -ret)
    return ret


def _perf_error(what, err):
    """The exception for a failed perf_event_open/ioctl."""
    if err in (errno.EPERM, errno.EACCES):
        return BPFPermissionError(err, what, "CAP_PERFMON")
    hint = {errno.ENOENT: "no such event (check the tracepoint id)",
            errno.EINVAL: "check type, config, sample_type, pid/cpu and flags",
            errno.EEXIST: "a BPF program is already attached to this event"}.get(
        err, _HINTS.get(err, "see perf_event_open(2)"))
    return SyscallError(err, what, f"{what} failed: {errno_name(err)} ({os.strerror(err)}): "
                        f"{hint}")


def possible_cpus():
    """How many CPUs the kernel may ever bring online (per-CPU map values have one slot each)."""
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())


def parse_cpu_list(text):
    """The number of CPUs in a kernel cpu list such as ``0-3,8``: the highest id + 1."""
    highest = -1
    for part in text.strip().split(","):
        highest = max(highest, int(part.split("-")[-1]))
    return highest + 1
