"""BTF parsing, checking, fix-ups and value decoding (pure: no kernel needed, but where the
kernel is the oracle for what it accepts)."""

import os
import struct

import pytest
from elftools.elf.elffile import ELFFile

from pybpf import syscalls
from pybpf.btf import BTF, BTFExt, Kind
from pybpf.btf.values import construct_for
from pybpf.errors import BTFError, SyscallError

HERE = os.path.join(os.path.dirname(__file__), "elf")


def section_bytes(obj, name):
    with open(os.path.join(HERE, obj), "rb") as f:
        return ELFFile(f).get_section_by_name(name).data()


def fixture_btf(obj):
    return BTF.parse(section_bytes(obj, ".BTF"))


def _words(tail):
    """A record's tail: a list of ints (u32 words; negative ones as s32), one int, or None."""
    if tail is None:
        return []
    return [tail] if isinstance(tail, int) else list(tail)


def make_btf(types, strings=b"\0int\0a\0b\0"):
    """A .BTF blob from (name_off, kind, vlen, size_type, tail words) tuples."""
    body = b"".join(
        struct.pack("<III", name_off, kind << 24 | vlen, size_type)
        + b"".join(struct.pack("<i" if word < 0 else "<I", word) for word in _words(tail))
        for name_off, kind, vlen, size_type, tail in types)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


INT32 = (1, Kind.INT, 0, 4, 32)  # "int", 4 bytes, 32 bits, unsigned


def test_fixture_btf_round_trips_byte_for_byte():
    raw = section_bytes("execve.o", ".BTF")
    assert BTF.parse(raw).encode() == raw


def test_every_kind_parses_from_hand_made_btf():
    types = [
        INT32,
        (0, Kind.PTR, 0, 1, None),
        (0, Kind.ARRAY, 0, 0, [1, 1, 4]),
        (5, Kind.STRUCT, 2, 8, [5, 1, 0, 7, 1, 32]),
        (0, Kind.UNION, 1, 4, [5, 1, 0]),
        (5, Kind.ENUM, 1, 4, [7, -1]),
        (7, Kind.FWD, 0, 0, None),
        (7, Kind.TYPEDEF, 0, 1, None),
        (0, Kind.VOLATILE, 0, 1, None),
        (0, Kind.CONST, 0, 9, None),
        (0, Kind.RESTRICT, 0, 2, None),
        (0, Kind.FUNC_PROTO, 1, 1, [5, 1]),
        (5, Kind.FUNC, 1, 12, None),
        (7, Kind.VAR, 0, 1, 1),
        (5, Kind.DATASEC, 1, 4, [14, 0, 4]),
        (5, Kind.FLOAT, 0, 8, None),
        (5, Kind.DECL_TAG, 0, 4, -1),
        (5, Kind.TYPE_TAG, 0, 1, None),
        (5, Kind.ENUM64, 1, 8, [7, 1, 2]),
    ]
    btf = BTF.parse(make_btf(types))
    assert [btf.kind(i) for i in range(1, len(btf))] == [t[1] for t in types]
    assert btf.size_of(3) == 16 and btf.size_of(10) == 4 and btf.size_of(2) == 8
    assert list(btf.members(4)) == [("a", 1, 0, 0), ("b", 1, 32, 0)]
    assert btf.type(1).int == (0, 0, 32) and btf.type(3).array == (1, 1, 4)
    assert btf.type(6).enumerators == (("b", 0xFFFFFFFF),)  # kind_flag 0: unsigned
    assert btf.type(19).enumerators == (("b", 2 << 32 | 1),)
    assert btf.type(12).params == (("a", 1),) and btf.type(13).linkage == 1
    assert btf.type(17).component_idx == -1 and btf.type(15).vars == ((14, 0, 4),)
    assert (btf.name(4), btf.name(2), btf.find("b", Kind.FWD)) == ("a", "", 7)
    assert btf.find_all("a") == [4, 6, 13, 15, 16, 17, 18, 19]


# -- finding types by name ----------------------------------------------------------------

