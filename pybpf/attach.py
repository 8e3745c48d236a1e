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
import os

from . import syscalls
from .abi import (
    PERF_EVENT_IOC_ENABLE,
    PERF_EVENT_IOC_SET_BPF,
    PERF_TYPE_TRACEPOINT,
    AttachType,
    ProgType,
)
from .errors import AttachError, ElfError, SyscallError, TracefsError, UsageError
from .sections import SECTIONS, section_program_type

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
MOUNT_HINT = "mount -t tracefs nodev /sys/kernel/tracing"

_tracefs = {}


def tracefs_path():
    """Where tracefs is mounted; mounts it at /sys/kernel/tracing when root and it is absent."""
    if "path" not in _tracefs:
        _tracefs["path"] = _find_tracefs() or _mount_tracefs()
    return _tracefs["path"]


def _find_tracefs():
    """The first of TRACEFS_PATHS that has an ``events`` directory, else None."""
    for path in TRACEFS_PATHS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def _mount_tracefs():
    """Mount tracefs (root only), or TracefsError saying how to do it."""
    if os.geteuid() != 0:
        raise TracefsError(f"tracefs is not mounted (no events/ in {' or '.join(TRACEFS_PATHS)})"
                           f"; mount it as root: sudo {MOUNT_HINT}")
    import subprocess  # only here: importing it costs milliseconds of every tracker's start

    try:
        result = subprocess.run(MOUNT_HINT.split(), capture_output=True, text=True)
    except OSError as exc:  # no mount(8) on this system
        raise TracefsError(f"tracefs is not mounted and the mount command could not run "
                           f"({exc.strerror}); install mount (util-linux) and run: "
                           f"{MOUNT_HINT}") from None
    if result.returncode != 0 or _find_tracefs() is None:
        raise TracefsError(f"tracefs is not mounted and `{MOUNT_HINT}` failed: "
                           f"{result.stderr.strip() or 'no events/ directory after mounting'}")
    return TRACEFS_PATHS[0]


