"""perf_event_open(2): the kernel's performance events, which BPF programs attach to and write to.

A perf event is a file descriptor for something the kernel counts or samples: a tracepoint
(``PERF_TYPE_TRACEPOINT``, config = the tracepoint's id in tracefs), a software clock, a
kprobe or uprobe (their PMUs' dynamic types), or the output channel of a BPF program
(``PERF_COUNT_SW_BPF_OUTPUT``). A tracing program is attached to an event with a bpf_link or
the ``PERF_EVENT_IOC_SET_BPF`` ioctl; a perf buffer maps an event's ring into memory.
"""

from . import layouts, libc
from .abi import PERF_ATTR_WATERMARK, PERF_FLAG_FD_CLOEXEC, PERF_SAMPLE_RAW
from .errnos import perf_error


def perf_event_open(type, config, pid=-1, cpu=0, group_fd=-1, flags=PERF_FLAG_FD_CLOEXEC,
                    sample_period=1, sample_type=PERF_SAMPLE_RAW, wakeup_events=1,
                    attr_flags=0, wakeup_watermark=None, **fields):
    """perf_event_open(2): an fd for the event ``type``/``config`` (a tracepoint id...).

    ``flags`` are the system call's (``PERF_FLAG_*``); ``attr_flags`` is the attr's own flag
    word (``PERF_ATTR_DISABLED``, ``PERF_ATTR_WATERMARK``...). Pollers of the event are woken
    every ``wakeup_events`` samples, or, with ``wakeup_watermark``, once more than that many
    bytes wait in its ring (the two share one field of the attr). ``fields`` sets any other
    ``struct perf_event_attr`` field by its kernel name.
    """
    if wakeup_watermark is not None:
        attr_flags |= PERF_ATTR_WATERMARK
        wakeup_events = wakeup_watermark
    layout = layouts.PerfEventAttr
    attr = layout.pack(type=type, size=layout.size, config=config, sample_period=sample_period,
                       sample_type=sample_type, flags=attr_flags, wakeup_events=wakeup_events,
                       **fields)
    ret = libc.sys_perf_event_open(attr, pid, cpu, group_fd, flags)
    if ret < 0:
        raise perf_error("perf_event_open", -ret)
    return libc.above_stdio(ret)


def perf_event_ioctl(fd, request, arg=0):
    """ioctl(2) on a perf event fd: PERF_EVENT_IOC_SET_BPF, _ENABLE, _DISABLE."""
    ret = libc.sys_ioctl(fd, request, arg)
    if ret < 0:
        raise perf_error(f"ioctl({request:#x})", -ret)
    return ret
