"""Attaching programs to kernel hooks, by libbpf's section names or by hand.

A loaded program runs only once it is attached to a hook; the section name its C source gave
it (``SEC("tracepoint/syscalls/sys_enter_execve")``) says which, as libbpf reads it
(:mod:`pybpf.sections`). :func:`attach` does what libbpf's auto-attach does for each kind:

- **tracepoint/CAT/NAME**: a perf event for the tracepoint (its id in tracefs), the program
  attached to it (:func:`attach_tracepoint`);
- **raw_tp/NAME**: ``BPF_RAW_TRACEPOINT_OPEN`` by name (:func:`attach_raw_tracepoint`);
- **tp_btf, fentry, fexit, fmod_ret, lsm** (and their sleepable ``.s`` forms): the hook was
  named at load time (the program's ``attach_btf_id``): ``BPF_LINK_CREATE`` with the expected
  attach type, or ``BPF_RAW_TRACEPOINT_OPEN`` on kernels that make no such links
  (:func:`attach_tracing`);
- **iter/NAME**: an iterator link, read with :meth:`IterLink.read` (:func:`attach_iter`);
- **kprobe, kretprobe, ksyscall, kretsyscall, uprobe, uretprobe**: dynamic probes, see
  :mod:`pybpf.probes`.

Hooks that a section name cannot spell are attached by hand, to a target: a cgroup
(:func:`attach_cgroup`), a network interface (:func:`attach_xdp`, :func:`attach_tcx`), a
socket (:func:`attach_socket`), CPU clocks (:func:`pybpf.probes.attach_perf_event`). Each
returns a :class:`~pybpf.link.Link`, which owns the attachment: closing it detaches.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping
from typing import List, Optional, Union

from . import features, layouts, syscalls
from .abi import (
    PERF_TYPE_TRACEPOINT, SO_ATTACH_BPF, SO_DETACH_BPF, XDP_FLAGS_DRV_MODE, XDP_FLAGS_HW_MODE,
    XDP_FLAGS_SKB_MODE, AttachType, ProgType,
)
from .errors import AttachError, BPFError, NotSupportedError, SyscallError, UsageError
from .fd import FD
from .host import filesystem_type
from .link import Link, check_type, perf_event_link
from .perf import perf_event_open
from .probes import attach_kprobe, attach_ksyscall, attach_uprobe
from .sections import match_section, parse_kprobe_target, parse_uprobe_target
from .tracefs import tracepoint_id

__all__ = ["Link", "IterLink", "SocketLink", "attach", "attach_all", "attach_tracepoint",
           "attach_raw_tracepoint", "attach_tracing", "attach_iter", "attach_cgroup",
           "attach_xdp", "attach_tcx", "attach_socket", "unsupported_reason"]

_TRACING_TYPES = (ProgType.TRACING, ProgType.LSM)
_TRACING_ATTACH_TYPES = (AttachType.TRACE_RAW_TP, AttachType.TRACE_FENTRY,
                         AttachType.TRACE_FEXIT, AttachType.MODIFY_RETURN, AttachType.LSM_MAC)


# -- tracepoints --------------------------------------------------------------------------

def attach_tracepoint(prog, category: str, name: str, cookie: int = 0) -> Link:
    """Attach a TRACEPOINT program to ``category/name`` (e.g. syscalls, sys_enter_execve)."""
    check_type(prog, (ProgType.TRACEPOINT,), "a tracepoint")
    description = f"tracepoint/{category}/{name}"
    perf = FD(perf_event_open(PERF_TYPE_TRACEPOINT, tracepoint_id(category, name)),
              f"perf event of {description}")
    return perf_event_link(prog, perf, description, cookie)


def attach_raw_tracepoint(prog, name: str) -> Link:
    """Attach a RAW_TRACEPOINT program to the raw tracepoint ``name`` (e.g. sys_enter)."""
    check_type(prog, (ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE),
               "a raw tracepoint")
    if not name or "\0" in name:
        raise AttachError(f"invalid raw tracepoint name {name!r}")
    try:
        link_fd = syscalls.raw_tracepoint_open(name, prog.fd)
    except SyscallError as exc:
        if exc.errno != errno.ENOENT:
            raise
        raise AttachError(f"unknown raw tracepoint {name!r}; the names are those of "
                          f"tracepoints without the category (sys_enter, sched_switch)"
                          ) from None
    return Link(f"raw_tracepoint/{name}", link_fd=link_fd)


# -- hooks named at load time: tp_btf, fentry, fexit, fmod_ret, lsm -------------------------

def attach_tracing(prog, cookie: int = 0) -> Link:
    """Attach a TRACING or LSM program (tp_btf, fentry, fexit, fmod_ret, lsm) to the kernel
    function, tracepoint or LSM hook it was loaded for.

    ``BPF_LINK_CREATE`` with the program's expected attach type makes the link, as libbpf
    does; a kernel that does not make links for this kind answers EINVAL, and then (without
    a ``cookie``, which only links carry) ``BPF_RAW_TRACEPOINT_OPEN`` attaches it, the older
    way.
    """
    check_type(prog, _TRACING_TYPES, "a BTF-typed hook (tp_btf, fentry, fexit, fmod_ret, lsm)")
    attach_type = prog.spec.expected_attach_type
    if attach_type not in _TRACING_ATTACH_TYPES:
        hint = ("; an iterator is attached with attach_iter()"
                if attach_type == AttachType.TRACE_ITER else "")
        raise AttachError(f"program {prog.name!r} has expected attach type "
                          f"{_attach_type_name(attach_type)}, not one of a tracing hook"
                          f"{hint}")
    description = prog.spec.section or f"{AttachType(attach_type).name.lower()} {prog.name}"
    try:
        link_fd = syscalls.link_create(prog.fd, 0, attach_type, tracing_cookie=cookie)
    except SyscallError as exc:
        if exc.errno != errno.EINVAL or cookie:
            raise
        link_fd = syscalls.raw_tracepoint_open(None, prog.fd)
    return Link(description, link_fd=link_fd)


def _attach_type_name(value):
    try:
        return AttachType(value).name
    except ValueError:
        return str(value)


# -- iterators ----------------------------------------------------------------------------

class IterLink(Link):
    """An iterator (``iter/task``, ``iter/bpf_map_elem``...): its program runs once per
    object each time the iterator is read, and what it writes (``bpf_seq_printf``,
    ``bpf_seq_write``) is what reading returns."""

    READ_SIZE = 1 << 16

    def read(self) -> bytes:
        """Run the iterator once over all its objects (``BPF_ITER_CREATE``, then read(2)
        to the end) and return what the program wrote."""
        it = FD(syscalls.iter_create(self.fd), f"iterator of {self.description}")
        chunks = []
        try:
            while True:
                try:
                    chunk = os.read(it.fileno(), self.READ_SIZE)
                except OSError as exc:
                    raise SyscallError(exc.errno, "read", (
                        f"reading iterator {self.description} failed: "
                        f"{errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror}); "
                        f"EAGAIN: the program printed more than a page for one object; "
                        f"E2BIG/ENOENT: the iterated object went away")) from None
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            it.close()

    def read_text(self) -> str:
        """:meth:`read`, decoded as UTF-8 (bytes that are not become U+FFFD)."""
        return self.read().decode("utf-8", "replace")


def attach_iter(prog, *, map=None, pid: int = 0, tid: int = 0) -> IterLink:
    """Attach an iterator program (``iter/NAME``); read it with :meth:`IterLink.read`.

    ``map`` is the map a map iterator (``iter/bpf_map_elem``, ``iter/sk_storage_map``...)
    walks; ``pid`` or ``tid`` limit a task iterator (``iter/task``, ``iter/task_file``...) to
    one process or thread (Linux >= 6.1).
    """
    check_type(prog, (ProgType.TRACING,), "an iterator")
    if prog.spec.expected_attach_type != AttachType.TRACE_ITER:
        raise AttachError(f"program {prog.name!r} is not an iterator (section "
                          f"{prog.spec.section!r}; iterators are iter/NAME)")
    if map is not None and (pid or tid):
        raise UsageError("an iterator walks a map or tasks: give map, or pid/tid, not both")
    info = None  # union bpf_iter_link_info
    if map is not None:
        info = layouts.IterLinkInfoMap.pack(map_fd=map.fd if hasattr(map, "fd") else map)
    elif pid or tid:
        info = layouts.IterLinkInfoTask.pack(tid=tid, pid=pid, pid_fd=0)
    link_fd = syscalls.link_create(prog.fd, 0, AttachType.TRACE_ITER, iter_info=info)
    return IterLink(prog.spec.section or f"iter {prog.name}", link_fd=link_fd)


# -- hooks on a target: cgroups, network interfaces, sockets -------------------------------

def attach_cgroup(prog, cgroup: Union[str, os.PathLike, int],
                  attach_type: Optional[int] = None) -> Link:
    """Attach a cgroup program (cgroup_skb/ingress, cgroup/sock_create, cgroup/connect4,
    sockops, cgroup/dev, cgroup/sysctl, lsm_cgroup...) to a cgroup v2 directory (a path, or
    an open fd of one): it runs for the processes in that cgroup and below.

    ``attach_type`` defaults to the program's expected attach type, the one its section
    names (``cgroup/skb`` names none: give it).
    """
    attach_type = prog.spec.expected_attach_type if attach_type is None else attach_type
    if prog.type == ProgType.CGROUP_SKB and attach_type not in (
            AttachType.CGROUP_INET_INGRESS, AttachType.CGROUP_INET_EGRESS):
        raise AttachError(f"program {prog.name!r} ({prog.spec.section or 'cgroup_skb'}) needs "
                          f"a direction: attach_type=AttachType.CGROUP_INET_INGRESS or "
                          f"CGROUP_INET_EGRESS (sections cgroup_skb/ingress, cgroup_skb/egress)")
    if isinstance(cgroup, int) and not isinstance(cgroup, bool):
        return _cgroup_link(prog, cgroup, attach_type, f"fd {cgroup}")
    path = os.fspath(cgroup)
    kind = filesystem_type(path) if os.path.isdir(path) else None
    if kind != "cgroup2":
        found = "does not exist" if not os.path.exists(path) else (
            f"is on {kind}" if os.path.isdir(path) else "is not a directory")
        raise AttachError(f"{path} {found}: cgroup programs attach to a cgroup v2 directory "
                          f"(mount -t cgroup2 none DIR; e.g. /sys/fs/cgroup or "
                          f"/sys/fs/cgroup/unified)")
    try:
        fd = FD(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), f"cgroup {path}")
    except OSError as exc:
        raise AttachError(f"cannot open cgroup {path}: {exc.strerror}") from None
    try:
        return _cgroup_link(prog, fd.fileno(), attach_type, path)
    finally:
        fd.close()


def _cgroup_link(prog, cgroup_fd, attach_type, where):
    name = _attach_type_name(attach_type).lower()
    try:
        link_fd = syscalls.link_create(prog.fd, cgroup_fd, attach_type)
    except SyscallError as exc:
        if exc.errno == errno.EINVAL and not features.have("cgroup_link"):
            raise NotSupportedError(features.missing("cgroup_link", what=f"{name} on "
                                                     f"{where}")) from None
        raise
    return Link(f"{name} on cgroup {where}", link_fd=link_fd)


XDP_MODES = {None: 0, "skb": XDP_FLAGS_SKB_MODE, "native": XDP_FLAGS_DRV_MODE,
             "hw": XDP_FLAGS_HW_MODE}


def attach_xdp(prog, interface: Union[str, int], mode: Optional[str] = None) -> Link:
    """Attach an XDP program to network interface ``interface`` (a name or an ifindex): it
    runs on every packet the interface receives, before the network stack. ``mode`` is
    ``"native"`` (in the driver), ``"skb"`` (generic, any device) or ``"hw"``; by default
    the kernel uses native XDP where the driver has it, else generic."""
    check_type(prog, (ProgType.XDP,), "XDP")
    if mode not in XDP_MODES:
        raise UsageError(f"XDP mode must be one of native, skb, hw or None, not {mode!r}")
    ifindex, name = _interface(interface)
    link_fd = syscalls.link_create(prog.fd, ifindex, AttachType.XDP, flags=XDP_MODES[mode])
    return Link(f"xdp on {name}", link_fd=link_fd)


def attach_tcx(prog, interface: Union[str, int], attach_type: Optional[int] = None) -> Link:
    """Attach a SCHED_CLS program (``tcx/ingress``, ``tcx/egress``, or ``tc/...``) to the
    traffic control hook of ``interface`` (Linux >= 6.6 tcx links): it sees the interface's
    packets as socket buffers. ``attach_type`` defaults to the one the section names."""
    check_type(prog, (ProgType.SCHED_CLS,), "a tcx hook")
    attach_type = prog.spec.expected_attach_type if attach_type is None else attach_type
    if attach_type not in (AttachType.TCX_INGRESS, AttachType.TCX_EGRESS):
        raise AttachError(f"program {prog.name!r} ({prog.spec.section or 'SCHED_CLS'}): give "
                          f"attach_type=AttachType.TCX_INGRESS or TCX_EGRESS (sections "
                          f"tcx/ingress, tcx/egress); legacy tc/classifier programs attach "
                          f"with `tc filter add ... bpf`, which pybpf does not do")
    ifindex, name = _interface(interface)
    link_fd = syscalls.link_create(prog.fd, ifindex, attach_type)
    return Link(f"{_attach_type_name(attach_type).lower()} on {name}", link_fd=link_fd)


def _interface(interface):
    """``(ifindex, name)`` of a network interface given by name or index (in this network
    namespace); AttachError naming the known ones otherwise."""
    try:
        if isinstance(interface, int) and not isinstance(interface, bool):
            return interface, socket.if_indextoname(interface)
        return socket.if_nametoindex(interface), interface
    except (OSError, TypeError, ValueError):
        known = ", ".join(name for _, name in socket.if_nameindex())
        raise AttachError(f"no network interface {interface!r} in this network namespace "
                          f"(there are: {known})") from None


class SocketLink(Link):
    """A socket filter attached to a socket (``SO_ATTACH_BPF``). It holds a duplicate of the
    socket's fd; closing it detaches the filter (``SO_DETACH_BPF``) if the socket is still
    open elsewhere, then closes the duplicate."""

    def __init__(self, description, socket_fd):
        super().__init__(description)
        self._fd = FD(socket_fd, f"socket of {description}")

    def pin(self, path: str) -> None:
        raise AttachError(f"{self.description}: a socket filter lives as long as its socket; "
                          f"it has no bpf_link to pin")

    def close(self) -> None:
        if not self._fd.closed:
            try:
                _setsockopt(self._fd.fileno(), SO_DETACH_BPF, 0)
            except OSError:
                pass  # nothing attached any more (another filter replaced it)
        self._fd.close()


def attach_socket(prog, sock) -> SocketLink:
    """Attach a SOCKET_FILTER program to ``sock`` (a socket object or its fd): it sees each
    packet the socket receives, and the packet is kept only if it returns non-zero (the
    number of bytes to keep)."""
    check_type(prog, (ProgType.SOCKET_FILTER,), "a socket")
    number = sock if isinstance(sock, int) and not isinstance(sock, bool) else \
        getattr(sock, "fileno", lambda: -1)()
    if not isinstance(number, int) or number < 0:
        raise UsageError(f"attach_socket needs a socket (or its fd), not {sock!r}")
    dup = FD.dup(number, f"socket fd {number}")
    try:
        _setsockopt(dup.fileno(), SO_ATTACH_BPF, prog.fd)
    except OSError as exc:
        dup.close()
        raise AttachError(f"cannot attach {prog.name!r} to fd {number}: {exc.strerror}"
                          + ("; it is not a socket" if exc.errno == errno.ENOTSOCK else "")
                          ) from None
    return SocketLink(f"socket filter {prog.name} on fd {number}", dup.release())


def _setsockopt(fd, option, value):
    """setsockopt(fd, SOL_SOCKET, option, int value) on an fd (not a socket object)."""
    sock = socket.socket(fileno=fd)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, value)
    finally:
        sock.detach()


# -- by section name ----------------------------------------------------------------------

def _tracepoint(prog, target, section):
    category, name = _parts(section, target, 2, "<category>/<name>")
    return attach_tracepoint(prog, category, name)


def _raw_tracepoint(prog, target, section):
    (name,) = _parts(section, target, 1, "<name>")
    return attach_raw_tracepoint(prog, name)


def _tracing(prog, target, section):
    return attach_tracing(prog)


def _iter(prog, target, section):
    return attach_iter(prog)


def _kprobe(prog, target, section):
    function, offset = parse_kprobe_target(section, _target(section, target, "FUNCTION"))
    return attach_kprobe(prog, function, offset, retprobe=section.startswith("kretprobe"))


def _ksyscall(prog, target, section):
    return attach_ksyscall(prog, _target(section, target, "SYSCALL"),
                           retprobe=section.startswith("kretsyscall"))


def _uprobe(prog, target, section):
    binary, function, offset = parse_uprobe_target(
        section, _target(section, target, "BINARY:FUNCTION"))
    return attach_uprobe(prog, binary, function, offset,
                         retprobe=section.startswith("uretprobe"))


def _parts(section, target, count, shape):
    pieces = target.split("/") if target else []
    if len(pieces) != count or not all(pieces):
        kind = section[:len(section) - len(target)].rstrip("/")
        raise AttachError(f"section {section!r} should be {kind}/{shape}")
    return pieces


def _target(section, target, shape):
    if not target:
        raise AttachError(f"section {section!r} names no target, so it cannot be attached "
                          f"automatically: name one ({section}/{shape}) or attach by hand")
    return target


_BY_SECTION = {  # libbpf section name -> how to attach it from its target
    "tracepoint": _tracepoint, "tp": _tracepoint,
    "raw_tracepoint": _raw_tracepoint, "raw_tp": _raw_tracepoint,
    "raw_tracepoint.w": _raw_tracepoint, "raw_tp.w": _raw_tracepoint,
    **dict.fromkeys(("tp_btf", "fentry", "fexit", "fmod_ret", "fentry.s", "fexit.s",
                     "fmod_ret.s", "lsm", "lsm.s"), _tracing),
    "iter": _iter, "iter.s": _iter,
    "kprobe": _kprobe, "kretprobe": _kprobe,
    "ksyscall": _ksyscall, "kretsyscall": _ksyscall,
    **dict.fromkeys(("uprobe", "uretprobe", "uprobe.s", "uretprobe.s"), _uprobe),
}

# What attaching the other sections needs (why :func:`attach` cannot do it from the name).
_BY_HAND = {
    "socket": "a socket: attach_socket(prog, sock)",
    "xdp": "a network interface: attach_xdp(prog, 'eth0') (pybpf load --interface)",
    "xdp.frags": "a network interface: attach_xdp(prog, 'eth0') (pybpf load --interface)",
    "tcx/ingress": "a network interface: attach_tcx(prog, 'eth0') (pybpf load --interface)",
    "tcx/egress": "a network interface: attach_tcx(prog, 'eth0') (pybpf load --interface)",
    "tc/ingress": "a network interface: attach_tcx(prog, 'eth0') (pybpf load --interface)",
    "tc/egress": "a network interface: attach_tcx(prog, 'eth0') (pybpf load --interface)",
    "perf_event": "perf events to sample: pybpf.probes.attach_perf_event(prog, frequency) "
                  "(pybpf load --frequency)",
}
_CGROUP_HINT = "a cgroup v2 directory: attach_cgroup(prog, path) (pybpf load --cgroup)"
_LWT = "a route (`ip route add ... encap bpf`), which pybpf does not do"
_SOCKMAP = "a SOCKMAP or SOCKHASH (BPF_PROG_ATTACH with the map's fd), which pybpf does not do"
_KPROBE_MULTI = ("BPF_LINK_CREATE with kprobe_multi symbols (and a kernel with CONFIG_FPROBE), "
                 "which pybpf does not do")
_REUSEPORT = "a SO_REUSEPORT socket group (SO_ATTACH_REUSEPORT_EBPF), which pybpf does not do"
_NETNS = "a network namespace link (BPF_LINK_CREATE with a netns fd), which pybpf does not do"
_NOT_SUPPORTED = {
    "usdt": "USDT probes: reading the binary's .note.stapsdt notes and filling libbpf's "
            "usdt.bpf.h spec maps, which pybpf does not do",
    "kprobe.multi": _KPROBE_MULTI, "kretprobe.multi": _KPROBE_MULTI,
    "tc": "a tc filter (netlink: `tc filter add dev DEV ingress bpf obj ...`); use tcx/ingress "
          "or tcx/egress sections instead",
    "classifier": "a tc filter (netlink: `tc filter add ... bpf`); use tcx/ingress or "
                  "tcx/egress sections instead",
    "action": "a tc action (netlink: `tc actions add ... bpf`), which pybpf does not do",
    "freplace": "a target BPF program whose function it replaces (attach_prog_fd), which "
                "pybpf does not do",
    "struct_ops": "registering a struct_ops map (BPF_MAP_TYPE_STRUCT_OPS), which pybpf "
                  "does not do",
    "syscall": "nothing: syscall programs are run with prog.test_run(ctx=...), not attached",
    **dict.fromkeys(("xdp/devmap", "xdp.frags/devmap"),
                    "an entry of a DEVMAP (the program runs on packets redirected there)"),
    **dict.fromkeys(("xdp/cpumap", "xdp.frags/cpumap"),
                    "an entry of a CPUMAP (the program runs on packets redirected there)"),
    "sk_lookup": _NETNS, "flow_dissector": _NETNS,
    "netfilter": "a netfilter hook (BPF_LINK_CREATE with pf, hooknum, priority), which pybpf "
                 "does not do",
    "lirc_mode2": "an infrared (lirc) device fd, which pybpf does not do",
    "sk_reuseport": _REUSEPORT, "sk_reuseport/migrate": _REUSEPORT,
    **dict.fromkeys(("lwt_in", "lwt_out", "lwt_xmit", "lwt_seg6local"), _LWT),
    **dict.fromkeys(("sk_skb", "sk_skb/stream_parser", "sk_skb/stream_verdict",
                     "sk_skb/verdict", "sk_msg"), _SOCKMAP),
}


def unsupported_reason(section: str) -> Optional[str]:
    """Why :func:`attach` cannot attach ``section`` by its name, and what it needs; None
    when it can."""
    found = match_section(section)
    if found is None:
        return f"{section!r} is not one of libbpf's section names"
    name, prog_type = found[0], found[1]
    if name in _BY_SECTION:
        return None
    if name in _BY_HAND:
        return f"it attaches to {_BY_HAND[name]}"
    if prog_type in (ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR,
                     ProgType.CGROUP_DEVICE, ProgType.CGROUP_SYSCTL, ProgType.CGROUP_SOCKOPT,
                     ProgType.SOCK_OPS) or name == "lsm_cgroup":
        return f"it attaches to {_CGROUP_HINT}"
    return f"attaching it needs {_NOT_SUPPORTED.get(name, 'a hook pybpf does not know')}"


def attach(prog, section: Optional[str] = None) -> Link:
    """Attach ``prog`` where its libbpf section name says (``prog.spec.section`` by default),
    as libbpf's auto-attach does (see the module). Sections that name no hook (``xdp``,
    ``cgroup/...``, ``socket``, ``perf_event``...) raise AttachError saying how to attach
    them by hand."""
    section = section if section is not None else prog.spec.section
    found = match_section(section or "")
    if found is None or found[0] not in _BY_SECTION:
        raise AttachError(f"cannot attach section {section!r} by its name: "
                          f"{unsupported_reason(section or '')}")
    name, _, _, target = found
    return _BY_SECTION[name](prog, target, section)


def attach_all(programs: Mapping, failures: Optional[list] = None) -> List[Link]:
    """Attach every program of ``programs`` (a dict by name) by its section; the links.

    Without ``failures`` the first program that cannot be attached closes the links made so
    far and raises. With a list, each failure is appended to it as ``(name, error)`` and the
    others are attached.
    """
    links = []
    try:
        for name, program in programs.items():
            try:
                links.append(attach(program))
            except BPFError as exc:
                if failures is None:
                    raise
                failures.append((name, exc))
    except BaseException:
        for link in links:
            link.close()
        raise
    return links
