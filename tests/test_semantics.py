"""Every instruction's meaning, checked on the running kernel against RFC 9669.

Each case is a small DSL program that leaves a value in r0; it is loaded as a socket filter
and run with BPF_PROG_TEST_RUN. The return value is 32 bits, so each program is run twice:
as is (low half) and with ``r0 >>= 32`` appended (high half). Expected values come from a
reference model written from the RFC's text, plus literal edge cases (division by zero,
INT_MIN / -1, shift masks, sign and zero extension) spelled out by hand.
"""

import pytest

from pybpf.abi import ProgType
from pybpf.asm import B, DW, H, R0, R1, R2, R6, R7, R10, W, Builder
from pybpf.program import Program

pytestmark = pytest.mark.kernel

M32, M64 = (1 << 32) - 1, (1 << 64) - 1
PACKET = bytes(range(0x10, 0x10 + 32))  # >= 14 bytes: socket filter test runs need ETH_HLEN


def signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def run(body, subprograms=None):
    """r0 (64 bits) after the instructions ``body(b)`` adds, via two test runs.

    ``subprograms(b)`` adds functions after the main program's exit.
    """
    halves = []
    for shift in (False, True):
        b = Builder()
        body(b)
        if shift:
            b.rsh(R0, 32)
        b.exit()
        if subprograms:
            subprograms(b)
        with Program.from_instructions(b.instructions, ProgType.SOCKET_FILTER) as prog:
            halves.append(prog.test_run(PACKET).retval)
    return halves[1] << 32 | halves[0]


# --- reference model (RFC 9669 section 4) ---------------------------------------------------

def _sdiv(a, c):
    q = abs(a) // abs(c)
    return q if (a < 0) == (c < 0) else -q


ALU = {
    "add": lambda a, c, w: a + c,
    "sub": lambda a, c, w: a - c,
    "mul": lambda a, c, w: a * c,
    "div": lambda a, c, w: a // c if c else 0,
    "sdiv": lambda a, c, w: _sdiv(signed(a, w), signed(c, w)) if c else 0,
    "mod": lambda a, c, w: a % c if c else a,
    "smod": lambda a, c, w: (signed(a, w) - signed(c, w) * _sdiv(signed(a, w), signed(c, w))
                             if c else a),
    "or": lambda a, c, w: a | c,
    "and": lambda a, c, w: a & c,
    "xor": lambda a, c, w: a ^ c,
    "lsh": lambda a, c, w: a << (c & (w - 1)),
    "rsh": lambda a, c, w: a >> (c & (w - 1)),
    "arsh": lambda a, c, w: signed(a, w) >> (c & (w - 1)),
    "mov": lambda a, c, w: c,
}
SHIFTS = ("lsh", "rsh", "arsh")
DIVS = ("div", "sdiv", "mod", "smod")


def alu_model(op, a, c, width):
    mask = (1 << width) - 1
    return ALU[op](a & mask, c & mask, width) & mask


JMP = {
    "jeq": lambda a, c, w: a == c, "jne": lambda a, c, w: a != c,
    "jgt": lambda a, c, w: a > c, "jge": lambda a, c, w: a >= c,
    "jlt": lambda a, c, w: a < c, "jle": lambda a, c, w: a <= c,
    "jset": lambda a, c, w: bool(a & c),
    "jsgt": lambda a, c, w: signed(a, w) > signed(c, w),
    "jsge": lambda a, c, w: signed(a, w) >= signed(c, w),
    "jslt": lambda a, c, w: signed(a, w) < signed(c, w),
    "jsle": lambda a, c, w: signed(a, w) <= signed(c, w),
}

OPERANDS = [  # (dst, src): signs, widths, edges
    (0x0123456789ABCDEF, 7), (0xFFFFFFFFFFFFFFF9, 3), (100, 0xFFFFFFFFFFFFFFFD),
    (0x8000000000000000, M64), (0xDEADBEEF80000000, 0xFFFFFFFF), (42, 0), (M64, 65),
]
IMMEDIATES = [7, -3, 0x7FFFFFFF, -0x80000000, 33]


def _name(value):
    return f"{value & M64:#x}"


