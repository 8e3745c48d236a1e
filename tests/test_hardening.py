"""Regression tests for what adversarial testing broke (issue #7): hangs, wrong results,
tracebacks and wrong exception types. Each test failed before its fix."""

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from construct import Int32ul, Struct

from pybpf import cli, runner
from pybpf.abi import MapType, ProgType
from pybpf.asm import parse
from pybpf.attach import attach
from pybpf.errors import (
    AssemblerError,
    AttachError,
    MapError,
    UsageError,
    VerifierError,
)
from pybpf.host import held_bpf_ids
from pybpf.maps import Map
from pybpf.program import Program
from pybpf.verifier import summary
from programs import execve
from programs.output import safe_name, table_lines

ROOT = Path(__file__).resolve().parent.parent
RET0 = parse("r0 = 0\nexit")


# --- hangs and unbounded work -------------------------------------------------------------

@pytest.mark.kernel
def test_lookup_batch_chunk_must_be_a_positive_count():
    with Map.create(MapType.HASH, 4, 8, 4) as m:
        m[bytes(4)] = bytes(8)
        for chunk in (0, -1, 1.5, True):
            with pytest.raises(UsageError, match="chunk must be a whole number"):
                m.lookup_batch(chunk=chunk)
        # a huge chunk is capped at what the map can hold (it used to allocate 2**40 slots)
        assert m.lookup_batch(chunk=2 ** 40) == [(bytes(4), bytes(8))]


# --- wrong results --------------------------------------------------------------------------

@pytest.mark.kernel
def test_closing_a_map_during_iteration_never_reads_the_map_that_reuses_its_fd():
    first = Map.create(MapType.HASH, 4, 4, 8, key_type="<I", value_type="<I")
    first.update_batch({1: 10, 2: 20, 3: 30})
    walk = iter(first)
    next(walk)
    number = first.fd
    first.close()
    with Map.create(MapType.HASH, 4, 4, 8, key_type="<I", value_type="<I") as second:
        second.update_batch({7: 70, 8: 80, 9: 90})
        assert second.fd == number  # the kernel gave the number out again
        with pytest.raises(UsageError, match="map '' is closed"):
            next(walk)
        with pytest.raises(UsageError, match="is closed"):
            list(first.items())


def test_load_shows_names_that_start_with_an_underscore():
    class FakeMap:
        type = MapType.ARRAY
        type_name = "ARRAY"

        def items(self):
            value = Struct("_count" / Int32ul, "inner" / Struct("_x" / Int32ul))
            return [(0, value.parse(bytes([5, 0, 0, 0, 6, 0, 0, 0])))]

    out = io.StringIO()
    runner.print_maps({".bss": FakeMap()}, out)
    assert out.getvalue() == (".bss (ARRAY, 1 entries, 1 non-zero):\n"
                              "  0: {_count=5 inner={_x=6}}\n")


class _Counted:
    """A tracker whose snapshot says how many executions were dropped so far."""

    lost_warning = execve.Tracker.lost_warning

    def __init__(self, drops):
        self.drops = iter(drops)

    def snapshot(self):
        return {}, {}, next(self.drops)

    def forget_exited(self, counts, names):
        return []


def test_the_lost_exec_warning_appears_only_when_executions_were_lost(capsys):
    fake = _Counted([0, 3, 3, 5, 5])
    fake.max_pids, fake.dropped_reported = 2, 0
    for _ in range(5):
        execve.Tracker.report(fake)
    warnings = [line.split(" ", 2)[2] for line in capsys.readouterr().out.splitlines()
                if "WARNING" in line]
    assert warnings == [
        "WARNING: 3 executions were not counted since the last report (3 since start): the "
        "maps are full (--max-pids 2); raise --max-pids",
        "WARNING: 2 executions were not counted since the last report (5 since start): the "
        "maps are full (--max-pids 2); raise --max-pids",
    ]


@pytest.mark.parametrize("raw, shown", [
    (b", Executions: 9", "\\x2c Executions: 9"),
    (b"a, b", "a\\x2c b"),
    (b"a,b", "a,b"),  # a comma alone separates nothing
    ("x\u0336y".encode(), "x\\xcc\\xb6y"),  # a combining long stroke overlay
    ("\u3164".encode(), "\\xe3\\x85\\xa4"),  # the Hangul filler prints as nothing
    ("a\u00a0b".encode(), "a\\xc2\\xa0b"),  # a no-break space looks like a space
    ("\u0301a".encode(), "\\xcc\\x81a"),  # a combining acute at the start
])
def test_names_cannot_fake_a_field_or_hide_in_invisible_characters(raw, shown):
    assert safe_name(raw) == shown


def test_a_name_with_the_separator_leaves_three_fields():
    line = table_lines({7791: 1}, {7791: b", Executions: 9"})[1]
    assert line == "PID: 7791, Name: \\x2c Executions: 9, Executions: 1"
    assert line.split(", ") == ["PID: 7791", "Name: \\x2c Executions: 9", "Executions: 1"]


@pytest.mark.kernel
def test_an_infinite_loop_is_summarised_by_its_reason():
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(parse("top: goto top"), ProgType.SOCKET_FILTER)
    assert info.value.summary == "infinite loop detected at insn 0"
    assert summary("0: (05) goto pc-1\ninfinite loop detected at insn 0\n"
                   "cur state: R1=ctx() R10=fp0\nold state: R1=ctx() R10=fp0\n"
                   "processed 9 insns (limit 1000000)\n") == "infinite loop detected at insn 0"


