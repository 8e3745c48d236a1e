"""pybpf.explain: every operation explained; the bits against RFC 9669's examples, hand-derived
encodings and llvm-mc; every verifier check it states against the running kernel."""

import os
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import require_tool
from pybpf import explain, syscalls
from pybpf.abi import MapType, ProgType
from pybpf.asm import opcodes as oc
from pybpf.asm.insn import SLOT, Instruction
from pybpf.asm.link import resolve
from pybpf.asm.text import parse, parse_insn
from pybpf.errors import SyscallError
from pybpf.program import Program

# A sample value for each kind of field (opcodes.FIELDS), to build one valid instance per Op.
_SAMPLE = {"reg": 2, "wreg": 1, "zero": 0, "s16": 3, "s32": 5, "shift": 3, "width": 16,
           "u64": 5}


def sample(op):
    """A valid instruction of ``op``: dst r1, src r2, off 3, imm 5 where they are used."""
    values = [op.value if rule == "key" else (1 if name == "dst" and rule in ("reg", "wreg")
                                              else _SAMPLE[rule])
              for name, rule in zip(("dst", "src", "off", "imm"), oc.field_rules(op))]
    return Instruction(op.opcode, *values)


@pytest.mark.parametrize("op", oc.OPS, ids=lambda op: f"{op.name}/{op.opcode:#04x}/{op.value}")
def test_every_operation_is_explained(op):
    insn = sample(op)
    assert insn.op is op and explain.check(insn) is None
    said = explain.meaning(insn)
    assert said.startswith(explain.rfc_name(insn, op)) and said.endswith(".")
    assert "{" not in said.split("}", 1)[1]  # every placeholder filled
    assert explain.ROLES[op.form] and explain.checks(insn) is not None
    rows = explain.diagram(insn)
    assert [r.field for r in rows][:3] in (["code", "source", "class"], ["mode", "size", "class"])
    assert "?" not in rows[0].value and "?" not in rows[1].value


def test_every_class_mode_size_and_code_has_a_name():
    assert set(explain.CLASS_MEANING) == set(range(8)) == set(
        op.opcode & 0x07 for op in oc.OPS)
    assert set(explain.MODES) == {op.opcode & 0xE0 for op in oc.OPS
                                  if op.opcode & 0x07 in (oc.LD, oc.LDX, oc.ST, oc.STX)}
    assert set(explain.SIZES) == set(oc.SIZE_BITS.values())
    alu = {op.opcode & 0xF0 for op in oc.OPS if op.opcode & 0x07 in (oc.ALU, oc.ALU64)}
    jmp = {op.opcode & 0xF0 for op in oc.OPS if op.opcode & 0x07 in (oc.JMP, oc.JMP32)}
    assert alu <= set(explain.ALU_CODES) and jmp <= set(explain.JMP_CODES)
    assert set(explain.ROLES) == set(oc.FIELDS)


# -- the bits: RFC 9669's own examples and hand-derived encodings ---------------------------

def rows_of(hex_bytes):
    (decoded,) = explain.decode(bytes.fromhex(hex_bytes))
    return {r.field: (r.bits, r.value) for r in explain.diagram(decoded.insn, decoded.raw)}, \
        decoded.insn


def test_rfc_example_r1_plus_0x11223344():
    """RFC 9669 section 3.1: ``07 0 1 00 00 44 33 22 11`` is ``r1 += 0x11223344``."""
    rows, insn = rows_of("07 01 00 00 44 33 22 11")
    assert rows["code"] == ("0000....", "ADD (0x00)")
    assert rows["source"] == ("....0...", "K (0)")
    assert rows["class"] == (".....111", "ALU64 (0x07)")
    assert rows["src"] == ("0000....", "0") and rows["dst"] == ("....0001", "r1")
    assert rows["imm"] == ("", str(0x11223344))
    assert explain.meaning(insn) == (
        "{ADD, K, ALU64} dst += src: adds 287454020 to r1.")


