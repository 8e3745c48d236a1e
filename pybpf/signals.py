"""Stopping a long-running command cleanly on Ctrl+C (SIGINT) or SIGTERM.

A handler that raises KeyboardInterrupt would strike between any two bytecodes: in the middle
of loading, attaching, printing or cleaning up, leaving programs attached or output half
written. :class:`StopSignal` turns the signals into a flag instead, looked at only where
stopping is safe. Python runs its handlers between bytecodes, so a signal landing just before
a wait would otherwise be noticed only when the wait times out: the pipe the wait watches is
the interpreter's *wakeup fd*, which its C-level handler writes at once.
"""

import os
import select
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_WAIT = 86400.0  # one wait's longest timeout: select() overflows near 2**63 ns


class StopSignal:
    """SIGINT and SIGTERM as a flag (:attr:`requested`) and a wake-up of :meth:`sleep`.

    Use as a context manager: leaving it puts back the previous handlers and wakeup fd.
    :meth:`fileno` is the pipe to watch in one's own poll or epoll loop.
    """

    def __init__(self):
        self.requested = False
        self.signum = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        os.set_blocking(self._read, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write)
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum

    def fileno(self):
        """The read end of the wakeup pipe: readable once a signal arrived."""
        return self._read

    def sleep(self, seconds=None):
        """Wait ``seconds`` (None: until a signal) or until a stop signal arrives."""
        if self.requested or (seconds is not None and seconds <= 0):
            return
        timeout = None if seconds is None else min(seconds, MAX_WAIT)
        if select.select([self._read], [], [], timeout)[0]:
            self.drain()

    def drain(self):
        """Read the signal numbers the wakeup fd received (so the pipe never fills)."""
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def restore(self):
        """Put back the previous handlers and wakeup fd; close the pipe."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._read)
        os.close(self._write)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
