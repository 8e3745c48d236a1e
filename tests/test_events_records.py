"""programs.events without a kernel: records decoded from bytes laid out by hand (the layout
of programs.events_bpf), exec ids and parents, cgroup paths, the human line; and
pybpf.asm.functions' BTF, read back by bpftool."""

import io
import json
import struct
import subprocess
import sys
import time

import pytest

from programs import events_bpf as eb
from programs.events import (CgroupPaths, Clock, EventStream, Lineage, decode, human_line,
                             to_json)
from pybpf.asm import parse
from pybpf.asm.functions import CALLBACK, function_btf
from pybpf.errors import AssemblerError
from support import require_tool


def record(**fields):
    """A record as the kernel programs write it, from named header fields and the data."""
    header = dict(ktime=5_000_000_000, cgroup_id=1, start_time=11, parent_start=22, pid=100,
                  tid=101, ppid=1, uid=1000, gid=1000, ns_pid=100, ret=0, syscall=1, flags=0,
                  comm=b"true", old_comm=b"bash", filename=b"/bin/true\0", argv=b"",
                  argv_total=None)
    header.update(fields)
    argv_total = header["argv_total"] if header["argv_total"] is not None else \
        len(header["argv"])
    head = struct.pack(eb.HEADER_FORMAT, header["ktime"], header["cgroup_id"],
                       header["start_time"], header["parent_start"], header["pid"],
                       header["tid"], header["ppid"], header["uid"], header["gid"],
                       header["ns_pid"], header["ret"], header["syscall"], header["flags"],
                       header["comm"], header["old_comm"], len(header["filename"]),
                       len(header["argv"]), argv_total)
    return head + header["filename"] + header["argv"]


def test_the_header_layout_is_the_programs():
    assert struct.calcsize(eb.HEADER_FORMAT) == eb.DATA == 112
    offsets = [0, 8, 16, 24, 32, 36, 40, 44, 48, 52, 56, 60, 62, 64, 80, 96, 100, 104]
    assert offsets == [eb.KTIME, eb.CGROUP_ID, eb.START_TIME, eb.PARENT_START_TIME, eb.PID,
                       eb.TID, eb.PPID, eb.UID, eb.GID, eb.NS_PID, eb.RET, eb.SYSCALL,
                       eb.FLAGS, eb.COMM, eb.OLD_COMM, eb.FILENAME_LEN, eb.ARGV_LEN,
                       eb.ARGV_TOTAL]


def test_a_record_decoded():
    event = decode(record(argv=b"true\0\0a b\0", ret=-2))
    assert event.argv == [b"true", b"", b"a b"]
    assert (event.filename, event.comm, event.old_comm) == (b"/bin/true", b"true", b"bash")
    assert (event.errno, event.syscall, event.argv_bytes) == ("ENOENT", "execve", 10)
    assert event.argv_truncated is False


def test_truncation_is_what_the_flags_and_sizes_say():
    cut = decode(record(argv=b"a\0b", flags=eb.ARGV_TRUNCATED, argv_total=400))
    assert cut.argv == [b"a", b"b"] and cut.argv_truncated and cut.argv_bytes == 400
    exact_fit = decode(record(argv=b"a\0b\0", flags=eb.ARGV_TRUNCATED, argv_total=4))
    assert not exact_fit.argv_truncated  # the room was full, but nothing was cut
    unknown = decode(record(argv=b"a\0", flags=eb.ARGV_TRUNCATED | eb.ARGV_TOTAL_UNKNOWN))
    assert unknown.argv_truncated and unknown.argv_bytes is None


def test_exec_ids_and_parents_survive_pid_reuse():
    lineage = Lineage("b" * 32)
    parent = decode(record(pid=10, start_time=500, ktime=1))
    lineage.assign(parent)
    assert parent.exec_id == f"{'b' * 32}:1:10" and parent.parent_exec_id is None
    child = decode(record(pid=11, ppid=10, parent_start=500, ktime=2))
    lineage.assign(child)
    assert child.parent_exec_id == parent.exec_id
    reused = decode(record(pid=12, ppid=10, parent_start=999, ktime=3))  # another process 10
    lineage.assign(reused)
    assert reused.parent_exec_id is None


def test_the_lineage_is_bounded():
    lineage = Lineage("c" * 32, limit=3)
    for pid in range(10):
        lineage.assign(decode(record(pid=pid, start_time=pid)))
    assert len(lineage._latest) == 3


def test_cgroup_paths_from_a_directory_tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    paths = CgroupPaths(str(tmp_path))
    assert paths.path((tmp_path / "a" / "b").stat().st_ino) == "/a/b"
    assert paths.path(tmp_path.stat().st_ino) == "/"
    assert paths.id_of("/a") == (tmp_path / "a").stat().st_ino
    assert paths.path(1) is None


def test_json_and_human_forms_of_one_event():
    clock = Clock()
    event = decode(record(argv=b"ls\0-l\0\x1b[31m\0", ktime=clock.start, ns_pid=1, ret=-13,
                          filename=b"/usr/bin/ls\0"))
    Lineage("d" * 32).assign(event)
    obj = to_json(event, clock)
    assert obj["argv"] == ["ls", "-l", "\x1b[31m"] and obj["ns_pid"] == 1
    assert obj["errno"] == "EACCES" and obj["exec_id"].startswith("d" * 32)
    line = human_line(event, clock, time_format="elapsed")
    assert line.startswith("0.000") and "EACCES" in line
    assert line.endswith("ls -l $'\\x1b[31m' [file /usr/bin/ls]")


