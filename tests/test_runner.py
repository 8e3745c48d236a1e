"""pybpf load, the generic runner: knobs, attaching, events decoded with the object's BTF (the
record type named or guessed), maps printed compactly, log2 histograms drawn as libbpf-tools'
runqlat draws them, Ctrl+C, and every failure as one line."""

import io
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from pybpf import cli, runner
from pybpf.abi import MapType
from pybpf.btf import BTF
from pybpf.elf import load_spec
from pybpf.errors import AttachError, UsageError
from pybpf.runner import Options, event_record_types, log2_histogram, run_object

from attach_support import OBJECTS, PROBE_TARGET_C, build_c
from support import ELF_DIR, require_tool

EVENTS_O = os.path.join(OBJECTS, "events.o")
EXECVE_O = str(ELF_DIR / "execve.o")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- log2 histograms --------------------------------------------------------------------------

@pytest.mark.oracle
def test_histograms_are_drawn_as_runqlat_draws_them():
    """runqlat (libbpf-tools) prints a real histogram; the same counts, drawn here, are the
    same lines, character for character."""
    out = subprocess.run([require_tool("runqlat"), "1", "1"], capture_output=True, text=True,
                         timeout=30)
    lines = [line for line in out.stdout.splitlines() if " : " in line]
    assert lines[0].endswith("usecs               : count    distribution"), out.stdout
    counts = [int(re.search(r": (\d+)", line).group(1)) for line in lines[1:]]
    assert log2_histogram(counts, "usecs") == lines


def test_histogram_shapes():
    assert log2_histogram([0, 0], "x") == []
    assert log2_histogram([3, 1], "n") == [
        "     n                   : count    distribution",
        "         0 -> 1          : 3        |****************************************|",
        "         2 -> 3          : 1        |*************                           |"]
    wide = [0] * 34 + [1]  # past slot 32: wider columns, 20 stars
    drawn = log2_histogram(wide, "ns")
    assert drawn[0] == " " * 15 + "ns".ljust(29) + " : count    distribution"
    assert drawn[-1] == (f"{2**34:>20} -> {2**35 - 1:<20} : 1        |" + "*" * 20 + "|")
    assert len(drawn) == 36


# -- the record type --------------------------------------------------------------------------

def test_event_record_types_guessed_or_named():
    spec = load_spec(EVENTS_O)
    btf = BTF.parse(spec.btf)
    with pytest.raises(UsageError, match="the records of 'ring' could be any of "
                                         "'struct pybpf_event', 'struct decoy': choose"):
        event_record_types(spec, btf)
    named = event_record_types(spec, btf, "ring=struct pybpf_event")
    assert {name: btf.name(t) for name, t in named.items()} == {
        "ring": "pybpf_event", "perf": "tick"}  # perf: the one 16-byte struct
    assert {name: btf.name(t) for name, t in
            event_record_types(spec, btf, "struct decoy").items()} == {
        "ring": "decoy", "perf": "decoy"}
    with pytest.raises(UsageError, match="no such type in the object's BTF; its structs: "
                                         "decoy, pybpf_event, tick"):
        event_record_types(spec, btf, "struct nothing")
    with pytest.raises(UsageError, match="'hist' is not one of the object's event maps"):
        event_record_types(spec, btf, "hist=struct tick")


def test_kernel_types_are_not_records():
    """execve.o reads task_struct with CO-RE and has tracepoint contexts: none of those, nor
    what they contain, is taken for a record (it has no event map: nothing to guess)."""
    spec = load_spec(EXECVE_O)
    assert event_record_types(spec, BTF.parse(spec.btf)) == {}
    with pytest.raises(UsageError, match="no ring buffer or perf buffer"):
        event_record_types(spec, BTF.parse(spec.btf), "struct x")


# -- maps ---------------------------------------------------------------------------------------

class FakeMap:
    """What print_maps reads of a map: its type and its items."""

    def __init__(self, type, items):
        self.type = type
        self.type_name = type.name
        self._items = items

    def items(self):
        return self._items

    def __len__(self):
        return len(self._items)


def printed(maps, **options):
    out = io.StringIO()
    runner.print_maps(maps, out, **options)
    return out.getvalue()


def test_maps_are_printed_compactly():
    assert printed({"counts": FakeMap(MapType.HASH, [(1, 5), (2, 0), (3, 7)])}) == (
        "counts (HASH, 3 entries, 2 non-zero):\n  1: 5\n  3: 7\n")
    assert printed({"empty": FakeMap(MapType.ARRAY, [(0, 0), (1, 0)])}) == (
        "empty (ARRAY, 2 entries, 0 non-zero)\n")
    many = FakeMap(MapType.HASH, [(k, k) for k in range(1, 31)])
    text = printed({"big": many}, limit=3)
    assert text == ("big (HASH, 30 entries, 30 non-zero):\n  30: 30\n  29: 29\n  28: 28\n"
                    f"  ... 27 more non-zero entries (their values total {sum(range(1, 28))})\n")