def alu_cases():
    for op in ALU:
        for width, suffix in ((64, ""), (32, "32")):
            method = op + suffix if suffix else {"or": "or_", "and": "and_"}.get(op, op)
            for a, c in OPERANDS:
                yield (f"{method} {_name(a)}, r={_name(c)}", method, a, c, True,
                       alu_model(op, a, c, width))
            for imm in IMMEDIATES:
                if op in SHIFTS and not 0 <= imm < width:
                    continue  # the verifier rejects constant shifts out of range
                a = OPERANDS[0][0]
                c = imm & M64 if width == 64 else imm & M32  # imm is sign-extended
                yield (f"{method} {_name(a)}, imm={imm}", method, a, imm, False,
                       alu_model(op, a, c, width))


@pytest.mark.parametrize("method, a, c, by_reg, expected",
                         [case[1:] for case in alu_cases()],
                         ids=[case[0] for case in alu_cases()])
def test_alu(method, a, c, by_reg, expected):
    def body(b):
        b.lddw(R0, a)
        if by_reg:
            b.lddw(R1, c)
        getattr(b, method)(R0, R1 if by_reg else c)
    assert run(body) == expected


EDGES = [  # (name, body, expected) spelled out from the RFC
    ("div by zero is 0", lambda b: (b.mov(R0, 9), b.mov(R1, 0), b.div(R0, R1)), 0),
    ("div32 by zero is 0", lambda b: (b.lddw(R0, M64), b.mov(R1, 0), b.div32(R0, R1)), 0),
    ("mod by zero keeps dst", lambda b: (b.lddw(R0, 0x1122334455667788), b.mov(R1, 0),
                                         b.mod(R0, R1)), 0x1122334455667788),
    ("mod32 by zero keeps dst, zero-extended",
     lambda b: (b.lddw(R0, 0x1122334455667788), b.mov(R1, 0), b.mod32(R0, R1)), 0x55667788),
    ("sdiv INT64_MIN / -1", lambda b: (b.lddw(R0, 1 << 63), b.mov(R1, -1), b.sdiv(R0, R1)),
     1 << 63),
    ("smod INT64_MIN % -1", lambda b: (b.lddw(R0, 1 << 63), b.mov(R1, -1), b.smod(R0, R1)), 0),
    ("sdiv32 INT32_MIN / -1", lambda b: (b.mov32(R0, -0x80000000), b.sdiv32(R0, -1)),
     0x80000000),
    ("smod -7 % 2 is -1", lambda b: (b.mov(R0, -7), b.smod(R0, 2)), M64),
    ("lsh by 65 shifts by 1", lambda b: (b.mov(R0, 1), b.mov(R1, 65), b.lsh(R0, R1)), 2),
    ("lsh32 by 33 shifts by 1", lambda b: (b.mov(R0, 1), b.mov(R1, 33), b.lsh32(R0, R1)), 2),
    ("arsh32 sign-fills 32 bits", lambda b: (b.mov32(R0, -0x80000000), b.arsh32(R0, 4)),
     0xF8000000),
    ("mov imm sign-extends", lambda b: b.mov(R0, -1), M64),
    ("mov32 zero-extends", lambda b: b.mov32(R0, -1), M32),
    ("add32 clears the upper half", lambda b: (b.lddw(R0, M64), b.add32(R0, 1)), 0),
    ("neg", lambda b: (b.mov(R0, 5), b.neg(R0)), -5 & M64),
    ("neg32", lambda b: (b.lddw(R0, 0x100000005), b.neg32(R0)), -5 & M32),
    ("movsx 8", lambda b: (b.mov(R1, 0x80), b.movsx(R0, R1, 8)), -0x80 & M64),
    ("movsx 16", lambda b: (b.mov(R1, 0x8001), b.movsx(R0, R1, 16)), -0x7FFF & M64),
    ("movsx 32", lambda b: (b.lddw(R1, 0x1FFFFFFFE), b.movsx(R0, R1, 32)), -2 & M64),
    ("movsx32 8", lambda b: (b.mov(R1, 0xFF), b.movsx32(R0, R1, 8)), M32),
    ("movsx32 16", lambda b: (b.mov(R1, 0x7FFF), b.movsx32(R0, R1, 16)), 0x7FFF),
    ("le16 truncates", lambda b: (b.lddw(R0, 0x1122334455667788), b.le(R0, 16)), 0x7788),
    ("le32 truncates", lambda b: (b.lddw(R0, 0x1122334455667788), b.le(R0, 32)), 0x55667788),
    ("le64 keeps", lambda b: (b.lddw(R0, 0x1122334455667788), b.le(R0, 64)),
     0x1122334455667788),
    ("be16 swaps", lambda b: (b.lddw(R0, 0x1122334455667788), b.be(R0, 16)), 0x8877),
    ("be32 swaps", lambda b: (b.lddw(R0, 0x1122334455667788), b.be(R0, 32)), 0x88776655),
    ("be64 swaps", lambda b: (b.lddw(R0, 0x1122334455667788), b.be(R0, 64)),
     0x8877665544332211),
    ("bswap16", lambda b: (b.lddw(R0, 0x1122334455667788), b.bswap(R0, 16)), 0x8877),
    ("bswap32", lambda b: (b.lddw(R0, 0x1122334455667788), b.bswap(R0, 32)), 0x88776655),
    ("bswap64", lambda b: (b.lddw(R0, 0x1122334455667788), b.bswap(R0, 64)),
     0x8877665544332211),
    ("lddw", lambda b: b.lddw(R0, 0xFEDCBA9876543210), 0xFEDCBA9876543210),
]