# RFC 9669's examples of the {code, source, class} notation (sections 4.1-4.3, 5.1-5.3), with
# the opcode byte composed by hand from the RFC's tables, and what the RFC says they mean.
RFC_EXAMPLES = [
    ("0c 21 00 00 00 00 00 00", "{ADD, X, ALU} dst += src",  # 0x00 | X 0x08 | ALU 0x04
     "adds w2 to w1, on the low 32 bits, zeroing the upper 32 bits of r1"),
    ("0f 21 00 00 00 00 00 00", "{ADD, X, ALU64} dst += src", "adds r2 to r1"),
    ("a4 01 00 00 07 00 00 00", "{XOR, K, ALU} dst ^= src",  # 0xa0 | K | ALU
     "flips in w1 the bits set in 7, on the low 32 bits, zeroing the upper 32 bits of r1"),
    ("a7 01 00 00 07 00 00 00", "{XOR, K, ALU64} dst ^= src", "flips in r1 the bits set in 7"),
    ("7e 21 02 00 00 00 00 00", "{JSGE, X, JMP32} PC += offset if dst >= src",  # 0x70|X|JMP32
     "continues with the instruction 2 slots after the next if w1 >= w2 (signed), else with "
     "the next instruction, comparing the low 32 bits"),
    ("06 00 00 00 03 00 00 00", "{JA, K, JMP32} PC += imm",  # gotol +3
     "continues with the instruction 3 slots after the next (a 32-bit distance)"),
    ("d4 01 00 00 10 00 00 00", "{END, TO_LE, ALU} dst = htole16(dst)",
     "converts the low 16 bits of r1 from host order to little endian"),
    ("dc 01 00 00 20 00 00 00", "{END, TO_BE, ALU} dst = htobe32(dst)",
     "converts the low 32 bits of r1 from host order to big endian"),
    ("d7 01 00 00 40 00 00 00", "{END, TO_LE, ALU64} dst = bswap64(dst)",
     "swaps the bytes of the low 64 bits of r1"),
    ("c3 21 00 00 00 00 00 00", "{ATOMIC, W, STX} with imm 0x0 *(size *)(dst + offset) += src",
     "adds r2 to the 4 bytes at r1 + 0, atomically"),
    ("db 21 00 00 00 00 00 00", "{ATOMIC, DW, STX} with imm 0x0", "adds r2 to the 8 bytes"),
    ("db 21 00 00 e1 00 00 00", "{ATOMIC, DW, STX} with imm 0xe1 atomic exchange",
     "exchanges r2 with the 8 bytes at r1 + 0"),
    ("db 21 00 00 f1 00 00 00", "{ATOMIC, DW, STX} with imm 0xf1 atomic compare and exchange",
     "with r0 and, if equal, replaces them with r2"),
    ("63 21 fc ff 00 00 00 00", "{MEM, W, STX} *(size *) (dst + offset) = src",
     "stores the low 4 bytes of r2 at r1 - 4"),
    ("72 01 02 00 07 00 00 00", "{MEM, B, ST} *(size *) (dst + offset) = imm",
     "stores 7 in the 1 bytes at r1 + 2"),
    ("69 21 00 00 00 00 00 00", "{MEM, H, LDX} dst = *(unsigned size *) (src + offset)",
     "loads the 2 bytes at r2 + 0 into r1, zero-extended"),
    ("91 21 00 00 00 00 00 00", "{MEMSX, B, LDX} dst = *(signed size *) (src + offset)",
     "sign-extended"),
    ("3f 21 01 00 00 00 00 00", "{SDIV, X, ALU64} dst = (src != 0) ? (dst s/ src) : 0",
     "a divisor of 0 sets r1 to 0"),
    ("bf 21 10 00 00 00 00 00", "{MOVSX, X, ALU64} dst = (s8,s16,s32)src",
     "copies r2 into r1, sign-extended from its low 16 bits"),
    ("97 01 00 00 03 00 00 00", "{MOD, K, ALU64} dst = (src != 0) ? (dst % src) : dst",
     "a divisor of 0 leaves r1 as it is"),
    ("18 01 00 00 44 33 22 11 00 00 00 00 88 77 66 55", "{IMM, DW, LD} dst = (next_imm << 32) |"
     " imm", "loads the 64-bit number 0x5566778811223344 into r1"),
    ("18 11 00 00 05 00 00 00 00 00 00 00 00 00 00 00",
     "{IMM, DW, LD} with src_reg 0x1 dst = map_by_fd(imm)", "map whose file descriptor is 5"),
    ("18 21 00 00 05 00 00 00 00 00 00 00 08 00 00 00",
     "{IMM, DW, LD} with src_reg 0x2 dst = map_val(map_by_fd(imm)) + next_imm",
     "address of byte 8 of the value of the map whose fd is 5"),
    ("85 00 00 00 0e 00 00 00", "{CALL, K, JMP} call helper function by address",
     "calls helper function 14, bpf_get_current_pid_tgid"),
    ("85 10 00 00 02 00 00 00", "{CALL, K, JMP} with src_reg 0x1 call PC += imm",
     "calls the function that starts at the instruction 2 slots after the next"),
    ("95 00 00 00 00 00 00 00", "{EXIT, K, JMP} return", "returns r0 to the caller"),
    ("30 00 00 00 03 00 00 00", "{ABS, B, LD} legacy BPF packet access (absolute)",
     "loads the 1 bytes at offset 3 of the packet into r0"),
]


@pytest.mark.parametrize("hex_bytes, rfc, words", RFC_EXAMPLES, ids=lambda v: v[:5])
def test_rfc_notation_and_meaning(hex_bytes, rfc, words):
    (decoded,) = explain.decode(bytes.fromhex(hex_bytes))
    said = explain.meaning(decoded.insn)
    assert said.startswith(rfc) and words in said


