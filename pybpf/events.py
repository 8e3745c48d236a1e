"""Event streams: records that BPF programs send to user space, and waiting for them.

A BPF program reports events by writing records into memory that user space maps: a BPF ring
buffer (:mod:`pybpf.ringbuf`, one ring shared by all CPUs) or a perf buffer
(:mod:`pybpf.perfbuf`, one ring per CPU). Both readers work the same way, defined here by
:class:`EventBuffer`:

- ``poll(callback, timeout=None)`` hands every waiting record to ``callback`` (waiting up to
  ``timeout`` seconds for the first one) and returns how many it handed over;
  ``consume(callback)`` never waits; ``for record in buffer.read(timeout)`` is the same as an
  iterator.
- A record is a ``memoryview`` of the shared memory itself, not a copy, valid only while the
  callback runs (or until the iterator moves on): the reader then tells the kernel it may
  reuse that memory, and releases the view, so a view kept by mistake raises ``ValueError``
  instead of showing bytes of a later record. ``bytes(record)`` keeps a copy.
- Given a ``record_type`` the callback receives decoded values instead (copies, safe to
  keep): see :func:`decoder`.

:class:`Poller` waits on several buffers and any other file descriptor (the pipe of
:class:`pybpf.signals.StopSignal`, a socket) at once, with ``epoll(7)``.
"""

from __future__ import annotations

import select
import struct
import sys
import time
import weakref
from typing import Any, Callable, Iterator, Optional

from . import syscalls
from .errors import UsageError
from .fd import FD, KernelObject
from .maps import READERS, Map

MAX_WAIT = 86400.0  # one wait's longest timeout, in seconds (epoll takes milliseconds in an int)


# --- decoding records -------------------------------------------------------------------------


def decoder(record_type) -> Optional[Callable]:
    """The function that decodes one record (a memoryview) as ``record_type`` says, or None
    for ``record_type=None`` (records stay memoryviews).

    - a ``struct`` format (``"<IQ16s"``): the tuple of its fields, or the value itself for a
      one-field format, decoded from the record's first bytes (a perf record is padded, so
      it may be longer than the format);
    - a ``construct`` type (``Struct(...)``): its parsed value;
    - a BTF type: the construct type that :mod:`pybpf.btf` builds for it
      (``construct_for(btf, type_id)``);
    - any other callable: called with the memoryview; what it returns is handed on (it must
      copy what it keeps).

    A record too short for its type raises :class:`~pybpf.errors.UsageError` naming both
    sizes.
    """
    if record_type is None:
        return None
    if isinstance(record_type, str):
        return _struct_decoder(record_type)
    construct = sys.modules.get("construct")  # whoever made a construct type imported it
    if construct is not None and isinstance(record_type, construct.Construct):
        return _construct_decoder(record_type, construct)
    if callable(record_type):
        return record_type
    raise UsageError(f"record_type must be a struct format such as \"<IQ\", a construct type, "
                     f"a callable or None (memoryviews), not {record_type!r}")


def _struct_decoder(fmt):
    """Records decoded with ``struct.Struct(fmt).unpack_from``."""
    try:
        layout = struct.Struct(fmt)
    except struct.error as exc:
        raise UsageError(f"record_type {fmt!r} is not a struct format: {exc}") from None
    unpack, size = layout.unpack_from, layout.size
    single = len(layout.unpack(bytes(size))) == 1

    def decode(record):
        try:
            values = unpack(record)
        except struct.error:
            raise _short(record, f"{fmt!r} ({size} bytes)") from None
        return values[0] if single else values

    return decode


def _construct_decoder(ctype, construct):
    """Records parsed by a construct type."""
    def decode(record):
        try:
            return ctype.parse(record)
        except construct.ConstructError as exc:
            raise UsageError(f"a record of {len(record)} bytes cannot be parsed by the "
                             f"record type: {exc}") from None

    return decode


def _short(record, what):
    return UsageError(f"a record of {len(record)} bytes is shorter than the record type "
                      f"{what}: the program writes another layout, or the type is wrong")


