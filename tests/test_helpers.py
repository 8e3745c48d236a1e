"""The helper id table (pybpf/helpers.py) and its generator, tools/gen_helpers.py.

Oracles: the running kernel's BTF (``enum bpf_func_id`` in /sys/kernel/btf/vmlinux) must
match the table exactly, the installed uapi header (which may be older) must agree on every
name it has, and bpftool's dump of the kernel's BTF checks the generator's BTF reader.
"""

import re
import struct
import subprocess

from pybpf.helpers import HELPER_NAMES, HELPERS
from support import ROOT, import_tool, require_file, require_tool

gen_helpers = import_tool("gen_helpers")

VMLINUX = gen_helpers.VMLINUX
UAPI_HEADER = "/usr/include/linux/bpf.h"


def test_table_is_dense_and_frozen():
    assert sorted(HELPERS.values()) == list(range(212))  # the list is frozen upstream
    assert HELPER_NAMES[211] == "cgrp_storage_delete"
    assert {HELPERS[name] for name in HELPER_NAMES.values()} == set(HELPER_NAMES)


def test_table_matches_running_kernel_btf():
    require_file(VMLINUX, "the kernel is built without CONFIG_DEBUG_INFO_BTF")
    helpers, _source = gen_helpers.read_helpers(VMLINUX)
    assert dict(helpers) == HELPERS


def test_helpers_file_is_what_the_generator_prints():
    require_file(VMLINUX, "the kernel is built without CONFIG_DEBUG_INFO_BTF")
    expected = gen_helpers.render(*gen_helpers.read_helpers(VMLINUX))
    actual = (ROOT / "pybpf" / "helpers.py").read_text()
    assert actual == expected, "pybpf/helpers.py is stale: run make generate"


def test_table_agrees_with_uapi_header():
    require_file(UAPI_HEADER, "install linux-libc-dev")
    helpers, _source = gen_helpers.read_helpers(UAPI_HEADER)
    assert len(helpers) > 200
    assert {name: HELPERS.get(name) for name, _ in helpers} == dict(helpers)


def test_btf_reader_matches_bpftool():
    bpftool = require_tool("bpftool")
    require_file(VMLINUX, "the kernel is built without CONFIG_DEBUG_INFO_BTF")
    dump = subprocess.run([bpftool, "btf", "dump", "file", VMLINUX], capture_output=True,
                          text=True, check=True).stdout
    body = dump.split("ENUM 'bpf_func_id'", 1)[1].split("\n[", 1)[0]
    expected = [(name, int(value)) for name, value in re.findall(r"'(\w+)' val=(-?\d+)", body)]
    with open(VMLINUX, "rb") as btf:
        assert gen_helpers.read_btf_enum(btf.read(), "bpf_func_id") == expected


def test_header_forms():
    old = ("#define __BPF_FUNC_MAPPER(FN)\t\\\n\tFN(unspec),\t\\\n\tFN(map_lookup_elem),\t\\\n"
           "\tFN(map_update_elem),\n\n#define X FN(not_a_helper)\n")
    new = ("#define ___BPF_FUNC_MAPPER(FN, ctx...)\t\\\n\tFN(unspec, 0, ##ctx)\t\\\n"
           "\tFN(map_lookup_elem, 1, ##ctx)\t\\\n\tFN(cgrp_storage_delete, 211, ##ctx)\t\\\n"
           "\t/* */\n\n#define __BPF_FUNC_MAPPER(FN) ___BPF_FUNC_MAPPER(APPLY, FN)\n")
    assert gen_helpers.read_header(old) == [
        ("unspec", 0), ("map_lookup_elem", 1), ("map_update_elem", 2)]
    assert gen_helpers.read_header(new) == [
        ("unspec", 0), ("map_lookup_elem", 1), ("cgrp_storage_delete", 211)]


def test_generator_reads_btf_with_pybpf_btf():
    from pybpf import btf

    assert gen_helpers.BTF is btf.BTF  # one BTF reader
    enum = struct.pack("<III", 1, 6 << 24 | 2, 4) + struct.pack("<IiIi", 3, 0, 5, 7)
    array = struct.pack("<III", 0, 3 << 24, 0) + bytes(12)
    strings = b"\0e\0a\0b\0"
    types = array + enum
    blob = struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types),
                       len(strings)) + types + strings
    assert gen_helpers.read_btf_enum(blob, "e") == [("a", 0), ("b", 7)]
