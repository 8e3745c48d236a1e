"""Attaching programs to kernel hooks: tracepoints and raw tracepoints.

A tracepoint is a static hook compiled into the kernel (``syscalls/sys_enter_execve``).
tracefs lists them with a numeric id; ``perf_event_open(PERF_TYPE_TRACEPOINT, id)`` opens an
event for one, and a TRACEPOINT program is attached to that event, either with a bpf_link
(``BPF_LINK_CREATE``, kernel >= 5.15) or with the older ``PERF_EVENT_IOC_SET_BPF`` ioctl. A raw
tracepoint (``BPF_RAW_TRACEPOINT_OPEN``) attaches by name, without tracefs or perf, and gives
the program the tracepoint's raw arguments. Either way a :class:`Link` owns the attachment:
closing it detaches the program.
"""

import errno
from collections.abc import Mapping
from typing import List, Optional

from . import features, syscalls
from .abi import (
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_SET_BPF,
    PERF_TYPE_TRACEPOINT,
    AttachType,
    ProgType,
)
from .errors import AttachError, BPFError, SyscallError
from .fd import FD, KernelObject
from .perf import perf_event_ioctl, perf_event_open
from .sections import known_sections, section_program_type
from .tracefs import tracepoint_id


class Link(KernelObject):
    """An attachment of a program to a hook; owns its fds and detaches on :meth:`close`.

    ``link_fd`` is the bpf_link (None on the ioctl path of kernels < 5.15); ``perf_fd`` the
    perf event a tracepoint program is attached to (None for raw tracepoints). :attr:`fd` is
    the bpf_link's, or the perf event's when there is no bpf_link.
    """

    def __init__(self, description, link_fd=None, perf_fd=None):
        self.description = description
        what = f"link {description}"
        self._link = FD(link_fd, what) if link_fd is not None else None
        self._perf = FD(perf_fd, f"perf event of {description}") if perf_fd is not None else None
        self._fd = self._link or self._perf

    @property
    def id(self) -> Optional[int]:
        """The kernel's id of the bpf_link (``bpftool link show id N``), None without one."""
        if self._link is None:
            return None
        return syscalls.obj_get_info_by_fd(self._link.fileno(), "link")["id"]

    def pin(self, path: str) -> None:
        """Pin the bpf_link at ``path`` (bpffs) so the program stays attached after exit."""
        if self._link is None:
            raise AttachError(f"{self.description}: only a bpf_link can be pinned (this one "
                              f"was attached with an ioctl; kernels >= 5.15 make links)")
        syscalls.obj_pin(self._link.fileno(), path)

    def close(self) -> None:
        """Detach: close the link and perf event fds. Safe to call twice."""
        for owned in (self._link, self._perf):
            if owned is not None:
                owned.close()

    def __repr__(self):
        return f"<Link {self.description} {'closed' if self.closed else 'attached'}>"


def _check_type(prog, allowed, hook):
    """AttachError unless ``prog`` has one of the ``allowed`` program types."""
    if prog.type not in allowed:
        names = " or ".join(t.name for t in allowed)
        raise AttachError(f"program {prog.name!r} is {prog.type.name}; {hook} needs a "
                          f"{names} program")


def attach_tracepoint(prog, category: str, name: str, cookie: int = 0) -> Link:
    """Attach a TRACEPOINT program to ``category/name`` (e.g. syscalls, sys_enter_execve)."""
    _check_type(prog, (ProgType.TRACEPOINT,), "a tracepoint")
    perf = FD(perf_event_open(PERF_TYPE_TRACEPOINT, tracepoint_id(category, name)),
              f"perf event of tracepoint/{category}/{name}")
    try:
        link_fd = _attach_perf_event(prog, perf.fileno(), cookie)
    except BaseException:
        perf.close()
        raise
    return Link(f"tracepoint/{category}/{name}", link_fd=link_fd, perf_fd=perf.release())


def _attach_perf_event(prog, perf_fd, cookie):
    """A bpf_link for prog on the perf event (>= 5.15), else None after the ioctl fallback."""
    if features.have("perf_link"):
        return syscalls.link_create(prog.fd, perf_fd, AttachType.PERF_EVENT, bpf_cookie=cookie)
    if cookie:
        raise AttachError(features.missing("perf_link", what="bpf cookies"))
    perf_event_ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog.fd)
    perf_event_ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0)
    return None


def attach_raw_tracepoint(prog, name: str) -> Link:
    """Attach a RAW_TRACEPOINT program to the raw tracepoint ``name`` (e.g. sys_enter)."""
    _check_type(prog, (ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE),
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


_ATTACHABLE = {  # program type -> how to attach it, given the "/"-separated target parts
    ProgType.TRACEPOINT: (attach_tracepoint, 2),  # tracepoint/<category>/<name>
    ProgType.RAW_TRACEPOINT: (attach_raw_tracepoint, 1),  # raw_tp/<name>
    ProgType.RAW_TRACEPOINT_WRITABLE: (attach_raw_tracepoint, 1),
}


def attach(prog, section: Optional[str] = None) -> Link:
    """Attach ``prog`` where its libbpf section name says (``prog.spec.section`` by default):
    ``tracepoint/<cat>/<name>``, ``tp/<cat>/<name>``, ``raw_tracepoint/<name>``, ``raw_tp/<name>``
    (and ``raw_tp.w/<name>``). The name is read by :func:`pybpf.sections.section_program_type`,
    as the ELF loader reads it.
    """
    section = section if section is not None else prog.spec.section
    kind = section_program_type(section)
    prog_type, target = (kind[0], kind[2]) if kind else (None, "")
    if prog_type not in _ATTACHABLE:
        raise AttachError(f"cannot attach section {section!r} automatically; supported: "
                          f"{known_sections(_ATTACHABLE)}")
    attach_to, parts = _ATTACHABLE[prog_type]
    pieces = target.split("/") if target else []
    if len(pieces) != parts or not all(pieces):
        kind = section[:len(section) - len(target)].rstrip("/")
        shape = "<category>/<name>" if parts == 2 else "<name>"
        raise AttachError(f"section {section!r} should be {kind}/{shape}")
    return attach_to(prog, *pieces)


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
