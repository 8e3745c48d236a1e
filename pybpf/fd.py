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
``fd``, ``close()``, ``with``.
"""

import os
import warnings

from .errors import UsageError


class FD:
    """One open file descriptor, owned: closed once, never used after."""

    __slots__ = ("_number", "what", "hint", "__weakref__")

    def __init__(self, number: int, what: str, hint: str = ""):
        self._number = number
        self.what = what  # "map 'exec_count'": for messages
        self.hint = hint  # how to get a new one, for the "closed" message

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
