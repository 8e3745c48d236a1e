"""The execve tracker: its output helpers (pure) and the whole CLI against the real kernel."""

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

from programs import execve, execve_bpf
from programs.output import log_line, safe_name, table_lines
from pybpf.host import held_bpf_ids
from support import ROOT, Deadline, require_tool, write_chain_script

LOG_PREFIX = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "


# --- pure: output -------------------------------------------------------------------------


def test_log_line_has_gos_log_format():
    assert re.fullmatch(LOG_PREFIX + "hello", log_line("hello"))
    assert log_line("x", now=0).endswith(" x")


@pytest.mark.parametrize(
    "raw, shown",
    [
        (b"bash\0\0\0\0", "bash"),
        (b"ls", "ls"),
        (b"\x1b[2Jevil\0junk", "\\x1b[2Jevil"),
        (b"tab\there", "tab\\x09here"),
        (b"back\\slash", "back\\\\slash"),
        (b"caf\xc3\xa9", "caf\u00e9"),
        (b"bad\xff\xfe", "bad\\xff\\xfe"),
        (b"a\x80b", "a\\x80b"),  # 0x80, the lowest byte that is never UTF-8 on its own
        (b"\x80\x81\xbf\xc0\xc1\xf5", "\\x80\\x81\\xbf\\xc0\\xc1\\xf5"),
        (b"cut\xe2\x82", "cut\\xe2\\x82"),  # a UTF-8 sequence cut by the 15-byte limit
        (b"rtl\xe2\x80\xaeabc", "rtl\\xe2\\x80\\xaeabc"),  # U+202E bidi override
        (b"del\x7f", "del\\x7f"),
        (b"c1\xc2\x9b", "c1\\xc2\\x9b"),  # U+009B, the 8-bit CSI
    ],
)
def test_safe_name_escapes_what_could_rewrite_the_terminal(raw, shown):
    assert safe_name(raw) == shown


def test_table_sorted_by_executions_then_pid():
    lines = table_lines({5678: 1, 1234: 2, 999: 1}, {1234: b"bash", 5678: b"ls"})
    assert lines == [
        "Tracked 3 processes:",
        "PID: 1234, Name: bash, Executions: 2",
        "PID: 999, Name: , Executions: 1",
        "PID: 5678, Name: ls, Executions: 1",
        "---",
    ]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", ""])
def test_bad_interval_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        execve.parse_args(["-interval", value])
    assert exc.value.code == 2
    assert "interval" in capsys.readouterr().err


def test_interval_spellings():
    assert execve.parse_args([]).interval == 2
    assert execve.parse_args(["-interval", "5"]).interval == 5
    assert execve.parse_args(["--interval", "0.5"]).interval == 0.5
    assert execve.parse_args(["-interval=3"]).interval == 3


def test_bad_max_pids_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        execve.parse_args(["--max-pids", "0"])
    assert exc.value.code == 2


def test_dump_shows_c_lines_and_instructions_without_root():
    env = dict(os.environ)
    result = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all",
         sys.executable, "-m", "programs.execve", "--dump"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "count_execve" in out and "name_process" in out
    assert "; __u32 pid = bpf_get_current_pid_tgid() >> 32;" in out
    assert "lock *(u64 *)(r0 + 0) += r1" in out
    assert re.search(r"call 16\b.*get_current_comm", out)