@pytest.mark.parametrize("body, expected", [e[1:] for e in EDGES], ids=[e[0] for e in EDGES])
def test_edges(body, expected):
    assert run(body) == expected


# --- jumps ------------------------------------------------------------------------------------

JUMP_OPERANDS = [(5, 5), (5, 6), (M64, 1), (1, M64), (0x100000001, 1), (0x80000000, 0x7FFFFFFF),
                 (6, 3)]


def jump_cases():
    for op in JMP:
        for width, suffix in ((64, ""), (32, "32")):
            for a, c in JUMP_OPERANDS:
                yield (f"{op}{suffix} {_name(a)}, r={_name(c)}", op + suffix, a, c, True,
                       int(JMP[op](a & ((1 << width) - 1), c & ((1 << width) - 1), width)))
            for imm in (-1, 5, 0x7FFFFFFF):
                a = 5
                yield (f"{op}{suffix} 5, imm={imm}", op + suffix, a, imm, False,
                       int(JMP[op](a, imm & ((1 << width) - 1), width)))


@pytest.mark.parametrize("method, a, c, by_reg, taken",
                         [case[1:] for case in jump_cases()],
                         ids=[case[0] for case in jump_cases()])
def test_conditional_jump(method, a, c, by_reg, taken):
    def body(b):
        b.lddw(R1, a)
        b.lddw(R2, c)
        b.mov(R0, 1)
        getattr(b, method)(R1, R2 if by_reg else c, "taken")
        b.mov(R0, 0)
        b.label("taken")
        b.mov(R0, R0)
    assert run(body) == taken


def test_ja_gotol_and_may_goto():
    def jumps(b):  # a conditional jump keeps the skipped code reachable for the verifier
        b.mov(R0, 1)
        b.jeq(R0, 7, "skipped")
        b.ja("over")
        b.label("skipped")
        b.mov(R0, 2)
        b.label("over")
        b.jeq(R0, 7, "skipped_too")
        b.gotol("end")
        b.label("skipped_too")
        b.mov(R0, 3)
        b.label("end")
        b.add(R0, 10)
    assert run(jumps) == 11

    def loop(b):
        b.mov(R0, 0)
        b.label("loop")
        b.may_goto("out")
        b.add(R0, 1)
        b.jlt(R0, 5, "loop")
        b.label("out")
        b.mov(R0, R0)
    assert run(loop) == 5


def test_bpf_to_bpf_call():
    def body(b):
        b.mov(R6, 100)  # callee-saved across the call
        b.mov(R1, 40)
        b.mov(R2, 2)
        b.call_local("sum")
        b.add(R0, R6)

    def sum_function(b):
        b.label("sum")
        b.mov(R0, R1)
        b.add(R0, R2)
        b.exit()
    assert run(body, sum_function) == 142


# --- memory -----------------------------------------------------------------------------------

STORED = 0x8182838485868788


def _stack(b):
    b.lddw(R1, STORED)
    b.stx(DW, R10, -8, R1)


@pytest.mark.parametrize("size, off, signed_load, expected", [
    (B, -8, False, 0x88), (H, -8, False, 0x8788), (W, -8, False, 0x85868788),
    (DW, -8, False, STORED), (B, -1, False, 0x81), (H, -2, False, 0x8182),
    (B, -8, True, -0x78 & M64), (H, -8, True, -0x7878 & M64),
    (W, -8, True, signed(0x85868788, 32) & M64), (W, -4, True, signed(0x81828384, 32) & M64),
])
def test_load(size, off, signed_load, expected):
    def body(b):
        _stack(b)
        (b.ldxsx if signed_load else b.ldx)(size, R0, R10, off)
    assert run(body) == expected


