"""Specs: what a program or a map *is*, as plain data, before the kernel knows of it.

The DSL (:mod:`pybpf.asm`) and the ELF loader (:mod:`pybpf.elf`) both produce these objects;
:class:`pybpf.maps.Map`, :class:`pybpf.program.Program` and
:class:`pybpf.collection.Collection` turn them into kernel objects (file descriptors). A spec
never holds a file descriptor, so the same spec can be loaded many times.
"""

from __future__ import annotations  # annotations stay text: no typing import at start

import re
from dataclasses import dataclass, field, replace

from .abi import BPF_OBJ_NAME_LEN, MapType, ProgType

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.]")


def object_name(name):
    """``name`` as the kernel accepts it for a map or program: characters outside
    ``[A-Za-z0-9_.]`` become ``_``, cut to 15 characters (BPF_OBJ_NAME_LEN - 1)."""
    return _NAME_BAD.sub("_", name)[:BPF_OBJ_NAME_LEN - 1]


@dataclass
class MapSpec:
    """A map to create with ``BPF_MAP_CREATE``.

    ``key_type``/``value_type`` say how :class:`~pybpf.maps.Map` encodes and decodes keys and
    values: a ``struct`` format (``"<I"`` a u32 int, ``"<Q"`` a u64, ``"16s"`` 16 bytes,
    ``"<IQ"`` a tuple of two ints), or a ``construct`` type (``Int32ul``, a ``Struct``...), or
    None for raw ``bytes``. Its size must be the map's ``key_size``/``value_size``. Formats
    keep construct's import (about 30 ms) out of programs that need nothing more.
    ``data`` is the initial content of element 0 of an array map (ELF ``.data``/``.rodata``),
    ``freeze`` makes the map read-only for user space after it is filled (``.rodata``).
    ``map_extra`` is the kernel's per-type extra parameter: for a ``BLOOM_FILTER`` the number
    of hash functions (0 means 5). ``pinning`` ``"by_name"`` (libbpf's
    ``LIBBPF_PIN_BY_NAME``) makes :class:`~pybpf.collection.Collection` share the map through
    the file ``<pin_path>/<name>``.
    """

    name: str
    type: MapType
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    key_type: object = None
    value_type: object = None
    inner_map: MapSpec | None = None
    numa_node: int | None = None
    map_extra: int = 0
    data: bytes | None = None
    freeze: bool = False
    pinning: str | None = None
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0

    def copy(self, **changes):
        """A copy of this spec with ``changes`` applied."""
        return replace(self, **changes)


@dataclass
class ProgramSpec:
    """A program to load with ``BPF_PROG_LOAD``.

    ``insns`` is a list of :class:`pybpf.asm.Instruction`, possibly with symbolic references
    (labels, map names) that loading resolves. ``section`` is libbpf's section name
    (``tracepoint/syscalls/sys_enter_execve``) and tells where the program attaches.
    """

    name: str
    type: ProgType
    insns: list
    license: str = "GPL"
    section: str = ""
    expected_attach_type: int = 0
    attach_target: str = ""
    kern_version: int = 0
    func_info: object = None
    line_info: object = None

    def copy(self, **changes):
        """A copy of this spec (the instruction list copied too) with ``changes`` applied."""
        changes.setdefault("insns", list(self.insns))
        return replace(self, **changes)


@dataclass
class CollectionSpec:
    """Programs and the maps they use, by name: what one ELF object or one DSL module defines."""

    maps: dict[str, MapSpec] = field(default_factory=dict)
    programs: dict[str, ProgramSpec] = field(default_factory=dict)
    btf: object = None