def test_the_whole_diagram_of_a_load():
    """0x61 = 011 00 001: mode MEM (3 << 5), size W (0), class LDX (1); regs 0x61: src 6, dst 1."""
    (decoded,) = explain.decode(bytes.fromhex("6161080000000000"))
    text = explain.explain(decoded.insn, raw=decoded.raw)
    assert text.splitlines()[:11] == [
        "r1 = *(u32 *)(r6 + 8)",
        "",
        "  byte  hex          bits      field   value",
        "  0     61           011.....  mode    MEM (0x60)  regular load and store operations",
        "                     ...00...  size    W (0x00)    4 bytes",
        "                     .....001  class   LDX (0x01)  load into register operations",
        "  1     61           0110....  src     r6          base address",
        "                     ....0001  dst     r1          loaded value",
        "  2-3   08 00                  offset  +8          added to the base",
        "  4-7   00 00 00 00            imm     0           unused: 0, else `BPF_LDX uses "
        "reserved fields`",
        "",
    ]
    assert ("meaning: {MEM, W, LDX} dst = *(unsigned size *) (src + offset): loads the 4 bytes "
            "at r6 + 8 into r1,") in text
    assert "  - r6 holds a value on every path that reaches here (else `R6 !read_ok`)" in text


def test_the_second_slot_of_a_64_bit_load():
    text = explain.explain(parse_insn("r1 = 0x1122334455667788 ll"))
    assert "  8-11   00 00 00 00            reserved  0" in text
    assert "  12-15  44 33 22 11            next_imm  287454020   high 32 bits of the number" \
        in text
    assert "  4-7    88 77 66 55            imm       1432778632  low 32 bits of the number" \
        in text


def test_bytes_the_kernel_refuses_are_explained_too():
    decoded = explain.decode(bytes.fromhex("ff00000000000000" "b70a000000000000"
                                           "1801000000000000" "0700000000000000"))
    unknown, r10, lddw = decoded
    assert [c.message for c in explain.checks(unknown.insn)] == ["unknown opcode ff"]
    assert "FAILS here" in explain.explain(unknown.insn)
    assert [c.key for c in explain.checks(r10.insn) if c.fails] == ["frame_pointer"]
    assert [c.key for c in explain.checks(lddw.insn, raw=lddw.raw) if c.fails] == [
        "second_slot"]
    assert "  8-11   07 00 00 00            reserved  7" in explain.explain(lddw.insn,
                                                                           raw=lddw.raw)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(min_size=8, max_size=32),
                 st.tuples(st.sampled_from(oc.OPS), st.binary(min_size=15, max_size=15)).map(
                     lambda pair: bytes([pair[0].opcode]) + pair[1])))
def test_any_bytes_are_explained_or_refused_clearly(data):
    """Whatever the bytes, an explanation (invalid ones too) or a DecodeError, nothing else."""
    try:
        decoded = explain.decode(data)
    except explain.DecodeError:
        return
    length, slot = sum(d.insn.slots for d in decoded), 0
    for insn, raw in decoded:
        text = explain.explain(insn, slot, length, raw)
        assert text.count("\n") > 8 and "the verifier checks:" in text
        slot += insn.slots


def test_decode_needs_whole_instructions():
    with pytest.raises(explain.DecodeError, match="not a whole number"):
        explain.decode(bytes(7))
    with pytest.raises(explain.DecodeError, match="second 8-byte slot"):
        explain.decode(bytes.fromhex("1801000000000000"))


@pytest.mark.oracle
def test_the_diagram_holds_llvm_mc_encoding():
    """Every field's bytes as llvm-mc encodes the instruction, for each class, mode and size
    LLVM 14 writes."""
    texts = ["r1 += 5", "w1 -= w2", "r1 = *(u32 *)(r6 + 8)", "*(u64 *)(r10 - 8) = r1",
             "r0 = *(u16 *)(r1 + 2)", "r0 = *(u8 *)skb[3]", "r0 = *(u16 *)skb[r1]",
             "if r1 s> -3 goto -2", "if w1 == w2 goto +1", "call 14", "exit",
             "r1 = 0x1122334455667788 ll", "lock *(u64 *)(r1 + 8) += r2", "r1 = be16 r1",
             "r1 = le64 r1", "goto +7", "r1 s>>= 3", "w3 = -w3"]
    llvm = subprocess.run([require_tool("llvm-mc"), "-triple", "bpfel", "-show-encoding"],
                          input="\n".join(texts) + "\n", capture_output=True, text=True,
                          check=True).stdout
    encodings = re.findall(r"# encoding: \[([^\]]*)\]", llvm)
    assert len(encodings) == len(texts)
    for text, encoding in zip(texts, encodings):
        expected = bytes(int(b, 16) for b in encoding.split(","))
        rows = explain.diagram(parse_insn(text))
        raw = bytes.fromhex(rows[0].hex + rows[3].hex + "".join(r.hex for r in rows[5:]))
        assert raw == expected, text


# -- whole programs --------------------------------------------------------------------------

