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
    the file ``<pin_path>/<name>``. ``section`` is the ELF section a global data map holds
    (``.data``, ``.rodata.str1.1``, ``.bss``, ``.kconfig``), empty for other maps.
    ``init_slots`` are a map of maps' or a program array's ``.values`` initialisers: index ->
    the name of the map (or program) whose fd :class:`~pybpf.collection.Collection` stores
    there once it exists.
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
    section: str = ""
    init_slots: dict[int, str] | None = None

    def copy(self, **changes):
        """A copy of this spec with ``changes`` applied."""
        return replace(self, **changes)


@dataclass
class ExternSpec:
    """An ``extern`` an object leaves to its loader, as libbpf resolves them.

    ``section`` ``.kconfig``: a value of the kernel's configuration (``CONFIG_HZ``, read from
    /proc/config.gz) or one the loader computes (``LINUX_KERNEL_VERSION``); it lives at
    ``offset`` (``size`` bytes) of the read-only ``.kconfig`` map, and ``kind`` says how a
    config line's value is stored there: ``bool``, ``tristate`` (``enum libbpf_tristate``),
    ``char``, ``int`` (``signed`` or not) or ``char_array`` (a string).
    ``section`` ``.ksyms``: a kernel symbol, a variable (``func`` False) or a kfunc; typed by
    ``type_id`` in the object's ``btf`` (the variable's type, a kfunc's FUNC_PROTO), or 0 for
    a typeless one, whose address comes from /proc/kallsyms.
    A ``weak`` extern the kernel lacks reads as zero; a missing strong one fails the load.
    """

    name: str
    section: str
    weak: bool = False
    kind: str = ""
    offset: int = 0
    size: int = 0
    signed: bool = False
    func: bool = False
    type_id: int = 0
    btf: object = None


@dataclass
class ProgramSpec:
    """A program to load with ``BPF_PROG_LOAD``.

    ``insns`` is a list of :class:`pybpf.asm.Instruction`, possibly with symbolic references
    (labels, map names) that loading resolves. ``section`` is libbpf's section name
    (``tracepoint/syscalls/sys_enter_execve``) and tells where the program attaches;
    ``attach_target`` is the part after its ``/`` (a kernel function for ``fentry``, a
    tracepoint for ``tp_btf``...). ``flags`` are ``BPF_PROG_LOAD``'s ``prog_flags``
    (``BPF_F_SLEEPABLE``...). ``externs`` are the kernel symbols (``.ksyms``
    :class:`ExternSpec` by name) that instructions refer to by ``ref``: kfunc calls
    (``BPF_PSEUDO_KFUNC_CALL``) and 64-bit loads of a symbol's BTF id or address.
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
    flags: int = 0
    externs: dict[str, ExternSpec] = field(default_factory=dict)

    def copy(self, **changes):
        """A copy of this spec (the instruction list copied too) with ``changes`` applied."""
        changes.setdefault("insns", list(self.insns))
        return replace(self, **changes)


@dataclass
class CollectionSpec:
    """Programs and the maps they use, by name: what one ELF object or one DSL module defines.

    ``externs`` are the object's ``__kconfig`` and ``__ksym`` externs by name
    (:class:`ExternSpec`); ``var_info`` describes its global variables by name
    (:class:`pybpf.variables.Variable`: which data map, where, of what BTF type).
    :attr:`variables` reads and sets their initial values by name before loading::

        spec.variables["targ_uid"] = 1000        # a `const volatile` knob in .rodata
        spec.set_variable("targ_comm", "bash")  # text, as `pybpf load --set NAME=VALUE`
    """

    maps: dict[str, MapSpec] = field(default_factory=dict)
    programs: dict[str, ProgramSpec] = field(default_factory=dict)
    btf: object = None
    externs: dict[str, ExternSpec] = field(default_factory=dict)
    var_info: dict = field(default_factory=dict)

    @property
    def variables(self):
        """Every global variable's initial value, by name, read and set in the data maps'
        ``data`` (type-checked against the variable's BTF type)."""
        from .variables import SpecVariables

        return SpecVariables(self.maps, self.var_info)

    @property
    def rodata(self):
        """The variables of the ``.rodata*`` sections only: the `const volatile` knobs."""
        from .variables import SpecVariables

        return SpecVariables(self.maps, {name: var for name, var in self.var_info.items()
                                         if var.section.startswith(".rodata")})

    def set_variable(self, name, value):
        """Set global variable ``name`` before loading. ``value`` is a Python value of the
        variable's type, or text parsed by that type (``"1000"``, ``"0x10"``, ``"true"``,
        an enumerator's name; a char array takes the text itself): what
        ``pybpf load --set NAME=VALUE`` passes. UsageError when it does not fit."""
        self.variables.set(name, value)