# Each C line of bpf/program.c the DSL implements, and the instruction it starts with (read
# from the C by hand: "return 0;" is r0 = 0, a lookup's key pointer is built first...).
COUNT_EXECVE_LINES = [
    ("__u32 pid = bpf_get_current_pid_tgid() >> 32;", "call 14"),
    ("__u64 *count = bpf_map_lookup_elem(&exec_count, &pid);", "r2 = r10"),
    ("if (count) {", "if r0 == 0 goto new_process"),
    ("__sync_fetch_and_add(count, 1);", "r1 = 1"),
    ("return 0;", "r0 = 0"),
    ("__u64 one = 1;", "*(u64 *)(r10 - 16) = 1"),
    ("long err = bpf_map_update_elem(&exec_count, &pid, &one, BPF_NOEXIST);", "r2 = r10"),
    ("if (err == 0) record the name below", "if r0 == 0 goto record_name"),
    ("if (err == -EEXIST) {", "if r0 != -17 goto map_full"),
    ("count = bpf_map_lookup_elem(&exec_count, &pid);", "r2 = r10"),
    ("if (count) __sync_fetch_and_add(count, 1); return 0;", "if r0 == 0 goto out"),
    ("char comm[TASK_COMM_LEN]; bpf_get_current_comm(comm, sizeof(comm));", "r6 = r10"),
    ("bpf_map_update_elem(&process_names, &pid, comm, BPF_ANY);", "r2 = r10"),
    ("__u32 zero = 0;", "*(u32 *)(r10 - 32) = 0"),
    ("__u64 *dropped = bpf_map_lookup_elem(&dropped_execs, &zero);", "r2 = r10"),
    ("if (dropped) *dropped += 1;", "if r0 == 0 goto out"),
]
NAME_PROCESS_LINES = [
    ("__u32 pid = bpf_get_current_pid_tgid() >> 32;", "call 14"),
    ("char *name = bpf_map_lookup_elem(&process_names, &pid);", "r2 = r10"),
    ("if (name) bpf_get_current_comm(name, TASK_COMM_LEN);", "if r0 == 0 goto out"),
    ("return 0;", "r0 = 0"),
]


@pytest.mark.parametrize("program, expected", [
    (execve_bpf.count_execve, COUNT_EXECVE_LINES), (execve_bpf.name_process, NAME_PROCESS_LINES)])
def test_every_c_line_heads_the_instructions_that_implement_it(program, expected):
    from pybpf.disasm import format_insn

    insns = program()
    assert [(i.comment, format_insn(i)) for i in insns if i.comment] == expected
    assert [format_insn(i) for i in insns].count("exit") == 1  # one way out, after r0 = 0


# --- kernel: the whole tracker ------------------------------------------------------------


