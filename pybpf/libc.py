"""The C library entry points pybpf calls through ``ctypes``: the raw system calls.

Python has no ``bpf()`` or ``perf_event_open()`` wrapper, so they are made with libc's generic
``syscall(number, ...)``; their numbers differ per architecture (``arch/*/syscall tables``).
Each function here returns the kernel's answer as an int (``-errno`` on failure) and nothing
else: deciding what a failure means is :mod:`pybpf.errnos`'s job. These are the only places
pybpf touches libc, so tests replace them to exercise every error path without a kernel.
"""

import ctypes
import errno
import fcntl
import os

from .errors import SyscallError, errno_name

_SYSCALL_NUMBERS = {  # machine: (bpf, perf_event_open)
    "x86_64": (321, 298),
    "aarch64": (280, 241),
}
_MACHINE = os.uname().machine  # what platform.machine() says, without importing platform

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_numbers: list = []  # [bpf, perf_event_open] once known


def _syscall_number(index):
    """The bpf (0) or perf_event_open (1) system call number here; SyscallError if unknown."""
    if not _numbers:
        numbers = _SYSCALL_NUMBERS.get(_MACHINE)
        if numbers is None:
            raise SyscallError(errno.ENOSYS, "bpf", f"pybpf does not know the system call "
                               f"numbers for {_MACHINE!r}; supported: x86_64, aarch64")
        _numbers.extend(ctypes.c_long(n) for n in numbers)
    return _numbers[index]


def sys_bpf(cmd, attr):
    """bpf(cmd, attr, len(attr)): the result, or -errno. ``attr`` is bytes or a ctypes array."""
    # cmd and size are C ints in the kernel's prototype, so ctypes' default int conversion fits
    ret = _libc.syscall(_syscall_number(0), int(cmd), attr, len(attr))
    return ret if ret >= 0 else -ctypes.get_errno()


def sys_perf_event_open(attr, pid, cpu, group_fd, flags):
    """perf_event_open(attr, pid, cpu, group_fd, flags): an fd, or -errno."""
    ret = _libc.syscall(_syscall_number(1), attr, ctypes.c_long(pid), ctypes.c_long(cpu),
                        ctypes.c_long(group_fd), ctypes.c_ulong(flags))
    return ret if ret >= 0 else -ctypes.get_errno()


def sys_ioctl(fd, request, arg):
    """ioctl(fd, request, arg): the result, or -errno."""
    ret = _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg))
    return ret if ret >= 0 else -ctypes.get_errno()


def above_stdio(fd):
    """``fd`` moved to a number >= 3 (close-on-exec), so that a daemon started with stdin,
    stdout or stderr closed keeps its objects apart from them (a later open() of "stdout"
    must not land on a map). The original ``fd`` is closed either way."""
    if fd >= 3:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError as exc:
        raise SyscallError(exc.errno, "fcntl", (
            f"fcntl(F_DUPFD_CLOEXEC) could not move new fd {fd} above 2: "
            f"{errno_name(exc.errno)} ({exc.strerror}); raise the open-files limit "
            f"(ulimit -n) or close some files")) from None
    finally:
        os.close(fd)