def test_per_cpu_values_are_summed():
    per_cpu = FakeMap(MapType.PERCPU_ARRAY, [(0, [1, 2]), (1, [0, 0]),
                                             (2, [{"a": 1, "b": 2}, {"a": 3, "b": 4}])])
    assert printed({"pc": per_cpu}) == (
        "pc (PERCPU_ARRAY, 3 entries, 2 non-zero):\n  0: 3\n  2: {a=4 b=6}\n")
    assert printed({"pc": per_cpu}, per_cpu=True) == (
        "pc (PERCPU_ARRAY, 3 entries, 2 non-zero):\n  0: 3 (per CPU: [1, 2])\n"
        "  2: {a=4 b=6} (per CPU: [{a=1 b=2}, {a=3 b=4}])\n")


def test_histogram_maps_and_members_are_drawn():
    slots = [0, 2, 5, 1] + [0] * 22
    text = printed({"hist": FakeMap(MapType.ARRAY, list(enumerate(slots)))})
    assert text == "hist (ARRAY, 26 entries, 3 non-zero):\n" + "".join(
        line + "\n" for line in log2_histogram(slots, "hist"))
    keyed = FakeMap(MapType.HASH, [({"dev": 8}, {"slots": slots, "comm": "dd"})])
    assert printed({"hists": keyed}) == "hists (HASH, 1 entries, 1 non-zero):\n  {dev=8}:\n" \
        + "".join("  " + line + "\n" for line in log2_histogram(slots, "slots"))


def test_untrusted_text_is_escaped():
    assert runner.format_value("\x1b[2J") == "'\\x1b[2J'"
    assert runner.format_value({"comm": "a\nb"}) == "{comm='a\\nb'}"
    assert runner.terminal_safe("a\tb\x1b[0mc\x07") == "a\tb\\x1b[0mc\\x07"


# -- running objects ------------------------------------------------------------------------------

def _open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def _stop_after(seconds, signum=signal.SIGINT):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_load_stops_on_a_signal_and_cleans_up(signum):
    before, handlers = _open_fds(), {s: signal.getsignal(s) for s in (signal.SIGINT,
                                                                       signal.SIGTERM)}
    timer = _stop_after(0.5, signum)
    out = io.StringIO()
    try:
        assert run_object(EXECVE_O, out=out) == 0
    finally:
        timer.cancel()
    text = out.getvalue()
    assert "attached sys_enter_execve (tracepoint/syscalls/sys_enter_execve)" in text
    assert "exec_count (HASH" in text
    assert _open_fds() == before  # links, programs, maps and the wakeup pipe closed
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup fd is restored too