def _timeout(timeout):
    """``timeout`` (seconds, or None for no limit) as epoll wants it: -1 or seconds >= 0."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not timeout >= 0:
        raise UsageError(f"timeout must be None (wait as long as it takes) or a number of "
                         f"seconds >= 0, not {timeout!r}")
    return min(timeout, MAX_WAIT)


# --- what ring buffers and perf buffers share ---------------------------------------------


class EventBuffer(KernelObject):
    """A stream of records from BPF programs, read through memory shared with the kernel.

    Subclasses provide :meth:`_records` (a generator of the records waiting now, which moves
    the kernel's read position past each record once the next is asked for, or when it is
    closed), :meth:`filenos` (what to wait on) and :meth:`ready` (whether records may be
    waiting, read from the shared memory without a system call). One reader at a time: two
    loops reading one buffer at once would hand out records twice.
    """

    _epoll = None  # waits on filenos(); made by _start_waiting
    _reader = None  # weak reference to the _records generator running now

    def _start_waiting(self, record_type):
        """Set up decoding and waiting, once the subclass has opened its fds."""
        self._decode = decoder(record_type)
        self._epoll = select.epoll()
        for fd in self.filenos():
            self._epoll.register(fd, select.EPOLLIN)

    def _records(self) -> Iterator[memoryview]:
        raise NotImplementedError

    def filenos(self) -> list:
        """The file descriptors that become readable when records arrive."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether records (or a record being written) are waiting, by looking at the shared
        memory: no system call."""
        raise NotImplementedError

    def _begin(self):
        """The records generator, registered as the one reader (UsageError for a second)."""
        self._fd.fileno()  # UsageError once closed
        reader = self._reader() if self._reader is not None else None
        if reader is not None and reader.gi_frame is not None:  # not finished yet
            raise UsageError(f"{self._fd.what} is already being read (a read() iterator is "
                             f"still open, or poll() was called from its own callback); "
                             f"finish or close that one first")
        records = self._records()
        self._reader = weakref.ref(records)
        return records

    def consume(self, callback: Callable[[Any], Any]) -> int:
        """Hand every record waiting now to ``callback``, without waiting; how many.

        At most one ring's worth is read per call, so a producer faster than the callback
        cannot keep it from returning. When ``callback`` raises, the read position stays just
        past the record it was given (later records are read next time) and the exception
        propagates.
        """
        decode = self._decode
        records = self._begin()
        count = 0
        try:
            if decode is None:
                for record in records:
                    callback(record)
                    count += 1
            else:
                for record in records:
                    callback(decode(record))
                    count += 1
        finally:
            records.close()
        return count

    def poll(self, callback: Callable[[Any], Any], timeout: Optional[float] = None) -> int:
        """Hand every waiting record to ``callback``, first waiting up to ``timeout`` seconds
        (None: as long as it takes; 0: not at all) when none is there; how many."""
        wait = _timeout(timeout)
        count = self.consume(callback)
        if count or wait == 0:
            return count
        if self._epoll.poll(wait, 1):
            count = self.consume(callback)
        return count

    def read(self, timeout: Optional[float] = None) -> Iterator[Any]:
        """The records as they arrive, one at a time; the iteration ends once ``timeout``
        seconds pass without a record (None: never). A record is valid until the next one
        is asked for."""
        wait = _timeout(timeout)
        decode = self._decode
        deadline = None if wait < 0 else time.monotonic() + wait
        records = self._begin()  # UsageError now if closed; a close() later ends the loop
        while True:
            got = False
            try:
                for record in records:
                    got = True
                    yield record if decode is None else decode(record)
            finally:
                records.close()
            if self.closed:
                return
            if got:
                deadline = None if wait < 0 else time.monotonic() + wait
            else:
                left = -1 if deadline is None else deadline - time.monotonic()
                if deadline is not None and left <= 0:
                    return
                self._epoll.poll(left, 1)
            records = self._begin()

    @property
    def id(self) -> int:
        """The kernel's id of the map read (``bpftool map show id N``)."""
        return syscalls.obj_get_info_by_fd(self.fd, "map")["id"]

    def fileno(self) -> int:
        """The fd to wait on for readability (``select``, ``asyncio``'s ``add_reader``)."""
        fds = self.filenos()
        if len(fds) != 1:
            raise UsageError(f"{self._fd.what} has {len(fds)} fds to wait on (one per CPU); "
                             f"use filenos(), or a pybpf.events.Poller")
        return fds[0]

    def close(self) -> None:
        """Stop reading and release everything: the rings' memory, the fds. A read()
        iterator still open is closed first (its current record counts as read). Safe to
        call twice, also from a callback."""
        reader = self._reader() if self._reader is not None else None
        if reader is not None and not reader.gi_running:
            reader.close()
        if self._epoll is not None:
            self._epoll.close()
        self._release()
        super().close()

    def _release(self):
        """Unmap the rings and close the fds other than the map's (subclass)."""
        raise NotImplementedError


def unmap(mapping, views):
    """Release our ``views`` of an ``mmap`` and close it. A record view that something still
    holds (a callback that has not returned yet, or a view kept by mistake) keeps the memory
    mapped until it is garbage-collected: unmapping under it would crash the interpreter."""
    for view in views:
        view.release()
    try:
        mapping.close()
    except BufferError:
        pass


