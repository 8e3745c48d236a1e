"""The ``execve-tracker`` command: the tracker's entry point once installed with pip.

Installed, the tracker's package is called ``execve_tracker`` (the checkout's ``programs/``
directory under that name, so that site-packages gets no top-level ``programs``); from a
checkout it runs as ``python -m programs.execve``. Either way the first thing that runs is
:func:`quiet_interrupts`, before the imports that take most of the start-up time.
"""

import os
import signal


def quiet_interrupts():
    """Ctrl+C from now until the tracker's own handlers take over exits quietly (status 130):
    nothing is loaded yet, so there is nothing to clean up and no traceback to show. A parent
    may have started us with the stop signals blocked: they must reach us."""
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def main():
    """``execve-tracker [options]``: the same as ``python -m programs.execve``."""
    quiet_interrupts()
    from .execve import main as tracker_main

    return tracker_main()
