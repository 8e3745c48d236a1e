"""Dynamic probes and sampling events: kprobes, uprobes and CPU clocks, as perf events.

A *kprobe* stops the kernel at any instruction of a kernel function (its entry, or with a
*kretprobe* its return); a *uprobe* does the same in user space, at a byte offset of an
executable file, in every process that maps it. Both are created as perf events, and a
KPROBE program is attached to the event like a tracepoint program. The kernel offers two
ways to create them:

- the kprobe and uprobe *PMUs* (Linux 4.17): ``perf_event_open`` with the PMU's type (read
  from ``/sys/bus/event_source/devices/{kprobe,uprobe}/type``), the function name or file
  path in ``config1`` and the offset in ``config2``; a return probe sets the bit that
  ``format/retprobe`` names. Closing the event removes the probe.
- older, through tracefs: a line written to ``kprobe_events``/``uprobe_events`` defines a
  named event (a tracepoint), opened with ``PERF_TYPE_TRACEPOINT``; it must be deleted
  again when done (:class:`ProbeLink` does).

Both are tried in that order, as libbpf does. A *perf_event* program instead runs on the
samples of a perf event the user opens, such as a CPU's clock at some frequency
(:func:`attach_perf_event`: one event, and one link, per CPU).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import re
from typing import List, Optional, Sequence

from . import features
from .abi import (
    PERF_ATTR_FREQ, PERF_COUNT_SW_CPU_CLOCK, PERF_TYPE_SOFTWARE, PERF_TYPE_TRACEPOINT, ProgType,
)
from .errors import AttachError, NotSupportedError, UsageError
from .fd import FD
from .host import online_cpus
from .link import Link, check_type, perf_event_link
from .perf import perf_event_open
from .symbols import find_function, resolve_binary
from .tracefs import add_probe_event, remove_probe_event, tracepoint_id

U64_MAX = (1 << 64) - 1
MAX_EVENT_NAME = 63  # tracefs event names: MAX_EVENT_NAME_LEN (64) with its NUL
_counter = itertools.count()
# libbpf's arch_specific_syscall_pfx(): the prefix of the system call wrappers (since 4.17)
_SYSCALL_PREFIX = {"x86_64": "x64", "aarch64": "arm64", "s390x": "s390x", "riscv64": "riscv",
                   "ppc64le": "powerpc"}


class ProbeLink(Link):
    """A kprobe or uprobe attached through a tracefs event, which closing deletes too."""

    def __init__(self, description, event, **fds):
        super().__init__(description, **fds)
        self._event = event  # (kind, group, name) of the tracefs event

    def close(self) -> None:
        super().close()
        if self._event is not None:
            event, self._event = self._event, None
            remove_probe_event(*event)


# -- kprobes ------------------------------------------------------------------------------

def attach_kprobe(prog, function: str, offset: int = 0, *, retprobe: bool = False,
                  cookie: int = 0) -> Link:
    """Attach a KPROBE program at kernel function ``function`` (+ ``offset`` bytes), or at
    its return with ``retprobe``. A kernel built without kprobes (CONFIG_KPROBES) cannot:
    NotSupportedError says so and what to use instead."""
    kind = "kretprobe" if retprobe else "kprobe"
    description = f"{kind}/{function}" + (f"+{offset:#x}" if offset else "")
    return _kprobe(prog, function, offset, retprobe, cookie, description)


def _kprobe(prog, function, offset, retprobe, cookie, description):
    check_type(prog, (ProgType.KPROBE,), "a kprobe")
    kind = "kretprobe" if retprobe else "kprobe"
    if not isinstance(function, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", function):
        raise AttachError(f"invalid kernel function name {function!r} for a {kind}: letters, "
                          f"digits, _ and . only (as /proc/kallsyms spells it)")
    _check_offset(offset, retprobe, kind)
    if features.have("kprobe_pmu"):
        return _pmu_probe(prog, "kprobe", retprobe, function.encode(), offset, -1,
                          description, cookie)
    if features.have("kprobe_events"):
        return _tracefs_probe(prog, "kprobe", retprobe, function, f"{function}+{offset}",
                              -1, description, cookie)
    raise NotSupportedError(
        f"{description}: this kernel cannot attach kprobes: it has no kprobe PMU "
        f"({features.PMU_DEVICES}/kprobe, Linux >= 4.17) and no kprobe_events in tracefs, "
        f"so it was built without CONFIG_KPROBES (or CONFIG_KPROBE_EVENTS). Attach to a "
        f"tracepoint (tracepoint/<category>/<name>), a raw tracepoint (raw_tp/<name>) or the "
        f"function's entry or exit (fentry/<function>, fexit/<function>) instead, or run a "
        f"kernel built with CONFIG_KPROBES=y")


def attach_ksyscall(prog, syscall: str, *, retprobe: bool = False, cookie: int = 0) -> Link:
    """Attach a KPROBE program to system call ``syscall`` (``openat``): a kprobe on the
    kernel's entry function for it, named as libbpf names it (``__x64_sys_openat``, or
    ``__se_sys_openat`` on kernels without per-architecture wrappers)."""
    if not isinstance(syscall, str) or not re.fullmatch(r"[a-z0-9_]+", syscall):
        raise AttachError(f"invalid system call name {syscall!r} (e.g. openat)")
    prefix = _SYSCALL_PREFIX.get(os.uname().machine)
    wrapper = f"__{prefix}_sys_{syscall}" if prefix else None
    function = wrapper if wrapper and _has_syscall_wrappers(prefix) else f"__se_sys_{syscall}"
    kind = "kretsyscall" if retprobe else "ksyscall"
    return _kprobe(prog, function, 0, retprobe, cookie, f"{kind}/{syscall} ({function})")


def _has_syscall_wrappers(prefix):
    """Whether the kernel names its system call entries ``__<prefix>_sys_*`` (Linux >= 4.17
    on x86_64, 5.0 on arm64): libbpf asks for a kprobe on one; /proc/kallsyms lists it."""
    needle = f" __{prefix}_sys_bpf\n"
    try:
        with open("/proc/kallsyms") as symbols:
            return any(line.endswith(needle) for line in symbols)
    except OSError:
        return True


# -- uprobes ------------------------------------------------------------------------------

def attach_uprobe(prog, binary: str, function: Optional[str] = None, offset: int = 0, *,
                  retprobe: bool = False, pid: int = -1, cookie: int = 0) -> Link:
    """Attach a KPROBE program at ``function`` (+ ``offset`` bytes) of ``binary``, or at the
    file offset ``offset`` without a function; at its return with ``retprobe``.

    ``binary`` is a path or a name (``libc.so.6``, ``bash``) found as :mod:`pybpf.symbols`
    says; ``pid`` limits the probe to one process (-1: every process that runs the file).
    """
    check_type(prog, (ProgType.KPROBE,), "a uprobe")
    kind = "uretprobe" if retprobe else "uprobe"
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < -1:
        raise UsageError(f"pid must be a process id, or -1 for every process, not {pid!r}")
    _check_offset(offset, retprobe, kind)
    path = resolve_binary(binary, (pid or os.getpid()) if pid >= 0 else None)
    if function is not None:
        offset += find_function(path, function).offset
        if offset > U64_MAX:
            raise AttachError(f"{kind} offset {offset:#x} does not fit in 64 bits")
    where = f"{function}+{offset:#x}" if function is not None else f"{offset:#x}"
    description = f"{kind}/{path}:{where}"
    if features.have("uprobe_pmu"):
        return _pmu_probe(prog, "uprobe", retprobe, os.fsencode(path), offset, pid,
                          description, cookie)
    if features.have("uprobe_events"):
        if re.search(r"\s", path):
            raise AttachError(f"{description}: uprobe_events cannot name a path with spaces "
                              f"(this kernel has no uprobe PMU); link the file elsewhere")
        return _tracefs_probe(prog, "uprobe", retprobe, os.path.basename(path),
                              f"{path}:{offset:#x}", pid, description, cookie)
    raise NotSupportedError(features.missing("uprobe_pmu", what=description))


def _check_offset(offset, retprobe, kind):
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= U64_MAX:
        raise AttachError(f"{kind} offset must be an integer from 0 to 2**64-1, not {offset!r}")
    if retprobe and offset:
        raise AttachError(f"a {kind} goes at a function's return: it takes no offset "
                          f"(+{offset:#x})")


def _pmu_probe(prog, kind, retprobe, name, offset, pid, description, cookie):
    """A kprobe or uprobe perf event from the kind's PMU, with ``prog`` attached."""
    device = os.path.join(features.PMU_DEVICES, kind)
    config = 1 << _read_format_bit(device, "retprobe") if retprobe else 0
    target = ctypes.create_string_buffer(name)  # kept alive across the system call
    perf = FD(perf_event_open(_read_int(os.path.join(device, "type")), config,
                              **_probe_target(pid), sample_type=0,
                              config1=ctypes.addressof(target), config2=offset),
              f"perf event of {description}")
    return perf_event_link(prog, perf, description, cookie)