def own_map_fd(m, expected, reader):
    """A duplicate of map ``m``'s fd for a reader of it, after checking that ``m`` is a
    :class:`~pybpf.maps.Map` of type ``expected`` (UsageError naming the reader that fits
    otherwise)."""
    if not isinstance(m, Map):
        raise UsageError(f"{reader} reads a {expected.name} map (a pybpf.maps.Map: from "
                         f"Map.create, a Collection's maps, Map.from_pinned or Map.from_id), "
                         f"not {m!r}")
    if m.type != expected:
        other = READERS.get(m.type)
        hint = f"; read it with {other}" if other else ""
        raise UsageError(f"map {m.name!r} is a {m.type_name} map; {reader} reads "
                         f"{expected.name} maps{hint}")
    return FD.dup(m.fd, f"{reader} of map {m.name!r}", "open a new one")


# --- waiting on several sources -----------------------------------------------------------


class Poller:
    """Waits on several event buffers and other file descriptors at once (``epoll(7)``).

    ``add(buffer, callback)`` reads ``buffer``'s records into ``callback`` whenever it has
    some; ``add(source)`` or ``add(source, callback)`` for anything else with a ``fileno()``
    (or an int fd) wakes :meth:`poll` when it becomes readable and calls ``callback(source)``
    if given (it must read what made it readable: epoll keeps reporting it otherwise).
    """

    def __init__(self):
        self._epoll = select.epoll()
        self._buffers = {}  # EventBuffer -> callback
        self._others = {}  # fd -> (source, callback)
        self._owner = {}  # fd -> its EventBuffer, or None for other sources

    def add(self, source, callback: Optional[Callable] = None) -> None:
        """Wait on ``source`` too: an :class:`EventBuffer` (``callback`` receives its
        records) or any file descriptor (``callback``, if given, receives ``source``)."""
        if isinstance(source, EventBuffer):
            if not callable(callback):
                raise UsageError(f"Poller.add({source._fd.what}): give the callback that "
                                 f"receives its records")
            fds = source.filenos()
            self._buffers[source] = callback
        else:
            fd = source if isinstance(source, int) and not isinstance(source, bool) \
                else getattr(source, "fileno", lambda: None)()
            if not isinstance(fd, int) or fd < 0:
                raise UsageError(f"Poller.add: {source!r} is neither an event buffer nor a "
                                 f"file descriptor (an int, or an object with fileno())")
            fds = [fd]
            self._others[fd] = (source, callback)
        for fd in fds:
            if fd in self._owner:
                raise UsageError(f"Poller.add: fd {fd} is already being waited on")
            self._epoll.register(fd, select.EPOLLIN)
            self._owner[fd] = source if isinstance(source, EventBuffer) else None

    def remove(self, source) -> None:
        """Stop waiting on ``source`` (before closing it)."""
        fds = [fd for fd, owner in self._owner.items()
               if owner is source or (owner is None and self._others[fd][0] is source)]
        if not fds:
            raise UsageError(f"Poller.remove: {source!r} was not added")
        for fd in fds:
            del self._owner[fd]
            self._others.pop(fd, None)
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass  # closed already: the kernel forgot it
        self._buffers.pop(source, None)

    def poll(self, timeout: Optional[float] = None) -> int:
        """Wait up to ``timeout`` seconds (None: as long as it takes) until a source is
        ready, then read every ready buffer into its callback and call the callbacks of the
        other ready sources; the number of records read. Buffers with records already
        waiting are read without waiting."""
        wait = _timeout(timeout)
        for buffer in self._buffers:
            if buffer.closed:
                raise UsageError(f"Poller.poll: {buffer._fd.what} is closed; remove it from "
                                 f"the Poller before closing it")
        waiting = [buffer for buffer in self._buffers if buffer.ready()]
        ready_buffers = dict.fromkeys(waiting)
        others = []
        for fd, _ in self._epoll.poll(0 if waiting else wait):
            owner = self._owner.get(fd)
            if owner is not None:
                ready_buffers[owner] = None
            elif fd in self._others:
                others.append(self._others[fd])
        count = 0
        for buffer in ready_buffers:
            count += buffer.consume(self._buffers[buffer])
        for source, callback in others:
            if callback is not None:
                callback(source)
        return count

    def close(self) -> None:
        """Close the epoll fd (the sources stay open). Safe to call twice."""
        self._epoll.close()
        self._buffers.clear()
        self._others.clear()
        self._owner.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
