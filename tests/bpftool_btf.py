"""bpftool's raw BTF dump (``bpftool btf dump file PATH``), parsed: the independent BTF reader
(libbpf's) that the BTF, CO-RE and DSL tests compare pybpf with."""

import functools
import re
import subprocess

from support import require_tool

VMLINUX = "/sys/kernel/btf/vmlinux"


@functools.lru_cache(maxsize=None)
def dump(*args):
    """``bpftool [args]`` (``btf dump file PATH``, ``-B BASE btf dump ...``) as
    ``{id: (kind, name, header, [member or enumerator lines])}``; ``name`` is "(anon)" for
    anonymous types, as bpftool prints it."""
    bpftool = require_tool("bpftool")
    out = subprocess.run([bpftool, *args], capture_output=True, text=True, check=True).stdout
    types, current = {}, None
    for line in out.splitlines():
        head = re.match(r"\[(\d+)\] (\w+) '([^']*)'(.*)", line)
        if head:
            current = types[int(head.group(1))] = (head.group(2), head.group(3),
                                                    head.group(4), [])
        elif current is not None:
            current[3].append(line.strip())
    return types


def dump_file(path):
    return dump("btf", "dump", "file", str(path))


def number(text, key):
    """The integer after ``key=`` in a dump line."""
    return int(re.search(rf"\b{key}=(-?\d+)", text).group(1))


def by_name(types, kind, name):
    """The id of the first type of ``kind`` (``STRUCT``, ``ENUM``, ``FUNC``...) called
    ``name``."""
    return next(i for i, t in types.items() if t[0] == kind and t[1] == name)


def members(types, type_id):
    """``[(name, type_id, bits_offset, bitfield_size)]`` of a struct or union."""
    out = []
    for item in types[type_id][3]:
        name = re.match(r"'([^']*)'", item).group(1)
        bitfield = re.search(r"bitfield_size=(\d+)", item)
        out.append((name, number(item, "type_id"), number(item, "bits_offset"),
                    int(bitfield.group(1)) if bitfield else 0))
    return out


def member(types, type_id, name):
    """``(type_id, bits_offset, bitfield_size)`` of the member ``name``."""
    return next(m[1:] for m in members(types, type_id) if m[0] == name)


def enumerators(types, type_id):
    """``{name: value}`` of an enum."""
    return {re.match(r"'(\w+)'", v).group(1): number(v, "val") for v in types[type_id][3]}
