"""Kernel features: what the running kernel can do, asked once, and since which version.

eBPF grew one feature per kernel release, and distributions backport some of them, so the
version number alone cannot tell what a kernel has: each feature here is *probed*, by asking
the kernel to do the smallest thing that needs it (create a one-element map of a type, load a
two-instruction program, make a link to fd -1 and see which error comes back), as libbpf and
cilium/ebpf do. The answer is cached for the life of the process. A feature that is missing
becomes a :class:`~pybpf.errors.NotSupportedError` that names the kernel version and the
kernel configuration option that add it.

This registry is the one place for such questions: :func:`have` asks, :func:`require` raises.
A probe that fails for another reason than "not supported" (a missing capability, say) raises
that error and caches nothing, so a permission problem is never mistaken for an old kernel.
"""

import errno
import os
import resource

from . import layouts, libc, syscalls
from .abi import AttachType, Cmd, MapFlags, MapType, ProgType
from .errnos import ENOTSUPP
from .errors import NotSupportedError, SyscallError
from .helpers import HELPERS
from .host import kernel_release
from .tracefs import tracefs_path

_NOT_SUPPORTED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP, errno.E2BIG})
RET0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


class Feature:
    """One kernel feature: its name, the Linux version and config option that add it, and the
    probe that asks the running kernel. ``version`` may map a probe argument (a map type...)
    to the version that added that one."""

    def __init__(self, name, version, config, probe):
        self.name = name
        self.version = version
        self.config = config
        self.probe = probe
        self.answers = {}

    def since(self, *args):
        """The kernel version that added the feature (for these arguments), e.g. ``"5.8"``."""
        if isinstance(self.version, dict):
            return self.version.get(args[0] if len(args) == 1 else args, "?")
        return self.version

    def describe(self, *args):
        """``BPF_MAP_TYPE_RINGBUF maps`` or the feature's name: what a message calls it."""
        return self.name.format(*(getattr(a, "name", a) for a in args))


_REGISTRY: dict = {}  # feature key -> Feature


def feature(key, name, version, config="CONFIG_BPF_SYSCALL"):
    """Register the decorated function as the probe of feature ``key``.

    ``name`` is how messages call it (``{}`` placeholders take the probe's arguments),
    ``version`` the Linux version that added it (or a dict by argument).
    """
    def register(probe):
        _REGISTRY[key] = Feature(name, version, config, probe)
        return probe
    return register


def have(key, *args, **probe_args):
    """Whether the running kernel has feature ``key`` (for ``args``), probed once.

    ``args`` are part of the question (a map type); ``probe_args`` only help answer it the
    first time (an existing map's fd to probe with) and are not part of the cached key.
    """
    entry = _REGISTRY[key]
    if args not in entry.answers:
        entry.answers[args] = bool(entry.probe(*args, **probe_args))
    return entry.answers[args]


def require(key, *args, what=None, **probe_args):
    """NotSupportedError unless the kernel has feature ``key``; ``what`` names what needed it."""
    if not have(key, *args, **probe_args):
        raise NotSupportedError(missing(key, *args, what=what))


def missing(key, *args, what=None):
    """The message for a missing feature: what needs it, the version, the config option."""
    entry = _REGISTRY[key]
    release = ".".join(str(n) for n in kernel_release()[:2])
    text = (f"{entry.describe(*args)} need Linux >= {entry.since(*args)} "
            f"({entry.config}); this kernel is {release}")
    return f"{what}: {text}" if what else text


def _close(fd):
    os.close(fd)
    return True


def _refused(exc):
    """True when a probe's failure means "not supported"; other failures are re-raised."""
    if exc.errno in _NOT_SUPPORTED:
        return True
    raise exc


# -- memory accounting --------------------------------------------------------------------

@feature("memcg_accounting", "memory-cgroup accounting of bpf memory (no RLIMIT_MEMLOCK)",
         "5.11", "CONFIG_MEMCG")