def test_names_are_found_across_a_large_table():
    """3,000 structs named s0..s2999 (a 17 KB string table, many chunks of the string index),
    and 3,000 typedefs of the same names: each name finds its struct and its typedef."""
    types, strings, offsets = [INT32], bytearray(b"\0int\0"), []
    for i in range(3000):
        offsets.append(len(strings))
        strings += b"s%d\0" % i
    types += [(offset, Kind.STRUCT, 0, 0, None) for offset in offsets]
    types += [(offset, Kind.TYPEDEF, 0, 1, None) for offset in offsets]
    btf = BTF.parse(make_btf(types, strings=bytes(strings)))
    for i in (0, 1, 99, 1000, 1234, 2999):
        assert btf.find_all(f"s{i}") == [2 + i, 3002 + i]
        assert btf.find(f"s{i}", Kind.TYPEDEF) == 3002 + i
    assert btf.find_all("s3000") == [] and btf.find_all("s") == [] and btf.find_all("") == []


def test_a_table_that_repeats_a_string_finds_the_types_of_every_copy():
    btf = BTF.parse(make_btf([INT32, (5, Kind.STRUCT, 0, 0, None), (9, Kind.UNION, 0, 0, None)],
                             strings=b"\0int\0a\0b\0a\0"))
    assert btf.find_all("a") == [2, 3] and btf.find("a", Kind.UNION) == 3


def test_a_name_that_starts_inside_a_string_is_found():
    """No compiler writes it, but a name offset may point into a string ("nt" of "int"):
    lookups then search the table for every string the name ends, and still find "int"."""
    types = [INT32, (2, Kind.STRUCT, 0, 0, None), (5, Kind.TYPEDEF, 0, 2, None)]
    btf = BTF.parse(make_btf(types))
    assert (btf.find_all("nt"), btf.find_all("int"), btf.find_all("a")) == ([2], [1], [3])
    assert btf.find_all("t") == [] and btf.name(2) == "nt"


def test_a_name_past_the_table_is_no_other_name():
    """The kernel's BTF is checked lazily: a type whose name offset is past the string table
    (by 2**24, where the search keeps 3 bytes of each offset) is found by no lookup."""
    types = [INT32, (5 + (1 << 24), Kind.STRUCT, 0, 0, None), (5, Kind.STRUCT, 0, 0, None)]
    btf = BTF.parse(make_btf(types), check=False)
    assert btf.find_all("a") == [3] and btf.find_all("int") == [1]
    with pytest.raises(BTFError, match="past the string table"):
        btf.name(2)


def test_signed_enums_and_bitfield_members():
    types = [INT32, (5, Kind.ENUM, 2, 4, [5, -2, 7, 3]),
             (5, Kind.STRUCT, 2, 4, [5, 1, 3 << 24 | 5, 7, 1, 1 << 24 | 8])]
    raw = bytearray(make_btf(types))
    raw[24 + 16 + 7] |= 0x80  # the enum's kind_flag: signed values
    raw[24 + 16 + 28 + 7] |= 0x80  # the struct's kind_flag: bitfield sizes in member offsets
    btf = BTF.parse(bytes(raw))
    assert btf.type(2).enumerators == (("a", -2), ("b", 3))
    assert btf.members(3) == (("a", 1, 5, 3), ("b", 1, 8, 1))


@pytest.mark.parametrize("types, message", [
    ([INT32, (0, Kind.TYPEDEF, 0, 3, None), (0, Kind.CONST, 0, 2, None)], "loop"),
    ([INT32, (0, Kind.ARRAY, 0, 0, [2, 1, 2])], "loop"),
    ([INT32, (0, Kind.PTR, 0, 7, None)], "type id 7"),
    ([INT32, (99, Kind.TYPEDEF, 0, 1, None)], "string offset 99"),
    ([INT32, (0, 25, 0, 0, None)], "unknown kind"),
])
def test_malformed_btf_is_a_btf_error_with_the_offset(types, message):
    with pytest.raises(BTFError, match=message) as info:
        BTF.parse(make_btf(types))
    assert info.value.section == ".BTF" and info.value.offset >= 24


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:10], "truncated"),
    (lambda b: b"\xeb\x9f" + b[2:], "big-endian"),
    (lambda b: b[:-1], "past the end"),
    (lambda b: b[:-1] + b"x", "NUL"),
])
def test_damaged_header_or_strings(mutate, message):
    with pytest.raises(BTFError, match=message):
        BTF.parse(mutate(make_btf([INT32])))


