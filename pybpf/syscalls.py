"""The bpf(2) system call, one Python function per command.

Every eBPF object (map, program, link, BTF blob) is created and used through one system call,
``bpf(cmd, attr, size)``. ``attr`` points to ``union bpf_attr``: each command reads its own
member of that union, so each command here has its own layout named after that member, with
the kernel's field names, and passes only its own size (the kernel accepts a shorter attr
from older programs and rejects unknown non-zero bytes with E2BIG). Pointers inside an attr
are plain u64 addresses of ctypes buffers that stay alive across the call. The layouts are
declared with ``construct`` in :mod:`pybpf.attrs` and used here in their generated
``struct.Struct`` form, :mod:`pybpf.layouts`, which range-checks every integer handed to the
kernel; this module does not import construct.

Functions take and return plain values (ints, bytes): an fd returned here is the caller's to
close, usually by wrapping it in a :class:`pybpf.fd.FD` at once. Failures raise the typed
exceptions :mod:`pybpf.errnos` picks for the command and errno.
"""

import ctypes
import errno
import os
import struct

from . import layouts, libc, verifier
from .abi import BPF_STATS_RUN_TIME, Cmd, MapFlags
from .errnos import capability_for, error
from .errors import MapError, SyscallError, VerifierError, errno_name
from .host import require_bpffs
from .spec import object_name

LOG_SIZE = 64 * 1024  # first verifier/BTF log buffer; grown on ENOSPC
LOG_SIZE_MAX = 0xFFFFFFFF >> 2  # the largest log the kernel accepts (UINT32_MAX >> 2)
MODULE_NAME_LEN = 64  # the kernel's MODULE_NAME_LEN: room for a BTF object's name

_FD_COMMANDS = frozenset({
    Cmd.MAP_CREATE, Cmd.PROG_LOAD, Cmd.OBJ_GET, Cmd.PROG_GET_FD_BY_ID, Cmd.MAP_GET_FD_BY_ID,
    Cmd.LINK_GET_FD_BY_ID, Cmd.BTF_GET_FD_BY_ID, Cmd.LINK_CREATE, Cmd.RAW_TRACEPOINT_OPEN,
    Cmd.BTF_LOAD, Cmd.ENABLE_STATS, Cmd.ITER_CREATE})


def bpf(cmd, attr, *, capability=None, context=None):
    """Run bpf(``cmd``, ``attr``) and return its result (an fd for commands that create one).

    ``attr`` is ``bytes`` when the kernel only reads it, a ctypes char array when the kernel
    writes results back into it. Failures raise the exception :func:`pybpf.errnos.error`
    picks, with the caller's ``context``.
    """
    ret = libc.sys_bpf(cmd, attr)
    if ret < 0:
        raise error(cmd, -ret, capability, context)
    return libc.above_stdio(ret) if cmd in _FD_COMMANDS else ret


# ---------------------------------------------------------------------------------------------
# Buffers.


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


_INFO_STRUCTS = {"prog": layouts.bpf_prog_info, "map": layouts.bpf_map_info,
                 "link": layouts.bpf_link_info}

# The per-element commands are the hot paths: their attrs are packed positionally.
_ELEM = layouts.MapElemAttr
_BATCH = layouts.BatchAttr
_BATCH_COUNT_OFFSET = 32  # offsetof(batch, count), checked against BatchAttr in the tests
_COUNT = struct.Struct("<I")
_LOOKUP, _UPDATE = Cmd.MAP_LOOKUP_ELEM, Cmd.MAP_UPDATE_ELEM

# ---------------------------------------------------------------------------------------------
# Maps.


def map_create(map_type, key_size, value_size, max_entries, flags=0, name="", inner_map_fd=0,
               numa_node=None, btf_fd=0, btf_key_type_id=0, btf_value_type_id=0,
               map_extra=0):
    """BPF_MAP_CREATE: a new map's fd. ``numa_node`` sets BPF_F_NUMA_NODE when given."""
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
    bpf(_LOOKUP, _ELEM.pack_values(fd, _ptr(key_buf), ctypes.addressof(value), flags))
    return value.raw


def map_update_elem(fd, key, value, flags=0):
    """BPF_MAP_UPDATE_ELEM: store ``value`` under ``key`` (flags: ANY, NOEXIST, EXIST)."""
    key_buf, value_buf = _copy(key), _copy(value)
    bpf(_UPDATE, _ELEM.pack_values(fd, _ptr(key_buf), _ptr(value_buf), flags))


def map_delete_elem(fd, key):
    """BPF_MAP_DELETE_ELEM: remove ``key``; MapKeyError if absent."""
    key_buf = _copy(key)
    bpf(Cmd.MAP_DELETE_ELEM, _ELEM.pack_values(fd, _ptr(key_buf), 0, 0))


