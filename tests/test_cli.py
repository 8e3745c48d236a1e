"""The command line: asm, disasm, run, load, and its error handling."""

import os
import subprocess
import sys

import pytest

from pybpf import cli
from pybpf.cli import main

EXECVE_O = os.path.join(os.path.dirname(__file__), "elf", "execve.o")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

SOURCE = "r1 = 5\nloop: r1 -= 1\nif r1 != 0 goto loop\nr0 = r1\nexit\n"


def test_asm_prints_hex_and_text(tmp_path, capsys):
    (tmp_path / "a.s").write_text(SOURCE)
    assert main(["asm", str(tmp_path / "a.s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'b701000005000000':<32}  r1 = 5"
    assert lines[2].endswith("if r1 != 0 goto -2")


def test_asm_output_then_disasm(tmp_path, capsys):
    (tmp_path / "a.s").write_text(SOURCE)
    assert main(["asm", str(tmp_path / "a.s"), "-o", str(tmp_path / "a.bin")]) == 0
    assert len((tmp_path / "a.bin").read_bytes()) == 5 * 8
    assert main(["disasm", str(tmp_path / "a.bin")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "       4:\t95 00 00 00 00 00 00 00\texit"


def test_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.s").write_text("r1 = 5\nr1 <<= 99\n")
    assert main(["asm", str(tmp_path / "bad.s")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybpf: instruction 1 (r1 <<= 99): line 2: imm shift count 99")
    assert main(["disasm", str(tmp_path / "missing.bin")]) == 1
    assert capsys.readouterr().err.startswith("pybpf: ")


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["nonsense"])
    assert info.value.code == 2


@pytest.mark.kernel
def test_run_socket_filter(tmp_path, capsys):
    (tmp_path / "a.s").write_text("r0 = 42\nexit\n")
    assert main(["run", str(tmp_path / "a.s"), "--repeat", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "r0 = 0x2a (42)" and out[1].endswith(" ns (mean of 3 runs)")


@pytest.mark.kernel
def test_run_reads_packet_data(tmp_path, capsys):
    (tmp_path / "a.s").write_text("r6 = r1\nr0 = *(u8 *)skb[1]\nexit\n")
    packet = "00" * 14 + "07" + "2a"  # Ethernet header, then the bytes a socket filter sees
    assert main(["run", str(tmp_path / "a.s"), "--data", packet]) == 0
    assert capsys.readouterr().out.startswith("r0 = 0x2a (42)")
    assert main(["run", str(tmp_path / "a.s"), "--type", "xdp"]) == 1  # no LD_ABS in XDP
    assert capsys.readouterr().err.startswith("pybpf: ")


@pytest.mark.kernel
def test_run_prints_the_verifier_log(tmp_path, capsys):
    (tmp_path / "bad.s").write_text("r1 = 1\nr0 = *(u32 *)(r1 + 0)\nexit\n")
    assert main(["run", str(tmp_path / "bad.s")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybpf: program '' rejected by the verifier")
    assert "\nR1 invalid mem access 'scalar'\nprocessed 2 insns" in err  # the log follows


def test_run_usage_errors():
    for argv in (["run", "x.s", "--data", "zz"], ["run", "x.s", "--repeat", "0"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_asm", interrupted)
    assert main(["asm", str(tmp_path / "a.s")]) == 130
    assert capsys.readouterr().err == ""


# -- explain ---------------------------------------------------------------------------------

def test_explain_text_and_bytes_say_the_same(capsys):
    assert main(["explain", "r1 = *(u32 *)(r6 + 8)"]) == 0
    from_text = capsys.readouterr().out
    assert main(["explain", "61", "61", "08", "00", "00", "00", "00", "00"]) == 0
    assert capsys.readouterr().out == from_text
    assert main(["explain", "6161080000000000"]) == 0
    assert capsys.readouterr().out == from_text
    assert from_text.startswith("r1 = *(u32 *)(r6 + 8)\n\n  byte  hex          bits      field")
    assert "meaning: {MEM, W, LDX} dst = *(unsigned size *) (src + offset)" in from_text


def test_explain_a_program_file_annotates_every_line(tmp_path, capsys):
    (tmp_path / "a.s").write_text(SOURCE)
    assert main(["explain", str(tmp_path / "a.s")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "       0:\tb7 01 00 00 05 00 00 00\tr1 = 5"
    assert lines[1] == "\t  = {MOV, K, ALU64} dst = src: copies 5 into r1."
    assert sum(line.startswith("\t  = ") for line in lines) == 5
    assert main(["asm", str(tmp_path / "a.s"), "-o", str(tmp_path / "a.bin")]) == 0
    capsys.readouterr()
    assert main(["explain", str(tmp_path / "a.bin")]) == 0  # raw bytes: no labels, same code
    raw = capsys.readouterr().out.splitlines()
    assert raw[:2] == lines[:2] and sum(line.startswith("\t  = ") for line in raw) == 5


def test_explain_the_trackers_dump_and_a_clang_object(tmp_path, capsys):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dump = subprocess.run([sys.executable, "-m", "programs.execve", "--dump"], check=True,
                          capture_output=True, text=True, cwd=root)
    (tmp_path / "dump.txt").write_text(dump.stdout)
    assert main(["explain", str(tmp_path / "dump.txt")]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.endswith("):")] == [
        "count_execve (tracepoint/syscalls/sys_enter_execve):",
        "count_execveat (tracepoint/syscalls/sys_enter_execveat):",
        "name_process (tracepoint/sched/sched_process_exec):"]
    assert "FAILS" not in out
    assert main(["explain", EXECVE_O]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sys_enter_execve (tracepoint/syscalls/sys_enter_execve):\n")
    assert "FAILS" not in out


def test_explain_bytes_the_kernel_refuses(capsys):
    assert main(["explain", "b7", "0a", "00", "00", "00", "00", "00", "00"]) == 0
    out = capsys.readouterr().out
    assert "invalid: dst is r10, the read-only frame pointer; it cannot be written" in out
    assert "FAILS here: r10 is written, so it is not r10" in out


def test_explain_errors_are_one_line(capsys):
    assert main(["explain", "61", "61"]) == 1
    assert capsys.readouterr().err == (
        "pybpf: 2 bytes is not a whole number of 8-byte instructions\n")
    assert main(["explain", "r1 = = 2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pybpf: ") and len(err.splitlines()) == 1
    assert main(["explain", "goto nowhere"]) == 1
    assert "undefined label 'nowhere'" in capsys.readouterr().err
    assert main(["explain", "missing/prog.s"]) == 1
    assert capsys.readouterr().err == (
        "pybpf: cannot read missing/prog.s: No such file or directory\n")


@pytest.mark.kernel
def test_run_explain_verifier(tmp_path, capsys):
    (tmp_path / "good.s").write_text("r6 = r1\ncall 7\nr0 = *(u32 *)(r6 + 0)\nexit\n")
    assert main(["run", str(tmp_path / "good.s"), "--explain-verifier"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "       2:\t61 60 00 00 00 00 00 00\tr0 = *(u32 *)(r6 + 0)" in out
    assert out[-2:] == ["r0 = 0x32 (50)", out[-1]]  # skb->len: 64 bytes less the 14 of Ethernet
    (tmp_path / "bad.s").write_text("r6 = r1\ncall 7\nr0 = *(u32 *)(r1 + 0)\nexit\n")
    assert main(["run", str(tmp_path / "bad.s"), "--explain-verifier"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].endswith("full log (12 lines): rerun with --verifier-log")
    assert "\t  path 1: REFUSED: R1 !read_ok\n" in err
    assert main(["run", str(tmp_path / "good.s"), "--verifier-log"]) == 0
    out = capsys.readouterr().out
    assert "2: (61) r0 = *(u32 *)(r6 +0)" in out and "processed 4 insns" in out


def _pybpf_limited(argv, **how):
    """``python -m pybpf argv`` in a child with at most 1 GiB of address space and 60 s."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "pybpf", *argv], capture_output=True,
                          timeout=60, preexec_fn=limit, cwd=ROOT, **how)


@pytest.mark.parametrize("argv, message", [
    (["disasm", "/dev/zero"], "/dev/zero is larger than 8,000,000 bytes, the most pybpf reads "
     "as the instructions of one program (the kernel takes at most 1,000,000: "
     "BPF_COMPLEXITY_LIMIT_INSNS)"),
    (["load", "/dev/zero"], "/dev/zero is larger than 67,108,864 bytes, the most pybpf reads "
     "as an ELF object"),
    (["asm", "/dev/zero"], "/dev/zero is larger than 67,108,864 bytes, the most pybpf reads "
     "as assembly source"),
    (["asm", "-"], "standard input is larger than 67,108,864 bytes, the most pybpf reads as "
     "assembly source"),
    (["explain", "/dev/zero"], "/dev/zero is larger than 67,108,864 bytes, the most pybpf "
     "reads as a file to explain"),
], ids=["disasm", "load", "asm", "asm-stdin", "explain"])
def test_endless_input_is_read_with_a_bounded_read(argv, message):
    # Before: each read until memory ran out (a MemoryError traceback under this limit).
    with open("/dev/zero", "rb") as zeros:
        result = _pybpf_limited(argv, stdin=zeros, text=True)
    assert (result.returncode, result.stderr) == (1, f"pybpf: {message}\n")


def test_disasm_reads_an_object_through_a_pipe():
    # One open, one bounded read: the first bytes decide between an object and raw bytes.
    with open(EXECVE_O, "rb") as source:
        result = _pybpf_limited(["disasm", "/dev/stdin"], input=source.read())
    out = result.stdout.decode()
    assert result.returncode == 0 and "<sys_enter_execve>:" in out
    assert out.startswith("\n/dev/stdin:\tfile format elf64-bpf\n")


def test_asm_source_must_be_utf8(tmp_path, capsys):
    (tmp_path / "a.s").write_bytes(b"r0 = 0\n\xff\n")
    assert main(["asm", str(tmp_path / "a.s")]) == 1
    assert capsys.readouterr().err == f"pybpf: {tmp_path / 'a.s'} is not UTF-8 text (byte 7)\n"
