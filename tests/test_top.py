"""``--top`` (in a real terminal: tmux, driven with send-keys and read with capture-pane) and
``--tree`` (against a process tree the test builds), on workloads they know exactly."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import ROOT, require_tool
from programs.execve import parse_args
from programs.top import TopState, render, sparkline
from programs.tree import ExecTree
from workload import WORKLOAD_UID, Programs, shell_as_workload_user, tracker_command, wait_for

# --- pure ----------------------------------------------------------------------------------


def test_sparkline_heights_are_proportional_to_the_largest_value():
    assert sparkline([0, 7, 3, 1]) == "\u2581\u2588\u2584\u2582"  # levels 0 to 7
    assert sparkline([0, 0]) == "\u2581\u2581" and sparkline([]) == ""


def test_the_state_counts_rates_from_one_interval_to_the_next():
    state = TopState(interval=2)
    state.sample({b"sh": 4}, 0, {10: 4}, {10: b"sh\0"}, lost=0, untracked=0, now=100.0)
    state.sample({b"sh": 10, b"ls": 2}, 1, {10: 6, 11: 2}, {10: b"sh", 11: b"ls"}, lost=3,
                 untracked=5, now=104.0)
    assert list(state.rates) == [2.0, 2.25]  # 4 in the first 2 s; 6 + 2 + 1 in 4 s
    assert state.total == 13 and (state.lost, state.untracked) == (3, 5)
    assert sorted(state.programs) == [(b"ls", "ls", 0.5, 2), (b"sh", "sh", 1.5, 10)]
    assert sorted(state.processes) == [(10, "sh", 0.5, 6), (11, "ls", 0.5, 2)]


def test_the_screen_sorts_filters_and_fits():
    state = TopState(interval=1)
    state.sample({b"aa": 1, b"bb": 5, b"cc\x1b": 3}, 0, {}, {}, 0, 0, now=1.0)
    state.sample({b"aa": 10, b"bb": 6, b"cc\x1b": 3}, 0, {}, {}, 0, 0, now=2.0)
    by_rate = render(state, 60, 30)
    table = by_rate.index("PROGRAM            EXECS/S     TOTAL")
    assert by_rate[table + 1:table + 4] == ["aa                     9.0        10",
                                            "bb                     1.0         6",
                                            "cc\\x1b                 0.0         3"]
    by_total = render(state, 60, 30, sort="total", name_filter="bb")
    assert by_total[table + 1:table + 3] == ["bb                     1.0         6", ""]
    small = render(state, 20, 8)
    assert len(small) == 8 and all(len(line) <= 20 for line in small)
    assert small[-1].startswith("q quit")


def test_the_tree_draws_children_under_parents_and_exited_parents_as_a_question_mark():
    from programs.events import ExecEvent

    def event(pid, ppid, comm, argv, ret=0):
        return ExecEvent(ktime=0, pid=pid, tid=pid, ppid=ppid, uid=0, gid=0, ret=ret,
                         syscall="execve", comm=comm, old_comm=b"", filename=argv[0],
                         argv=argv, argv_truncated=False, argv_bytes=0, cgroup_id=0, ns_pid=pid,
                         start_time=0, parent_start_time=0)

    live = {5: (1, "bash"), 1: (0, "init")}  # pid: (ppid, name) as /proc would say
    tree = ExecTree(lambda pid: live.get(pid))
    tree.add(event(20, 5, b"make", [b"make", b"-j2"]))
    tree.add(event(30, 20, b"cc", [b"cc", b"a b"]))
    tree.add(event(30, 20, b"cc", [b"/missing"], ret=-2))
    tree.add(event(21, 5, b"ls", [b"ls"]))
    tree.add(event(40, 99, b"true", [b"true"]))  # its parent has exited
    assert tree.lines() == [
        "init(1)",
        "\u2514\u2500 bash(5)",
        "   \u251c\u2500 make(20) 1 exec: make -j2",
        "   \u2502  \u2514\u2500 cc(30) 2 execs: /missing [ENOENT]",
        "   \u2514\u2500 ls(21) 1 exec: ls",
        "?(99)",
        "\u2514\u2500 true(40) 1 exec: true",
    ]
    assert tree.lines(unicode=False)[2:4] == ["   |- make(20) 1 exec: make -j2",
                                              "   |  `- cc(30) 2 execs: /missing [ENOENT]"]


@pytest.mark.parametrize("args", [["--top", "--json"], ["--tree", "--json"],
                                  ["--top", "--events"], ["--tree", "--top"]])
def test_views_that_do_not_go_together_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(args)
    assert exc.value.code == 2
    assert re.search(r"--json goes with the table and --events|not allowed with argument",
                     capsys.readouterr().err)


# --- kernel: --top in tmux -----------------------------------------------------------------


class Tmux:
    """A tmux server of our own (its own socket, so it has our environment), one window of
    ``width`` x ``height`` running ``command`` through sh."""

    def __init__(self, command, width=110, height=40):
        self.tmux = require_tool("tmux")
        self.socket = f"pybpf-test-{os.getpid()}-{time.monotonic_ns()}"
        subprocess.run([self.tmux, "-L", self.socket, "-f", "/dev/null", "new-session", "-d",
                        "-x", str(width), "-y", str(height), "-s", "top", command],
                       check=True, timeout=30, env=dict(os.environ, TERM="xterm-256color"))

    def __call__(self, *args):
        return subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=30).stdout

    def screen(self):
        return self("capture-pane", "-p", "-t", "top")

    def keys(self, *keys):
        self("send-keys", "-t", "top", *keys)

    def wait_screen(self, pattern, timeout=30):
        """The screen once ``pattern`` (a regex) shows on it."""
        return wait_for(lambda: re.search(pattern, self.screen(), re.M) and self.screen(),
                        timeout, f"{pattern!r} on the screen:\n{self.screen()}")

    def alternate_screen(self):
        return self("display", "-p", "-t", "top", "#{alternate_on}").strip() == "1"

    def close(self):
        self("kill-server")


@pytest.fixture
def top(tmp_path):
    """``--top`` in tmux, filtered on the workload user: the terminal's settings are saved
    before and after (stty -g), its exit status and its PID are written to files."""
    files = {name: tmp_path / name for name in ("before", "after", "status", "pid")}
    start = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
             "os.execv(sys.executable, [sys.executable] + sys.argv[2:])")
    tracker = " ".join(tracker_command("--top", "-interval", "0.5", "--uid", str(WORKLOAD_UID)))
    command = (f"cd {ROOT} && stty -g > {files['before']}; {sys.executable} -c \"{start}\" "
               f"{files['pid']} {tracker.split(' ', 1)[1]} 2> {tmp_path / 'stderr'}; "
               f"echo $? > {files['status']}; stty -g > {files['after']}; sleep 600")
    tmux = Tmux(command)
    tmux.files = files
    tmux.stderr = tmp_path / "stderr"
    try:
        tmux.wait_screen(r"^q quit")
        yield tmux
    finally:
        tmux.close()


def _exited(tmux):
    """The exit status, once the tracker has exited; and the terminal is as it was."""
    status = wait_for(lambda: tmux.files["status"].exists()
                      and tmux.files["status"].read_text().strip(), 30, "the tracker's exit")
    wait_for(lambda: tmux.files["after"].exists() and tmux.files["after"].read_text(), 10,
             "stty after")
    assert tmux.files["after"].read_text() == tmux.files["before"].read_text()
    assert not tmux.alternate_screen()
    return int(status)


@pytest.mark.kernel
def test_top_shows_programs_processes_and_failures_and_obeys_its_keys(top):
    assert top.alternate_screen()
    with Programs("toptrue", "topother") as programs:
        shell_as_workload_user(f"for i in 1 2 3 4; do {programs / 'toptrue'}; done; "
                               f"{programs / 'topother'}; {programs / 'nowhere'} 2>/dev/null;"
                               f" exit 0")
        shown = [r"^toptrue +\S+ +4$", r"^topother +\S+ +1$",
                 r"^sh +\S+ +2$",  # sh, and its failed exec of nowhere
                 rf"^\d\d:\d\d:\d\d +\d+ sh +ENOENT +{re.escape(str(programs.dir))}/nowhere$",
                 r"^execs 7 "]
        wait_for(lambda: all(re.search(line, top.screen(), re.M) for line in shown), 30,
                 f"{shown} on the screen")
    top.keys("s")
    assert "sort: total" in top.wait_screen("sort: total")
    top.keys("/", "t", "o", "p", "o", "Enter")
    screen = top.wait_screen(r"filter: topo\b")
    assert re.search(r"^topother ", screen, re.M)
    assert not re.search(r"^(toptrue|sh) ", screen, re.M)
    top.keys("Escape")
    top.wait_screen(r"filter: -")
    top.keys("p")
    top.wait_screen("PAUSED")
    top.keys("q")
    assert _exited(top) == 0


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_top_restores_the_terminal_when_stopped(top, how):
    if how == "ctrl-c":
        top.keys("C-c")
    else:
        os.kill(int(top.files["pid"].read_text()), signal.SIGTERM)
    assert _exited(top) == 0
    assert "Traceback" not in top.stderr.read_text()


@pytest.mark.kernel
def test_top_restores_the_terminal_after_an_exception(tmp_path):
    """A fault in the view (here: a key handler made to raise) ends the tracker with the
    exception shown, after the terminal was restored."""
    files = {name: tmp_path / name for name in ("before", "after", "status")}
    code = ("import sys; from programs import top, execve\n"
            "def boom(self): raise RuntimeError('boom from the test')\n"
            "top.Top.keys = boom\n"
            f"sys.exit(execve.main(['--top', '--uid', '{WORKLOAD_UID}']))\n")
    (tmp_path / "boom.py").write_text(code)
    tmux = Tmux(f"cd {ROOT} && stty -g > {files['before']}; PYTHONPATH={ROOT} {sys.executable} "
                f"{tmp_path / 'boom.py'} 2> {tmp_path / 'stderr'}; echo $? > {files['status']};"
                f" stty -g > {files['after']}; sleep 600")
    tmux.files = files
    try:
        tmux.wait_screen(r"^q quit")
        tmux.keys("x")
        assert _exited(tmux) == 1
    finally:
        tmux.close()
    assert "RuntimeError: boom from the test" in (tmp_path / "stderr").read_text()


# --- kernel: --tree ------------------------------------------------------------------------

# The workload: P waits for a go, then forks A and B, which exec ttrue a / ttrue b, and M,
# which forks G (exec ttrue c), waits for it and execs ttrue d. P prints the PIDs and waits
# until its standard input closes, so that it is alive when the tree is drawn. Each exec is
# made as the workload user (P itself stays root: its interpreter may be where that user
# cannot read, as a venv in a 0700 temporary directory).
_TREE = """
import os, sys
prog, uid = sys.argv[1], int(sys.argv[2])
os.read(0, 1)
def run(*argv):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.execv(prog, [prog, *argv])
pids = []
for arg in ("a", "b"):
    pid = os.fork()
    if pid == 0:
        run(arg)
    pids.append(pid)
    os.waitpid(pid, 0)
