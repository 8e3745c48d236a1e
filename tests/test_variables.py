"""Global variables by name (pybpf.variables): values checked against their BTF types, set in a
spec's data before loading; the corpus's knobs read from the object (values from its C
source)."""

import os

import pytest

from pybpf import elf
from pybpf.abi import MapType
from pybpf.btf import Kind
from pybpf.btf.writer import BTFWriter
from pybpf.errors import UsageError
from pybpf.spec import CollectionSpec, MapSpec
from pybpf.variables import SpecVariables, Variable

OBJECTS = os.path.join(os.path.dirname(__file__), "objects")


def declared():
    """A .data section of hand-made BTF: one variable of each kind of type, in order."""
    w = BTFWriter()
    u32 = w.add_int("unsigned int", 4)
    s8 = w.add_int("signed char", 1, signed=True)
    boolean = w.add_int("_Bool", 1, boolean=True)
    char = w.add_int("char", 1, signed=True)
    color = w.add_enum("color", 4, [("RED", 0), ("GREEN", 1), ("BLUE", 7)])
    f64 = w.add(Kind.FLOAT, "double", 8)
    uid = w.add_typedef("uid_t", u32)
    const_uid = w.add_qualifier(Kind.CONST, w.add_qualifier(Kind.VOLATILE, uid))
    comm = w.add_array(char, 8, u32)
    pair = w.add_array(u32, 2, u32)
    point = w.add_struct("point", 8, [("x", u32, 0, 0), ("y", u32, 32, 0)])
    pointer = w.add_ptr(point)
    types = [("uid", const_uid, 4), ("small", s8, 1), ("flag", boolean, 1), ("c", char, 1),
             ("color", color, 4), ("ratio", f64, 8), ("comm", comm, 8), ("pair", pair, 8),
             ("where", point, 8), ("ptr", pointer, 8)]
    btf = w.btf()
    variables, offset = {}, 0
    for name, type_id, size in types:
        variables[name] = Variable(name, ".data", ".data", offset, size, type_id, btf)
        offset += size
    maps = {".data": MapSpec(".data", MapType.ARRAY, 4, offset, 1, data=None, section=".data")}
    return maps, variables


@pytest.fixture
def spec():
    maps, variables = declared()
    return CollectionSpec(maps=maps, var_info=variables)


def test_values_are_encoded_by_their_btf_type(spec):
    v = spec.variables
    v["uid"] = 1000
    v["small"] = -128
    v["flag"] = True
    v["c"] = -1
    v["color"] = "BLUE"
    v["ratio"] = 0.5
    v["comm"] = "bash"
    v["pair"] = [1, 2]
    v["where"] = {"x": 3, "y": 4}
    v["ptr"] = 0xFFFF888800000000
    assert spec.maps[".data"].data == (
        (1000).to_bytes(4, "little") + b"\x80" + b"\x01" + b"\xff" + (7).to_bytes(4, "little")
        + bytes.fromhex("000000000000e03f") + b"bash\0\0\0\0" + bytes.fromhex("0100000002000000")
        + bytes.fromhex("0300000004000000") + (0xFFFF888800000000).to_bytes(8, "little"))
    assert (v["uid"], v["small"], v["flag"], v["c"], v["color"], v["ratio"], v["comm"],
            v["pair"], v["where"].x, v["where"].y, v["ptr"]) == \
        (1000, -128, True, -1, 7, 0.5, "bash", [1, 2], 3, 4, 0xFFFF888800000000)


def test_unset_bss_reads_as_zero_and_gets_data_when_set(spec):
    assert spec.maps[".data"].data is None and spec.variables["uid"] == 0
    spec.variables["small"] = 5
    assert spec.maps[".data"].data[4] == 5 and len(spec.maps[".data"].data) == 51


@pytest.mark.parametrize("name, text, value", [
    ("uid", "1000", 1000), ("uid", "0x10", 16), ("small", "-3", -3), ("flag", "yes", True),
    ("flag", "0", False), ("color", "GREEN", 1), ("color", "7", 7), ("ratio", "2.5", 2.5),
    ("comm", "0x10", "0x10"), ("pair", "4,5", [4, 5]),
])
def test_text_is_parsed_by_the_variables_type(spec, name, text, value):
    spec.set_variable(name, text)
    assert spec.variables[name] == value