def test_fixup_sets_datasec_sizes_and_sorted_offsets():
    btf = fixture_btf("globals.o")
    data = btf.find(".data", Kind.DATASEC)
    btf.fixup_datasecs({".data": 24, ".bss": 12, ".rodata": 4, "license": 4},
                       {(".data", "hits"): 0, (".data", "scratch"): 8, (".bss", "zeroed"): 0,
                        (".bss", "calls"): 8, (".rodata", "answer"): 0,
                        ("license", "LICENSE"): 0})
    assert btf.type(data).size == 24
    assert [(n, o) for n, _, o, _ in btf.datasec_vars(data)] == [("hits", 0), ("scratch", 8)]
    assert BTF.parse(btf.encode()).type(data).size == 24


def test_fixup_without_the_symbol_is_an_error():
    btf = fixture_btf("globals.o")
    with pytest.raises(BTFError, match="'zeroed' of DATASEC '.bss' has no ELF symbol"):
        btf.fixup_datasecs({".data": 24, ".bss": 12, ".rodata": 4, "license": 4}, {})


def test_construct_types_decode_structs_arrays_and_char_strings():
    btf = fixture_btf("execve.o")
    key = construct_for(btf, btf.find("exec_key", Kind.STRUCT))
    assert key.sizeof() == 20
    value = key.parse((1234).to_bytes(4, "little") + b"bash".ljust(16, b"\0"))
    assert value.pid == 1234 and value.comm == "bash"
    assert key.build(dict(pid=5, comm="sh")) == (5).to_bytes(4, "little") + b"sh".ljust(16, b"\0")


def test_btf_ext_line_info_is_in_bytes_with_source_text():
    btf = fixture_btf("execve.o")
    ext = BTFExt.parse(section_bytes("execve.o", ".BTF.ext"), btf)
    lines = ext.line_info["tracepoint/syscalls/sys_enter_execve"]
    assert all(info.insn_off % 8 == 0 for info in lines)
    assert "sys_enter_execve" in btf.string(lines[0].line_off)
    assert lines[0].line == 39
    assert [f.insn_off for f in ext.func_info[".text"]] == [0]


def test_btf_ext_bad_record_size():
    btf = fixture_btf("execve.o")
    raw = bytearray(section_bytes("execve.o", ".BTF.ext"))
    header_len = int.from_bytes(raw[4:8], "little")
    func_off = header_len + int.from_bytes(raw[8:12], "little")
    raw[func_off:func_off + 4] = (3).to_bytes(4, "little")
    with pytest.raises(BTFError, match="record size 3") as info:
        BTFExt.parse(bytes(raw), btf)
    assert info.value.section == ".BTF.ext" and info.value.offset == func_off


# -- chains: the kernel's depth limit, and work that grows with the types, not their depth --

def typedef_chain(links, kind=Kind.TYPEDEF, top_down=True):
    """``links`` typedefs (or other qualifiers) chained to an int. Top-down, type 1 is the
    head and refers to type 2...; bottom-up, the int is type 1 and each link refers to the
    one before (every link then resolves from an already resolved one)."""
    name = 5 if kind == Kind.TYPEDEF else 0  # "a"
    if top_down:
        types = [(name, kind, 0, i + 1, None) for i in range(1, links + 1)] + [INT32]
    else:
        types = [INT32] + [(name, kind, 0, i - 1, None) for i in range(2, links + 2)]
    return make_btf(types)


def array_chain(links):
    """``links`` one-element arrays of typedefs of arrays... of an int, top-down."""
    types = []
    for i in range(1, links + 1):
        if i % 2:
            types.append((0, Kind.ARRAY, 0, 0, [i + 1, links + 1, 1]))
        else:
            types.append((5, Kind.TYPEDEF, 0, i + 1, None))
    return make_btf(types + [INT32])


