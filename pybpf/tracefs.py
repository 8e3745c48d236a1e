"""tracefs: the kernel's tracing file system, where tracepoints are listed with their ids.

Every static tracepoint has a directory ``events/<category>/<name>/`` with its numeric ``id``
(the ``config`` of a ``PERF_TYPE_TRACEPOINT`` perf event) and its ``format`` (the layout of
the context a TRACEPOINT program receives). tracefs lives at ``/sys/kernel/tracing`` (or, on
older systems, ``/sys/kernel/debug/tracing``); when it is not mounted, root can mount it.
"""

import os

from .errors import AttachError, TracefsError

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
MOUNT_HINT = "mount -t tracefs nodev /sys/kernel/tracing"

_found: dict = {}  # "path": where tracefs is mounted, once known


def tracefs_path():
    """Where tracefs is mounted; mounts it at /sys/kernel/tracing when root and it is absent."""
    if "path" not in _found:
        _found["path"] = _find() or _mount()
    return _found["path"]


def _find():
    """The first of TRACEFS_PATHS that has an ``events`` directory, else None."""
    for path in TRACEFS_PATHS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def _mount():
    """Mount tracefs (root only), or TracefsError saying how to do it."""
    if os.geteuid() != 0:
        raise TracefsError(f"tracefs is not mounted (no events/ in {' or '.join(TRACEFS_PATHS)})"
                           f"; mount it as root: sudo {MOUNT_HINT}")
    import subprocess  # only here: importing it costs milliseconds of every tracker's start

    try:
        result = subprocess.run(MOUNT_HINT.split(), capture_output=True, text=True)
    except OSError as exc:  # no mount(8) on this system
        raise TracefsError(f"tracefs is not mounted and the mount command could not run "
                           f"({exc.strerror}); install mount (util-linux) and run: "
                           f"{MOUNT_HINT}") from None
    if result.returncode != 0 or _find() is None:
        raise TracefsError(f"tracefs is not mounted and `{MOUNT_HINT}` failed: "
                           f"{result.stderr.strip() or 'no events/ directory after mounting'}")
    return TRACEFS_PATHS[0]


def tracepoint_id(category, name):
    """The id tracefs gives tracepoint ``category/name`` (the perf event ``config``)."""
    for part in (category, name):
        if not part or "\0" in part or "/" in part or part in (".", ".."):
            raise AttachError(f"invalid tracepoint name {category!r}/{name!r}: each part is "
                              f"a plain name (e.g. syscalls/sys_enter_execve)")
    events = os.path.join(tracefs_path(), "events")
    path = os.path.join(events, category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        listing = os.path.join(events, category)
        if not os.path.isdir(listing):
            listing = events
        raise AttachError(f"unknown tracepoint {category}/{name} (no {path}); see the known "
                          f"ones with `ls {listing}`") from None
    except PermissionError:
        raise AttachError(f"cannot read tracepoint {category}/{name}'s id: {path} is "
                          f"readable by root only; run as root (e.g. with sudo)") from None


def probe_events_file(kind):
    """``<tracefs>/kprobe_events`` or ``uprobe_events``: where dynamic probes are defined."""
    return os.path.join(tracefs_path(), f"{kind}_events")


def add_probe_event(kind, retprobe, group, name, location):
    """Define the dynamic event ``group/name`` (a tracepoint, then): a ``kind`` probe
    (``kprobe`` or ``uprobe``) at ``location`` (``func+0x10``, ``/bin/bash:0x4a0``), or its
    return probe. Its id, as for any tracepoint, is :func:`tracepoint_id` ``(group, name)``.
    """
    _write_probe_events(kind, f"{'r' if retprobe else 'p'}:{group}/{name} {location}")


def remove_probe_event(kind, group, name):
    """Delete the dynamic event ``group/name`` (once no perf event uses it)."""
    _write_probe_events(kind, f"-:{group}/{name}")


def _write_probe_events(kind, line):
    path = probe_events_file(kind)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as exc:
        raise AttachError(f"cannot open {path}: {exc.strerror}") from None
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError as exc:
        log = os.path.join(tracefs_path(), "error_log")
        raise AttachError(f"the kernel refused `{line}` in {path}: {exc.strerror}; "
                          f"{log} says why") from None
    finally:
        os.close(fd)