@pytest.mark.parametrize("size, expected", [(B, 0x81828384858687FF), (H, 0x818283848586FFFF),
                                            (W, 0x81828384FFFFFFFF), (DW, M64)])
def test_store_imm_and_reg(size, expected):
    def by_imm(b):
        _stack(b)
        b.st(size, R10, -8, -1)
        b.ldx(DW, R0, R10, -8)

    def by_reg(b):
        _stack(b)
        b.mov(R1, -1)
        b.stx(size, R10, -8, R1)
        b.ldx(DW, R0, R10, -8)
    assert run(by_imm) == expected
    assert run(by_reg) == expected


def test_legacy_packet_loads():
    def body(b, size, how):
        b.mov(R6, R1)  # ld_abs/ld_ind read the packet of the skb in r6
        b.mov(R7, 1)
        if how == "abs":
            b.ld_abs(size, 3)
        else:
            b.ld_ind(size, R7, 2)
    for how in ("abs", "ind"):  # offset 3 after the 14-byte Ethernet header, big endian
        assert run(lambda b, how=how: body(b, B, how)) == PACKET[17]
        assert run(lambda b, how=how: body(b, H, how)) == int.from_bytes(PACKET[17:19], "big")
        assert run(lambda b, how=how: body(b, W, how)) == int.from_bytes(PACKET[17:21], "big")


ATOMIC = {"add": lambda m, v: m + v, "or": lambda m, v: m | v, "and": lambda m, v: m & v,
          "xor": lambda m, v: m ^ v, "xchg": lambda m, v: v}
MEM, OPERAND = 0xF0F0F0F0F0F0F0F0, 0x0FF00000000000FF


@pytest.mark.parametrize("size", [W, DW])
@pytest.mark.parametrize("op, fetch", [(op, fetch) for op in sorted(ATOMIC)
                                       for fetch in (False, True) if fetch or op != "xchg"])
def test_atomic(op, size, fetch):
    mask = M32 if size == W else M64
    method = op if op == "xchg" else f"atomic_{'fetch_' if fetch else ''}{op}"

    def memory(b, result_reg):
        b.lddw(R1, MEM)
        b.stx(DW, R10, -8, R1)
        b.lddw(R1, OPERAND)
        getattr(b, method)(size, R10, -8, R1)
        if result_reg == "mem":
            b.ldx(DW, R0, R10, -8)
        else:
            b.mov(R0, R1)
    new = (ATOMIC[op](MEM & mask, OPERAND & mask) & mask) | (MEM & ~mask & M64)
    assert run(lambda b: memory(b, "mem")) == new
    if fetch:
        assert run(lambda b: memory(b, "reg")) == MEM & mask  # old value, zero-extended


@pytest.mark.parametrize("size", [W, DW])
@pytest.mark.parametrize("equal", [True, False])
def test_cmpxchg(size, equal):
    mask = M32 if size == W else M64

    def body(b, result):
        b.lddw(R1, MEM)
        b.stx(DW, R10, -8, R1)
        b.lddw(R0, MEM if equal else 5)
        b.lddw(R1, OPERAND)
        b.cmpxchg(size, R10, -8, R1)
        if result == "mem":
            b.ldx(DW, R0, R10, -8)
    stored = (OPERAND & mask) | (MEM & ~mask & M64) if equal else MEM
    assert run(lambda b: body(b, "mem")) == stored
    assert run(lambda b: body(b, "r0")) == MEM & mask


@pytest.mark.parametrize("size, expected", [(B, 0x88), (H, 0x8788), (W, 0x85868788),
                                            (DW, STORED)])
def test_load_acquire_store_release(size, expected):
    def acquire(b):
        _stack(b)
        b.load_acquire(size, R0, R10, -8)

    def release(b):
        b.mov(R1, 0)
        b.stx(DW, R10, -8, R1)
        b.lddw(R1, STORED)
        b.store_release(size, R10, -8, R1)
        b.ldx(DW, R0, R10, -8)
    assert run(acquire) == expected
    assert run(release) == expected