def _tracefs_probe(prog, kind, retprobe, label, location, pid, description, cookie):
    """A kprobe or uprobe defined in tracefs as a new event, opened, with ``prog`` attached;
    the event is deleted again when the returned ProbeLink is closed (or attaching fails)."""
    group = f"{'ret' if retprobe else ''}{kind}s" if kind == "kprobe" else (
        "uretprobes" if retprobe else "uprobes")
    name = re.sub(r"[^A-Za-z0-9_]", "_", f"pybpf_{os.getpid()}_{next(_counter)}_{label}")
    name = name[:MAX_EVENT_NAME]
    add_probe_event(kind, retprobe, group, name, location)
    try:
        perf = FD(perf_event_open(PERF_TYPE_TRACEPOINT, tracepoint_id(group, name),
                                  **_probe_target(pid), sample_type=0),
                  f"perf event of {description}")
        return perf_event_link(prog, perf, description, cookie, ProbeLink,
                               event=(kind, group, name))
    except BaseException:
        remove_probe_event(kind, group, name)
        raise


def _probe_target(pid):
    """perf_event_open's pid and cpu for a probe: one process (0: this one) on any CPU, or
    (pid -1) every process, on CPU 0 for the event (the program runs on every CPU)."""
    return dict(pid=pid, cpu=-1) if pid >= 0 else dict(pid=-1, cpu=0)


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError) as exc:
        raise AttachError(f"cannot read the PMU type from {path}: {exc}") from None