def test_the_wall_clock_time_of_a_kernel_timestamp():
    clock = Clock()
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(clock.wall_ns(now) - time.time_ns()) < 1_000_000_000


def test_a_failed_exec_notes_its_file_only_when_argv_0_is_not_that_file():
    clock = Clock()
    failed = dict(ret=-2, filename=b"/bin/nope\0", ktime=clock.start)
    line = human_line(decode(record(argv=b"/bin/nope\0-x\0", **failed)), clock, "elapsed")
    assert line.endswith(" ENOENT true             /bin/nope -x")
    line = human_line(decode(record(argv=b"nope\0-x\0", **failed)), clock, "elapsed")
    assert line.endswith(" ENOENT true             nope -x [file /bin/nope]")


class _Stats:
    """The stats map as EventStream reads it: (index, a value per CPU) for each counter."""

    def __init__(self, lost, no_start):
        self.values = [(0, [lost, 0]), (1, [0, no_start])]  # events_lost, no_start

    def lookup_batch(self):
        return self.values


class _Buffered(io.TextIOWrapper):
    """A text stream that keeps what is written until flush() (as a pipe's stdout does)."""

    def __init__(self):
        super().__init__(io.BufferedWriter(io.BytesIO(), 1 << 16), write_through=False)

    def flushed(self):
        return self.buffer.raw.getvalue().decode()


def test_the_event_stream_cuts_arguments_counts_and_flushes(capsys):
    out = _Buffered()
    stream = EventStream(_Stats(0, 0), max_args=2, out=out)
    stream.handle(record(argv=b"a\0b\0"))  # exactly max_args: nothing cut
    stream.handle(record(argv=b"a\0b\0c\0"))
    assert out.flushed() == ""
    stream.flush()
    lines = out.flushed().splitlines()
    assert [line.split("true             ")[1] for line in lines] == [
        "a b", "a b [truncated: 6 bytes of arguments in all]"]
    stream.as_json = True
    stream.report(7)
    stats = json.loads(capsys.readouterr().out)
    assert (stats["events"], stats["events_lost"], stats["untracked_execs"],
            stats["starts_not_seen"]) == (2, 0, 7, 0)


def test_lost_events_are_warned_about_once_and_flushed(monkeypatch):
    stderr = _Buffered()
    monkeypatch.setattr(sys, "stderr", stderr)
    stream = EventStream(_Stats(5, 3), out=_Buffered())
    stream.report(0)
    stream.report(0)  # nothing new lost: no second warning
    assert stderr.flushed() == "WARNING: 5 events lost since the last report (5 since start): " \
        "the ring buffer was full; raise --buffer-size (the counts stay exact)\n"


def test_function_btf_is_read_back_by_bpftool(tmp_path):
    bpftool = require_tool("bpftool")
    insns = parse("r1 = 4\nr2 = 0\nr3 = 0\nr4 = 0\ncall 181\nr0 = 0\nexit\n"
                  "step: r0 = 0\nexit")
    btf, infos = function_btf({"prog": (insns, [("step", CALLBACK)])})
    (tmp_path / "f.btf").write_bytes(btf)
    dump = subprocess.run([bpftool, "btf", "dump", "file", str(tmp_path / "f.btf")],
                          capture_output=True, text=True, check=True).stdout
    assert "FUNC 'prog' type_id=" in dump and "linkage=global" in dump
    assert "FUNC 'step' type_id=" in dump and "linkage=static" in dump
    assert "'index' type_id=" in dump
    # func_info: the entry at slot 0, the callback at slot 7 (after the 7 instructions)
    assert [struct.unpack_from("<I", infos["prog"], off)[0] for off in (0, 8)] == [0, 7]


def test_function_btf_wants_the_label():
    with pytest.raises(AssemblerError, match="no label 'nowhere'"):
        function_btf({"prog": (parse("r0 = 0\nexit"), [("nowhere", CALLBACK)])})


@pytest.mark.kernel
def test_a_kernel_loads_a_bpf_loop_callback_with_that_btf():
    """The point of function_btf: bpf_loop's callback needs func_info (the verifier says
    "missing btf func_info" without it); the event mode's argument walk is one."""
    from pybpf.abi import ProgType
    from pybpf.asm import R0, R1, R2, R3, R4, Builder
    from pybpf.collection import Collection
    from pybpf.spec import CollectionSpec, ProgramSpec

    b = Builder()
    b.mov(R1, 10)
    b.ld_func(R2, "step")
    b.mov(R3, 0)
    b.mov(R4, 0)
    b.call("loop")
    b.exit()  # r0: how many steps ran
    b.label("step")
    b.mov(R0, 0)
    b.exit()
    btf, infos = function_btf({"looper": (b.instructions, [("step", CALLBACK)])})
    spec = CollectionSpec(programs={"looper": ProgramSpec(
        "looper", ProgType.SOCKET_FILTER, b.instructions, func_info=infos["looper"])}, btf=btf)
    with Collection(spec) as coll:
        assert coll.programs["looper"].test_run(bytes(14)).retval == 10
