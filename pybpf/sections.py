"""libbpf's section names: which program type a ``SEC("...")`` name means, and where it attaches.

clang puts each program in the ELF section its ``SEC()`` names. libbpf made the names a
convention (``tracepoint/<category>/<name>``, ``kprobe/<function>``, ``xdp``...): the name
gives the program type, the expected attach type and, after a ``/``, the attach target.
pybpf's ELF loader (:mod:`pybpf.elf`) and :mod:`pybpf.attach` read them with
:func:`section_program_type`.
"""

from .abi import AttachType as A, ProgType as P

# libbpf's section names: (name, program type, expected attach type, takes "/<target>").
# A name taking a target matches "name" and "name/<anything>"; the others match exactly.
SECTIONS = [
    ("socket", P.SOCKET_FILTER, 0, False),
    ("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE, False),
    ("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT, False),
    ("kprobe", P.KPROBE, 0, True),
    ("kretprobe", P.KPROBE, 0, True),
    ("uprobe", P.KPROBE, 0, True),
    ("uretprobe", P.KPROBE, 0, True),
    ("uprobe.s", P.KPROBE, 0, True),
    ("uretprobe.s", P.KPROBE, 0, True),
    ("ksyscall", P.KPROBE, 0, True),
    ("kretsyscall", P.KPROBE, 0, True),
    ("usdt", P.KPROBE, 0, True),
    ("kprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, True),
    ("kretprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, True),
    ("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS, False),
    ("tc/egress", P.SCHED_CLS, A.TCX_EGRESS, False),
    ("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS, False),
    ("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS, False),
    ("tc", P.SCHED_CLS, 0, False),
    ("classifier", P.SCHED_CLS, 0, False),
    ("action", P.SCHED_ACT, 0, False),
    ("tracepoint", P.TRACEPOINT, 0, True),
    ("tp", P.TRACEPOINT, 0, True),
    ("raw_tracepoint", P.RAW_TRACEPOINT, 0, True),
    ("raw_tp", P.RAW_TRACEPOINT, 0, True),
    ("raw_tracepoint.w", P.RAW_TRACEPOINT_WRITABLE, 0, True),
    ("raw_tp.w", P.RAW_TRACEPOINT_WRITABLE, 0, True),
    ("tp_btf", P.TRACING, A.TRACE_RAW_TP, True),
    ("fentry", P.TRACING, A.TRACE_FENTRY, True),
    ("fexit", P.TRACING, A.TRACE_FEXIT, True),
    ("fmod_ret", P.TRACING, A.MODIFY_RETURN, True),
    ("fentry.s", P.TRACING, A.TRACE_FENTRY, True),
    ("fexit.s", P.TRACING, A.TRACE_FEXIT, True),
    ("fmod_ret.s", P.TRACING, A.MODIFY_RETURN, True),
    ("freplace", P.EXT, 0, True),
    ("lsm", P.LSM, A.LSM_MAC, True),
    ("lsm.s", P.LSM, A.LSM_MAC, True),
    ("lsm_cgroup", P.LSM, A.LSM_CGROUP, True),
    ("iter", P.TRACING, A.TRACE_ITER, True),
    ("iter.s", P.TRACING, A.TRACE_ITER, True),
    ("syscall", P.SYSCALL, 0, False),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP, False),
    ("xdp/cpumap", P.XDP, A.XDP_CPUMAP, False),
    ("xdp.frags", P.XDP, A.XDP, False),
    ("xdp", P.XDP, A.XDP, False),
    ("perf_event", P.PERF_EVENT, 0, False),
    ("lwt_in", P.LWT_IN, 0, False),
    ("lwt_out", P.LWT_OUT, 0, False),
    ("lwt_xmit", P.LWT_XMIT, 0, False),
    ("lwt_seg6local", P.LWT_SEG6LOCAL, 0, False),
    ("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS, False),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER, False),
    ("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT, False),
    ("sk_skb/verdict", P.SK_SKB, A.SK_SKB_VERDICT, False),
    ("sk_skb", P.SK_SKB, 0, False),
    ("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT, False),
    ("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2, False),
    ("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR, False),
    ("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS, False),
    ("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS, False),
    ("cgroup/skb", P.CGROUP_SKB, 0, False),
    ("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, False),
    ("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE, False),
    ("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, False),
    ("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND, False),
    ("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND, False),
    ("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND, False),
    ("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND, False),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, False),
    ("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT, False),
    ("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT, False),
    ("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG, False),
    ("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG, False),
    ("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG, False),
    ("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG, False),
    ("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG, False),
    ("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG, False),
    ("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME, False),
    ("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME, False),
    ("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME, False),
    ("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME, False),
    ("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL, False),
    ("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT, False),
    ("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT, False),
    ("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE, False),
    ("struct_ops", P.STRUCT_OPS, 0, True),
    ("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP, False),
    ("netfilter", P.NETFILTER, A.NETFILTER, False),
]


def section_program_type(section: str):
    """``(ProgType, expected attach type, attach target)`` for a libbpf section name, or None
    when the name is not one of libbpf's.

    The longest matching name wins (``kprobe.multi/x`` over ``kprobe``).
    """
    best = None
    for name, prog_type, attach_type, has_target in SECTIONS:
        if section == name or (has_target and section.startswith(name + "/")):
            if best is None or len(name) > len(best[0]):
                best = (name, prog_type, attach_type)
    if best is None:
        return None
    name, prog_type, attach_type = best
    return prog_type, attach_type, section[len(name) + 1:]


def known_sections(kinds=None):
    """libbpf's section names (of program types ``kinds``, when given), for messages."""
    return ", ".join(name + ("[/...]" if target else "") for name, kind, _, target in SECTIONS
                     if kinds is None or kind in kinds)