@pytest.mark.kernel
def test_a_signal_while_loading_ends_the_run_after_loading(monkeypatch):
    from pybpf import collection

    class SignalledWhileLoading(collection.Collection):
        def __init__(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C in the middle of loading
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(collection, "Collection", SignalledWhileLoading)
    before, out = _open_fds(), io.StringIO()
    assert run_object(EXECVE_O, out=out) == 0
    assert "attached" not in out.getvalue() and "exec_count" in out.getvalue()
    assert _open_fds() == before


def _pybpf_load(*argv, stdin=None):
    """``python -m pybpf load ...`` as a child process (stdout, stderr as pipes)."""
    return subprocess.Popen([sys.executable, "-m", "pybpf", "load", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process, text):
    """Lines of ``process``'s stdout up to the one containing ``text``."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"{text!r} never printed: {''.join(lines)}")


@pytest.mark.kernel
def test_events_knobs_and_histograms_from_the_command_line(tmp_path):
    """events.o run by `pybpf load` for one process: each of its getppid() calls is a
    decoded ring buffer event and perf buffer event, and a histogram slot; Ctrl+C ends it
    with status 0 and no traceback."""
    target = build_c(tmp_path, "caller", "#include <unistd.h>\nint main(void) { char c; "
                     "while (read(0, &c, 1) > 0); for (int i = 0; i < 10; i++) getppid(); "
                     "return 0; }\n")
    child = subprocess.Popen([target], stdin=subprocess.PIPE)
    run = _pybpf_load(EVENTS_O, "--set", f"targ_pid={child.pid}",
                      "--event-type", "ring=struct pybpf_event")
    try:
        started = _wait_for(run, "Ctrl+C stops")
        child.communicate(timeout=30)
        events = [line for _, line in zip(range(20), run.stdout)]
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
        child.kill()
    assert run.returncode == 0 and err == ""
    ring = [line for line in events if line.startswith("ring: ")]
    perf = [line for line in events if line.startswith("perf: ")]
    assert ring == [f"ring: pid={child.pid} seq={n} comm='caller'\n" for n in range(1, 11)]
    assert [re.sub(r"cpu=\d+", "cpu=C", line) for line in perf] == [
        f"perf: pid={child.pid} cpu=C seq={n}\n" for n in range(1, 11)]
    slots = [1, 2, 4, 3]  # seq 1 | 2,3 | 4..7 | 8..10
    assert "".join(line + "\n" for line in log2_histogram(slots, "hist")) in out
    assert f"targ_pid={child.pid}" in out or str(child.pid) in out
    assert started == ["attached on_getppid (tracepoint/syscalls/sys_enter_getppid)\n",
                       "running 1 of 1 programs; Ctrl+C stops\n"]


@pytest.mark.kernel
def test_failures_are_one_line(tmp_path):
    cases = [
        (["/nonexistent.o"], "pybpf: cannot read /nonexistent.o"),
        ([EVENTS_O], "pybpf: the records of 'ring' could be any of"),
        ([EVENTS_O, "--event-type", "struct nothing"], "pybpf: --event-type 'struct nothing'"),
        ([EVENTS_O, "--set", "no_such_knob=1", "--event-type", "struct decoy"],
         "pybpf: no global variable 'no_such_knob'"),
        ([EVENTS_O, "--event-type", "struct decoy", "--attach", "nothing=xdp"],
         "pybpf: --attach names no program of the object: nothing"),
    ]
    for argv, start in cases:
        run = _pybpf_load(*argv)
        out, err = run.communicate(timeout=30)
        assert run.returncode == 1, (argv, out, err)
        assert err.startswith(start) and err.count("\n") == 1, (argv, err)
    with pytest.raises(SystemExit) as info:
        cli.main(["load", EVENTS_O, "--set", "novalue"])
    assert info.value.code == 2


@pytest.mark.kernel
def test_programs_attach_to_the_targets_the_options_name():
    """net.o: its cgroup programs attach to --cgroup's directory; the others say what they
    need, and the rest runs. With no target at all, nothing attaches: one error."""
    cgroup = os.path.join("/sys/fs/cgroup/unified", f"pybpf-runner-{os.getpid()}")
    os.mkdir(cgroup)
    timer = _stop_after(1.0)
    out = io.StringIO()
    try:
        assert run_object(os.path.join(OBJECTS, "net.o"), Options(cgroup=cgroup), out=out) == 0
    finally:
        timer.cancel()
        os.rmdir(cgroup)
    text = out.getvalue()
    assert f"attached sock_create (cgroup_inet_sock_create on cgroup {cgroup})" in text
    assert f"attached cgroup_egress (cgroup_inet_egress on cgroup {cgroup})" in text
    assert "loaded xdp_count but did not attach it: cannot attach section 'xdp' by its name: " \
           "it attaches to a network interface" in text
    assert "counts (ARRAY, 16 entries, 0 non-zero)" in text
    with pytest.raises(AttachError, match="none of the programs could be attached "
                                          "\\(socket_count, socket_drop, xdp_count"):
        run_object(os.path.join(OBJECTS, "net.o"), out=io.StringIO())


# -- the corpus of tests/objects, run as its tools would be ---------------------------------------

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "objects")


def _run_until(argv, workload, stop_after=0.3):
    """``pybpf load`` with ``argv`` until it says it attached, then ``workload()``, then
    Ctrl+C; (stdout, stderr), after checking it exited 0."""
    run = _pybpf_load(*argv)
    try:
        started = _wait_for(run, "Ctrl+C stops")  # every program attached
        workload()
        threading.Event().wait(stop_after)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 0 and err == "", err
    return "".join(started) + out, err


@pytest.mark.kernel
def test_execsnoop_events_with_a_knob(tmp_path):
    """execsnoop.bpf.o with its targ_comm knob set: exactly the execs of that command are
    events, decoded from its BTF (struct exec_event, guessed: the one of its size)."""
    true = tmp_path / "pybpfexec"
    true.write_bytes(open("/bin/true", "rb").read())
    true.chmod(0o755)
    children = []

    def workload():
        for _ in range(5):
            child = subprocess.run([str(true)], check=True)
            children.append(child)

    out, _ = _run_until([os.path.join(CORPUS, "execsnoop.bpf.o"), "--set",
                         "targ_comm=pybpfexec"], workload)
    events = [line for line in out.splitlines() if line.startswith("events: ")]
    assert len(events) == 5, out
    assert all(re.fullmatch(r"events: pid=\d+ ppid=\d+ uid=0 retval=0 comm='pybpfexec'", e)
               for e in events), events
    assert "  0: {targ_uid=4294967295 ignore_failed=1 targ_comm='pybpfexec'}" in out


@pytest.mark.kernel
def test_uprobes_attached_by_the_attach_option(tmp_path):
    """uprobes.bpf.o's sections name no binary: --attach names it, --set its process."""
    target = build_c(tmp_path, "probe_target", PROBE_TARGET_C)
    child = subprocess.Popen([target, "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        where = f"{target}:pybpf_probe_me"
        out, _ = _run_until([os.path.join(CORPUS, "uprobes.bpf.o"),
                             "--set", f"targ_tgid={child.pid}",
                             "--attach", f"probe_entry=uprobe/{where}",
                             "--attach", f"probe_return=uretprobe/{where}",
                             "--attach", f"probe_sleepable=uprobe.s/{where}"],
                            lambda: child.communicate(timeout=30))
    finally:
        child.kill()
    assert f"attached probe_entry (uprobe/{where})" in out
    assert "  0: {seen={calls=1000 returns=1000 last_arg=999 last_ret=1998 " in out


@pytest.mark.kernel
def test_runqlat_draws_its_histogram():
    """runqlat.bpf.o: the scheduler's tracepoints count wakeup-to-run latencies into a log2
    histogram, drawn as a bar chart whose rows are the map's slots."""
    out, _ = _run_until([os.path.join(CORPUS, "runqlat.bpf.o")],
                        lambda: [os.sched_yield() for _ in range(1000)], stop_after=0.5)
    chart = out[out.index("hist (ARRAY, 26 entries, "):].splitlines()
    assert chart[1] == "     hist                : count    distribution"
    rows = [re.fullmatch(r" +(\d+) -> (\d+) +: (\d+) +\|(\**) *\|", line) for line in
            chart[2:] if " -> " in line]
    assert rows and all(rows)
    assert [(int(r[1]), int(r[2])) for r in rows] == [
        (0 if i == 0 else 2**i, 2**(i + 1) - 1) for i in range(len(rows))]
    assert max(len(r[4]) for r in rows) == 40


@pytest.mark.kernel
def test_profile_samples_and_iterators_print():
    out, _ = _run_until([os.path.join(CORPUS, "profile.bpf.o"), "--frequency", "199"],
                        lambda: [sum(range(10000)) for _ in range(300)])
    assert "attached do_perf_event (CPU clock at 199 Hz on " in out
    samples = int(re.search(r"\{samples=(\d+)\}", out).group(1))
    assert samples > 0 and "stackmap (STACK_TRACE): " in out
    out, _ = _run_until([os.path.join(CORPUS, "iters.bpf.o"), "--set",
                         f"targ_tgid={os.getpid()}"], lambda: None)
    start = out.index("dump_task (iter/task):")
    listing = out[start:out.index("dump_bpf_map (iter/bpf_map):", start)].splitlines()
    mine = [line for line in listing if line.startswith(f"  {os.getpid()} ")]
    with open("/proc/self/comm") as f:  # python3, or python in a venv
        comm = f.read().strip()
    assert f"  {os.getpid()} {os.getpid()} {comm}" in mine
    assert len(mine) == len(os.listdir("/proc/self/task"))  # its threads, no other task


@pytest.mark.oracle
@pytest.mark.kernel
def test_events_o_counts_as_libbpf_counts_them(tmp_path):
    """events.o's histogram after the same workload, attached by libbpf (its targ_pid knob
    set through bpf_map__initial_value) and by pybpf (spec.set_variable): the same."""
    from attach_support import libbpf_counts, waiting

    caller = build_c(tmp_path, "caller", "#include <unistd.h>\nint main(void) { char c; "
                     "while (read(0, &c, 1) > 0); for (int i = 0; i < 10; i++) getppid(); "
                     "return 0; }\n")
    with waiting([caller]) as child:
        theirs = libbpf_counts(tmp_path, "events.o", child.pid, child.go, map_name="hist",
                               knobs=[f"targ_pid={child.pid}"])
    from pybpf.attach import attach_all
    from pybpf.collection import Collection

    spec = load_spec(EVENTS_O)
    with waiting([caller]) as child:
        spec.set_variable("targ_pid", str(child.pid))
        with Collection(spec) as coll:
            links = attach_all(coll.programs)
            child.go()
            for link in links:
                link.close()
            ours = [coll.maps["hist"][i] for i in range(32)]
    assert theirs == ours == [1, 2, 4, 3] + [0] * 28