def test_annotate_a_program_with_labels_and_maps():
    insns = parse("; look it up\nr2 = r10\nr2 += -4\nr1 = counts ll\ncall 1\n"
                  "if r0 == 0 goto out\nr0 = 1\nout: exit\n")
    text = explain.annotate(insns)
    lines = text.splitlines()
    assert lines[0] == "; look it up"
    jump = lines.index("       5:\t15 00 01 00 00 00 00 00\tif r0 == 0 goto +1 <out>")
    assert lines[jump + 1] == ("\t  = {JEQ, K, JMP} PC += offset if dst == src: continues with "
                               "slot 7 if r0 == 0, else with the next")
    assert "\t  ? the target, slot 7, is inside the program (else `jump out of range from insn 5 " \
        "to 7`)" in lines
    assert not any("FAILS" in line for line in lines)


def test_split_programs_reads_the_trackers_dump():
    dump = 'one:  SEC("tp/a/b")\n       0:\tb7 00 00 00 00 00 00 00\tr0 = 0\n' \
           'two:  SEC("tp/c/d")\nr0 = 1\nexit\n'
    assert explain.split_programs(dump) == [
        ("one (tp/a/b)", "       0:\tb7 00 00 00 00 00 00 00\tr0 = 0"),
        ("two (tp/c/d)", "r0 = 1\nexit")]
    assert explain.split_programs("r0 = 0\nexit") == [(None, "r0 = 0\nexit")]


# -- the reserved fields, against the kernel ---------------------------------------------------

def _load(code, prog_type=ProgType.SOCKET_FILTER, license="GPL", fd_array=None):
    """(accepted, log) of loading raw instruction bytes."""
    try:
        fd, log = syscalls.prog_load(prog_type, code, license, log_level=1, log_size=1 << 16,
                                     fd_array=fd_array)
    except SyscallError as exc:
        return False, exc.log
    os.close(fd)
    return True, log


def _code(insns):
    return b"".join(i.encode() for i in insns)


# Every register a number (r6 the context), 8 bytes of stack written: what an instruction under
# test may need; then the instruction, then ``r0 = 0; exit`` and a function ``r0 = 0; exit``.
_PROLOGUE = [Instruction(0xBF, 6, 1), Instruction(0x7A, 10, 0, -8, 0)] + [
    Instruction(0xB7, r) for r in (0, 1, 2, 3, 4, 5, 7, 8, 9)]
_RETURN = [Instruction(0xB7, 0), Instruction(0x95)]


def _harness(op, array_fd, btf_ids, **fields):
    """(program, the instruction, fd_array, whether the kernel accepts it as it is) around one
    instance of ``op`` with ``fields`` changed. A kernel function call (bpf_task_acquire, not
    for socket filters) and a function's address (without func_info) are refused as they are;
    their unused fields are checked before that."""
    f, fd_array, loads = op.form, None, True
    values = dict(dst=1, src=0, off=op.value if op.key == "off" else 0, imm=0)
    if f in ("alu_x", "jmp_x", "movsx"):
        values["src"] = 2
    if f == "end":
        values["imm"] = 16
    elif f == "shift_k" or (f == "alu_k" and explain.base_name(op) in ("div", "sdiv", "mod",
                                                                          "smod")):
        values["imm"] = 1
    elif f in ("ja", "gotol", "may_goto", "exit"):
        values["dst"] = 0
    elif f in ("call", "call_kfunc"):
        values.update(dst=0, src=op.value,
                      imm={0: 7, 1: 2}.get(op.value, btf_ids.get("bpf_task_acquire")))
        loads = f == "call"
    elif f == "ldx" or f == "load_acquire":
        values.update(src=10, off=-8)
    elif f in ("st", "stx", "atomic", "atomic_fetch"):
        values.update(dst=10, src=2 if f != "st" else 0, off=-8)
    elif f == "lddw":
        values.update(src=op.value, imm={1: array_fd, 2: array_fd, 3: btf_ids.get("runqueues"),
                                         4: 3}.get(op.value, 0))
        fd_array = [array_fd] if op.value in (5, 6) else None
        loads = op.value not in (3, 4)  # a kernel variable (not in kallsyms here), a function
    elif f in ("ld_abs", "ld_ind"):
        values.update(dst=0, src=2 if f == "ld_ind" else 0)
    if op.key == "imm":
        values["imm"] = op.value
    values.update(fields)
    insn = Instruction(op.opcode, **values)
    body = [insn] if f == "exit" else [insn] + _RETURN
    if op.name in ("call_local", "ld_func"):
        body += _RETURN
    return _PROLOGUE + body, insn, fd_array, loads


@pytest.fixture(scope="module")
def btf_ids():
    """Ids in the kernel's BTF, read by bpftool: a kfunc and a variable."""
    dump = subprocess.run([require_tool("bpftool"), "btf", "dump", "file",
                           "/sys/kernel/btf/vmlinux"], capture_output=True, text=True,
                          check=True).stdout
    return {name: int(re.search(rf"^\[(\d+)\] (?:FUNC|VAR) '{name}'", dump, re.M).group(1))
            for name in ("bpf_task_acquire", "runqueues")}