@pytest.mark.parametrize("blob", [typedef_chain(1200), typedef_chain(1200, top_down=False),
                                  array_chain(1000), typedef_chain(33, Kind.CONST)],
                         ids=["1200 typedefs", "1200 typedefs bottom-up", "500 array typedefs",
                              "33 consts"])
def test_chains_deeper_than_the_kernels_limit_are_a_btf_error(blob):
    with pytest.raises(BTFError, match="chain of more than 32"):
        BTF.parse(blob)


def test_a_chain_of_32_is_the_longest_accepted():
    assert BTF.parse(typedef_chain(32)).size_of(1) == 4
    assert BTF.parse(array_chain(32)).size_of(1) == 4


@pytest.mark.kernel
@pytest.mark.parametrize("links", [32, 33])
def test_the_depth_limit_is_the_kernels(links):
    """The kernel resolves a top-down chain of 32 typedefs and refuses 33 (MAX_RESOLVE_DEPTH);
    pybpf draws the line at the same place."""
    blob = typedef_chain(links)
    try:
        os.close(syscalls.btf_load(blob)[0])
        kernel_accepts = True
    except SyscallError:
        kernel_accepts = False
    try:
        BTF.parse(blob)
        pybpf_accepts = True
    except BTFError:
        pybpf_accepts = False
    assert (kernel_accepts, pybpf_accepts) == (links == 32, links == 32)


def test_checking_costs_one_step_per_type_however_chains_fan_out(monkeypatch):
    """900 chains of 30 typedefs, each head named by 23 more typedefs (20,700 of them): before,
    every type walked its whole chain (types x depth steps, 42 s in `pybpf disasm`); now each
    type's size is found once and remembered."""
    chains, depth, fan_out = 900, 30, 23
    types = [INT32]
    heads = []
    for _ in range(chains):
        first = len(types) + 1
        types.extend((5, Kind.TYPEDEF, 0, first + i - 1 if i else 1, None) for i in range(depth))
        heads.append(len(types))
    for head in heads:
        types.extend((7, Kind.TYPEDEF, 0, head, None) for _ in range(fan_out))
    blob = make_btf(types)
    steps = []
    real_step = BTF._size_step
    monkeypatch.setattr(BTF, "_size_step", lambda self, type_id: steps.append(type_id)
                        or real_step(self, type_id))
    btf = BTF.parse(blob)
    assert len(types) == 1 + chains * depth + chains * fan_out == 47701
    assert sorted(steps) == list(range(1, len(types) + 1))  # each type once, void never
    assert btf.size_of(len(types)) == 4


def test_fixup_sorts_datasec_variables_by_offset():
    """clang lists a DATASEC's variables in its own order, and the kernel wants them sorted
    by offset; here `b` comes first in BTF but lives after `a` in the section."""
    types = [INT32, (7, Kind.VAR, 0, 1, 1), (5, Kind.VAR, 0, 1, 1),
             (9, Kind.DATASEC, 2, 0, [2, 0, 4, 3, 0, 4])]
    btf = BTF.parse(make_btf(types, strings=b"\0int\0a\0b\0.data\0"))
    btf.fixup_datasecs({".data": 8}, {(".data", "a"): 0, (".data", "b"): 4})
    assert list(btf.datasec_vars(4)) == [("a", 3, 0, 4), ("b", 2, 4, 4)]
    assert list(BTF.parse(btf.encode()).datasec_vars(4)) == [("a", 3, 0, 4), ("b", 2, 4, 4)]


@pytest.mark.kernel
def test_the_kernel_loads_the_sorted_datasec():
    types = [INT32, (7, Kind.VAR, 0, 1, 1), (5, Kind.VAR, 0, 1, 1),
             (9, Kind.DATASEC, 2, 0, [2, 0, 4, 3, 0, 4])]
    btf = BTF.parse(make_btf(types, strings=b"\0int\0a\0b\0.data\0"))
    btf.fixup_datasecs({".data": 8}, {(".data", "a"): 0, (".data", "b"): 4})
    os.close(syscalls.btf_load(btf.encode())[0])
