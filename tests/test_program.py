"""Program: loading, verifier errors mapped back to the DSL, log growth, test_run, info."""

import errno
import os

import pytest

from pybpf import syscalls
from pybpf.abi import ProgType
from pybpf.asm import R0, R1, R2, Builder
from pybpf.errors import NotSupportedError, SyscallError, UsageError, VerifierError
from pybpf.program import Program
from pybpf.spec import ProgramSpec
from support import ROOT

pytestmark = pytest.mark.kernel


def ret(value):
    b = Builder()
    b.mov(R0, value)
    b.exit()
    return b.instructions


def uninitialised_read():
    b = Builder()
    b.comment("int x = 1;")
    b.mov(R0, 1)
    b.mov(R1, 2)
    b.comment("return x + y;  /* y was never set */")
    b.add(R0, R1)
    b.add(R0, R2)
    b.exit()
    return b.instructions


def test_load_and_test_run():
    with Program.from_instructions(ret(42), ProgType.SOCKET_FILTER, name="answer") as prog:
        result = prog.test_run(data=bytes(14), repeat=5)
        assert result.retval == 42 and result.data == bytes(14) and result.ctx == b""
        assert prog.verifier_log == ""
        assert prog.info()["name"] == "answer" and prog.id == prog.info()["id"]
        assert "answer" in repr(prog)
    with pytest.raises(UsageError, match="program 'answer' is closed"):
        _ = prog.fd
    prog.close()  # idempotent


def test_pin_outside_bpffs_is_a_usage_error_not_a_capability(tmp_path):
    with Program.from_instructions(ret(0), ProgType.SOCKET_FILTER) as prog:
        with pytest.raises(UsageError, match="not on a bpf file system.*mount -t bpf bpf"):
            prog.pin(str(tmp_path / "prog"))


def test_log_level_keeps_the_log_on_success():
    with Program.from_instructions(ret(1), ProgType.SOCKET_FILTER, log_level=1) as prog:
        assert "processed 2 insns" in prog.verifier_log


def test_verifier_error_points_at_the_dsl_instruction_and_comment():
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(uninitialised_read(), ProgType.SOCKET_FILTER, name="bad")
    err = info.value
    assert err.errno == errno.EACCES
    assert err.summary == "R2 !read_ok"
    assert err.insn_index == 3 and err.source_index == 3
    assert err.source == "return x + y;  /* y was never set */"
    assert "processed" in err.log
    text = str(err)
    assert "R2 !read_ok" in text and "instruction 3" in text and "r0 += r2" in text
    assert "return x + y" in text and "full log (" in text and text.endswith("lines): err.log")
    assert "processed" not in text


def test_slots_of_wide_instructions_map_back_to_the_index():
    b = Builder()
    b.lddw(R1, 1 << 40)  # two slots
    b.comment("the bad read")
    b.mov(R0, R2)
    b.exit()
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(b.instructions, ProgType.SOCKET_FILTER)
    assert info.value.insn_index == 2 and info.value.source_index == 1
    assert info.value.source == "the bad read"


def test_log_grows_when_too_small(monkeypatch):
    sizes = []
    real = syscalls.prog_load

    def recording(*args, **kwargs):
        sizes.append(kwargs.get("log_size", 0))
        return real(*args, **kwargs)
    monkeypatch.setattr(syscalls, "prog_load", recording)
    monkeypatch.setattr(syscalls, "LOG_SIZE", 16)
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(uninitialised_read(), ProgType.SOCKET_FILTER)
    # no log, the first size, then the size the kernel said the whole log needs (6.4+)
    assert sizes == [0, 16, info.value.log_true_size]
    assert len(info.value.log) + 1 == info.value.log_true_size  # the whole log, and its NUL
    assert info.value.log.startswith("func#0") or info.value.log.startswith("0:")
    assert info.value.summary == "R2 !read_ok"


@pytest.mark.parametrize("true_size, grown", [
    (0, [16, 64, 256, 1000]),  # a kernel before 6.4 does not say how large the log is: x4
    (10**9, [16, 1000]),  # log_true_size larger than the most the kernel accepts
])
def test_log_growth_stops_at_the_largest_size(monkeypatch, true_size, grown):
    """A log that never fits is grown up to LOG_SIZE_MAX once, then the error is raised."""
    sizes = []

    def log_never_fits(prog_type, code, log_size=0, **kwargs):
        sizes.append(log_size)
        if len(sizes) > 20:
            raise AssertionError(f"the log was grown 20 times: {sizes}")
        if not log_size:
            raise SyscallError(errno.EACCES, "BPF_PROG_LOAD")
        exc = SyscallError(errno.ENOSPC, "BPF_PROG_LOAD")
        exc.log_true_size = true_size
        raise exc

    monkeypatch.setattr(syscalls, "prog_load", log_never_fits)
    monkeypatch.setattr(syscalls, "LOG_SIZE", 16)
    monkeypatch.setattr(syscalls, "LOG_SIZE_MAX", 1000)
    with pytest.raises(SyscallError) as info:
        Program.from_instructions(ret(0), ProgType.SOCKET_FILTER)
    assert info.value.errno == errno.ENOSPC
    assert sizes == [0] + grown


def test_eagain_is_retried(monkeypatch):
    real, calls = syscalls.prog_load, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise SyscallError(errno.EAGAIN, "BPF_PROG_LOAD")
        return real(*args, **kwargs)
    monkeypatch.setattr(syscalls, "prog_load", interrupted)
    with Program.from_instructions(ret(3), ProgType.SOCKET_FILTER) as prog:
        assert prog.test_run(bytes(14)).retval == 3
    assert len(calls) == 3


