"""File descriptors: how user space holds a kernel object, and how pybpf owns one.

Every bpf object (map, program, link, BTF blob) and every perf event is a file descriptor: the
kernel keeps the object alive while some fd (or a pin, or an attachment) refers to it. An fd
is only a number, and the kernel hands out the lowest free number again as soon as one is
closed: a number kept after ``close()`` names whatever is opened next, so a closed map's
number may read *another* map. :class:`FD` makes that impossible: it is closed exactly once,
and afterwards :meth:`FD.fileno` raises :class:`~pybpf.errors.UsageError` instead of handing
out a stale number. An FD that is garbage-collected while still open is closed then, with a
``ResourceWarning`` (shown by ``python -X dev`` or ``-W default``), like an unclosed file.

:class:`KernelObject` is the base of everything that owns one kernel object through an FD:
``fd``, ``close()``, ``with``. :func:`map_shared` maps an fd's memory (a ring buffer's
pages, a perf event's ring) into the process.
"""

import fcntl
import mmap
import os
import warnings

from .errors import SyscallError, UsageError, errno_name


class FD:
    """One open file descriptor, owned: closed once, never used after."""

    __slots__ = ("_number", "what", "hint", "__weakref__")

    def __init__(self, number: int, what: str, hint: str = ""):
        self._number = number
        self.what = what  # "map 'exec_count'": for messages
        self.hint = hint  # how to get a new one, for the "closed" message

    @classmethod
    def dup(cls, number: int, what: str, hint: str = "") -> "FD":
        """A new FD for the open file behind fd ``number`` (``F_DUPFD_CLOEXEC``, numbered from
        3 up), owned independently: either can be closed first."""
        try:
            return cls(fcntl.fcntl(number, fcntl.F_DUPFD_CLOEXEC, 3), what, hint)
        except OSError as exc:
            raise SyscallError(exc.errno, "fcntl", (
                f"cannot duplicate the fd of {what}: {errno_name(exc.errno)} "
                f"({exc.strerror}); raise the open-files limit (ulimit -n) or close some "
                f"files")) from None

    def fileno(self) -> int:
        """The fd number; UsageError once closed."""
        if self._number < 0:
            raise UsageError(f"{self.what} is closed{'; ' + self.hint if self.hint else ''}")
        return self._number

    @property
    def closed(self) -> bool:
        return self._number < 0

    def release(self) -> int:
        """The fd number, handed over to a new owner: this FD no longer closes it."""
        number = self.fileno()
        self._number = -1
        return number

    def close(self) -> None:
        """Close the fd; later calls do nothing."""
        number, self._number = self._number, -1
        if number >= 0:
            os.close(number)

    def __del__(self):
        if getattr(self, "_number", -1) >= 0:
            warnings.warn(f"pybpf: {self.what} (fd {self._number}) was never closed; "
                          f"closing it now", ResourceWarning, stacklevel=2)
            self.close()

    def __repr__(self):
        return f"<FD {self.what} {'closed' if self._number < 0 else self._number}>"


class KernelObject:
    """Base of the objects that own one kernel object through an :class:`FD` (``self._fd``)."""

    _fd: FD

    @property
    def fd(self) -> int:
        """The object's file descriptor; UsageError once it is closed."""
        return self._fd.fileno()

    @property
    def closed(self) -> bool:
        return self._fd.closed

    def close(self) -> None:
        """Release the fd (the kernel frees the object when nothing else holds it). Safe to
        call twice."""
        self._fd.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def map_shared(fd, length, offset, writable, what):
    """mmap(2) ``length`` bytes of ``fd`` from ``offset``, shared with the kernel (read-write
    or read-only): how ring buffers and perf rings are read. SyscallError saying what could
    not be mapped, instead of a bare OSError.

    The ``mmap.mmap`` returned keeps its own duplicate of ``fd`` until it is closed (Python
    < 3.13 has no ``trackfd=False``); it cannot be closed while a memoryview of it exists.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        return mmap.mmap(fd, length, mmap.MAP_SHARED, prot, offset=offset)
    except OSError as exc:
        mode = "read-write" if writable else "read-only"
        raise SyscallError(exc.errno, "mmap", (
            f"mmap of {what} ({length} bytes at offset {offset}, {mode}) failed: "
            f"{errno_name(exc.errno)} ({exc.strerror}); EPERM: the object was opened "
            f"read-only or does not allow this mapping; ENOMEM: too little memory or address "
            f"space")) from None
