"""Kernel ABI constants from ``include/uapi/linux/bpf.h`` and ``perf_event.h``.

The enumerations keep the kernel's order (their values are the position in the C enum) and its
names without the common prefix: ``MapType.HASH`` is ``BPF_MAP_TYPE_HASH``. Helper function ids
live in :mod:`pybpf.helpers`, generated from the same header.
"""

from enum import IntEnum, IntFlag


class Cmd(IntEnum):
    """The ``cmd`` argument of the bpf(2) system call (``enum bpf_cmd``)."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_ATTACH = 8
    PROG_DETACH = 9
    PROG_TEST_RUN = 10
    PROG_GET_NEXT_ID = 11
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    PROG_QUERY = 16
    RAW_TRACEPOINT_OPEN = 17
    BTF_LOAD = 18
    BTF_GET_FD_BY_ID = 19
    TASK_FD_QUERY = 20
    MAP_LOOKUP_AND_DELETE_ELEM = 21
    MAP_FREEZE = 22
    BTF_GET_NEXT_ID = 23
    MAP_LOOKUP_BATCH = 24
    MAP_LOOKUP_AND_DELETE_BATCH = 25
    MAP_UPDATE_BATCH = 26
    MAP_DELETE_BATCH = 27
    LINK_CREATE = 28
    LINK_UPDATE = 29
    LINK_GET_FD_BY_ID = 30
    LINK_GET_NEXT_ID = 31
    ENABLE_STATS = 32
    ITER_CREATE = 33
    LINK_DETACH = 34
    PROG_BIND_MAP = 35
    TOKEN_CREATE = 36
    PROG_STREAM_READ_BY_FD = 37


class MapType(IntEnum):
    """``enum bpf_map_type``: what kind of map ``BPF_MAP_CREATE`` makes."""

    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class ProgType(IntEnum):
    """``enum bpf_prog_type``: which hook a program is verified for and what its context is."""

    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(IntEnum):
    """``enum bpf_attach_type``: where ``BPF_LINK_CREATE``/``BPF_PROG_ATTACH`` attach."""

    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47
    TRACE_UPROBE_MULTI = 48
    CGROUP_UNIX_CONNECT = 49
    CGROUP_UNIX_SENDMSG = 50
    CGROUP_UNIX_RECVMSG = 51
    CGROUP_UNIX_GETPEERNAME = 52
    CGROUP_UNIX_GETSOCKNAME = 53
    NETKIT_PRIMARY = 54
    NETKIT_PEER = 55
    TRACE_KPROBE_SESSION = 56
    TRACE_UPROBE_SESSION = 57


class LinkType(IntEnum):
    """``enum bpf_link_type``: the kind of a bpf_link, as reported by ``bpf_link_info``."""

    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


class MapFlags(IntFlag):
    """``map_flags`` of ``BPF_MAP_CREATE``."""

    NO_PREALLOC = 1 << 0
    NO_COMMON_LRU = 1 << 1
    NUMA_NODE = 1 << 2
    RDONLY = 1 << 3
    WRONLY = 1 << 4
    STACK_BUILD_ID = 1 << 5
    ZERO_SEED = 1 << 6
    RDONLY_PROG = 1 << 7
    WRONLY_PROG = 1 << 8
    CLONE = 1 << 9
    MMAPABLE = 1 << 10
    PRESERVE_ELEMS = 1 << 11
    INNER_MAP = 1 << 12


class UpdateFlags(IntEnum):
    """``flags`` of ``BPF_MAP_UPDATE_ELEM``: create or overwrite (ANY), create only (NOEXIST),
    overwrite only (EXIST)."""

    ANY = 0
    NOEXIST = 1
    EXIST = 2
    F_LOCK = 4


# Source-register values that give an instruction a second meaning ("pseudo" instructions).
PSEUDO_MAP_FD = 1  # ld_imm64: imm is a map fd, the result a map pointer
PSEUDO_MAP_VALUE = 2  # ld_imm64: map fd + offset, the result a pointer into the map's value
PSEUDO_BTF_ID = 3  # ld_imm64: a kernel variable by BTF id (__ksym)
PSEUDO_FUNC = 4  # ld_imm64: the address of a subprogram (callbacks)
PSEUDO_MAP_IDX = 5  # ld_imm64: a map by its index in fd_array
PSEUDO_MAP_IDX_VALUE = 6  # ld_imm64: a map value by fd_array index + offset
PSEUDO_CALL = 1  # call: imm is the relative offset of a bpf-to-bpf call
PSEUDO_KFUNC_CALL = 2  # call: imm is a kernel function's BTF id

BPF_OBJ_NAME_LEN = 16
BPF_TAG_SIZE = 8
TASK_COMM_LEN = 16  # process name length, NUL included (include/linux/sched.h)

# BPF_PROG_LOAD prog_flags
BPF_F_STRICT_ALIGNMENT = 1 << 0
BPF_F_ANY_ALIGNMENT = 1 << 1
BPF_F_TEST_RND_HI32 = 1 << 2
BPF_F_TEST_STATE_FREQ = 1 << 3
BPF_F_SLEEPABLE = 1 << 4
BPF_F_XDP_HAS_FRAGS = 1 << 5

# BPF_ENABLE_STATS types
BPF_STATS_RUN_TIME = 0

# perf_event_open(2): include/uapi/linux/perf_event.h
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0  # the software event of a CPU's clock (sampling "profile" uses)
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_COUNT_SW_BPF_OUTPUT = 10  # the software event BPF programs write samples to
PERF_RECORD_LOST = 2  # a perf ring record: samples the kernel dropped because the ring was full
PERF_RECORD_SAMPLE = 9  # a perf ring record: one sample (its PERF_SAMPLE_RAW data)
# Bits of perf_event_attr's flag word (the bitfield that starts with ``disabled``).
PERF_ATTR_DISABLED = 1 << 0  # open the event disabled (PERF_EVENT_IOC_ENABLE starts it)
PERF_ATTR_FREQ = 1 << 10  # sample_period is a frequency (sample_freq, in Hz)
PERF_ATTR_WATERMARK = 1 << 14  # wake pollers by bytes in the ring (wakeup_watermark)

# Sockets: SO_ATTACH_BPF / SO_DETACH_BPF (asm-generic/socket.h; x86 and arm64 use those)
SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27  # the same option as SO_DETACH_FILTER
# XDP attach modes (include/uapi/linux/if_link.h XDP_FLAGS_*), BPF_LINK_CREATE's flags
XDP_FLAGS_SKB_MODE = 1 << 1  # generic XDP, in the network stack: works on every device
XDP_FLAGS_DRV_MODE = 1 << 2  # native XDP, in the driver
XDP_FLAGS_HW_MODE = 1 << 3  # offloaded to the NIC

# BPF ring buffers: the 8-byte header before each record (include/uapi/linux/bpf.h)
BPF_RINGBUF_BUSY_BIT = 1 << 31  # reserved, not yet submitted or discarded
BPF_RINGBUF_DISCARD_BIT = 1 << 30  # discarded: skip it
BPF_RINGBUF_HDR_SZ = 8
# flags of bpf_ringbuf_submit/discard/output
BPF_RB_NO_WAKEUP = 1
BPF_RB_FORCE_WAKEUP = 2
BPF_RB_AVAIL_DATA = 0  # bpf_ringbuf_query: bytes waiting to be read
BPF_F_CURRENT_CPU = 0xFFFFFFFF  # bpf_perf_event_output: the current CPU's slot of the map