def map_get_next_key(fd, key, key_size):
    """BPF_MAP_GET_NEXT_KEY: the key after ``key`` (the first one for None), None at the end."""
    key_buf, next_key = _copy(key), _buffer(key_size)
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY,
            _ELEM.pack_values(fd, _ptr(key_buf), ctypes.addressof(next_key), 0))
    except MapError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return next_key.raw


def map_lookup_and_delete_elem(fd, key, value_size, flags=0):
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM: pop the value under ``key`` (or the head of a queue)."""
    key_buf, value = _copy(key), _buffer(value_size)
    bpf(Cmd.MAP_LOOKUP_AND_DELETE_ELEM,
        _ELEM.pack_values(fd, _ptr(key_buf), ctypes.addressof(value), flags))
    return value.raw


def map_freeze(fd):
    """BPF_MAP_FREEZE: make the map read-only for user space from now on."""
    bpf(Cmd.MAP_FREEZE, _ELEM.pack_values(fd, 0, 0, 0))


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
    attr = _inout(_BATCH.pack_values(_ptr(in_buf), ctypes.addressof(out_batch),
                                     ctypes.addressof(keys), ctypes.addressof(values), count,
                                     fd, elem_flags, flags))
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
    attr = _inout(_BATCH.pack_values(0, 0, _ptr(keys_buf), _ptr(values_buf), count, fd,
                                     elem_flags, flags))
    return _run_counted(Cmd.MAP_UPDATE_BATCH, attr)


def map_delete_batch(fd, keys, count, elem_flags=0, flags=0):
    """BPF_MAP_DELETE_BATCH: delete ``count`` packed keys; returns how many were deleted.

    Like :func:`map_update_batch`, a failure's ``count`` says how many were deleted before.
    """
    keys_buf = _copy(keys)
    attr = _inout(_BATCH.pack_values(0, 0, _ptr(keys_buf), 0, count, fd, elem_flags, flags))
    return _run_counted(Cmd.MAP_DELETE_BATCH, attr)


def _run_counted(cmd, attr):
    """Run an update/delete batch; the count the kernel wrote back, also on failure."""
    try:
        bpf(cmd, attr)
    except SyscallError as exc:
        exc.count = _batch_count(attr)
        raise
    return _batch_count(attr)


# ---------------------------------------------------------------------------------------------
# Programs.

def _log_text(buf):
    """A log buffer's text up to its NUL."""
    return buf.value.decode("utf-8", "replace") if buf is not None else ""


def prog_load(prog_type, insns, license="GPL", *, name="", log_level=0, log_size=0,
              kern_version=0, prog_flags=0, expected_attach_type=0, prog_btf_fd=0,
              func_info=b"", func_info_rec_size=8, line_info=b"", line_info_rec_size=16,
              attach_btf_id=0, attach_btf_obj_fd=0, fd_array=None):
    """BPF_PROG_LOAD: (fd, verifier log) for raw instruction bytes ``insns``.

    ``attach_btf_id`` names the kernel function, tracepoint or hook a BTF-typed program
    (fentry, tp_btf, lsm, iter...) is for, in vmlinux's BTF or, with ``attach_btf_obj_fd``,
    in a module's; ``fd_array`` holds the module BTF fds that kfunc calls index (insn.off).

    A failure with a verifier log raises VerifierError; every failure's exception carries
    ``.log`` and ``.log_true_size`` (the log size the kernel wanted, 0 before 6.4).
    """
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
        attach_btf_id=attach_btf_id, attach_prog_fd=attach_btf_obj_fd,  # one union member
        fd_array=_ptr(fds)))
    try:
        fd = bpf(Cmd.PROG_LOAD, attr, capability=capability_for(Cmd.PROG_LOAD, prog_type))
    except SyscallError as exc:
        raise _load_error(exc, _log_text(log_buf),
                          layouts.ProgLoadAttr.unpack(attr)["log_true_size"]) from None
    return fd, _log_text(log_buf)


def _load_error(exc, log, log_true_size):
    """``exc`` from BPF_PROG_LOAD, as a VerifierError when the verifier wrote a log."""
    if log and exc.errno != errno.ENOSPC:
        reason = verifier.summary(log)
        exc = VerifierError(exc.errno, f"BPF_PROG_LOAD: verifier rejected the program "
                            f"({errno_name(exc.errno)}): {reason}",
                            log=log, summary=reason, insn_index=verifier.failing_slot(log))
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


def obj_get(path, flags=0):
    """BPF_OBJ_GET: a new fd for the object pinned at ``path``."""
    path_buf = _copy(os.fsencode(path) + b"\0")
    return bpf(Cmd.OBJ_GET, layouts.ObjAttr.pack(pathname=_ptr(path_buf), file_flags=flags))


