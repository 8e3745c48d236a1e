"""Perf buffers (``BPF_MAP_TYPE_PERF_EVENT_ARRAY``, Linux 4.3): records from BPF programs
through one perf ring per CPU.

Before ring buffers, programs sent events with ``bpf_perf_event_output(ctx, map, flags, data,
size)``, which is still how many objects and older kernels do it. The map holds, for each
CPU, the fd of a perf event of the software type ``PERF_COUNT_SW_BPF_OUTPUT`` opened on that
CPU; the helper (with ``BPF_F_CURRENT_CPU``) appends a sample to the ring of the current
CPU's event. :class:`PerfBuffer` opens those events, maps their rings, stores their fds in the
map and reads the samples.

Each event's ring is ``mmap``-ed as 1 + 2^n pages, read-write (a read-only mapping would put
the ring in overwrite mode): the first is ``struct perf_event_mmap_page``, whose ``data_head``
the kernel advances as it writes and whose ``data_tail`` the reader advances as it reads; the
rest is the data area, mapped once, so a record can run past its end and continue at its
start. Records start with ``struct perf_event_header`` (u32 type, u16 misc, u16 size):

- ``PERF_RECORD_SAMPLE``: a u32 size and the program's bytes, padded so that size + 4 is a
  multiple of 8 (the record handed out includes the padding, as libbpf's does);
- ``PERF_RECORD_LOST``: u64 id, u64 count: the kernel dropped ``count`` samples because the
  ring was full. It is written before the next sample that fits, so drops show up once the
  reader makes room and the program writes again. :attr:`PerfBuffer.lost` adds them up per
  CPU, and ``lost_callback(cpu, count)`` is told of each.

Samples are handed out without copying, except the few that wrap around the end of a ring,
which are copied into one piece. The memory ordering is as for ring buffers (see
:mod:`pybpf.ringbuf`): ``data_head`` is loaded before the records, ``data_tail`` stored after.

CPUs that are offline when the buffer is opened get no event (perf cannot open one there), as
with libbpf: a program running on such a CPU once it comes online fails to output (ENOENT),
and those samples are counted nowhere. :attr:`PerfBuffer.skipped_cpus` lists them; so are CPUs
beyond the map's ``max_entries``.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Optional

from . import layouts, syscalls
from .abi import (
    PERF_COUNT_SW_BPF_OUTPUT,
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    PERF_SAMPLE_RAW,
    PERF_TYPE_SOFTWARE,
    MapType,
)
from .errors import MapKeyError, UsageError
from .events import EventBuffer, own_map_fd, unmap
from .fd import FD, map_shared
from .host import online_cpus, possible_cpus
from .maps import PAGE_SIZE, Map
from .perf import perf_event_open

_PAGE = layouts.perf_event_mmap_page.offsets
_HEAD = _PAGE["data_head"] // 8  # u64 index of data_head in the control page
_TAIL = _PAGE["data_tail"] // 8
_U32 = struct.Struct("<I")
_LOST = struct.Struct("<8xQ")  # PERF_RECORD_LOST after its header: id, lost


def _corrupt(name, cpu, position, length):
    return UsageError(f"perf ring of {name!r} on CPU {cpu}: the record at {position} says it "
                      f"is {length} bytes long; the ring is not being read as the kernel "
                      f"writes it (is another process reading it too?)")


class _CpuRing:
    """One CPU's perf event: its fd, its mapping and the views the reader uses."""

    def __init__(self, cpu, fd, mapping, data_pages):
        self.cpu = cpu
        self.fd = fd
        self.mapping = mapping
        whole = memoryview(mapping)
        control = whole[:PAGE_SIZE].cast("Q")
        self.size = data_pages * PAGE_SIZE
        # the data area is the page after the control page (the kernel's data_offset is
        # always PAGE_SIZE: perf_event_init_userpage)
        self.data = whole[PAGE_SIZE:PAGE_SIZE + self.size]
        self.words = self.data.cast("I")
        self.control = control
        self.views = [self.words, self.data, control, whole]