read, write = os.pipe()
middle = os.fork()
if middle == 0:
    grandchild = os.fork()
    if grandchild == 0:
        run("c")
    os.write(write, str(grandchild).encode())
    os.waitpid(grandchild, 0)
    run("d")
os.close(write)
grandchild = int(os.read(read, 64))
os.waitpid(middle, 0)
print(*pids, middle, grandchild, flush=True)
os.read(0, 1)
"""


@pytest.mark.kernel
def test_tree_draws_a_process_tree_the_test_built():
    with Programs("ttrue") as programs:
        parent = subprocess.Popen(
            [sys.executable, "-c", _TREE, str(programs / "ttrue"), str(WORKLOAD_UID)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        tracker = subprocess.Popen(
            tracker_command("--tree", "-interval", "60", "--uid", str(WORKLOAD_UID)), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: "Press Ctrl+C" in tracker.stdout.readline(), 30, "the start")
            parent.stdin.write("x")
            parent.stdin.flush()
            a, b, middle, grandchild = map(int, parent.stdout.readline().split())
            name = Path(f"/proc/{parent.pid}/comm").read_text().strip()  # P's, from /proc
            time.sleep(0.5)  # the last exec's event reaches the ring
            tracker.send_signal(signal.SIGINT)
            out, err = tracker.communicate(timeout=30)
        finally:
            parent.stdin.close()
            parent.wait(timeout=30)
            if tracker.poll() is None:
                tracker.kill()
    assert tracker.returncode == 0, err
    lines = [line[20:] for line in out.splitlines()]  # without the log time stamp
    assert lines[0] == "Exec tree: 4 execs in 4 processes"
    top = [i for i, line in enumerate(lines) if line.endswith(f" {name}({parent.pid})")][0]
    below = " " * lines[top].index(name)  # P is the only child of each of its ancestors
    prog = programs / "ttrue"
    assert lines[top + 1:top + 6] == [
        f"{below}\u251c\u2500 ttrue({a}) 1 exec: {prog} a",
        f"{below}\u251c\u2500 ttrue({b}) 1 exec: {prog} b",
        f"{below}\u2514\u2500 ttrue({middle}) 1 exec: {prog} d",
        f"{below}   \u2514\u2500 ttrue({grandchild}) 1 exec: {prog} c",
        "---",
    ]
    # above P: its ancestors, from /proc, up to the first process
    assert lines[0:top] and lines[1].startswith(Path("/proc/1/comm").read_text().strip())