_START = """
import sys
before = set(sys.modules)
from programs import execve, execve_bpf
args = execve.parse_args(["-interval", "1"])
with execve.Tracker(args.max_pids) as tracker:
    tracker.snapshot()
print(" ".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.kernel
def test_the_tracker_starts_without_construct_or_its_debugging_tools():
    """Importing construct would cost a third of the start; --dump and --compare-c's modules,
    subprocess (only to mount tracefs) and pyelftools (only for uprobes: its construct brings
    pdb) are not needed before the first exec is counted."""
    imported = subprocess.run([sys.executable, "-c", _START], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=True).stdout.split()
    assert "pybpf.maps" in imported
    unwanted = {"construct", "pybpf.attrs", "pybpf.disasm", "programs.compare", "subprocess",
                "elftools", "pdb"}
    assert unwanted.isdisjoint(imported)


class TrackerProcess:
    """``python -m programs.execve`` in the background, its output lines collected."""

    def __init__(self, *args, prefix=()):
        # stdout is a pipe, as with `| grep`: block-buffered unless the tracker flushes
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "programs.execve", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern, timeout=15):
        """The first new line matching ``pattern`` (a regex), or fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        pytest.fail(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines)
                    + "\nstderr: " + self.stderr_text())

    def stderr_text(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode("utf-8", "replace")

    def next_table(self, timeout=15):
        """The lines of the next whole table, from "Tracked N processes:" to "---"."""
        self.wait_for(r"Tracked \d+ processes:$", timeout)
        start = len(self.lines) - 1
        self.wait_for("^" + LOG_PREFIX + "---$", timeout)
        return self.lines[start:]

    def started(self):
        self.wait_for("Press Ctrl\\+C to exit")
        return self

    def stop(self, signum=signal.SIGINT, timeout=15):
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        deadline = Deadline(5)
        while deadline.wait("the end of the tracker's output after it exited"):
            try:
                line = self._queue.get(timeout=deadline.left())
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def tracker():
    started = []

    def start(*args, **kwargs):
        t = TrackerProcess(*args, **kwargs)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


@pytest.mark.kernel
def test_chain_of_execs_counts_every_exec_under_the_final_name(tracker, tmp_path):
    t = tracker("-interval", "0.3").started()
    n = 5
    child = subprocess.Popen([str(write_chain_script(tmp_path)), str(n)])
    try:
        # Popen's exec, n re-execs of the script, then the exec of sleep
        t.wait_for(rf"PID: {child.pid}, Name: sleep, Executions: {n + 2}$")
    finally:
        child.kill()
        child.wait()
    assert t.stop() == 0


@pytest.mark.kernel
def test_thread_that_execs_counts_for_its_process(tracker):
    t = tracker("-interval", "0.3").started()
    code = (
        "import os, threading, time\n"
        "threading.Thread(target=lambda: os.execv('/bin/sleep', ['sleep', '3'])).start()\n"
        "time.sleep(10)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        # the exec of python itself, then the thread's exec of sleep: both under child.pid
        t.wait_for(rf"PID: {child.pid}, Name: sleep, Executions: 2$")
    finally:
        child.kill()
        child.wait()
    t.stop()


@pytest.mark.kernel
def test_hostile_and_long_names_print_escaped_and_truncated(tracker, tmp_path):
    name = b"ev\x1b[2Jil\xff-much-longer-than-15"
    link = os.path.join(os.fsencode(tmp_path), name)
    os.symlink(b"/bin/sleep", link)
    t = tracker("-interval", "0.3").started()
    child = subprocess.Popen([link, "3"])
    try:
        line = t.wait_for(rf"PID: {child.pid}, Name: ev.*, Executions: 1$")
    finally:
        child.kill()
        child.wait()
    t.stop()
    # comm keeps the first 15 bytes of the file name, escaped by hand here
    assert line.endswith(f"PID: {child.pid}, Name: ev\\x1b[2Jil\\xff-much-, Executions: 1")
    assert "\x1b" not in line


@pytest.mark.kernel
def test_failed_execs_keep_the_callers_name(tracker):
    t = tracker("-interval", "0.3").started()
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    try: os.execv('/nonexistent/prog', ['x'])\n"
        "    except OSError: pass\n"
        "time.sleep(10)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        comm = None
        deadline = Deadline(10)
        while comm is None and deadline.wait(f"/proc/{child.pid}/comm to be readable"):
            try:
                comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
            except OSError:
                time.sleep(0.05)
        # one successful exec (of python) + three failed ones; the name stays python's
        t.wait_for(rf"PID: {child.pid}, Name: {re.escape(comm)}, Executions: 4$")
    finally:
        child.kill()
        child.wait()
    t.stop()


@pytest.mark.kernel
def test_storm_is_counted_exactly_and_exited_processes_are_forgotten(tracker, tmp_path):
    # a name no other process has, even with other test runs on this machine
    name = f"storm{os.getpid()}"[:15]
    os.symlink("/bin/true", tmp_path / name)
    t = tracker("-interval", "0.5").started()
    n = 500
    # one shell forks n children; each child execs the link to /bin/true once
    child = subprocess.Popen(
        ["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do {tmp_path / name}; i=$((i+1)); done"]
    )
    child.wait()
    seen = {}  # pid -> (name, executions), over every table since the storm began
    deadline = Deadline(30)
    while deadline.wait(f"the tracker to print the shell (PID {child.pid}), then forget it"):
        table = "\n".join(t.next_table(timeout=max(deadline.left(), 1)))
        if child.pid in seen and f"PID: {child.pid}," not in table:
            break  # the shell was printed after it exited, then forgotten
        for m in re.finditer(r"PID: (\d+), Name: (.*), Executions: (\d+)$", table, re.M):
            seen[int(m.group(1))] = (m.group(2), int(m.group(3)))
    assert seen[child.pid] == ("sh", 1)
    storm = {pid: count for pid, (comm, count) in seen.items() if comm == name}
    assert sorted(storm.values()) == [1] * n, f"{len(storm)} of {n} processes seen"
    # they have all exited: each was printed, then forgotten
    assert not any(f"PID: {pid}," in table for pid in storm)
    t.stop()


@pytest.mark.kernel
def test_full_maps_are_reported_not_silent(tracker):
    t = tracker("-interval", "0.3", "--max-pids", "2").started()
    subprocess.run(["/bin/sh", "-c", "for i in 1 2 3 4 5 6; do /bin/true; done"], check=True)
    line = t.wait_for(r"WARNING: \d+ executions were not counted")
    assert "--max-pids 2" in line
    t.stop()


def _existing(kind):
    out = subprocess.run(["bpftool", kind, "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return {obj["id"] for obj in json.loads(out or "[]")}


@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_prints_last_table_and_detaches(tracker, signum):
    require_tool("bpftool")
    t = tracker("-interval", "60").started()
    programs, links = held_bpf_ids(t.proc.pid, "prog"), held_bpf_ids(t.proc.pid, "link")
    assert len(programs) == 3, "count_execve, count_execveat and name_process are loaded"
    assert len(links) == 3, "each is attached through a bpf_link"
    subprocess.run(["/bin/true"], check=True)
    time.sleep(0.2)
    assert t.stop(signum) == 0
    assert any(line.endswith("processes:") for line in t.lines), t.lines
    assert t.lines[-1].endswith(" ---")
    assert not programs & _existing("prog"), "a program of the tracker is still loaded"
    assert not links & _existing("link"), "a link of the tracker is still attached"
    assert t.proc.stderr.read() == b""


@pytest.mark.kernel
def test_execveat_is_counted_too(tracker):
    t = tracker("-interval", "0.3").started()
    code = ("import os\n"
            "fd = os.open('/bin/sleep', os.O_RDONLY)\n"
            "os.execve(fd, ['sleep', '3'], {})  # fexecve(): the execveat() system call\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        # python's own execve, then the execveat
        t.wait_for(rf"PID: {child.pid}, Name: .*, Executions: 2$")
    finally:
        child.kill()
        child.wait()
    t.stop()


@pytest.mark.kernel
@pytest.mark.parametrize("live", [0, 20], ids=["exited-only", "among-live"])
def test_entries_are_forgotten_only_once_their_last_state_was_printed(live):
    """``live`` printed entries of running processes beside the exited one: the maps are
    then read key by key, not whole (the exited are few of the entries)."""
    with execve.Tracker() as tracker:
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        counts, names, _ = tracker.snapshot()
        assert counts[child.pid] == 1 and names[child.pid].rstrip(b"\0") == b"true"
        running = {int(p): 1 for p in os.listdir("/proc") if p.isdigit()}
        others = dict(list(running.items())[:live])
        assert len(others) == live
        name = {child.pid: names[child.pid]}
        # printed with an older count: an exec happened after the table was read
        assert tracker.forget_exited({**others, child.pid: 0}, name) == []
        # printed with the caller's name: the exec finished after the table was read
        assert tracker.forget_exited({**others, child.pid: 1},
                                     {child.pid: b"sh".ljust(16, b"\0")}) == []
        assert tracker.exec_count.lookup(child.pid) == 1
        assert tracker.forget_exited({**others, child.pid: 1}, name) == [child.pid]
        assert tracker.exec_count.lookup(child.pid) is None
        assert tracker.process_names.lookup(child.pid) is None


@pytest.mark.kernel
def test_a_live_process_is_kept_though_its_entry_was_printed_as_it_is():
    """Only the liveness check keeps this one: the printed count and name are exactly what
    the maps hold, so forgetting it would drop a running process and restart its count."""
    with execve.Tracker() as tracker:
        child = subprocess.Popen(["/bin/sleep", "30"])
        try:
            deadline = Deadline(10)
            while deadline.wait(f"the name of PID {child.pid} in process_names"):
                name = tracker.process_names.lookup(child.pid)
                if name is not None and name.rstrip(b"\0") == b"sleep":
                    break
                time.sleep(0.01)
            assert tracker.exec_count.lookup(child.pid) == 1  # Popen's one exec
            printed = ({child.pid: 1}, {child.pid: name})
            assert tracker.forget_exited(*printed) == []
            assert tracker.exec_count.lookup(child.pid) == 1
            assert tracker.process_names.lookup(child.pid) == name
        finally:
            child.kill()
            child.wait()
        assert tracker.forget_exited(*printed) == [child.pid]  # exited and reaped: forgotten
        assert tracker.exec_count.lookup(child.pid) is None
        assert tracker.process_names.lookup(child.pid) is None


def _report_lines(tracker, capsys):
    """The lines one report printed, without their time stamps."""
    tracker.report()
    return [re.sub("^" + LOG_PREFIX, "", line) for line in capsys.readouterr().out.splitlines()]


def _drop(tracker, cpu, executions):
    """Add ``executions`` to the lost count of ``cpu``, as the programs do when maps are full."""
    per_cpu = tracker.dropped_execs[0]
    per_cpu[cpu] += executions
    tracker.dropped_execs[0] = per_cpu


def _warnings(lines):
    return [line for line in lines if line.startswith("WARNING")]


@pytest.mark.kernel
def test_warning_counts_the_executions_lost_since_the_last_report(capsys):
    """The counter of lost executions (one per CPU) is written here by hand; each report
    must give exactly the new losses, and the total."""
    with execve.Tracker() as tracker:
        _drop(tracker, 0, 5)
        assert _warnings(_report_lines(tracker, capsys)) == [
            "WARNING: 5 executions were not counted since the last report (5 since start): "
            f"the maps are full (--max-pids {execve_bpf.DEFAULT_MAX_PIDS}); raise --max-pids"]
        _drop(tracker, 0, 3)
        _drop(tracker, len(tracker.dropped_execs[0]) - 1, 4)  # another CPU's counter
        assert _warnings(_report_lines(tracker, capsys)) == [
            "WARNING: 7 executions were not counted since the last report (12 since start): "
            f"the maps are full (--max-pids {execve_bpf.DEFAULT_MAX_PIDS}); raise --max-pids"]


@pytest.mark.kernel
def test_no_warning_when_no_execution_was_lost_since_the_last_report(capsys):
    with execve.Tracker() as tracker:
        assert _warnings(_report_lines(tracker, capsys)) == []
        _drop(tracker, 0, 2)
        assert len(_warnings(_report_lines(tracker, capsys))) == 1
        assert _warnings(_report_lines(tracker, capsys)) == []  # 0 new: nothing to say


@pytest.mark.kernel
def test_without_privileges_one_line_and_exit_1():
    result = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all",
         sys.executable, "-m", "programs.execve"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    err = result.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert "CAP_BPF" in err and "sudo" in err


@pytest.mark.kernel
def _broken():
    """A name_process the verifier refuses: it reads r2, never written."""
    from pybpf.asm import R0, R2, Builder

    b = Builder()
    b.comment("return undefined_variable;")
    b.mov(R0, R2)
    b.exit()
    return b.instructions


@pytest.mark.kernel
def test_verifier_log_option_prints_the_log_of_a_rejection(monkeypatch, capsys):
    monkeypatch.setattr(execve.execve_bpf, "name_process", _broken)
    assert execve.main(["--verifier-log"]) == 1
    err = capsys.readouterr().err
    log, last = err.rstrip("\n").rsplit("\n", 1)
    assert "0: (bf) r0 = r2\nR2 !read_ok" in log  # the verifier's own lines, then ours
    assert last.startswith("programs.execve: program 'name_process' rejected by the verifier")


@pytest.mark.kernel
def test_verifier_rejection_names_the_c_line_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(execve.execve_bpf, "name_process", _broken)
    assert execve.main(["-interval", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "name_process" in err and "R2 !read_ok" in err
    assert "return undefined_variable;" in err and "instruction 0" in err
    assert err.endswith("lines): rerun with --verifier-log")


@pytest.mark.kernel
def test_explain_verifier_prints_each_program_beside_the_walk_and_exits(capsys):
    assert execve.main(["--explain-verifier"]) == 0
    out = capsys.readouterr().out
    headings = [line for line in out.splitlines() if "SEC(" in line]
    assert headings == ['count_execve:  SEC("tracepoint/syscalls/sys_enter_execve")',
                        'count_execveat:  SEC("tracepoint/syscalls/sys_enter_execveat")',
                        'name_process:  SEC("tracepoint/sched/sched_process_exec")']
    name_process = out[out.index(headings[2]):].splitlines()
    jump = name_process.index("       8:\t15 00 03 00 00 00 00 00\tif r0 == 0 goto +3 <out>")
    assert name_process[jump + 1:jump + 3] == [
        "\t  path 1: R0=map_value(map=process_names,ks=4,vs=16)",
        "\t  path 1, jumping to 12, is explored later as path 2: R0=0 R10=fp0 fp-8=mmmm????"]


@pytest.mark.kernel
def test_explain_verifier_shows_a_refused_program(monkeypatch, capsys):
    monkeypatch.setattr(execve.execve_bpf, "name_process", _broken)
    assert execve.main(["--explain-verifier"]) == 1
    err = capsys.readouterr().err
    assert "; return undefined_variable;\n       0:\tbf 20 00 00 00 00 00 00\tr0 = r2\n" \
        "\t  path 1: REFUSED: R2 !read_ok\n" in err
    assert err.splitlines()[-1].startswith("programs.execve: program 'name_process' rejected")


def test_compare_c_of_a_missing_object_is_one_line_and_exit_1(capsys):
    assert execve.main(["--compare-c", "/nonexistent/program.o"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("programs.execve: ") and err.count("\n") == 1, err


def test_compare_c_without_an_object_builds_the_reference_c(capsys):
    require_tool("clang")
    assert execve.main(["--compare-c"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^(\w+): \d+ instructions alike", out, re.M) == \
        ["count_execve", "count_execveat", "name_process"], out[-2000:]


def test_help_is_wrapped_like_argparse_wraps_it(monkeypatch, capsys):
    """The tracker's own formatter (which spares importing shutil) wraps at the width
    argparse's default one uses: $COLUMNS - 2."""
    import argparse

    ours = execve.help_formatter
    for columns in range(40, 101, 3):
        monkeypatch.setenv("COLUMNS", str(columns))
        texts = []
        for formatter in (ours, argparse.HelpFormatter):
            monkeypatch.setattr(execve, "help_formatter", formatter)
            with pytest.raises(SystemExit):
                execve.parse_args(["--help"])
            texts.append(capsys.readouterr().out)
        assert texts[0] == texts[1], columns


@pytest.mark.kernel
def test_run_reports_each_interval_and_exits_0_on_a_signal(capsys):
    """In this process: the first report comes after one interval, not at once; the host's
    PID namespace gets no namespace warning; SIGINT ends the run with 0."""
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert execve.main(["-interval", "60"]) == 0
    finally:
        timer.cancel()
    lines = [re.sub("^" + LOG_PREFIX, "", line) for line in capsys.readouterr().out.splitlines()]
    assert lines[:2] == ["Starting process execution tracker...", "Press Ctrl+C to exit"]
    assert sum(line.startswith("Tracked ") for line in lines) == 1  # the last report only
    assert not any("WARNING" in line for line in lines)


@pytest.mark.kernel
def test_closing_the_tracker_closes_its_links():
    before = held_bpf_ids(os.getpid(), "link")
    with execve.Tracker():
        assert len(held_bpf_ids(os.getpid(), "link") - before) == 3
    assert held_bpf_ids(os.getpid(), "link") == before


def test_a_reader_that_goes_away_ends_the_tracker_quietly_with_0(monkeypatch, capsys):
    def reader_gone(args):
        raise BrokenPipeError

    monkeypatch.setattr(execve, "_main", reader_gone)
    monkeypatch.setattr(execve, "_silence_stdout", lambda: None)  # capsys has no real fd
    assert execve.main(["-interval", "1"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.kernel
def test_after_a_stall_the_next_report_waits_a_whole_interval(monkeypatch, capsys):
    """A report slower than the interval (a stalled machine): the tracker does not catch up
    with reports back to back; every wait is a whole interval again."""
    waits, real_report = [], execve.Tracker.report

    class RecordingStop(execve.StopSignal):
        def sleep(self, seconds=None):
            waits.append(seconds)
            return super().sleep(seconds)

    def slow_report(self, *args, **kwargs):
        real_report(self, *args, **kwargs)
        time.sleep(0.3)

    monkeypatch.setattr(execve, "StopSignal", RecordingStop)
    monkeypatch.setattr(execve.Tracker, "report", slow_report)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert execve.main(["-interval", "0.1"]) == 0
    finally:
        timer.cancel()
    assert len(waits) >= 3 and all(0.05 < wait <= 0.1 for wait in waits), waits
