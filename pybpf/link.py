"""Links: a program attached to a hook, held like an open file (closing it detaches).

Since Linux 5.7 the kernel represents an attachment as a *bpf_link*, an fd of its own
(``BPF_LINK_CREATE``, ``BPF_RAW_TRACEPOINT_OPEN``): the program stays attached while the fd
(or a pin of it in bpffs) is open. Hooks that are perf events (tracepoints, kprobes,
uprobes, CPU clocks) need the perf event's fd too: the link is made on it. A :class:`Link`
owns every fd of one attachment and closes them together; what the attachment created
besides (a probe defined in tracefs, a socket's filter) is undone by subclasses.
"""

from typing import Optional

from . import features, syscalls
from .abi import PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF, AttachType, ProgType
from .errors import AttachError
from .fd import FD, KernelObject
from .perf import perf_event_ioctl


class Link(KernelObject):
    """An attachment of a program to a hook; owns its fds and detaches on :meth:`close`.

    ``link_fd`` is the bpf_link (None on the ioctl path of kernels < 5.15); ``perf_fd`` the
    perf event the program is attached to, if any. :attr:`fd` is the bpf_link's, or the
    perf event's when there is no bpf_link.
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


def check_type(prog, allowed, hook):
    """AttachError unless ``prog`` has one of the ``allowed`` program types."""
    if prog.type not in allowed:
        names = " or ".join(ProgType(t).name for t in allowed)
        raise AttachError(f"program {prog.name!r} is {prog.type.name}; {hook} needs a "
                          f"{names} program")


def perf_event_link(prog, perf: FD, description: str, cookie: int = 0, link_class=Link,
                    **extra) -> Link:
    """Attach ``prog`` to the open perf event ``perf`` (whose fd the Link then owns; it is
    closed if attaching fails): with a bpf_link (Linux >= 5.15), else with the older
    ``PERF_EVENT_IOC_SET_BPF`` ioctl, which cannot carry a bpf cookie. The link is a
    ``link_class`` made with the ``extra`` arguments too."""
    try:
        if features.have("perf_link"):
            link_fd = syscalls.link_create(prog.fd, perf.fileno(), AttachType.PERF_EVENT,
                                           bpf_cookie=cookie)
        else:
            if cookie:
                raise AttachError(features.missing("perf_link", what="bpf cookies"))
            perf_event_ioctl(perf.fileno(), PERF_EVENT_IOC_SET_BPF, prog.fd)
            perf_event_ioctl(perf.fileno(), PERF_EVENT_IOC_ENABLE, 0)
            link_fd = None
    except BaseException:
        perf.close()
        raise
    return link_class(description, link_fd=link_fd, perf_fd=perf.release(), **extra)
