"""libbpf's section names: which program type a ``SEC("...")`` name means, and where it attaches.

clang puts each program in the ELF section its ``SEC()`` names. libbpf made the names a
convention (``tracepoint/<category>/<name>``, ``kprobe/<function>``, ``xdp``...): the name
gives the program type, the expected attach type and, after a ``/``, the attach target.
Some names also set load flags: a ``.s`` suffix (``fentry.s``, ``lsm.s``, ``uprobe.s``...)
makes the program *sleepable* (``BPF_F_SLEEPABLE``: it may call helpers that fault user memory
in), ``xdp.frags`` lets an XDP program see multi-buffer packets (``BPF_F_XDP_HAS_FRAGS``).
pybpf's ELF loader (:mod:`pybpf.elf`) and :mod:`pybpf.attach` read them with
:func:`section_program_type` (:func:`match_section` also names the kind) and
:func:`section_prog_flags`.
"""

import re

from .abi import BPF_F_SLEEPABLE as SLEEPABLE, BPF_F_XDP_HAS_FRAGS as FRAGS
from .abi import AttachType as A, ProgType as P
from .errors import AttachError

# libbpf's section names: (name, program type, expected attach type, takes "/<target>",
# program load flags). A name taking a target matches "name" and "name/<anything>"; the
# others match exactly.
SECTIONS = [
    ("socket", P.SOCKET_FILTER, 0, False, 0),
    ("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE, False, 0),
    ("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT, False, 0),
    ("kprobe", P.KPROBE, 0, True, 0),
    ("kretprobe", P.KPROBE, 0, True, 0),
    ("uprobe", P.KPROBE, 0, True, 0),
    ("uretprobe", P.KPROBE, 0, True, 0),
    ("uprobe.s", P.KPROBE, 0, True, SLEEPABLE),
    ("uretprobe.s", P.KPROBE, 0, True, SLEEPABLE),
    ("ksyscall", P.KPROBE, 0, True, 0),
    ("kretsyscall", P.KPROBE, 0, True, 0),
    ("usdt", P.KPROBE, 0, True, 0),
    ("kprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, True, 0),
    ("kretprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, True, 0),
    ("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS, False, 0),
    ("tc/egress", P.SCHED_CLS, A.TCX_EGRESS, False, 0),
    ("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS, False, 0),
    ("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS, False, 0),
    ("tc", P.SCHED_CLS, 0, False, 0),
    ("classifier", P.SCHED_CLS, 0, False, 0),
    ("action", P.SCHED_ACT, 0, False, 0),
    ("tracepoint", P.TRACEPOINT, 0, True, 0),
    ("tp", P.TRACEPOINT, 0, True, 0),
    ("raw_tracepoint", P.RAW_TRACEPOINT, 0, True, 0),
    ("raw_tp", P.RAW_TRACEPOINT, 0, True, 0),
    ("raw_tracepoint.w", P.RAW_TRACEPOINT_WRITABLE, 0, True, 0),
    ("raw_tp.w", P.RAW_TRACEPOINT_WRITABLE, 0, True, 0),
    ("tp_btf", P.TRACING, A.TRACE_RAW_TP, True, 0),
    ("fentry", P.TRACING, A.TRACE_FENTRY, True, 0),
    ("fexit", P.TRACING, A.TRACE_FEXIT, True, 0),
    ("fmod_ret", P.TRACING, A.MODIFY_RETURN, True, 0),
    ("fentry.s", P.TRACING, A.TRACE_FENTRY, True, SLEEPABLE),
    ("fexit.s", P.TRACING, A.TRACE_FEXIT, True, SLEEPABLE),
    ("fmod_ret.s", P.TRACING, A.MODIFY_RETURN, True, SLEEPABLE),
    ("freplace", P.EXT, 0, True, 0),
    ("lsm", P.LSM, A.LSM_MAC, True, 0),
    ("lsm.s", P.LSM, A.LSM_MAC, True, SLEEPABLE),
    ("lsm_cgroup", P.LSM, A.LSM_CGROUP, True, 0),
    ("iter", P.TRACING, A.TRACE_ITER, True, 0),
    ("iter.s", P.TRACING, A.TRACE_ITER, True, SLEEPABLE),
    ("syscall", P.SYSCALL, 0, False, SLEEPABLE),
    ("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, False, FRAGS),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP, False, 0),
    ("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, False, FRAGS),
    ("xdp/cpumap", P.XDP, A.XDP_CPUMAP, False, 0),
    ("xdp.frags", P.XDP, A.XDP, False, FRAGS),
    ("xdp", P.XDP, A.XDP, False, 0),
    ("perf_event", P.PERF_EVENT, 0, False, 0),
    ("lwt_in", P.LWT_IN, 0, False, 0),
    ("lwt_out", P.LWT_OUT, 0, False, 0),
    ("lwt_xmit", P.LWT_XMIT, 0, False, 0),
    ("lwt_seg6local", P.LWT_SEG6LOCAL, 0, False, 0),
    ("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS, False, 0),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER, False, 0),
    ("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT, False, 0),
    ("sk_skb/verdict", P.SK_SKB, A.SK_SKB_VERDICT, False, 0),
    ("sk_skb", P.SK_SKB, 0, False, 0),
    ("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT, False, 0),
    ("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2, False, 0),
    ("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR, False, 0),
    ("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS, False, 0),
    ("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS, False, 0),
    ("cgroup/skb", P.CGROUP_SKB, 0, False, 0),
    ("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, False, 0),
    ("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE, False, 0),
    ("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, False, 0),
    ("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND, False, 0),
    ("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND, False, 0),
    ("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND, False, 0),
    ("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND, False, 0),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, False, 0),
    ("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT, False, 0),
    ("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT, False, 0),
    ("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG, False, 0),
    ("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG, False, 0),
    ("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG, False, 0),
    ("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG, False, 0),
    ("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG, False, 0),
    ("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG, False, 0),
    ("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME, False, 0),
    ("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME, False, 0),
    ("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME, False, 0),
    ("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME, False, 0),
    ("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL, False, 0),
    ("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT, False, 0),
    ("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT, False, 0),
    ("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE, False, 0),
    ("struct_ops", P.STRUCT_OPS, 0, True, 0),
    ("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP, False, 0),
    ("netfilter", P.NETFILTER, A.NETFILTER, False, 0),
]


def section_program_type(section: str):
    """``(ProgType, expected attach type, attach target)`` for a libbpf section name, or None
    when the name is not one of libbpf's.

    The longest matching name wins (``kprobe.multi/x`` over ``kprobe``).
    """
    found = match_section(section)
    return None if found is None else found[1:]


def match_section(section: str):
    """``(libbpf name, ProgType, expected attach type, attach target)`` of a section name:
    the name that matched (``kretprobe`` for ``kretprobe/do_exit``) tells kinds of one program
    type apart. None when the name is not one of libbpf's."""
    best = _match(section)
    if best is None:
        return None
    return best[0], best[1], best[2], section[len(best[0]) + 1:]


def section_prog_flags(section: str) -> int:
    """The ``BPF_PROG_LOAD`` flags libbpf sets for a section name (``BPF_F_SLEEPABLE`` for
    ``fentry.s/...``, ``BPF_F_XDP_HAS_FRAGS`` for ``xdp.frags``), 0 for other names."""
    best = _match(section)
    return best[4] if best is not None else 0


def _match(section):
    """The SECTIONS row whose name matches ``section``, the longest one; None if none."""
    best = None
    for row in SECTIONS:
        name, has_target = row[0], row[3]
        if section == name or (has_target and section.startswith(name + "/")):
            if best is None or len(name) > len(best[0]):
                best = row
    return best


def known_sections(kinds=None):
    """libbpf's section names (of program types ``kinds``, when given), for messages."""
    return ", ".join(name + ("[/...]" if target else "") for name, kind, _, target, _ in SECTIONS
                     if kinds is None or kind in kinds)


# -- attach targets spelled in section names ----------------------------------------------

# An offset as C's strtol(..., 0) reads it (what libbpf's "%li" accepts): hex, octal, decimal.
_OFFSET = r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*"
_KPROBE_TARGET = re.compile(rf"([A-Za-z0-9_.]+)(?:\+({_OFFSET}))?")
U64_MAX = (1 << 64) - 1


def parse_offset(text: str, where: str) -> int:
    """The integer ``text`` spells in C (``0x10``, ``020``, ``16``); AttachError otherwise."""
    if not re.fullmatch(_OFFSET, text):
        raise AttachError(f"{where}: offset {text!r} is not a number (decimal, 0x hex or 0 "
                          f"octal)")
    value = int(text, 16) if text[:2] in ("0x", "0X") else int(text, 8 if text[0] == "0" else 10)
    if value > U64_MAX:
        raise AttachError(f"{where}: offset {text} does not fit in 64 bits")
    return value


def parse_kprobe_target(section: str, target: str):
    """``(function, offset)`` of a kprobe section's target: ``do_sys_open`` or
    ``do_sys_open+0x10`` (libbpf's ``kprobe/FUNC[+OFFSET]``)."""
    match = _KPROBE_TARGET.fullmatch(target)
    if match is None:
        raise AttachError(f"section {section!r}: the target should be FUNCTION or "
                          f"FUNCTION+OFFSET (letters, digits, _ and . in the name, as "
                          f"/proc/kallsyms spells it)")
    function, offset = match.groups()
    return function, parse_offset(offset, f"section {section!r}") if offset else 0


def parse_uprobe_target(section: str, target: str):
    """``(binary, function, offset)`` of a uprobe section's target, libbpf's
    ``uprobe/BINARY:FUNCTION[+OFFSET]``: ``/usr/bin/bash:readline``, ``libc.so.6:malloc+4``
    (``SEC("uprobe//usr/bin/bash:readline")`` spells an absolute path with two slashes)."""
    binary, colon, function = target.partition(":")
    if not colon or not binary or not function:
        raise AttachError(f"section {section!r}: the target should be BINARY:FUNCTION or "
                          f"BINARY:FUNCTION+OFFSET (e.g. uprobe//usr/bin/bash:readline or "
                          f"uprobe/libc.so.6:malloc)")
    if "\0" in target or "\n" in target:
        raise AttachError(f"section {section!r}: the target holds a NUL or newline")
    offset = 0
    name, plus, tail = function.rpartition("+")
    if plus:
        if not name:
            raise AttachError(f"section {section!r}: no function name before +{tail}")
        function, offset = name, parse_offset(tail, f"section {section!r}")
    return binary, function, offset