def _read_format_bit(device, field):
    """The config bit a PMU format file (``format/retprobe``: ``config:0``) names."""
    path = os.path.join(device, "format", field)
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(re.fullmatch(r"config:(\d+)", text).group(1))
    except (OSError, AttributeError) as exc:
        raise AttachError(f"cannot read the {field} bit of {device} from {path}: {exc}"
                          ) from None


# -- perf_event programs: sampling --------------------------------------------------------

def attach_perf_event(prog, frequency: Optional[int] = None, *, period: Optional[int] = None,
                      type: int = PERF_TYPE_SOFTWARE, config: int = PERF_COUNT_SW_CPU_CLOCK,
                      cpus: Optional[Sequence[int]] = None, pid: int = -1) -> List[Link]:
    """Open a sampling perf event on each CPU (``cpus``, default: every online CPU) and
    attach the PERF_EVENT program ``prog`` to each: it runs on every sample. By default the
    event is each CPU's clock (``PERF_COUNT_SW_CPU_CLOCK``), sampled ``frequency`` times a
    second, or every ``period`` events; ``pid`` limits it to one process. One Link per CPU.
    """
    check_type(prog, (ProgType.PERF_EVENT,), "a perf event")
    if (frequency is None) == (period is None):
        raise UsageError("give either a sampling frequency (samples per second) or a period "
                         "(events per sample)")
    rate = frequency if frequency is not None else period
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise UsageError(f"the sampling {'frequency' if period is None else 'period'} must be "
                         f"a positive integer, not {rate!r}")
    cpus = online_cpus() if cpus is None else list(cpus)
    links: List[Link] = []
    try:
        for cpu in cpus:
            description = f"perf_event type {type} config {config} on CPU {cpu}"
            perf = FD(perf_event_open(type, config, pid=pid, cpu=cpu, sample_period=rate,
                                      sample_type=0,
                                      attr_flags=PERF_ATTR_FREQ if frequency else 0),
                      f"perf event of {description}")
            links.append(perf_event_link(prog, perf, description))
    except BaseException:
        for link in links:
            link.close()
        raise
    return links
