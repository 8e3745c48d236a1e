"""BPF ring buffers (``BPF_MAP_TYPE_RINGBUF``, Linux 5.8): records from BPF programs, read in
place through shared memory.

A ring buffer is one ring of ``size`` bytes (a power-of-2 multiple of the page size) that all
CPUs write into and one reader consumes. A program reserves room for a record
(``bpf_ringbuf_reserve``), fills it and submits or discards it; ``bpf_ringbuf_output`` does
all three with a copy. The map is read through ``mmap``:

- the **consumer page** (offset 0, read-write): ``consumer_pos``, how far the reader has read;
- the **producer page** (next page, read-only): ``producer_pos``, how far the kernel has
  reserved;
- the **data area** (read-only, after the producer page), mapped *twice* in a row: a record
  that runs past the end of the ring continues in the second mapping, so every record is one
  contiguous run of memory and is handed out without copying.

Positions only grow; ``position & (size - 1)`` is the offset in the ring. Each record starts
with an 8-byte header: a u32 length whose top bits are ``BPF_RINGBUF_BUSY_BIT`` (reserved, not
yet submitted) and ``BPF_RINGBUF_DISCARD_BIT`` (discarded: skip it), then a u32 the kernel
uses to find its page. Records are padded to 8 bytes. The reader hands out the records from
``consumer_pos`` up to ``producer_pos`` in order, skips discarded ones, stops at a busy one
(records after it may be complete, but the order is kept), and stores the new
``consumer_pos`` after each record has been seen, which frees its room for new records.

**Memory ordering.** The kernel writes a record's header (BUSY) before it publishes the new
``producer_pos`` (a release store), and clears BUSY with an atomic exchange after the data is
written. The reader must therefore load ``producer_pos`` before the headers and data it
covers, and store ``consumer_pos`` only after it has read the record (libbpf uses acquire
loads and a release store). Python has no barriers; pybpf reads and writes the shared memory
with plain loads and stores through ``memoryview``, in program order. That is correct on
x86-64, whose memory model (TSO) never reorders loads with loads nor stores after earlier
loads. On arm64 the hardware may reorder them; pybpf relies on the hundreds of dependent
instructions the interpreter executes between the producer-position load and the record's
loads, and between those and the consumer-position store, which is not a guarantee the
architecture gives. pybpf supports x86_64 and aarch64 (pybpf.libc).

**Losses.** When the ring is full, ``bpf_ringbuf_reserve`` fails and the record is lost; only
the program knows. :func:`pybpf.asm.macros.ringbuf_reserve` reserves and counts such failures
in a per-CPU counter map, which :class:`RingBuffer` reports as :attr:`RingBuffer.drops`.
"""

from __future__ import annotations

import struct
from typing import List, Optional

from . import features, syscalls
from .abi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ, MapType
from .errors import UsageError
from .events import EventBuffer, own_map_fd, unmap
from .fd import FD, map_shared
from .host import possible_cpus
from .maps import PAGE_SIZE, Map, check_ring_size

_BUSY = BPF_RINGBUF_BUSY_BIT
_DISCARD = BPF_RINGBUF_DISCARD_BIT
_LENGTH = BPF_RINGBUF_DISCARD_BIT - 1  # the length bits of a header
_PAD = BPF_RINGBUF_HDR_SZ + 7  # header + rounding up to 8: a record's room is (len + _PAD) & ~7
_U32 = struct.Struct("<I")