@pytest.fixture(scope="module")
def array_fd():
    fd = syscalls.map_create(MapType.ARRAY, 4, 8, 1)
    yield fd
    os.close(fd)


@pytest.mark.kernel
@pytest.mark.oracle
@pytest.mark.parametrize("op", [op for op in oc.OPS if "zero" in oc.field_rules(op)],
                         ids=lambda op: f"{op.name}/{op.size}")
def test_unused_fields_as_the_kernel_checks_them(op, array_fd, btf_ids):
    """What explain says of each unused field (0, else the verifier's complaint; or not
    checked) is what Linux does: the program loads with the field 0 and fails, with that
    message, with the field 1."""
    insns, _insn, fd_array, loads = _harness(op, array_fd, btf_ids)
    accepted, log = _load(_code(insns), fd_array=fd_array)
    assert accepted == loads, log
    for name, rule in zip(("dst", "src", "off", "imm"), oc.field_rules(op)):
        if rule != "zero":
            continue
        insns, insn, fd_array, _loads = _harness(op, array_fd, btf_ids, **{name: 1})
        accepted, log = _load(_code(insns), fd_array=fd_array)
        said = explain.diagram(insn)
        note = next(r.note for r in said if r.field == {"off": "offset"}.get(name, name))
        if (op.name, name) in explain.UNCHECKED:
            assert accepted and note == "unused: 0 (Linux does not check it)"
        else:
            message = explain.reserved_message(op, insn)
            # ld_btf_id: this kernel's BTF variables (per-CPU ones) have no address in
            # kallsyms, and the address is looked up before the fields are checked
            unresolved = op.name == "ld_btf_id" and "failed to find the address" in log
            assert not accepted and (message in log or unresolved), (name, log)
            assert note == f"unused: 0, else `{message}`"
            (fails,) = [c for c in explain.checks(insn) if c.fails]
            assert fails.key == "reserved" and fails.message == message


# -- every other check, against the kernel -----------------------------------------------------

def _pattern(message):
    """The regular expression of a check's message: ``N`` is what only the log knows."""
    escaped = re.escape(message)
    return re.compile(re.sub(r"\bN\b", r".+?", escaped).replace("RN", r"R\d+"))


def _raw(*slots):
    return b"".join(SLOT.pack(opcode, src << 4 | dst, off, imm)
                    for opcode, dst, src, off, imm in slots)


_LOOKUP = "r1 = 0\n*(u32 *)(r10 - 4) = r1\nr2 = r10\nr2 += -4\nr1 = {map} ll\ncall 1\n"
_RET = "r0 = 0\nexit\n"
_DEEP = "call pc+1\nexit\n" * 9 + _RET

