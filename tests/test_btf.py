"""BTF parsing, checking, fix-ups and value decoding (pure: no kernel needed)."""

import os

import pytest
from elftools.elf.elffile import ELFFile

from pybpf.btf import BTF, BTF_HEADER, BTF_TYPE, BTFExt, Kind
from pybpf.errors import BTFError

HERE = os.path.join(os.path.dirname(__file__), "elf")


def section_bytes(obj, name):
    with open(os.path.join(HERE, obj), "rb") as f:
        return ELFFile(f).get_section_by_name(name).data()


def fixture_btf(obj):
    return BTF.parse(section_bytes(obj, ".BTF"))


def make_btf(types, strings=b"\0int\0a\0b\0"):
    """A .BTF section from (name_off, kind, vlen, size_type, tail) tuples."""
    body = b"".join(
        BTF_TYPE.build(dict(name_off=name_off, info=kind << 24 | vlen, size_type=size_type,
                            tail=tail))
        for name_off, kind, vlen, size_type, tail in types)
    header = BTF_HEADER.build(dict(magic=0xEB9F, version=1, flags=0, hdr_len=24, type_off=0,
                                   type_len=len(body), str_off=len(body),
                                   str_len=len(strings)))
    return header + body + strings


INT32 = (1, Kind.INT, 0, 4, 32)  # "int", 4 bytes, 32 bits, unsigned


def test_fixture_btf_round_trips_byte_for_byte():
    raw = section_bytes("execve.o", ".BTF")
    assert BTF.parse(raw).encode() == raw


def test_every_kind_parses_from_hand_made_btf():
    types = [
        INT32,
        (0, Kind.PTR, 0, 1, None),
        (0, Kind.ARRAY, 0, 0, dict(type=1, index_type=1, nelems=4)),
        (5, Kind.STRUCT, 2, 8, [dict(name_off=5, type=1, offset=0),
                                dict(name_off=7, type=1, offset=32)]),
        (0, Kind.UNION, 1, 4, [dict(name_off=5, type=1, offset=0)]),
        (5, Kind.ENUM, 1, 4, [dict(name_off=7, val=-1)]),
        (7, Kind.FWD, 0, 0, None),
        (7, Kind.TYPEDEF, 0, 1, None),
        (0, Kind.VOLATILE, 0, 1, None),
        (0, Kind.CONST, 0, 9, None),
        (0, Kind.RESTRICT, 0, 2, None),
        (0, Kind.FUNC_PROTO, 1, 1, [dict(name_off=5, type=1)]),
        (5, Kind.FUNC, 1, 12, None),
        (7, Kind.VAR, 0, 1, 1),
        (5, Kind.DATASEC, 1, 4, [dict(type=14, offset=0, size=4)]),
        (5, Kind.FLOAT, 0, 8, None),
        (5, Kind.DECL_TAG, 0, 4, -1),
        (5, Kind.TYPE_TAG, 0, 1, None),
        (5, Kind.ENUM64, 1, 8, [dict(name_off=7, val_lo32=1, val_hi32=2)]),
    ]
    btf = BTF.parse(make_btf(types))
    assert [btf.kind(i) for i in range(1, len(btf.types))] == [t[1] for t in types]
    assert btf.size_of(3) == 16 and btf.size_of(10) == 4 and btf.size_of(2) == 8
    assert list(btf.members(4)) == [("a", 1, 0, 0), ("b", 1, 32, 0)]


@pytest.mark.parametrize("types, message", [
    ([INT32, (0, Kind.TYPEDEF, 0, 3, None), (0, Kind.CONST, 0, 2, None)], "loop"),
    ([INT32, (0, Kind.ARRAY, 0, 0, dict(type=2, index_type=1, nelems=2))], "loop"),
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
    assert btf.types[data].size_type == 24
    assert [(n, o) for n, _, o, _ in btf.datasec_vars(data)] == [("hits", 0), ("scratch", 8)]
    assert BTF.parse(btf.encode()).types[data].size_type == 24


def test_fixup_without_the_symbol_is_an_error():
    btf = fixture_btf("globals.o")
    with pytest.raises(BTFError, match="'zeroed' of DATASEC '.bss' has no ELF symbol"):
        btf.fixup_datasecs({".data": 24, ".bss": 12, ".rodata": 4, "license": 4}, {})


def test_construct_types_decode_structs_arrays_and_char_strings():
    btf = fixture_btf("execve.o")
    key = btf.construct_for(btf.find("exec_key", Kind.STRUCT))
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
