"""pybpf.verifier's walk: a log_level 2 log read step by step, and the program beside it."""

import pytest

from pybpf import verifier
from pybpf.abi import ProgType
from pybpf.asm import parse
from pybpf.errors import VerifierError
from pybpf.program import Program

# A log_level 2 log as Linux 6.18 writes it (the tracker's name_process, the map's address
# and the liveness lines shortened): a call whose state comes on a line of its own after
# precision tracking, a jump explored both ways, the statistics.
LOG = """func#0 @0
Live regs before insn:
      0: .......... (85) call bpf_get_current_pid_tgid#14
      8: 0......... (15) if r0 == 0x0 goto pc+3
0: R1=ctx() R10=fp0
0: (85) call bpf_get_current_pid_tgid#14      ; R0=scalar()
1: (77) r0 >>= 32                     ; R0=scalar(smin=0,smax=umax=0xffffffff)
2: (63) *(u32 *)(r10 -4) = r0         ; R0=scalar(smin=0,smax=umax=0xffffffff) R10=fp0 fp-8=mmmm????
3: (bf) r2 = r10                      ; R2=fp0 R10=fp0
4: (07) r2 += -4                      ; R2=fp-4
5: (18) r1 = 0xffff888104405400       ; R1=map_ptr(map=process_names,ks=4,vs=16)
7: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=process_names,ks=4,vs=16)
8: (15) if r0 == 0x0 goto pc+3        ; R0=map_value(map=process_names,ks=4,vs=16)
9: (bf) r1 = r0                       ; R0=map_value(map=process_names,ks=4,vs=16) R1=map_value(map=process_names,ks=4,vs=16)
10: (b7) r2 = 16                      ; R2=16
11: (85) call bpf_get_current_comm#16
mark_precise: frame0: last_idx 11 first_idx 8 subseq_idx -1
mark_precise: frame0: regs=r2 stack= before 10: (b7) r2 = 16
12: R0=scalar()
12: (b7) r0 = 0                       ; R0=0
13: (95) exit
(0) frame 0 insn 7 +live -8
(0) live stack update done in 2 iterations

from 8 to 12: R0=0 R10=fp0 fp-8=mmmm????
12: R0=0 R10=fp0 fp-8=mmmm????
12: (b7) r0 = 0                       ; R0=0
13: (95) exit
processed 15 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0
"""  # noqa: E501


def test_walk_reads_every_step_and_path():
    walk = verifier.walk(LOG)
    assert walk.start == "R1=ctx() R10=fp0"
    assert [(s.slot, s.path) for s in walk.steps] == [
        (0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (7, 1), (8, 1), (9, 1), (10, 1),
        (11, 1), (12, 1), (13, 1), (12, 2), (13, 2)]
    states = {(s.slot, s.path): s.state for s in walk.steps}
    assert states[8, 1] == "R0=map_value(map=process_names,ks=4,vs=16)"
    assert states[11, 1] == "R0=scalar()"  # printed on its own line, after mark_precise
    assert states[13, 1] == states[13, 2] == ""
    assert walk.branches == [verifier.Branch(2, 1, 8, 12, "R0=0 R10=fp0 fp-8=mmmm????")]
    assert walk.pruned == {}
    assert walk.statistics.startswith("processed 15 insns (limit 1000000)")


def test_walk_sees_pruned_paths():
    log = ("0: (b7) r0 = 0                        ; R0=0\n"
           "1: (15) if r1 == 0x0 goto pc+1\n"
           "2: (b7) r0 = 1                        ; R0=1\n"
           "3: (95) exit\n"
           "from 1 to 3: safe\n"
           "4: safe\n")
    walk = verifier.walk(log)
    assert walk.branches == [verifier.Branch(2, 1, 1, 3, "safe")]
    assert walk.pruned == {2: 4}  # (the second line is made up: a path pruned on its own)


NAME = "r6 = r1\ncall 7\nif r0 == 5 goto done\nr0 = 1\ndone: exit\n"


def test_interleave_puts_each_state_under_its_instruction():
    insns = parse("; comment\nr0 = 1\nr1 = r0\nexit\n")
    log = ("0: R1=ctx() R10=fp0\n0: (b7) r0 = 1                        ; R0=1\n"
           "1: (bf) r1 = r0                       ; R0=1 R1=1\n2: (95) exit\n"
           "processed 3 insns (limit 1000000) max_states_per_insn 0 total_states 0\n")
    lines = verifier.interleave(insns, log).splitlines()
    assert " ".join(lines[:3]) == (
        "Under each instruction, what the verifier knew after it on the one path it followed: "
        "the registers and stack slots the instruction touched, as its log prints them. Path 1 "
        "starts at the first instruction with R1=ctx() R10=fp0.")
    assert all(len(line) <= 100 for line in lines[:3])
    assert lines[3:] == [
        "; comment",
        "       0:\tb7 00 00 00 01 00 00 00\tr0 = 1",
        "\t  path 1: R0=1",
        "       1:\tbf 01 00 00 00 00 00 00\tr1 = r0",
        "\t  path 1: R0=1 R1=1",
        "       2:\t95 00 00 00 00 00 00 00\texit",
        "\t  path 1: (no register touched)",
        "processed 3 insns (limit 1000000) max_states_per_insn 0 total_states 0"]


@pytest.mark.kernel
def test_the_view_of_a_program_the_kernel_accepted():
    """At the jump, the fall-through knows r0 != 5 and the other way r0 == 5."""
    insns = parse(NAME)
    with Program.from_instructions(insns, ProgType.SOCKET_FILTER, log_level=2) as prog:
        lines = verifier.interleave(insns, prog.verifier_log).splitlines()
    jump = lines.index("       2:\t15 00 01 00 05 00 00 00\tif r0 == 5 goto +1 <done>")
    assert lines[jump + 1:jump + 3] == [
        "\t  path 1: R0=scalar()",  # 6.18 prints no range for "not 5"
        "\t  path 1, jumping to 4, is explored later as path 2: R0=5 R6=ctx() R10=fp0"]
    assert lines[jump + 4:jump + 5] == ["\t  path 1: R0=1"]
    assert lines[-3:-1] == ["\t  path 1: (no register touched)",
                            "\t  path 2: (no register touched)"]


@pytest.mark.kernel
def test_the_view_of_a_refused_program_shows_where_and_why():
    insns = parse("r6 = r1\ncall 7\nr0 = *(u32 *)(r1 + 0)\nexit\n")
    with pytest.raises(VerifierError) as info:
        Program.from_instructions(insns, ProgType.SOCKET_FILTER, log_level=2)
    err = info.value
    assert err.insns == insns
    lines = verifier.interleave(err.insns, err.log, err.summary).splitlines()
    assert lines[-6:-1] == [
        "\t  path 1: R0=scalar()",
        "       2:\t61 10 00 00 00 00 00 00\tr0 = *(u32 *)(r1 + 0)",
        "\t  path 1: REFUSED: R1 !read_ok",
        "       3:\t95 00 00 00 00 00 00 00\texit",
        "\t  (no path reaches it)"]