# key -> (program: text or raw bytes, slot of the instruction explained, what the kernel
# writes (by hand), options: type, license, map by name, fd_array)
CASES = {
    "init": ("r0 = r2\nexit", 0, "R2 !read_ok", {}),
    "frame_pointer": (_raw((0xB7, 10, 0, 0, 0), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
                      "frame pointer is read only", {}),
    "div_by_zero": ("r0 = 1\nr0 /= 0\nexit", 1, "div by zero", {}),
    "shift": (_raw((0xB7, 0, 0, 0, 1), (0x67, 0, 0, 0, 64), (0x95, 0, 0, 0, 0)), 1,
              "invalid shift 64", {}),
    "pointer_alu32": ("w1 += 2\n" + _RET, 0, "R1 32-bit pointer arithmetic prohibited", {}),
    "pointer_bitwise": ("r1 &= 1\n" + _RET, 0, "R1 bitwise operator &= on pointer prohibited",
                        {}),
    "pointer_plus_pointer": ("r2 = r10\nr1 += r2\n" + _RET, 1,
                             "R1 pointer += pointer prohibited", {}),
    "pointer_null_arith": (_LOOKUP.format(map="hash") + "r0 += 8\n" + _RET, 7,
                           "R0 pointer arithmetic on map_value_or_null prohibited, null-check "
                           "it first", {}),
    "pointer_arith": ("r1 <<= 2\n" + _RET, 0,
                      "R1 pointer arithmetic with <<= operator prohibited", {}),
    "end_width": (_raw((0xB7, 0, 0, 0, 0), (0xD4, 0, 0, 0, 8), (0x95, 0, 0, 0, 0)), 1,
                  "BPF_END uses reserved fields", {}),
    "arena": (_raw((0xBF, 1, 10, 1, 1), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
              "addr_space_cast insn can only be used in a program that has an associated arena",
              {}),
    "call_target": (_raw((0x85, 0, 1, 0, 100), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
                    "call to invalid destination", {}),
    "call_depth": (_DEEP, 0, "the call stack of 9 frames is too deep", {}),
    "call_stack": ("*(u64 *)(r10 - 512) = 0\ncall pc+2\n" + _RET + "*(u64 *)(r10 - 8) = 0\n"
                   + _RET, 1, "combined stack size of 2 calls is 528. Too large", {}),
    "helper_exists": ("call 9999\n" + _RET, 0, "invalid func unknown#9999", {}),
    "helper_allowed": ("call 58\n" + _RET, 0,
                       "program of this type cannot use helper bpf_override_return#58", {}),
    "helper_gpl": ("*(u64 *)(r10 - 8) = 0\nr1 = r10\nr1 += -8\nr2 = 8\ncall 6\n" + _RET, 4,
                   "cannot call GPL-restricted function from non-GPL compatible program",
                   {"type": ProgType.TRACEPOINT, "license": "MIT"}),
    "helper_args": ("r1 = 0\nr2 = 0\ncall 1\n" + _RET, 2, "R1 type=scalar expected=map_ptr", {}),
    "null_check": (_LOOKUP.format(map="hash") + "r0 = *(u64 *)(r0 + 0)\n" + _RET, 6,
                   "R0 invalid mem access 'map_value_or_null'", {}),
    "scratched": ("r1 = 1\ncall 7\nr0 = r1\nexit", 1, "R1 !read_ok", {}),
    "kfunc": (_raw((0x85, 0, 2, 0, 1), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
              "kernel btf_id 1 is not a function", {}),
    "exit_r0": ("exit", 0, "R0 !read_ok", {}),
    "exit_range": ("r0 = *(u32 *)(r1 + 0)\nexit", 1, "At program exit the register R0 has "
                   "smin=0 smax=4294967295 should have been in [0, 1]",
                   {"type": ProgType.CGROUP_SKB}),
    "exit_references": ("r1 = ring ll\nr2 = 8\nr3 = 0\ncall 131\n" + _RET, 6,
                        "BPF_EXIT instruction in main prog would lead to reference leak", {}),
    "stack_bounds": ("*(u64 *)(r10 - 520) = 1\n" + _RET, 0,
                     "invalid write to stack R10 off=-520 size=8", {}),
    "stack_alignment": ("*(u32 *)(r10 - 3) = 1\n" + _RET, 0,
                        "misaligned stack access off 0+0+-3 size 4", {}),
    "pointer": ("r1 = 1\nr0 = *(u32 *)(r1 + 0)\nexit", 1, "R1 invalid mem access 'scalar'", {}),
    "null": (_LOOKUP.format(map="hash") + "r0 = *(u64 *)(r0 + 0)\n" + _RET, 7,
             "R0 invalid mem access 'map_value_or_null'", {}),
    "map_bounds": (_LOOKUP.format(map="array") + "if r0 == 0 goto +1\nr0 = *(u64 *)(r0 + 8)\n"
                   + _RET, 8, "invalid access to map value, value_size=8 off=8 size=8", {}),
    "context": ("r0 = *(u32 *)(r1 + 1000)\nexit", 0, "invalid bpf_context access off=1000 size=4",
                {}),
    "packet_bounds": ("r2 = *(u32 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 0)\nexit", 1,
                      "R2 offset is outside of the packet", {"type": ProgType.XDP}),
    "atomic_memory": (_raw((0xB7, 2, 0, 0, 1), (0xC3, 1, 2, 0, 0), (0xB7, 0, 0, 0, 0),
                           (0x95, 0, 0, 0, 0)), 1,
                      "BPF_ATOMIC stores into R1 ctx is not allowed", {}),
    "second_slot": (_raw((0x18, 0, 0, 0, 0), (0x07, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
                    "invalid bpf_ld_imm64 insn", {}),
    "map_fd": (_raw((0x18, 1, 1, 0, 999), (0, 0, 0, 0, 0), (0xB7, 0, 0, 0, 0),
                    (0x95, 0, 0, 0, 0)), 0, "fd 999 is not pointing to valid bpf_map", {}),
    "fd_array": (_raw((0x18, 1, 5, 0, 0), (0, 0, 0, 0, 0), (0xB7, 0, 0, 0, 0),
                      (0x95, 0, 0, 0, 0)), 0, "fd_idx without fd_array is invalid", {}),
    "direct_value": ("ld_pseudo r1, 2, hash\n" + _RET, 0,
                     "no direct value access support for this map type", {}),
    "value_offset": ("ld_pseudo r1, 2, array, 9\n" + _RET, 0,
                     "invalid access to map value pointer, value_size=8 off=9", {}),
    "btf_var": (_raw((0x18, 1, 3, 0, 1), (0, 0, 0, 0, 0), (0xB7, 0, 0, 0, 0),
                     (0x95, 0, 0, 0, 0)), 0,
                "pseudo btf_id 1 in ldimm64 isn't KIND_VAR or KIND_FUNC", {}),
    "packet_type": ("r6 = r1\nr0 = *(u8 *)skb[0]\nexit", 1,
                    "BPF_LD_[ABS|IND] instructions not allowed for this program type",
                    {"type": ProgType.XDP}),
    "packet_r6": ("r6 = 0\nr0 = *(u8 *)skb[0]\nexit", 1,
                  "at the time of BPF_LD_ABS|IND R6 != pointer to skb", {}),
    "jump_range": ("goto +5\n" + _RET, 0, "jump out of range from insn 0 to 6", {}),
    "jump_ldimm64": (_raw((0x15, 1, 0, 1, 0), (0x18, 0, 0, 0, 0), (0, 0, 0, 0, 0),
                          (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
                     "jump into the middle of ldimm64 insn 1", {}),
    "loop": ("r0 = 0\nif r0 == 0 goto -1\nexit", 1, "infinite loop detected at insn 1", {}),
    "reachable": ("r0 = 0\ngoto +1\nr0 = 1\nexit", 1, "unreachable insn 2", {}),
    "register": (_raw((0xB7, 11, 0, 0, 0), (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 0,
                 "R11 is invalid", {}),
    "reserved": (_raw((0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 1)), 1,
                 "BPF_EXIT uses reserved fields", {}),
    "opcode": (_raw((0xB7, 0, 0, 0, 0), (0xFF, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 1,
               "unknown opcode ff", {}),
    "discriminator": (_raw((0x7A, 10, 0, -8, 0), (0xB7, 1, 0, 0, 1), (0xDB, 10, 1, -8, 2),
                           (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)), 2,
                      "BPF_ATOMIC uses invalid atomic opcode 02", {}),
}
MORE_CASES = [  # the same checks elsewhere, with other messages
    ("scratched", "r6 = r1\nr2 = 1\nr0 = *(u8 *)skb[0]\nr0 = r2\nexit", 2, "R2 !read_ok", {}),
    ("call_target", _raw((0x18, 1, 4, 0, 100), (0, 0, 0, 0, 0), (0xB7, 0, 0, 0, 0),
                         (0x95, 0, 0, 0, 0)), 0, "call to invalid destination", {}),
    ("stack_bounds", "r0 = *(u64 *)(r10 + 0)\nexit", 0, "invalid read from stack R10 off=0 size=8",
     {}),
    ("discriminator", _raw((0x18, 1, 9, 0, 0), (0, 0, 0, 0, 0), (0xB7, 0, 0, 0, 0),
                           (0x95, 0, 0, 0, 0)), 0, "unrecognized bpf_ld_imm64 insn", {}),
    ("discriminator", _raw((0xB7, 0, 0, 0, 1), (0x37, 0, 0, 5, 1), (0x95, 0, 0, 0, 0)), 1,
     "BPF_ALU uses reserved fields", {}),
    ("context", "*(u32 *)(r1 + 0) = 1\n" + _RET, 0, "invalid bpf_context access off=0 size=4", {}),
    ("atomic_memory", _raw((0xC3, 0, 1, 0, 0x100), (0x95, 0, 0, 0, 0)), 0,
     "BPF_ATOMIC loads from R1 ctx is not allowed", {}),
]
STATIC = {"frame_pointer", "div_by_zero", "shift", "end_width", "helper_exists", "stack_bounds",
          "stack_alignment", "second_slot", "jump_range", "register", "reserved", "opcode",
          "discriminator"}


@pytest.fixture(scope="module")
def maps():
    made = {"hash": syscalls.map_create(MapType.HASH, 4, 8, 1),
            "array": syscalls.map_create(MapType.ARRAY, 4, 8, 1),
            "ring": syscalls.map_create(MapType.RINGBUF, 0, 0, 4096)}
    yield made
    for fd in made.values():
        os.close(fd)


def _case_code(program, maps):
    if isinstance(program, bytes):
        return program
    return _code(resolve(parse(program), maps))


@pytest.mark.kernel
@pytest.mark.parametrize("key, program, slot, expected, options",
                         [(k, *v) for k, v in CASES.items()] + MORE_CASES,
                         ids=[*CASES, *(f"{c[0]}-{i}" for i, c in enumerate(MORE_CASES))])
def test_each_check_is_what_the_kernel_says(key, program, slot, expected, options, maps):
    """explain states the check for the instruction at ``slot``, with a message that matches
    what the verifier writes (by hand above), and the kernel writes it for this program."""
    code = _case_code(program, maps)
    decoded = explain.decode(code)
    at = {}
    position = 0
    for d in decoded:
        at[position] = d
        position += d.insn.slots
    insn, raw = at[slot]
    found = [c for c in explain.checks(insn, slot, position, raw) if c.key == key]
    assert found, f"explain states no {key} check for {insn}"
    assert any(c.message and _pattern(c.message).fullmatch(expected) for c in found), found
    if key in STATIC:
        assert any(c.fails for c in found), "the instruction alone shows this check fails"
    accepted, log = _load(code, options.get("type", ProgType.SOCKET_FILTER),
                          options.get("license", "GPL"))
    assert not accepted and expected in log, log


@pytest.mark.kernel
@pytest.mark.oracle
def test_kfunc_not_allowed_for_the_program_type(btf_ids):
    btf_id = btf_ids["bpf_task_acquire"]
    code = _raw((0xB7, 1, 0, 0, 0), (0x85, 0, 2, 0, btf_id), (0xB7, 0, 0, 0, 0),
                (0x95, 0, 0, 0, 0))
    insn = explain.decode(code)[1].insn
    (check,) = [c for c in explain.checks(insn) if c.key == "kfunc_allowed"]
    expected = "calling kernel function bpf_task_acquire is not allowed"
    assert _pattern(check.message).fullmatch(expected)
    accepted, log = _load(code)
    assert not accepted and expected in log


def test_every_check_explain_states_has_a_kernel_case():
    """A check with a verifier message is proven by a case above; one without by a test
    below (what the program then does, or what the log shows)."""
    keys = set()
    for op in oc.OPS:
        for slot in (None, 0):
            keys |= {(c.key, c.message is None) for c in explain.checks(sample(op), slot, 1)}
    with_message = {key for key, silent in keys if not silent}
    assert with_message - set(CASES) - {"kfunc_allowed"} == set()
    assert {key for key, silent in keys if silent} == {"div_by_zero_at_run_time", "both_ways"}


def test_an_accepted_program_fails_no_check():
    from programs import execve_bpf

    for insns in (execve_bpf.count_execve(), execve_bpf.name_process()):
        text = explain.annotate(insns)
        assert "FAILS" not in text and text.count("\t  = ") == len(insns)


# -- what explain says happens at run time, run ------------------------------------------------

def _run(source, data=bytes(64)):
    with Program.from_instructions(parse(source), ProgType.SOCKET_FILTER) as prog:
        return prog.test_run(data=data).retval


@pytest.mark.kernel
def test_division_by_a_zero_register_at_run_time():
    """div: 0; mod: dst unchanged (RFC 9669 section 4.1), as explain says."""
    div, mod = (sample(oc.find(n, x=True)) for n in ("div", "mod"))
    said = [c.text for i in (div, mod) for c in explain.checks(i)
            if c.key == "div_by_zero_at_run_time"]
    assert said == ["r2 may be 0 when the program runs: that is no error, the result is then 0",
                    "r2 may be 0 when the program runs: that is no error, the result is then "
                    "r1 unchanged"]
    assert _run("r0 = 7\nr1 = 0\nr0 /= r1\nexit") == 0
    assert _run("r0 = 7\nr1 = 0\nr0 %= r1\nexit") == 7
    assert _run("r0 = -7\nr1 = 0\nr0 s/= r1\nexit") == 0


@pytest.mark.kernel
def test_byte_swaps_zero_the_upper_bits():
    assert "and zeroes the bits above" in explain.meaning(parse_insn("r0 = le16 r0"))
    assert _run("r0 = 0x12345678\nr0 = le16 r0\nexit") == 0x5678
    assert _run("r0 = 0x12345678\nr0 = be16 r0\nexit") == 0x7856


@pytest.mark.kernel
def test_a_packet_read_past_the_end_returns_0():
    assert "a read past the packet's end ends the program, returning 0" in explain.meaning(
        parse_insn("r0 = *(u32 *)skb[1000]"))
    assert _run("r6 = r1\nr0 = *(u32 *)skb[1000]\nr0 = 7\nexit") == 0
    assert _run("r6 = r1\nr0 = *(u8 *)skb[1]\nr0 = 7\nexit") == 7


@pytest.mark.kernel
def test_the_may_goto_budget():
    """On x86-64 (Linux >= 6.15) the JIT times may_goto loops: a quarter of a second."""
    assert "a quarter of a second of looping where the JIT times it, as x86-64 does" in \
        explain.meaning(parse_insn("may_goto +2"))
    loop = "r0 = 0\nloop: may_goto out\nr0 += 1\ngoto loop\nout: exit\n"
    with Program.from_instructions(parse(loop), ProgType.SOCKET_FILTER) as prog:
        result = prog.test_run(data=bytes(64))
    if os.uname().machine == "x86_64":
        assert result.retval > 8388608 and result.duration_ns >= 250_000_000
    else:
        assert result.retval == 8388608


@pytest.mark.kernel
def test_both_ways_of_a_jump_are_followed():
    """The verifier's log shows the jump's other way as a path of its own, knowing r0 == 0."""
    source = "r0 = 0\ncall 7\nif r0 == 5 goto +1\nr0 = 1\nexit\n"
    (said,) = [c.text for c in explain.checks(parse_insn("if r0 == 5 goto +1"))
               if c.key == "both_ways"]
    assert said.startswith("both ways are followed")
    with Program.from_instructions(parse(source), ProgType.SOCKET_FILTER,
                                   log_level=2) as prog:
        assert "from 2 to 4: R0=5" in prog.verifier_log