# --- tracebacks and wrong exception types -------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("call, field", [
    (lambda: Map.create(MapType.HASH, -1, 8, 4), "key_size = -1"),
    (lambda: Map.create(MapType.HASH, 4, 8, 2 ** 32), "max_entries = 4294967296"),
    (lambda: Map.create(MapType.HASH, 4, 8, 4, flags=-1), "map_flags = -1"),
    (lambda: Map.from_id(-1), "start_id = -1"),
])
def test_integers_out_of_range_are_usage_errors(call, field):
    with pytest.raises(UsageError, match=field + r" does not fit the kernel's \w+\.\w+, a u\d+"):
        call()


@pytest.mark.kernel
def test_update_flags_and_repeat_out_of_range():
    with Map.create(MapType.HASH, 4, 8, 4) as m:
        with pytest.raises(UsageError, match="flags = -1 does not fit"):
            m.update(bytes(4), bytes(8), flags=-1)
    with Program.from_instructions(RET0, ProgType.SOCKET_FILTER) as prog:
        with pytest.raises(UsageError, match="repeat = 4294967296 does not fit"):
            prog.test_run(bytes(14), repeat=2 ** 32)


@pytest.mark.parametrize("argv", [["--max-pids", "99999999999"], ["-interval", "1e10"],
                                  ["-interval", "inf"]])
def test_tracker_refuses_out_of_range_options(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        execve.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("finite" in err) if argv[1] == "inf" else ("must be" in err)


def test_pybpf_run_refuses_a_repeat_out_of_range(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["run", "x.s", "--repeat", "99999999999"])
    assert exc.value.code == 2 and "must be between 1 and 4294967295" in capsys.readouterr().err


@pytest.mark.kernel
def test_misuse_raises_pybpf_errors():
    with pytest.raises(MapError, match="map_type"):  # the kernel does not know type 999
        Map.create(999, 4, 4, 1)
    with pytest.raises(UsageError, match="unknown program type 999"):
        Program.from_instructions(RET0, 999)
    with pytest.raises(AssemblerError, match="list of Instructions"):
        Program.from_instructions([1, 2], ProgType.SOCKET_FILTER)
    with pytest.raises(UsageError, match="license must be a string"):
        Program.from_instructions(RET0, ProgType.SOCKET_FILTER, license=None)
    with Program.from_instructions(RET0, ProgType.SOCKET_FILTER) as prog:
        with pytest.raises(UsageError, match="data must be bytes"):
            prog.test_run(data="abc")
    with Program.from_instructions(RET0, ProgType.TRACEPOINT) as prog:
        with pytest.raises(AttachError, match="invalid tracepoint name"):
            attach(prog, "tracepoint/a\0b/c")
    with Map.create(MapType.HASH, 4, 4, 4) as m:
        with pytest.raises(UsageError, match="item 0 is 1"):
            m.update_batch([1, 2])
        sixteen = memoryview(bytes(16)).cast("I")  # 4 items, 16 bytes
        with pytest.raises(UsageError, match="got 16 bytes"):
            m[sixteen] = bytes(4)


# --- the tracker as a process: closed or full stdout, signals at any moment ---------------

@pytest.mark.kernel
def test_stdout_closed_is_one_line_and_exit_1():
    result = subprocess.run(f"{sys.executable} -m programs.execve -interval 0.1 >&-",
                            shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("programs.execve: standard output is closed; nothing to print "
                             "the reports to\n")


@pytest.mark.kernel
def test_stdout_full_is_one_line_and_exit_1():
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "programs.execve", "-interval", "0.1"],
                                cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("programs.execve: cannot write to standard output: No space "
                             "left on device\n")


def _loaded(ids):
    """Which of the program ids ``ids`` are still loaded in the kernel."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return {p["id"] for p in json.loads(out or "[]")} & ids


def _start_with_stop_signals_blocked():
    """Popen's preexec_fn: the child starts with SIGINT and SIGTERM blocked (held pending)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.kernel
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_in_the_first_300_ms_leaves_no_traceback_and_nothing_attached(signum):
    """A signal at any moment of the tracker's first 300 ms: during its imports, loading,
    attaching, the first report. The window starts where the tracker's code does: the child
    is started with the stop signals blocked and the tracker unblocks them in its first lines,
    so a signal sent during CPython's own start-up (before any code of ours runs, where
    CPython itself reports a KeyboardInterrupt as a fatal error) reaches the tracker then."""
    from support import require_tool

    require_tool("bpftool")
    for step in range(10):  # evenly over the first 300 ms
        proc = subprocess.Popen([sys.executable, "-m", "programs.execve", "-interval", "60"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=_start_with_stop_signals_blocked)
        time.sleep(step * 0.3 / 9)
        held = held_bpf_ids(proc.pid, "prog")  # what it holds as the signal leaves
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=30)[1].decode()
        assert "Traceback" not in stderr and "Exception" not in stderr, stderr
        assert proc.returncode in (0, 128 + signum, -signum), (step, proc.returncode, stderr)
        deadline = time.monotonic() + 5  # programs are freed after an RCU grace period
        while _loaded(held) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _loaded(held), f"programs left after {signum} at step {step}"