@pytest.mark.parametrize("name, value, message", [
    ("uid", 1 << 32, "does not fit (0..4294967295)"),
    ("uid", -1, "does not fit"),
    ("small", 128, "does not fit (-128..127)"),
    ("uid", "1000", "needs an int, not str"),
    ("uid", True, "needs an int, not bool"),
    ("flag", 2, "needs True or False"),
    ("color", "PURPLE", "no enumerator 'PURPLE' (enumerators: RED, GREEN, BLUE)"),
    ("comm", "a longer name", "13 bytes do not fit in 8"),
    ("pair", [1, 2, 3], "3 values do not fit in 2"),
    ("pair", [1, -1], "an element: -1 does not fit"),
    ("where", {"x": 1}, "cannot build it"),
    ("uid", b"\0\0", "2 bytes given, the type is 4"),
])
def test_values_that_do_not_fit_are_usage_errors_naming_the_variable(spec, name, value,
                                                                      message):
    with pytest.raises(UsageError, match=f"variable '{name}' .*{_escape(message)}"):
        spec.variables[name] = value


def _escape(text):
    return "".join("\\" + c if c in "().[]?*+" else c for c in text)


def test_text_that_does_not_parse_is_a_usage_error(spec):
    with pytest.raises(UsageError, match="variable 'uid' \\(uid_t\\): cannot use 'lots': not "
                                         "an integer"):
        spec.set_variable("uid", "lots")
    with pytest.raises(UsageError, match="'flag' \\(_Bool\\).*not a boolean"):
        spec.set_variable("flag", "maybe")
    with pytest.raises(UsageError, match="'where' \\(struct point\\).*cannot be given as text"):
        spec.set_variable("where", "1,2")


def test_unknown_names_and_deletion_are_usage_errors(spec):
    with pytest.raises(UsageError, match="no global variable 'nope'; variables: c, color, "
                                         "comm, flag, pair, ptr, ratio, small, uid, where"):
        spec.variables["nope"]
    with pytest.raises(UsageError, match="cannot be deleted"):
        del spec.variables["uid"]
    assert len(spec.variables) == 10 and "uid" in spec.variables
    assert spec.variables.info("uid").type_name == "uid_t"
    assert spec.variables.info("comm").type_name == "char[8]"
    assert isinstance(spec.variables, SpecVariables)


def test_the_corpus_knobs_read_their_c_initialisers():
    spec = elf.load_spec(os.path.join(OBJECTS, "execsnoop.bpf.o"))
    assert dict(spec.rodata) == {"targ_uid": 0xFFFFFFFF, "ignore_failed": True,
                                 "targ_comm": ""}
    assert (spec.variables["exec_count"], spec.variables["dropped"]) == (0, 0)
    spec = elf.load_spec(os.path.join(OBJECTS, "opensnoop.bpf.o"))
    assert spec.variables["open_flags_mask"] == -1
    assert spec.variables.info("opens").section == ".data.counters"
    spec.set_variable("targ_tgid", "42")
    assert spec.maps[".rodata"].data[:4] == (42).to_bytes(4, "little")


def test_global_data_maps_are_mmapable_only_with_a_global_variable():
    """libbpf's map_is_mmapable: a DATASEC with a non-static variable. globals.o's .bss
    holds a global and a static variable, its .rodata.str1.1 (string literals) no DATASEC."""
    mmapable, rdonly_prog = 1 << 10, 1 << 7
    spec = elf.load_spec(os.path.join(OBJECTS, "..", "elf", "globals.o"))
    assert {name: m.flags for name, m in spec.maps.items() if m.section} == {
        ".data": mmapable, ".rodata": rdonly_prog | mmapable, ".bss": mmapable,
        ".rodata.str1.1": rdonly_prog}
    spec = elf.load_spec(os.path.join(OBJECTS, "biolatency.bpf.o"))
    assert spec.variables.info("record_kconfig.____fmt").linkage == 0