def _memcg_accounting():
    """A map can be created with RLIMIT_MEMLOCK at 0: the kernel charges the memory cgroup."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    attr = layouts.MapCreateAttr.pack(map_type=MapType.ARRAY, key_size=4, value_size=4,
                                      max_entries=1)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, hard))
    try:
        fd = libc.sys_bpf(Cmd.MAP_CREATE, attr)
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    return fd >= 0 and _close(fd)


_memlock_checked: list = []


def ensure_memlock():
    """Once per process: raise RLIMIT_MEMLOCK if (and only if) the kernel still counts it.

    Never fails: without CAP_SYS_RESOURCE raising is refused, and loading goes on anyway.
    """
    if _memlock_checked:
        return
    _memlock_checked.append(True)
    try:
        if not have("memcg_accounting"):
            resource.setrlimit(resource.RLIMIT_MEMLOCK,
                               (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass


# -- map types and map commands -----------------------------------------------------------

MAP_TYPE_VERSIONS = {
    MapType.HASH: "3.19", MapType.ARRAY: "3.19", MapType.PROG_ARRAY: "4.2",
    MapType.PERF_EVENT_ARRAY: "4.3", MapType.PERCPU_HASH: "4.6", MapType.PERCPU_ARRAY: "4.6",
    MapType.STACK_TRACE: "4.6", MapType.CGROUP_ARRAY: "4.8", MapType.LRU_HASH: "4.10",
    MapType.LRU_PERCPU_HASH: "4.10", MapType.LPM_TRIE: "4.11", MapType.ARRAY_OF_MAPS: "4.12",
    MapType.HASH_OF_MAPS: "4.12", MapType.DEVMAP: "4.14", MapType.SOCKMAP: "4.14",
    MapType.CPUMAP: "4.15", MapType.XSKMAP: "4.18", MapType.SOCKHASH: "4.18",
    MapType.CGROUP_STORAGE: "4.19", MapType.REUSEPORT_SOCKARRAY: "4.19",
    MapType.PERCPU_CGROUP_STORAGE: "4.20", MapType.QUEUE: "4.20", MapType.STACK: "4.20",
    MapType.SK_STORAGE: "5.2", MapType.DEVMAP_HASH: "5.4", MapType.STRUCT_OPS: "5.6",
    MapType.RINGBUF: "5.8", MapType.INODE_STORAGE: "5.10", MapType.TASK_STORAGE: "5.11",
    MapType.BLOOM_FILTER: "5.16", MapType.USER_RINGBUF: "6.1", MapType.CGRP_STORAGE: "6.2",
    MapType.ARENA: "6.9",
}

_PAGE = os.sysconf("SC_PAGE_SIZE")
# (key_size, value_size, max_entries, map_flags) of the smallest map of a type the kernel
# accepts; types not listed take (4, 4, 1, 0).
_PROBE_MAPS = {
    MapType.LPM_TRIE: (8, 8, 1, MapFlags.NO_PREALLOC),
    MapType.QUEUE: (0, 4, 1, 0), MapType.STACK: (0, 4, 1, 0),
    MapType.BLOOM_FILTER: (0, 4, 1, 0),
    MapType.RINGBUF: (0, 0, _PAGE, 0), MapType.USER_RINGBUF: (0, 0, _PAGE, 0),
    MapType.CGROUP_STORAGE: (16, 8, 0, 0), MapType.PERCPU_CGROUP_STORAGE: (16, 8, 0, 0),
    MapType.CPUMAP: (4, 4, 1, 0), MapType.ARENA: (0, 0, 1, MapFlags.MMAPABLE),
}


@feature("map_type", "{} maps", MAP_TYPE_VERSIONS)
def _map_type(map_type):
    """A minimal map of ``map_type`` can be created."""
    if map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
        inner = syscalls.map_create(MapType.ARRAY, 4, 4, 1)
        try:
            return _map_created(map_type, 4, 4, 1, 0, inner_map_fd=inner)
        finally:
            os.close(inner)
    return _map_created(map_type, *_PROBE_MAPS.get(map_type, (4, 4, 1, 0)))


def _map_created(map_type, key_size, value_size, max_entries, flags, **extra):
    try:
        return _close(syscalls.map_create(map_type, key_size, value_size, max_entries, flags,
                                          **extra))
    except SyscallError as exc:
        return not _refused(exc)


@feature("mmapable_array", "memory-mapped array maps (BPF_F_MMAPABLE)", "5.5")
def _mmapable_array():
    """An ARRAY map can be created with BPF_F_MMAPABLE (global data read through mmap)."""
    return _map_created(MapType.ARRAY, 4, 4, 1, MapFlags.MMAPABLE)


_NO_BATCH = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})


_NO_BATCH = frozenset({errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP})
_EMPTY_BATCHES = {  # each batch command with count 0: it checks its arguments, does nothing
    Cmd.MAP_LOOKUP_BATCH: lambda fd: syscalls.map_lookup_batch(fd, None, 0, 0, 0),
    Cmd.MAP_LOOKUP_AND_DELETE_BATCH:
        lambda fd: syscalls.map_lookup_and_delete_batch(fd, None, 0, 0, 0),
    Cmd.MAP_UPDATE_BATCH: lambda fd: syscalls.map_update_batch(fd, b"", b"", 0),
    Cmd.MAP_DELETE_BATCH: lambda fd: syscalls.map_delete_batch(fd, b"", 0),
}


@feature("batch", "batch map commands (BPF_{}) on {} maps", "5.6")
def _batch(cmd, map_type, fd):
    """Batch command ``cmd`` works on maps of ``map_type``, asked on the map ``fd``.

    An empty batch fails with ENOTSUPP where the map type has no such batch operation (the
    kernel's map ops leave it NULL: device maps, arrays for the deleting ones) and with
    EINVAL before Linux 5.6, which has no batch commands at all.
    """
    try:
        _EMPTY_BATCHES[cmd](fd)
    except SyscallError as exc:
        if exc.errno in _NO_BATCH:
            return False
        raise
    return True


# -- programs and links -------------------------------------------------------------------

PROG_TYPE_VERSIONS = {
    ProgType.SOCKET_FILTER: "3.19", ProgType.KPROBE: "4.1", ProgType.SCHED_CLS: "4.1",
    ProgType.SCHED_ACT: "4.1", ProgType.TRACEPOINT: "4.7", ProgType.XDP: "4.8",
    ProgType.PERF_EVENT: "4.9", ProgType.CGROUP_SKB: "4.10", ProgType.CGROUP_SOCK: "4.10",
    ProgType.LWT_IN: "4.10", ProgType.LWT_OUT: "4.10", ProgType.LWT_XMIT: "4.10",
    ProgType.SOCK_OPS: "4.13", ProgType.SK_SKB: "4.14", ProgType.CGROUP_DEVICE: "4.15",
    ProgType.SK_MSG: "4.17", ProgType.RAW_TRACEPOINT: "4.17",
    ProgType.CGROUP_SOCK_ADDR: "4.17", ProgType.LWT_SEG6LOCAL: "4.18",
    ProgType.LIRC_MODE2: "4.18", ProgType.SK_REUSEPORT: "4.19",
    ProgType.FLOW_DISSECTOR: "4.20", ProgType.CGROUP_SYSCTL: "5.2",
    ProgType.RAW_TRACEPOINT_WRITABLE: "5.2", ProgType.CGROUP_SOCKOPT: "5.3",
    ProgType.TRACING: "5.5", ProgType.STRUCT_OPS: "5.6", ProgType.EXT: "5.6",
    ProgType.LSM: "5.7", ProgType.SK_LOOKUP: "5.9", ProgType.SYSCALL: "5.14",
    ProgType.NETFILTER: "6.4",
}
_PROBE_ATTACH_TYPES = {  # program types that need an expected attach type to load
    ProgType.CGROUP_SOCK_ADDR: AttachType.CGROUP_INET4_CONNECT,
    ProgType.SK_LOOKUP: AttachType.SK_LOOKUP,
    ProgType.NETFILTER: AttachType.NETFILTER,
    ProgType.CGROUP_SOCKOPT: AttachType.CGROUP_GETSOCKOPT,
}
_NEEDS_BTF_TARGET = (ProgType.TRACING, ProgType.LSM, ProgType.EXT, ProgType.STRUCT_OPS)


def load_probe_program(prog_type, expected_attach_type=0):
    """The fd of ``r0 = 0; exit`` loaded as ``prog_type``: what probes attach with."""
    return syscalls.prog_load(prog_type, RET0, "GPL", name="pybpf_probe",
                              expected_attach_type=expected_attach_type)[0]


@feature("prog_type", "{} programs", PROG_TYPE_VERSIONS)
def _prog_type(prog_type):
    """``r0 = 0; exit`` loads as ``prog_type`` (programs that attach to a BTF id are asked
    whether the kernel knows the type: it then wants the target, ENOENT/EINVAL later)."""
    if prog_type in _NEEDS_BTF_TARGET:
        raise ValueError(f"{prog_type.name} programs are probed by their attach feature")
    try:
        return _close(load_probe_program(prog_type, _PROBE_ATTACH_TYPES.get(prog_type, 0)))
    except SyscallError as exc:
        return not _refused(exc)


@feature("bpf_cookie", "bpf cookies (bpf_get_attach_cookie)", "5.15")
def _bpf_cookie():
    """libbpf's probe (LINUX_HAS_BPF_COOKIE): a KPROBE program calling
    bpf_get_attach_cookie() loads."""
    call_cookie = bytes.fromhex("85000000") + HELPERS["get_attach_cookie"].to_bytes(4, "little")
    try:
        return _close(syscalls.prog_load(ProgType.KPROBE, call_cookie + RET0[8:], "GPL",
                                         name="pybpf_probe")[0])
    except SyscallError as exc:
        return not _refused(exc)


@feature("perf_link", "bpf_links for perf events (BPF_LINK_CREATE with BPF_PERF_EVENT)",
         "5.15")
def _perf_link():
    """libbpf's probe: ``BPF_LINK_CREATE`` with attach type ``BPF_PERF_EVENT`` and target fd
    -1. A kernel that knows the attach type gets as far as looking the perf event up and
    fails with EBADF; an older one refuses the attach type with EINVAL."""
    return _links_to_bad_fd(ProgType.TRACEPOINT, AttachType.PERF_EVENT)


@feature("cgroup_link", "bpf_links for cgroup programs (BPF_LINK_CREATE with a cgroup fd)",
         "5.7", "CONFIG_CGROUP_BPF")
def _cgroup_link():
    """``BPF_LINK_CREATE`` of a CGROUP_SKB program to cgroup fd -1: EBADF from a kernel that
    looks the cgroup up, EINVAL from one without the command or cgroup links."""
    return _links_to_bad_fd(ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS)


def _links_to_bad_fd(prog_type, attach_type):
    """Whether ``BPF_LINK_CREATE`` of a ``prog_type`` program with ``attach_type`` to fd -1
    gets as far as looking the target up (EBADF), rather than refusing the kind (EINVAL)."""
    prog = load_probe_program(prog_type)
    try:
        os.close(syscalls.link_create(prog, 0xFFFFFFFF, attach_type))
        return True  # not expected: fd -1 is never a target
    except SyscallError as exc:
        if exc.errno not in (errno.EBADF, errno.EINVAL):
            raise
        return exc.errno == errno.EBADF
    finally:
        os.close(prog)


# -- dynamic probes: kprobes and uprobes --------------------------------------------------

PMU_DEVICES = "/sys/bus/event_source/devices"  # a directory per PMU, with its perf type


@feature("kprobe_pmu", "kprobe perf events (the kprobe PMU, " + PMU_DEVICES + "/kprobe)",
         "4.17", "CONFIG_KPROBES and CONFIG_KPROBE_EVENTS")
def _kprobe_pmu():
    """The kernel lists a kprobe PMU: perf_event_open creates kprobes by function name."""
    return os.path.exists(os.path.join(PMU_DEVICES, "kprobe", "type"))


@feature("uprobe_pmu", "uprobe perf events (the uprobe PMU, " + PMU_DEVICES + "/uprobe)",
         "4.17", "CONFIG_UPROBES and CONFIG_UPROBE_EVENTS")
def _uprobe_pmu():
    """The kernel lists a uprobe PMU: perf_event_open creates uprobes by file and offset."""
    return os.path.exists(os.path.join(PMU_DEVICES, "uprobe", "type"))


@feature("kprobe_events", "kprobe events in tracefs (kprobe_events)", "2.6.33",
         "CONFIG_KPROBES and CONFIG_KPROBE_EVENTS")
def _kprobe_events():
    """tracefs has ``kprobe_events``, where kprobes are defined by writing a line."""
    return os.path.exists(os.path.join(tracefs_path(), "kprobe_events"))


@feature("uprobe_events", "uprobe events in tracefs (uprobe_events)", "3.5",
         "CONFIG_UPROBES and CONFIG_UPROBE_EVENTS")
def _uprobe_events():
    """tracefs has ``uprobe_events``, where uprobes are defined by writing a line."""
    return os.path.exists(os.path.join(tracefs_path(), "uprobe_events"))