def tracepoint_id(category, name):
    """The id tracefs gives tracepoint ``category/name`` (the perf event ``config``)."""
    events = os.path.join(tracefs_path(), "events")
    path = os.path.join(events, category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        listing = os.path.join(events, category)
        if not os.path.isdir(listing):
            listing = events
        raise AttachError(f"unknown tracepoint {category}/{name} (no {path}); see the known "
                          f"ones with `ls {listing}`") from None
    except PermissionError:
        raise AttachError(f"cannot read tracepoint {category}/{name}'s id: {path} is "
                          f"readable by root only; run as root (e.g. with sudo)") from None


class Link:
    """An attachment of a program to a hook; owns its fds and detaches on :meth:`close`.

    ``link_fd`` is the bpf_link (None on the ioctl path of kernels < 5.15); ``perf_fd`` the
    perf event a tracepoint program is attached to (None for raw tracepoints).
    """

    def __init__(self, description, link_fd=None, perf_fd=None):
        self.description = description
        self._link_fd = link_fd
        self._perf_fd = perf_fd

    @property
    def fd(self):
        """The bpf_link's fd (or the perf event's when there is no bpf_link); UsageError once
        closed."""
        fd = self._link_fd if self._link_fd is not None else self._perf_fd
        if fd is None:
            raise UsageError(f"link {self.description} is closed")
        return fd

    @property
    def id(self):
        """The kernel's id of the bpf_link (``bpftool link show id N``), None without one."""
        if self._link_fd is None:
            return None
        return syscalls.obj_get_info_by_fd(self._link_fd, "link")["id"]

    def pin(self, path):
        """Pin the bpf_link at ``path`` (bpffs) so the program stays attached after exit."""
        if self._link_fd is None:
            raise AttachError(f"{self.description}: only a bpf_link can be pinned (this one "
                              f"was attached with an ioctl; kernels >= 5.15 make links)")
        syscalls.obj_pin(self._link_fd, path)

    def close(self):
        """Detach: close the link and perf event fds. Safe to call twice."""
        for attr in ("_link_fd", "_perf_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._link_fd is None and self._perf_fd is None else "attached"
        return f"<Link {self.description} {state}>"


def _check_type(prog, allowed, hook):
    """AttachError unless ``prog`` has one of the ``allowed`` program types."""
    if prog.type not in allowed:
        names = " or ".join(t.name for t in allowed)
        raise AttachError(f"program {prog.name!r} is {prog.type.name}; {hook} needs a "
                          f"{names} program")


def attach_tracepoint(prog, category, name, cookie=0):
    """Attach a TRACEPOINT program to ``category/name`` (e.g. syscalls, sys_enter_execve)."""
    _check_type(prog, (ProgType.TRACEPOINT,), "a tracepoint")
    perf_fd = syscalls.perf_event_open(PERF_TYPE_TRACEPOINT, tracepoint_id(category, name))
    try:
        link_fd = _attach_perf_event(prog, perf_fd, cookie)
    except BaseException:
        os.close(perf_fd)
        raise
    return Link(f"tracepoint/{category}/{name}", link_fd=link_fd, perf_fd=perf_fd)


_perf_link = {}  # "supported": whether BPF_LINK_CREATE takes perf events here (probed once)


def perf_link_supported(prog):
    """Whether this kernel makes bpf_links for perf events (Linux >= 5.15), asked once.

    libbpf's probe: ``BPF_LINK_CREATE`` with attach type ``BPF_PERF_EVENT`` and target fd -1.
    A kernel that knows the attach type gets as far as looking the perf event up and fails
    with EBADF; an older one refuses the attach type with EINVAL.
    """
    if "supported" not in _perf_link:
        try:
            no_fd = 0xFFFFFFFF  # -1 as the attr's u32
            os.close(syscalls.link_create(prog.fd, no_fd, AttachType.PERF_EVENT))
            supported = True  # not expected: fd -1 is never a perf event
        except SyscallError as exc:
            if exc.errno not in (errno.EBADF, errno.EINVAL):
                raise
            supported = exc.errno == errno.EBADF
        _perf_link["supported"] = supported
    return _perf_link["supported"]


def _attach_perf_event(prog, perf_fd, cookie):
    """A bpf_link for prog on the perf event (>= 5.15), else None after the ioctl fallback."""
    if perf_link_supported(prog):
        return syscalls.link_create(prog.fd, perf_fd, AttachType.PERF_EVENT, bpf_cookie=cookie)
    if cookie:
        raise AttachError("bpf cookies need BPF_LINK_CREATE for perf events (kernel >= 5.15)")
    syscalls.perf_event_ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog.fd)
    syscalls.perf_event_ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0)
    return None


def attach_raw_tracepoint(prog, name):
    """Attach a RAW_TRACEPOINT program to the raw tracepoint ``name`` (e.g. sys_enter)."""
    _check_type(prog, (ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE),
                "a raw tracepoint")
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


def attach(prog, section=None):
    """Attach ``prog`` where its libbpf section name says (``prog.spec.section`` by default):
    ``tracepoint/<cat>/<name>``, ``tp/<cat>/<name>``, ``raw_tracepoint/<name>``, ``raw_tp/<name>``
    (and ``raw_tp.w/<name>``). The name is read by :func:`pybpf.sections.section_program_type`,
    as the ELF loader reads it.
    """
    section = section if section is not None else prog.spec.section
    try:
        prog_type, _, target = section_program_type(section)
    except ElfError:
        prog_type, target = None, ""
    if prog_type not in _ATTACHABLE:
        known = ", ".join(f"{name}/..." for name, kind, _, _ in SECTIONS if kind in _ATTACHABLE)
        raise AttachError(f"cannot attach section {section!r} automatically; supported: "
                          f"{known}")
    attach_to, parts = _ATTACHABLE[prog_type]
    pieces = target.split("/") if target else []
    if len(pieces) != parts or not all(pieces):
        kind = section[:len(section) - len(target)].rstrip("/")
        shape = "<category>/<name>" if parts == 2 else "<name>"
        raise AttachError(f"section {section!r} should be {kind}/{shape}")
    return attach_to(prog, *pieces)