class RingBuffer(EventBuffer):
    """Reads the records of a ``RINGBUF`` map (see the module's description).

    ``ringbuf`` is a :class:`~pybpf.maps.Map` (from ``Map.create``, a
    :class:`~pybpf.collection.Collection` or ``Map.from_pinned``/``from_id``); the reader
    keeps its own duplicate of the map's fd, so either can be closed first. ``record_type``
    decodes records (:func:`pybpf.events.decoder`); ``drops`` is the per-CPU counter map
    that :func:`pybpf.asm.macros.ringbuf_reserve` increments (element ``drops_index``).
    The object itself can be passed where a program wants the map (``maps={"events": rb}``).
    """

    def __init__(self, ringbuf: Map, *, record_type=None, drops: Optional[Map] = None,
                 drops_index: int = 0):
        self._mappings = []
        self._views = []
        self._fd = own_map_fd(ringbuf, MapType.RINGBUF, "RingBuffer")
        try:
            self.name = ringbuf.name
            self.size = ringbuf.max_entries
            self._drops = _drop_counter(drops, drops_index)
            self._ncpus = possible_cpus()
            self._map_rings()
            self._start_waiting(record_type)
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, size: int, *, name: str = "ringbuf", **options) -> "RingBuffer":
        """A new ``RINGBUF`` map of ``size`` bytes and its reader (UsageError unless
        ``size`` is a power-of-2 multiple of the page size; NotSupportedError on kernels
        without ring buffers)."""
        check_ring_size(size, f"RingBuffer.create({size!r})")
        features.require("map_type", MapType.RINGBUF, what="RingBuffer")
        with Map.create(MapType.RINGBUF, 0, 0, size, name=name) as m:
            return cls(m, **options)

    @classmethod
    def from_pinned(cls, path: str, **options) -> "RingBuffer":
        """The reader of the ``RINGBUF`` map pinned at ``path`` (e.g. by another process)."""
        with Map.from_pinned(path) as m:
            return cls(m, **options)

    @classmethod
    def from_id(cls, map_id: int, **options) -> "RingBuffer":
        """The reader of the ``RINGBUF`` map with kernel id ``map_id``."""
        with Map.from_id(map_id) as m:
            return cls(m, **options)

    def _map_rings(self):
        """mmap the consumer page (read-write) and the producer page with the data area
        mapped twice after it (read-only)."""
        fd, what = self.fd, f"ring buffer {self.name!r}"
        consumer = map_shared(fd, PAGE_SIZE, 0, True, f"the consumer page of {what}")
        self._mappings.append(consumer)
        producer = map_shared(fd, PAGE_SIZE + 2 * self.size, PAGE_SIZE, False,
                              f"the producer page and data of {what}")
        self._mappings.append(producer)
        whole = memoryview(producer)
        self._use(memoryview(consumer)[:8], whole[:8], whole[PAGE_SIZE:])
        self._views.append(whole)

    def _use(self, consumer, producer, data):
        """Read the ring through these views: of ``consumer_pos`` and ``producer_pos`` (8
        bytes each) and of the data area mapped twice (``2 * size`` bytes)."""
        self._consumer = consumer.cast("Q")
        self._producer = producer.cast("Q")
        self._data = data
        self._words = data.cast("I")  # the same bytes as u32s: record headers
        self._mask = self.size - 1
        self._views = [self._words, self._data, self._producer, self._consumer]

    def filenos(self) -> List[int]:
        """The map's fd: readable when records wait."""
        return [self.fd]

    def ready(self) -> bool:
        self._fd.fileno()  # UsageError once closed
        return self._producer[0] != self._consumer[0]

    @property
    def pending(self) -> int:
        """Bytes written or reserved by producers and not read yet (headers included)."""
        self._fd.fileno()  # UsageError once closed
        return self._producer[0] - self._consumer[0]

    def _records(self):
        """The records from ``consumer_pos`` on, as memoryviews, oldest first (see the
        module's description); at most one ring's worth. ``consumer_pos`` is stored past a
        record when the next one is asked for or the generator is closed."""
        words, data, consumer, producer = self._words, self._data, self._consumer, \
            self._producer
        mask = self._mask
        cons = consumer[0]
        limit = cons + self.size
        try:
            prod = producer[0]
            while cons < prod:
                while cons < prod:
                    off = cons & mask
                    header = words[off >> 2]
                    if header >= _DISCARD:  # BUSY or DISCARD
                        if header & _BUSY:
                            return
                        cons += ((header & _LENGTH) + _PAD) & ~7
                        continue
                    cons += (header + _PAD) & ~7
                    view = data[off + 8:off + 8 + header]
                    yield view
                    view.release()
                    consumer[0] = cons
                if cons >= limit:
                    return
                prod = producer[0]
        finally:
            consumer[0] = cons

    def pin(self, path: str) -> None:
        """Pin the map at ``path`` on a bpf file system, for other processes'
        :meth:`from_pinned`."""
        syscalls.obj_pin(self.fd, path)

    @property
    def drops(self) -> Optional[int]:
        """Records lost because the ring was full, as counted by the producers in the
        ``drops`` map (all CPUs); None without one."""
        per_cpu = self.drops_per_cpu
        return None if per_cpu is None else sum(per_cpu)

    @property
    def drops_per_cpu(self) -> Optional[List[int]]:
        """:attr:`drops` per possible CPU (index = CPU id); None without a ``drops`` map."""
        if self._drops is None:
            return None
        counter, key = self._drops
        raw = syscalls.map_lookup_elem(counter.fileno(), key, 8 * self._ncpus)
        return list(struct.unpack(f"<{self._ncpus}Q", raw))

    def _release(self):
        for view in self._views:
            view.release()
        for mapping in self._mappings:
            unmap(mapping, ())
        self._mappings = []
        if getattr(self, "_drops", None) is not None:
            self._drops[0].close()

    def __repr__(self):
        state = "closed" if self.closed else f"fd={self.fd}"
        return f"<RingBuffer {self.name!r} size={self.size} {state}>"


def _drop_counter(drops, index):
    """(own FD of the ``drops`` map, key bytes) after checking it is a PERCPU_ARRAY of u64
    counters with element ``index``; None for no map."""
    if drops is None:
        return None
    if not isinstance(drops, Map) or drops.type != MapType.PERCPU_ARRAY or \
            drops.value_size != 8 or drops.key_size != 4:
        raise UsageError(f"drops must be a PERCPU_ARRAY map with 4-byte keys and 8-byte "
                         f"(u64) values, as pybpf.asm.macros.ringbuf_reserve counts into, "
                         f"not {drops!r}")
    if isinstance(index, bool) or not isinstance(index, int) or \
            not 0 <= index < drops.max_entries:
        raise UsageError(f"drops_index must be an element of map {drops.name!r} "
                         f"(0..{drops.max_entries - 1}), not {index!r}")
    return FD.dup(drops.fd, f"drop counter {drops.name!r}"), _U32.pack(index)