def obj_get_info_by_fd(fd, kind, **request):
    """BPF_OBJ_GET_INFO_BY_FD: the ``"prog"``, ``"map"`` or ``"link"`` info struct as a dict.

    ``request`` sets info fields before the call: the kernel copies arrays (such as a
    program's ``xlated_prog_insns``) to the addresses given, up to the lengths given.
    """
    layout = _INFO_STRUCTS[kind]
    info = _buffer(layout.size)
    if request:
        ctypes.memmove(info, layout.pack(**request), layout.size)
    bpf(Cmd.OBJ_GET_INFO_BY_FD, layouts.InfoAttr.pack(bpf_fd=fd, info_len=layout.size,
                                                      info=ctypes.addressof(info)))
    fields = layout.unpack(info)
    if "name" in fields:  # char name[BPF_OBJ_NAME_LEN], NUL-padded
        fields["name"] = fields["name"].rstrip(b"\0").decode("ascii")
    if "tag" in fields:
        fields["tag"] = fields["tag"].hex()
    return fields


def prog_xlated_insns(fd):
    """A program's instructions as the verifier left them (``xlated_prog_insns``: map loads
    carry map ids, helper calls the kernel's relative addresses), as bytes."""
    length = obj_get_info_by_fd(fd, "prog")["xlated_prog_len"]
    insns = _buffer(length)
    obj_get_info_by_fd(fd, "prog", xlated_prog_len=length, xlated_prog_insns=_ptr(insns))
    return insns.raw[:length]


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


def btf_get_next_id(start_id):
    """BPF_BTF_GET_NEXT_ID: the next BTF object's id after ``start_id`` (vmlinux, modules,
    programs' BTF), or None."""
    return _get_next_id(Cmd.BTF_GET_NEXT_ID, start_id)


def btf_get_fd_by_id(btf_id):
    """BPF_BTF_GET_FD_BY_ID: an fd for the BTF object with this id."""
    return _get_fd_by_id(Cmd.BTF_GET_FD_BY_ID, btf_id)


def btf_info(fd):
    """``struct bpf_btf_info`` of a BTF object's fd as a dict, ``name`` decoded (its
    "vmlinux" or module name; "" for the BTF of a loaded object)."""
    name = _buffer(MODULE_NAME_LEN)
    layout = layouts.bpf_btf_info
    info = _buffer(layout.size)
    ctypes.memmove(info, layout.pack(name=_ptr(name), name_len=MODULE_NAME_LEN), layout.size)
    bpf(Cmd.OBJ_GET_INFO_BY_FD, layouts.InfoAttr.pack(bpf_fd=fd, info_len=layout.size,
                                                      info=ctypes.addressof(info)))
    fields = layout.unpack(info)
    fields["name"] = name.value.decode("utf-8", "replace")
    return fields


# ---------------------------------------------------------------------------------------------
# Links, BTF, stats.


def link_create(prog_fd, target_fd, attach_type, flags=0, bpf_cookie=0, *, iter_info=None,
                tracing_cookie=None):
    """BPF_LINK_CREATE: attach ``prog_fd`` to ``target_fd`` (an fd, an ifindex, or 0 for
    hooks named at load time); the link's fd (close = detach).

    The attr's union is the perf event's ``bpf_cookie`` by default, an iterator's
    ``iter_info`` (bytes of ``union bpf_iter_link_info``) when given, or the ``tracing``
    member's ``cookie`` (fentry/fexit/fmod_ret/lsm/tp_btf) when ``tracing_cookie`` is given.
    """
    head = dict(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    info_buf = None
    if iter_info is not None:
        info_buf = _copy(iter_info)
        attr = layouts.LinkCreateIterAttr.pack(**head, iter_info=_ptr(info_buf),
                                               iter_info_len=len(iter_info))
    elif tracing_cookie is not None:
        attr = layouts.LinkCreateTracingAttr.pack(**head, cookie=tracing_cookie)
    else:
        attr = layouts.LinkCreateAttr.pack(**head, bpf_cookie=bpf_cookie)
    return bpf(Cmd.LINK_CREATE, attr, capability="CAP_PERFMON (and CAP_BPF)")


def raw_tracepoint_open(name, prog_fd):
    """BPF_RAW_TRACEPOINT_OPEN: attach a raw tracepoint program to tracepoint ``name``; with
    ``name`` None, a program that names its hook itself (tp_btf, fentry, lsm: its
    attach_btf_id), the older way to attach those."""
    name_buf = _copy(name.encode() + b"\0") if name is not None else None
    return bpf(Cmd.RAW_TRACEPOINT_OPEN, layouts.RawTracepointAttr.pack(name=_ptr(name_buf),
                                                                       prog_fd=prog_fd))


def iter_create(link_fd):
    """BPF_ITER_CREATE: a new fd that reading runs the iterator of link ``link_fd`` (each
    fd reads the objects once, from the start, up to end of file)."""
    return bpf(Cmd.ITER_CREATE, layouts.IterCreateAttr.pack(link_fd=link_fd))


def btf_load(btf, log_level=0, log_size=0):
    """BPF_BTF_LOAD: (fd, log) for raw BTF type information."""
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


