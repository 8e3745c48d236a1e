"""Externs (pybpf.externs): .kconfig layout and values, .ksyms BTF fix-ups, kallsyms, against
values derived by hand from libbpf 1.1's rules (libbpf.c: cmp_externs, find_kcfg_type,
set_kcfg_value_*, bpf_object__collect_externs) and against libbpf's own layout (bpftool -d)."""

import os
import re
import subprocess

import pytest

from support import require_tool
from pybpf import elf, externs
from pybpf.btf import Kind
from pybpf.btf.writer import BTFWriter
from pybpf.errors import BTFError, ExternError
from pybpf.spec import ExternSpec

OBJECTS = os.path.join(os.path.dirname(__file__), "objects")
VAR_EXTERN = 2


def object_btf(kconfig=(), ksyms=()):
    """Hand-made BTF of an object declaring ``kconfig`` externs ``(name, type)`` (types:
    "int", "u64", "bool", "char", "tristate", "str") and ``ksyms`` ``(name, kind)`` (kind:
    "var", "void", "func")."""
    w = BTFWriter()
    types = {"int": w.add_int("int", 4, signed=True),
             "u64": w.add_int("unsigned long long", 8),
             "bool": w.add_int("_Bool", 1, boolean=True),
             "char": w.add_int("char", 1, signed=True),
             "tristate": w.add_enum("libbpf_tristate", 4, [("TRI_NO", 0), ("TRI_YES", 1),
                                                           ("TRI_MODULE", 2)]),
             "struct": w.add_struct("thing", 4, [("x", 1, 0, 0)])}
    types["str"] = w.add_array(types["char"], 16, types["int"])
    types["void"] = 0
    proto = w.add_func_proto(types["int"], [("", types["int"])])
    sections = []
    for section, items in ((".kconfig", kconfig), (".ksyms", ksyms)):
        entries = []
        for name, kind in items:
            if kind == "func":
                var = w.add_func(name, proto, linkage=2)
            else:
                var = w.add(Kind.VAR, name, types["int" if kind == "var" else kind],
                            tail=(VAR_EXTERN,))
            entries += [var, 0, 4]
        if items:
            sections.append(w.add(Kind.DATASEC, section, 0, len(items), tail=entries))
    return w.btf(), sections


def test_kconfig_externs_are_laid_out_in_libbpfs_order():
    """By alignment (descending), then size, then name: u64 first, the 4-byte ones, then the
    1-byte ones, and the char array (alignment 1, 16 bytes) last."""
    btf, _ = object_btf(kconfig=[("CONFIG_B", "bool"), ("CONFIG_STR", "str"),
                                 ("CONFIG_N", "int"), ("CONFIG_BIG", "u64"),
                                 ("CONFIG_A", "bool"), ("CONFIG_T", "tristate")])
    found = externs.collect(btf, [(n, False) for n in ("CONFIG_B", "CONFIG_STR", "CONFIG_N",
                                                       "CONFIG_BIG", "CONFIG_A", "CONFIG_T")])
    offsets = {name: ext.offset for name, ext in found.items()}
    assert offsets == {"CONFIG_BIG": 0, "CONFIG_N": 8, "CONFIG_T": 12, "CONFIG_A": 16,
                       "CONFIG_B": 17, "CONFIG_STR": 18}
    assert externs.kconfig_size(found) == 34
    assert [found[n].kind for n in ("CONFIG_BIG", "CONFIG_N", "CONFIG_T", "CONFIG_A",
                                    "CONFIG_STR")] == ["int", "int", "tristate", "bool",
                                                       "char_array"]


@pytest.mark.oracle
def test_the_layout_is_libbpfs_for_a_real_object(bpffs):
    obj = os.path.join(OBJECTS, "biolatency.bpf.o")
    log = subprocess.run([require_tool("bpftool"), "-d", "prog", "loadall", obj,
                          str(bpffs / "t")], capture_output=True, text=True).stderr
    theirs = {name: int(off) for off, name in
              re.findall(r"extern \(kcfg\) #\d+: symbol \d+, off (\d+), name (\w+)", log)}
    ours = {name: ext.offset for name, ext in elf.load_spec(obj).externs.items()
            if ext.section == ".kconfig"}
    assert theirs and ours == theirs


