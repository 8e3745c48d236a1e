"""Workloads whose execs a test knows exactly, on a machine where other processes exec too.

The tests of ``--metrics``, ``--top`` and ``--tree`` filter the tracker by a user id no one
else uses (``--uid``) and run their processes as that user, from programs named for the test
(copies of /bin/true), so that every count they see is one they caused.
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import Deadline

WORKLOAD_UID = 54321  # no account uses it here; the tracker is filtered on it


class Programs:
    """A directory (readable by everyone) of copies of /bin/true under names of our own,
    and of a file that cannot be executed."""

    def __init__(self, *names):
        self.dir = Path(tempfile.mkdtemp(prefix="pybpf-workload-"))
        self.dir.chmod(0o755)
        for name in names:
            shutil.copy("/bin/true", self.dir / name)
            (self.dir / name).chmod(0o755)
        self.not_executable = self.dir / "not-executable"
        self.not_executable.write_text("#!/bin/sh\n")
        self.not_executable.chmod(0o644)

    def __truediv__(self, name):
        return self.dir / name

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def as_workload_user(*argv, **kwargs):
    """``argv`` run as :data:`WORKLOAD_UID` (setpriv execs it: one exec of ``argv[0]``)."""
    return subprocess.run(["setpriv", f"--reuid={WORKLOAD_UID}", f"--regid={WORKLOAD_UID}",
                           "--clear-groups", *argv], timeout=60, **kwargs)


def shell_as_workload_user(script):
    """``sh -c script`` as :data:`WORKLOAD_UID`; checks that it exited 0."""
    as_workload_user("/bin/sh", "-c", script, check=True)


def tracker_command(*args):
    """The tracker's command line, run from the checkout."""
    return [sys.executable, "-m", "programs.execve", *args]


def wait_for(condition, timeout, what):
    """Call ``condition()`` until it returns something true, and return that; the test fails
    (naming ``what``) after ``timeout`` seconds."""
    deadline = Deadline(timeout)
    while deadline.wait(what):
        result = condition()
        if result:
            return result
        time.sleep(0.1)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