def test_errors_without_a_log_are_raised_as_is():
    with pytest.raises(SyscallError, match="program is empty") as info:
        Program.from_instructions([], ProgType.SOCKET_FILTER)
    assert not isinstance(info.value, VerifierError)


def test_info_counts_runs_with_stats_enabled():
    stats = syscalls.enable_stats()
    try:
        with Program.from_instructions(ret(0), ProgType.SOCKET_FILTER) as prog:
            prog.test_run(bytes(14), repeat=4)
            assert prog.info()["run_cnt"] == 4
            prog.test_run(bytes(14))  # one run unless told otherwise
            assert prog.info()["run_cnt"] == 5
    finally:
        os.close(stats)


def test_freplace_and_struct_ops_programs_are_refused_clearly():
    spec = ProgramSpec(name="replace", type=ProgType.EXT, insns=ret(0), section="freplace/f")
    with pytest.raises(NotSupportedError, match="replace.*freplace/f.*attach_prog_fd"):
        Program(spec)
    spec = ProgramSpec(name="ops", type=ProgType.STRUCT_OPS, insns=ret(0), section="struct_ops")
    with pytest.raises(NotSupportedError, match="'ops' \\(struct_ops\\).*struct_ops map"):
        Program(spec)
    spec = ProgramSpec(name="on_open", type=ProgType.TRACING, insns=ret(0))
    with pytest.raises(UsageError, match=r"program 'on_open' \(TRACING\) needs a target"):
        Program(spec)


def test_eagain_is_retried_five_times_then_raised(monkeypatch):
    calls = []

    def always_interrupted(*args, **kwargs):
        calls.append(1)
        raise SyscallError(errno.EAGAIN, "BPF_PROG_LOAD")

    monkeypatch.setattr(syscalls, "prog_load", always_interrupted)
    with pytest.raises(SyscallError) as info:
        Program.from_instructions(ret(3), ProgType.SOCKET_FILTER)
    assert info.value.errno == errno.EAGAIN
    assert len(calls) == 5 + 5  # without a log, then again with one to explain: 5 tries each


def test_a_program_with_no_failing_instruction_is_explained_without_one():
    """``r0 = 0`` alone: the verifier refuses the program as a whole (no exit), naming no
    instruction, and the error says so without pointing anywhere."""
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(ret(0)[:1], ProgType.SOCKET_FILTER, name="noexit")
    err = info.value
    assert err.summary == "last insn is not an exit or jmp"
    assert (err.insn_index, err.source_index, err.source) == (None, None, None)
    assert str(err).startswith("program 'noexit' rejected by the verifier (EINVAL): last insn")
    assert "; at instruction" not in str(err)


def test_an_instruction_index_past_the_end_is_not_mapped(monkeypatch):
    def rejected(*args, **kwargs):
        raise VerifierError(errno.EACCES, "BPF_PROG_LOAD", log="2: (95) exit\nbad\n",
                            summary="bad", insn_index=2)  # the program has 2 slots

    monkeypatch.setattr(syscalls, "prog_load", rejected)
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(ret(0), ProgType.SOCKET_FILTER, name="short")
    assert (info.value.insn_index, info.value.source_index) == (2, None)
    assert str(info.value) == ("program 'short' rejected by the verifier (EACCES): bad; "
                               "full log (2 lines): err.log")


def test_the_comment_is_the_nearest_one_at_or_before_the_failing_instruction():
    b = Builder()
    b.comment("before")
    b.mov(R0, 1)
    b.mov(R0, R2)  # fails: r2 was never written; no comment of its own
    b.comment("after")
    b.exit()
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(b.instructions, ProgType.SOCKET_FILTER)
    assert (info.value.source_index, info.value.source) == (1, "before")


def test_a_failed_load_is_explained_with_a_level_1_log():
    with pytest.raises(VerifierError) as default:
        Program.from_instructions(uninitialised_read(), ProgType.SOCKET_FILTER)
    with pytest.raises(VerifierError) as level1:
        Program.from_instructions(uninitialised_read(), ProgType.SOCKET_FILTER, log_level=1)
    assert default.value.log == level1.value.log


def test_a_program_made_directly_keeps_no_log_and_loads_without_btf():
    """Program(spec) with the defaults: no log kept; an ELF program's func_info and
    line_info are passed only with the BTF they refer to."""
    from pybpf.elf import load_spec

    spec = load_spec(str(ROOT / "tests" / "elf" / "calls.o")).programs["tc_calls"]
    assert spec.func_info and spec.line_info
    with Program(ProgramSpec(name="answer", type=ProgType.SOCKET_FILTER, insns=ret(4))) as p:
        assert p.verifier_log == "" and p.test_run(bytes(14)).retval == 4
    with Program(spec) as prog:  # no btf_fd: no func_info or line_info either
        info = prog.info()
        assert (info["nr_func_info"], info["nr_line_info"]) == (0, 0)


def test_func_info_and_line_info_reach_the_kernel_with_the_btf():
    from pybpf.collection import Collection
    from pybpf.elf import load_spec

    spec = load_spec(str(ROOT / "tests" / "elf" / "calls.o"))
    program = spec.programs["tc_calls"]
    with Collection(spec) as coll:
        info = coll.programs["tc_calls"].info()
    # struct bpf_func_info is 8 bytes, struct bpf_line_info 16
    assert (info["nr_func_info"], info["nr_line_info"]) == \
        (len(program.func_info) // 8, len(program.line_info) // 16)


def test_an_unknown_program_type_lists_the_known_ones():
    with pytest.raises(UsageError) as info:
        Program.from_instructions(ret(0), 999)
    message = str(info.value)
    assert message.startswith("unknown program type 999; known: socket_filter, kprobe, ")
    assert "unspec" not in message