def test_extern_btf_is_rewritten_as_the_kernel_accepts_it():
    btf, (kconfig, ksyms) = object_btf(kconfig=[("CONFIG_N", "int"), ("CONFIG_A", "bool")],
                                       ksyms=[("sym", "void"), ("kfunc", "func"),
                                              ("var", "var")])
    externs.collect(btf, [("CONFIG_N", False), ("CONFIG_A", True), ("sym", False),
                          ("kfunc", False), ("var", True)])
    kconfig_vars = btf.type(kconfig).vars
    assert btf.type(kconfig).size == 5
    assert [(btf.name(v.type), v.offset) for v in kconfig_vars] == [("CONFIG_N", 0),
                                                                    ("CONFIG_A", 4)]
    assert all(btf.type(v.type).linkage == 1 for v in kconfig_vars)  # allocated
    entries = btf.type(ksyms).vars
    assert btf.type(ksyms).size == 12 and [(v.offset, v.size) for v in entries] == \
        [(0, 4), (4, 4), (8, 4)]
    assert all(btf.kind(v.type) == Kind.VAR and btf.type(v.type).linkage == 1
               for v in entries)
    func = btf.type(btf.find("kfunc", Kind.FUNC))
    assert func.linkage == 1  # global: the kernel refuses extern FUNCs
    assert all(p.name for p in btf.type(func.type).params)  # and unnamed parameters
    assert btf.name(entries[1].type) == "kfunc"  # the dummy variable borrows the name
    assert btf.kind(btf.find("sym", Kind.VAR)) == Kind.VAR


def test_externs_libbpf_cannot_fill_are_clear_errors():
    btf, _ = object_btf(kconfig=[("CONFIG_S", "struct")])
    with pytest.raises(ExternError, match="'CONFIG_S': its type is not one libbpf fills"):
        externs.collect(btf, [("CONFIG_S", False)])
    btf, _ = object_btf(ksyms=[("x", "var")])
    with pytest.raises(BTFError, match="extern 'nothing' has no BTF VAR or FUNC"):
        externs.collect(btf, [("nothing", False)])
    w = BTFWriter()
    var = w.add(Kind.VAR, "loose", w.add_int("int", 4), tail=(VAR_EXTERN,))
    w.add(Kind.DATASEC, ".data.other", 0, 1, tail=[var, 0, 4])
    with pytest.raises(ExternError, match="'loose' is in neither .kconfig nor .ksyms"):
        externs.collect(w.btf(), [("loose", False)])
    with pytest.raises(BTFError, match="not extern"):
        w = BTFWriter()
        w.add(Kind.VAR, "defined", w.add_int("int", 4), tail=(1,))
        externs.collect(w.btf(), [("defined", False)])


# -- values from a kernel config -----------------------------------------------------------

def kcfg(name, kind, offset, size, signed=False, weak=False):
    return ExternSpec(name=name, section=".kconfig", kind=kind, offset=offset, size=size,
                      signed=signed, weak=weak)


def values(config, *exts, release="6.1.2", virtual=None):
    table = {e.name: e for e in exts}
    return externs.kconfig_data(table, config, release, virtual)


def test_config_values_are_stored_as_libbpf_stores_them():
    exts = [kcfg("CONFIG_B", "bool", 0, 1), kcfg("CONFIG_T", "tristate", 4, 4),
            kcfg("CONFIG_M", "tristate", 8, 4), kcfg("CONFIG_C", "char", 12, 1),
            kcfg("CONFIG_H", "int", 16, 4), kcfg("CONFIG_NEG", "int", 20, 4, signed=True),
            kcfg("CONFIG_OCT", "int", 24, 2), kcfg("CONFIG_S", "char_array", 26, 6),
            kcfg("CONFIG_NO", "tristate", 32, 4)]
    config = "\n".join(["CONFIG_B=y", "CONFIG_T=y", "CONFIG_M=m", "CONFIG_C=m",
                        "CONFIG_H=0x1f4", "CONFIG_NEG=-5", "CONFIG_OCT=0755",
                        'CONFIG_S="too long a string"', "CONFIG_NO=n",
                        "CONFIG_H=1  # a later line for the same name is ignored"])
    data = values(config, *exts)
    assert data == (b"\x01\0\0\0" + (1).to_bytes(4, "little") + (2).to_bytes(4, "little")
                    + b"m\0\0\0" + (500).to_bytes(4, "little")
                    + (-5).to_bytes(4, "little", signed=True) + (0o755).to_bytes(2, "little")
                    + b"too l\0" + bytes(4))


@pytest.mark.parametrize("line, ext, message", [
    ("CONFIG_X=m", kcfg("CONFIG_X", "bool", 0, 1), "'m' implies a tristate or char type"),
    ("CONFIG_X=y", kcfg("CONFIG_X", "int", 0, 4), "implies a bool, tristate or char type"),
    ('CONFIG_X="s"', kcfg("CONFIG_X", "int", 0, 4), "is a string; declare the extern char"),
    ("CONFIG_X=7", kcfg("CONFIG_X", "bool", 0, 1), "is a number; declare the extern as an "
                                                   "integer type"),
    ("CONFIG_X=256", kcfg("CONFIG_X", "char", 0, 1), "256 does not fit in 1 bytes"),
    ("CONFIG_X=70000", kcfg("CONFIG_X", "int", 0, 2), "70000 does not fit in 2 bytes"),
    ("CONFIG_X=40000", kcfg("CONFIG_X", "int", 0, 2, signed=True), "does not fit in 2 bytes"),
    ("CONFIG_X=12ab", kcfg("CONFIG_X", "int", 0, 4), "'12ab' is not a number"),
    ('CONFIG_X="open', kcfg("CONFIG_X", "char_array", 0, 8), "is not quoted"),
    ("CONFIG_X=-129", kcfg("CONFIG_X", "int", 0, 1, signed=True), "does not fit in 1 bytes"),
    ("CONFIG_X=128", kcfg("CONFIG_X", "int", 0, 1, signed=True), "does not fit in 1 bytes"),
    ("CONFIG_X", kcfg("CONFIG_X", "int", 0, 4), "has no '=' and value"),
    ("CONFIG_X=", kcfg("CONFIG_X", "int", 0, 4), "has no '=' and value"),  # libbpf: no value
])
def test_config_values_that_do_not_fit_the_extern_are_refused(line, ext, message):
    with pytest.raises(ExternError, match=re.escape(message)):
        values(line, ext)


