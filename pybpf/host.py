"""Facts about the running host that pybpf needs and reads from /proc and /sys.

- **CPUs**: per-CPU maps keep one value per *possible* CPU (``/sys/devices/system/cpu/possible``),
  not per online one, and perf buffers open one ring per CPU.
- **Capabilities**: the bpf() commands need CAP_BPF, tracing also CAP_PERFMON, listing other
  processes' objects CAP_SYS_ADMIN (which grants all three: CAP_BPF and CAP_PERFMON were split
  out of it in Linux 5.8). The effective set is ``CapEff`` in ``/proc/self/status``.
- **File systems**: pinning needs a bpf file system (bpffs); which file system a path is on is
  read from ``/proc/self/mounts``.
- **The kernel release**: ``uname -r``, as (major, minor, patch), for messages and for the
  ``LINUX_KERNEL_VERSION`` of objects (Ubuntu's /proc/version_signature gives the real one).
- **The kernel's configuration** (``/boot/config-$(uname -r)`` or ``/proc/config.gz``) and
  **symbols** (``/proc/kallsyms``), which objects' ``__kconfig`` and ``__ksym`` externs read.
- **perf_event_max_stack**: the most frames a stack trace map may hold per stack.
- **What a process holds**: each bpf object fd a process has open shows the object's id in
  ``/proc/<pid>/fdinfo/<fd>`` (``prog_id:``, ``map_id:``, ``link_id:``).
"""

import gzip
import os
import re
import zlib

from .errors import ExternError, UsageError

BPFFS = "/sys/fs/bpf"  # where a bpf file system is mounted by convention

# Capability numbers (include/uapi/linux/capability.h).
CAPABILITY_BITS = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def possible_cpus():
    """How many CPUs the kernel may ever bring online (per-CPU map values have one slot each)."""
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())


def online_cpus():
    """The ids of the CPUs online now (``/sys/devices/system/cpu/online``), in order."""
    with open("/sys/devices/system/cpu/online") as f:
        return cpu_ids(f.read())


def cpu_ids(text):
    """The CPU ids of a kernel cpu list such as ``0-3,8``: ``[0, 1, 2, 3, 8]``."""
    ids = []
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        ids.extend(range(int(first), int(last or first) + 1))
    return ids


def parse_cpu_list(text):
    """The number of CPUs in a kernel cpu list such as ``0-3,8``: the highest id + 1."""
    return max(cpu_ids(text)) + 1


def effective_capabilities():
    """This process's effective capability set as a bit mask (``CapEff`` in /proc/self/status);
    0 when it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_capabilities(capability):
    """The capabilities named in ``capability`` (e.g. ``"CAP_PERFMON (and CAP_BPF)"``) that
    this process lacks."""
    have = effective_capabilities()
    admin = have >> CAPABILITY_BITS["CAP_SYS_ADMIN"] & 1
    return [name for name in re.findall(r"CAP_[A-Z_]+", capability)
            if not (admin or have >> CAPABILITY_BITS[name] & 1)]


def filesystem_type(path):
    """The type of the file system ``path`` lives on (longest mount point in /proc/self/mounts)."""
    real = os.path.realpath(path)
    best, kind = "", None
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point, fstype = line.split()[1:3]
            point = point.replace("\\040", " ")
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def require_bpffs(path):
    """UsageError unless ``path`` is on a bpf file system; it says how to mount one.

    Outside bpffs the kernel answers BPF_OBJ_PIN with EPERM only, which would read as a
    missing capability.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if filesystem_type(directory) != "bpf":
        raise UsageError(f"cannot pin at {path}: {directory} is not on a bpf file system; "
                         f"mount one first, as root: mount -t bpf bpf {BPFFS}")


def kernel_release():
    """The running kernel's version as ``(major, minor, patch)`` (``6.18.44-xyz``: 6, 18, 44)."""
    numbers = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    if numbers is None:
        return (0, 0, 0)
    return tuple(int(n or 0) for n in numbers.groups())


def held_bpf_ids(pid, kind):
    """The ids of the bpf objects of ``kind`` (``"prog"``, ``"map"`` or ``"link"``) that
    process ``pid`` holds open, from the ``<kind>_id:`` lines of its /proc fdinfo (an empty
    set when the process is gone)."""
    ids = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                found = re.search(rf"^{kind}_id:\s+(\d+)$", f.read(), re.M)
        except OSError:  # closed meanwhile
            continue
        if found:
            ids.add(int(found.group(1)))
    return ids


def kernel_version_release():
    """The release LINUX_KERNEL_VERSION is computed from, as libbpf picks it: the third field
    of Ubuntu's /proc/version_signature (``Ubuntu 5.4.0-12.15-generic 5.4.8``: its kernel
    expects 5.4.8, not uname's 5.4.0) when there is one, else ``uname -r``."""
    try:
        with open("/proc/version_signature") as f:
            fields = f.read().split()
        if len(fields) >= 3:
            return fields[2]
    except OSError:
        pass
    return os.uname().release


def kernel_config(path=None):
    """The text of the kernel's configuration: the file ``path`` (plain or gzip) when given,
    else ``/boot/config-$(uname -r)``, else ``/proc/config.gz`` (libbpf's order).
    ExternError saying where it looked when there is none."""
    paths = [path] if path is not None else [f"/boot/config-{os.uname().release}",
                                             "/proc/config.gz"]
    for candidate in paths:
        try:
            with open(candidate, "rb") as f:
                raw = f.read()
        except OSError as exc:
            if path is not None:
                raise ExternError(f"cannot read the kernel config {path}: {exc.strerror}"
                                  ) from None
            continue
        try:
            return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(
                "utf-8", "replace")
        except (OSError, EOFError, zlib.error) as exc:
            raise ExternError(f"the kernel config {candidate} is not readable gzip: {exc}"
                              ) from None
    raise ExternError("CONFIG_* externs need the kernel's configuration, which is in neither "
                      f"{' nor '.join(paths)} (the kernel needs CONFIG_IKCONFIG_PROC; or give "
                      "a config file: Collection(spec, kconfig=PATH))")


def kallsyms():
    """The text of /proc/kallsyms (addresses are zero unless this process may see them), each
    line ending with a newline."""
    try:
        with open("/proc/kallsyms") as f:
            return f.read().rstrip("\n") + "\n"
    except OSError as exc:
        raise ExternError(f"typeless ksyms need /proc/kallsyms: {exc.strerror}") from None


def perf_event_max_stack():
    """``kernel.perf_event_max_stack``: the most frames a stack trace may hold (127 by
    default), None when it cannot be read."""
    try:
        with open("/proc/sys/kernel/perf_event_max_stack") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None
