"""The exec event stream (``--events``), against real processes in the real kernel.

Each test starts the tracker (``python -m programs.execve --events --json``), runs processes
whose arguments, failures, threads, parents, cgroups and namespaces it controls, and checks
their events against what it knows independently (its own children's PIDs, /proc, the
cgroup's inode, the bytes it passed). Every event the tests see is validated against the
JSON schema of docs/events.md.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from programs.events import cgroup2_mount
from programs.output import json_text
from support import Background, require_tool, skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads(re.search(r"```json\n(.*?)```", (ROOT / "docs" / "events.md").read_text(),
                              re.S).group(1))
pytestmark = pytest.mark.kernel


def _validator():
    try:
        import jsonschema
    except ImportError:
        skip_or_fail("jsonschema is not installed (pip install jsonschema)")
    return jsonschema.Draft202012Validator(SCHEMA)


class EventTracker(Background):
    """``python -m programs.execve --events --json`` in the background; its JSON lines
    collected (and each exec event checked against the schema)."""

    def __init__(self, *args, json_output=True):
        self.validator = _validator() if json_output else None
        command = [sys.executable, "-m", "programs.execve", "--events", "-interval", "0.5",
                   *(["--json"] if json_output else []), *args]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_started()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def _wait_started(self):
        deadline = time.monotonic() + 30
        started = b""
        while b"Press Ctrl+C" not in started:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                pytest.fail(f"the tracker did not start: {started.decode()}"
                            f"{self.proc.stderr.read().decode()}")
            started += self.proc.stderr.readline()

    def events(self, until, timeout=20):
        """Exec events (JSON objects) read until ``until(events so far)`` holds."""
        deadline = time.monotonic() + timeout
        while not until(self.seen):
            try:
                raw = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raw = b""
            if raw is None or time.monotonic() > deadline:
                pytest.fail(f"events did not arrive in {timeout} s; saw {len(self.seen)}")
            if not raw:
                continue
            if self.validator is None:
                self.seen.append(raw)
                continue
            obj = json.loads(raw)
            if obj["type"] == "exec":
                self.validator.validate(obj)
                self.seen.append(obj)
        return self.seen

    def stop(self):
        """SIGINT; the tracker must exit 0 without a traceback. Its stderr."""
        self.proc.send_signal(signal.SIGINT)
        err = self.proc.stderr.read()  # (stdout is the reader thread's: not communicate())
        self.proc.wait(timeout=30)
        assert self.proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
        return err.decode()

    def rest(self):
        """The lines not read yet (the stats lines among them), once the tracker ended."""
        lines = []
        for raw in iter(lambda: self.lines.get(timeout=10), None):
            lines.append(raw)
        return lines


def mine(events, pid):
    """The events of process ``pid``, but for the exec that started its Python."""
    return [e for e in events if e["pid"] == pid and e["filename"] != sys.executable]


def of(pid):
    """``until`` for EventTracker.events: an exec of process ``pid`` (not its Python)."""
    return lambda events: bool(mine(events, pid))


# Child processes that exec on a signal from the test: their PID is known before they exec.
_WAIT_THEN_EXEC = """
import os, sys
os.read(0, 1)
os.execv(sys.argv[1], sys.argv[1:])
"""


def waiting_child(*argv, **kwargs):
    """A Python process that execs ``argv`` once :func:`go` is called on it."""
    return subprocess.Popen([sys.executable, "-c", _WAIT_THEN_EXEC, *argv],
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, **kwargs)


def comm_of(pid):
    """The task's name now (the interpreter's: ``python3``, or ``python`` in a virtualenv)."""
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def go(child):
    child.stdin.write(b"x")
    child.stdin.close()
    child.wait(timeout=30)


HOSTILE = [b"", b"a b", b"new\nline", b"\x1b[2J\x1b]0;owned\x07", b"\xff\xfe", "\u202etxt".encode(),
           b"quote'\"", b"back\\slash", b"tab\there"]


def test_arguments_exactly_as_the_program_got_them():
    with EventTracker() as tracker:
        child = waiting_child("/bin/true", *HOSTILE)
        interpreter = comm_of(child.pid)
        go(child)
        event = mine(tracker.events(of(child.pid)), child.pid)[0]
        tracker.stop()
    assert event["argv"] == [json_text(arg) for arg in [b"/bin/true", *HOSTILE]]
    assert event["argv_truncated"] is False
    assert event["argv_bytes"] == sum(len(a) + 1 for a in [b"/bin/true", *HOSTILE])
    assert (event["comm"], event["old_comm"], event["filename"]) == ("true", interpreter,
                                                                     "/bin/true")
    assert (event["ret"], event["errno"], event["syscall"]) == (0, None, "execve")
    assert event["ppid"] == os.getpid() and event["tid"] == child.pid
    assert (event["uid"], event["gid"]) == (os.getuid(), os.getgid())
    with open(f"/proc/{os.getpid()}/cgroup") as f:  # our child inherited our cgroup v2
        assert event["cgroup"] == [line for line in f.read().splitlines()
                                   if line.startswith("0::")][0][3:]


def test_human_lines_are_terminal_safe_and_read_back_with_a_shell():
    with EventTracker(json_output=False) as tracker:
        child = waiting_child("/bin/true", *HOSTILE)
        go(child)
        ours = f" {child.pid} ".encode()
        lines = tracker.events(lambda seen: any(ours in line and b" true " in line
                                                for line in seen))
        tracker.stop()
    line = [raw for raw in lines if ours in raw and b" true " in raw][0].decode("ascii")
    assert all(32 <= ord(char) < 127 for char in line.rstrip("\n")), repr(line)
    args = line.split(" true ", 1)[1].rstrip("\n").strip()
    # bash reads the quoted arguments back to the very bytes that were passed
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {args}"], capture_output=True,
                         check=True).stdout
    assert out.split(b"\0")[:-1] == [b"/bin/true", *HOSTILE]


def test_a_long_command_line_is_cut_and_says_so():
    argv = [b"/bin/true"] + [b"%04d" % i + b"x" * 995 for i in range(100)]  # 100,010 bytes
    with EventTracker("--max-args-size", "65536") as tracker:
        child = waiting_child(*argv)
        go(child)
        event = mine(tracker.events(of(child.pid)), child.pid)[0]
        tracker.stop()
    assert event["argv_truncated"] is True
    assert event["argv_bytes"] == sum(len(a) + 1 for a in argv) == 100010
    captured = b"\0".join(argv)[:65536]
    assert event["argv"] == [json_text(a) for a in captured.split(b"\0")]


@pytest.mark.parametrize("why", ["ENOENT", "EACCES", "ENOEXEC"])
def test_failed_execs_carry_what_was_passed(why, tmp_path):
    path = tmp_path / "prog"
    if why == "EACCES":
        path.write_text("#!/bin/sh\n")  # not executable
    elif why == "ENOEXEC":
        path.write_bytes(b"\x01\x02 not a program")
        path.chmod(0o755)
    with EventTracker("--failed-only") as tracker:
        child = waiting_child(str(path), "arg one", "")
        interpreter = comm_of(child.pid)
        go(child)
        event = mine(tracker.events(of(child.pid)), child.pid)[0]
        tracker.stop()
    assert event["errno"] == why and event["ret"] == -getattr(__import__("errno"), why)
    assert event["filename"] == str(path) and event["argv"] == [str(path), "arg one", ""]
    assert event["comm"] == event["old_comm"] == interpreter
    assert event["argv_bytes"] == len(str(path)) + 1 + 8 + 1


def test_execveat_through_a_file_descriptor():
    code = ("import os, sys\nos.read(0, 1)\nfd = os.open('/bin/true', os.O_RDONLY)\n"
            "os.execve(fd, ['true', 'via-fd'], {})\n")
    with EventTracker() as tracker:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        go(child)
        event = mine(tracker.events(of(child.pid)), child.pid)[0]
        tracker.stop()
    assert event["syscall"] == "execveat" and event["argv"] == ["true", "via-fd"]
    assert re.fullmatch(r"/dev/fd/\d+", event["filename"]) and event["comm"] == "true"


def test_a_thread_that_execs_counts_for_its_process():
    code = ("import os, threading\nos.read(0, 1)\ntids = []\n"
            "def run():\n    os.execv('/bin/true', ['true', str(threading.get_native_id())])\n"
            "t = threading.Thread(target=run); t.start(); t.join()\n")
    with EventTracker() as tracker:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        go(child)
        event = mine(tracker.events(of(child.pid)), child.pid)[0]
        tracker.stop()
    thread = int(event["argv"][1])
    assert event["tid"] == thread != child.pid and event["comm"] == "true"


def test_the_parent_of_a_reparented_process_is_its_reaper():
    # the child forks a grandchild and exits; the grandchild then execs: its parent is now
    # the reaper, which /proc shows while it sleeps
    code = ("import os, time\nif os.fork() == 0:\n    time.sleep(0.5)\n"
            "    os.execv('/bin/sleep', ['sleep', '3'])\nos._exit(0)\n")
    with EventTracker("--comm", "sleep") as tracker:
        subprocess.run([sys.executable, "-c", code], check=True)
        events = tracker.events(lambda seen: any(e["argv"] == ["sleep", "3"] for e in seen))
        event = [e for e in events if e["argv"] == ["sleep", "3"]][0]
        with open(f"/proc/{event['pid']}/status") as f:
            reaper = int(re.search(r"^PPid:\s+(\d+)$", f.read(), re.M).group(1))
        tracker.stop()
    assert event["ppid"] == reaper != os.getpid()


@pytest.fixture
def cgroup():
    mount = cgroup2_mount()
    if mount is None:
        skip_or_fail("no cgroup v2 hierarchy is mounted")
    path = Path(mount) / f"pybpf-test-{os.getpid()}"
    path.mkdir()
    yield path
    for _ in range(100):  # the cgroup empties once its processes have been reaped
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def test_a_process_in_a_new_cgroup_and_the_cgroup_filter(cgroup):
    with EventTracker("--cgroup", str(cgroup)) as tracker:
        outside = waiting_child("/bin/true", "outside")
        inside = waiting_child("/bin/true", "inside")
        (cgroup / "cgroup.procs").write_text(str(inside.pid))
        go(outside)
        go(inside)
        events = tracker.events(of(inside.pid))
        time.sleep(0.5)  # time enough for the other one to show, were it not filtered
        tracker.stop()
    assert [e["argv"] for e in events if e["pid"] in (inside.pid, outside.pid)] == \
        [["/bin/true", "inside"]]
    event = mine(events, inside.pid)[0]
    assert event["cgroup"] == "/" + cgroup.name and event["cgroup_id"] == cgroup.stat().st_ino


def test_both_pids_of_a_process_in_its_own_pid_namespace():
    unshare = require_tool("unshare")
    with EventTracker("--comm", "true") as tracker:
        subprocess.run([unshare, "--pid", "--fork", "/bin/true", "in-a-namespace"], check=True)
        events = tracker.events(lambda seen: any(e["argv"][1:] == ["in-a-namespace"]
                                                 for e in seen))
        tracker.stop()
    event = [e for e in events if e["argv"][1:] == ["in-a-namespace"]][0]
    assert event["ns_pid"] == 1 and event["pid"] > 1


def _run_true(marker, name):
    """Not a match for --ppid: /bin/true run by a shell, so its parent is the shell."""
    shell = subprocess.Popen(["sh", "-c", f"/bin/true {marker} {name}; exit 0"])
    return shell


FILTERS = {  # name: (tracker arguments, the matching exec, the one that must not show)
    "pid": (lambda match: ["--pid", str(match.pid)], "/bin/true", "/bin/true"),
    "ppid": (lambda match: ["--ppid", str(os.getpid())], "/bin/true", None),
    "uid": (lambda match: ["--uid", "65534"], None, "/bin/true"),
    "comm": (lambda match: ["--comm", "true"], "/bin/true", "/bin/echo"),
    "success": (lambda match: ["--success-only"], "/bin/true", "/nonexistent/prog"),
    "failed": (lambda match: ["--failed-only"], "/nonexistent/prog", "/bin/true"),
}


@pytest.mark.parametrize("name", FILTERS)
def test_each_filter_keeps_only_its_execs(name):
    marker = f"filter-{os.getpid()}"
    tracker_args, matching, other = FILTERS[name]
    match = waiting_child(matching, marker, name) if matching else None
    with EventTracker(*tracker_args(match)) as tracker:
        if name == "uid":  # the match runs as nobody
            match = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534",
                                      "--clear-groups", "/bin/true", marker, name])
            match.wait(timeout=30)
        else:
            go(match)
        if other is None:
            _run_true(marker, name).wait(timeout=30)
        else:
            go(waiting_child(other, marker, name, stdout=subprocess.DEVNULL))
        events = tracker.events(of(match.pid))
        time.sleep(0.5)  # time enough for the other one to show, were it not filtered
        tracker.stop()
    assert [e["pid"] for e in events if e["argv"][1:] == [marker, name]] == [match.pid]


def test_a_full_ring_buffer_is_counted_and_reported_while_counts_stay_exact():
    """A one-page ring buffer cannot take a storm of long command lines: the lost events
    are counted in the kernel and reported, and the per-process counts stay exact."""
    marker = f"storm-{os.getpid()}"
    with EventTracker("--buffer-size", "4K") as tracker:
        shell = subprocess.Popen(["sh", "-c", f"for i in $(seq 200); do /bin/true {marker} "
                                  f"{'x' * 3000}; done"])
        shell.wait(timeout=60)
        tracker.stop()
        lines = tracker.rest()
    stats = [json.loads(line) for line in lines if line.startswith(b'{"type": "stats"')]
    shown = sum(1 for line in lines if marker.encode() in line)
    assert stats and stats[-1]["events_lost"] > 0
    assert shown + stats[-1]["events_lost"] >= 200  # each exec printed or counted as lost


def test_the_human_mode_warns_about_lost_events_on_stderr():
    with EventTracker("--buffer-size", "4K", json_output=False) as tracker:
        subprocess.run(["sh", "-c", f"for i in $(seq 100); do /bin/true {'y' * 3000}; done"],
                       check=True)
        time.sleep(1.5)
        err = tracker.stop()
    assert re.search(r"^WARNING: \d+ events lost since the last report \(\d+ since start\): "
                     r"the ring buffer was full; raise --buffer-size", err, re.M)