class PerfBuffer(EventBuffer):
    """Reads the samples BPF programs write to a ``PERF_EVENT_ARRAY`` map (see the module's
    description), with the API of :class:`~pybpf.ringbuf.RingBuffer`.

    ``page_count`` data pages per CPU (a power of 2). Pollers are woken every
    ``wakeup_events`` samples, or with ``wakeup_watermark`` once more than that many bytes
    wait in a CPU's ring (the kernel caps it at half the ring); a wait with a timeout reads
    whatever is there when it expires. During a
    callback :attr:`cpu` is the CPU whose ring the record came from.
    """

    def __init__(self, perf_map: Map, *, page_count: int = 64, record_type=None,
                 wakeup_events: int = 1, wakeup_watermark: Optional[int] = None,
                 lost_callback: Optional[Callable[[int, int], object]] = None):
        self._rings: List[_CpuRing] = []
        self._fd = own_map_fd(perf_map, MapType.PERF_EVENT_ARRAY, "PerfBuffer")
        try:
            self.name = perf_map.name
            if isinstance(page_count, bool) or not isinstance(page_count, int) or \
                    page_count < 1 or page_count & (page_count - 1):
                raise UsageError(f"page_count must be a power of 2 (1, 2, 4 ... pages of "
                                 f"{PAGE_SIZE} bytes per CPU), not {page_count!r}")
            self.page_count = page_count
            self.lost_callback = lost_callback
            self.cpu: Optional[int] = None
            self._lost: Dict[int, int] = {}
            cpus = possible_cpus()
            online = set(online_cpus())
            slots = min(cpus, perf_map.max_entries)
            self.skipped_cpus = [cpu for cpu in range(cpus) if cpu >= slots or
                                 cpu not in online]
            for cpu in range(slots):
                if cpu in online:
                    self._open_cpu(cpu, wakeup_events, wakeup_watermark)
            self._start_waiting(record_type)
        except BaseException:
            self.close()
            raise

    def _open_cpu(self, cpu, wakeup_events, wakeup_watermark):
        """Open the BPF output event of ``cpu``, map its ring, put its fd in the map."""
        fd = FD(perf_event_open(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT, pid=-1, cpu=cpu,
                                sample_type=PERF_SAMPLE_RAW, wakeup_events=wakeup_events,
                                wakeup_watermark=wakeup_watermark),
                f"perf event of {self.name!r} on CPU {cpu}")
        try:
            mapping = map_shared(fd.fileno(), (1 + self.page_count) * PAGE_SIZE, 0, True,
                                 f"the perf ring of {self.name!r} on CPU {cpu}")
        except BaseException:
            fd.close()
            raise
        self._rings.append(_CpuRing(cpu, fd, mapping, self.page_count))
        self._lost[cpu] = 0
        syscalls.map_update_elem(self.fd, _U32.pack(cpu), _U32.pack(fd.fileno()))

    def filenos(self) -> List[int]:
        """The perf events' fds, one per CPU read."""
        return [ring.fd.fileno() for ring in self._rings]

    def ready(self) -> bool:
        self._fd.fileno()  # UsageError once closed
        return any(ring.control[_HEAD] != ring.control[_TAIL] for ring in self._rings)

    @property
    def cpus(self) -> List[int]:
        """The CPUs whose rings are read."""
        return [ring.cpu for ring in self._rings]

    @property
    def lost(self) -> int:
        """Samples the kernel dropped because a ring was full (all CPUs), as reported by the
        PERF_RECORD_LOST records read so far."""
        return sum(self._lost.values())

    @property
    def lost_per_cpu(self) -> Dict[int, int]:
        """:attr:`lost` by CPU."""
        return dict(self._lost)

    def _records(self):
        """The samples waiting in each CPU's ring up to its ``data_head`` (read first),
        oldest first per CPU, as memoryviews; ``data_tail`` is stored past each record when
        the next is asked for or the generator is closed. LOST records are counted."""
        for ring in self._rings:
            control = ring.control
            head = control[_HEAD]
            tail = control[_TAIL]
            if tail == head:
                continue
            self.cpu = ring.cpu
            data, words, size = ring.data, ring.words, ring.size
            mask = size - 1
            try:
                while tail < head:
                    off = tail & mask
                    index = off >> 2
                    kind = words[index]
                    length = words[index + 1] >> 16  # header.size: the high half
                    if length < 8:
                        raise _corrupt(self.name, ring.cpu, tail, length)
                    tail += length
                    if off + length <= size:
                        if kind == PERF_RECORD_SAMPLE:
                            view = data[off + 12:off + 12 + words[index + 2]]
                            yield view
                            view.release()
                            control[_TAIL] = tail
                            continue
                        record, base = data, off
                    else:  # runs past the end of the ring: the one case that copies
                        record = bytes(data[off:]) + bytes(data[:off + length - size])
                        base = 0
                    if kind == PERF_RECORD_SAMPLE:
                        raw = _U32.unpack_from(record, base + 8)[0]
                        yield memoryview(record)[base + 12:base + 12 + raw]
                        control[_TAIL] = tail
                    elif kind == PERF_RECORD_LOST:
                        count = _LOST.unpack_from(record, base + 8)[0]
                        self._lost[ring.cpu] += count
                        control[_TAIL] = tail
                        if self.lost_callback is not None:
                            self.lost_callback(ring.cpu, count)
            finally:
                control[_TAIL] = tail

    def _release(self):
        for ring in self._rings:
            if not self._fd.closed:
                try:
                    syscalls.map_delete_elem(self._fd.fileno(), _U32.pack(ring.cpu))
                except MapKeyError:
                    pass  # already removed (by another user of the map)
            unmap(ring.mapping, ring.views)
            ring.fd.close()
        self._rings = []

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<PerfBuffer {self.name!r} cpus={self.cpus} pages={self.page_count} {state}>"