def test_signed_values_fill_their_whole_range():
    low, high = kcfg("CONFIG_LOW", "int", 0, 1, signed=True), \
        kcfg("CONFIG_HIGH", "int", 1, 1, signed=True)
    assert values("CONFIG_LOW=-128\nCONFIG_HIGH=127", low, high) == b"\x80\x7f"


def test_unset_and_absent_values_are_zero_when_weak_and_an_error_when_strong():
    weak = [kcfg("CONFIG_UNSET", "bool", 0, 1, weak=True),
            kcfg("CONFIG_ABSENT", "int", 4, 4, weak=True)]
    assert values("# CONFIG_UNSET is not set\n", *weak) == bytes(8)
    with pytest.raises(ExternError, match="'CONFIG_UNSET' has no value") as info:
        values("# CONFIG_UNSET is not set\n", kcfg("CONFIG_UNSET", "bool", 0, 1))
    assert info.value.name == "CONFIG_UNSET"


def test_the_config_is_read_only_when_a_config_extern_needs_it():
    def unreadable():
        raise AssertionError("read")
    version = kcfg("LINUX_KERNEL_VERSION", "int", 0, 4)
    assert values(unreadable, version, release="6.18.44-fc-v857") == \
        ((6 << 16) + (18 << 8) + 44).to_bytes(4, "little")


@pytest.mark.parametrize("release, expected", [
    ("6.18.44-fc-v857", (6 << 16) + (18 << 8) + 44),
    ("5.4.300", (5 << 16) + (4 << 8) + 255),  # the sublevel is capped, as KERNEL_VERSION does
    ("4.19.0", (4 << 16) + (19 << 8)),
])
def test_linux_kernel_version_is_libbpfs_encoding(release, expected):
    assert externs.kernel_version(release) == expected


def test_a_release_without_three_numbers_is_an_error():
    with pytest.raises(ExternError, match="'6.18-rc1'"):
        externs.kernel_version("6.18-rc1")


def test_virtual_values_and_unknown_linux_externs():
    cookie = kcfg("LINUX_HAS_BPF_COOKIE", "bool", 0, 1, weak=True)
    assert values("", cookie, virtual={"LINUX_HAS_BPF_COOKIE": True}) == b"\x01"
    assert values("", cookie, virtual={"LINUX_HAS_BPF_COOKIE": False}) == b"\x00"
    assert values("", kcfg("LINUX_UNKNOWN", "int", 0, 4, weak=True)) == bytes(4)
    # an unknown weak one stays 0 and the externs after it still get their values
    assert values("", kcfg("LINUX_UNKNOWN", "int", 0, 4, weak=True),
                  kcfg("LINUX_KERNEL_VERSION", "int", 4, 4), release="6.18.44") == \
        bytes(4) + ((6 << 16) + (18 << 8) + 44).to_bytes(4, "little")
    with pytest.raises(ExternError, match="'LINUX_UNKNOWN': not a value libbpf or pybpf knows"):
        values("", kcfg("LINUX_UNKNOWN", "int", 0, 4))
    with pytest.raises(ExternError, match="'OTHER': not a value"):
        values("", kcfg("OTHER", "int", 0, 4, weak=True))


# -- kallsyms -------------------------------------------------------------------------------

KALLSYMS = """ffffffff81000000 T _text
ffffffff816f0ae0 T do_unlinkat
ffffffff81001000 t helper
ffffffff81002000 t helper
ffffffffc0001000 t mod_func\t[some_module]
ffffffff816f0ae0 T do_unlinkat
"""


def test_kallsyms_addresses_and_ambiguity():
    assert externs.kallsyms_addresses(["do_unlinkat", "mod_func", "absent"], KALLSYMS) == \
        {"do_unlinkat": 0xFFFFFFFF816F0AE0, "mod_func": 0xFFFFFFFFC0001000}
    with pytest.raises(ExternError, match="'helper' is ambiguous: .* 0xffffffff81001000 and "
                                          "0xffffffff81002000"):
        externs.kallsyms_addresses(["helper"], KALLSYMS)
