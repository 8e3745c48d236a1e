"""Functions in a DSL program: subprograms, callbacks, and the BTF the kernel wants for them.

A program may hold several functions: the entry at instruction 0, then subprograms reached by
``call_local`` (bpf-to-bpf calls) or handed to a helper as a callback (``ld_func`` of a label,
for ``bpf_loop``, ``bpf_for_each_map_elem``...). For a callback the kernel wants to know
each function's type: ``func_info``, one record (first slot, BTF id of a ``FUNC``) per
function, referring to BTF loaded with the program. A compiler writes both; for the DSL,
:func:`function_btf` writes them from the functions' names and prototypes::

    b.ld_func(R2, "step")       # the callback ...
    b.call("loop")              # ... of bpf_loop(nr, step, ctx, flags)
    ...
    b.label("step")             # long step(__u64 index, void *ctx)
    ...

    btf, infos = function_btf({"prog": (b.instructions, [("step", CALLBACK)])})
    CollectionSpec(..., btf=btf), ProgramSpec(..., func_info=infos["prog"])

The entry function is global (its type is checked against the program type), every other
function static, as a C compiler makes them for ``static`` helpers and callbacks.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Sequence, Tuple

from pybpf.asm.link import label_slots
from pybpf.btf.writer import BTFWriter
from pybpf.errors import AssemblerError

BTF_FUNC_STATIC, BTF_FUNC_GLOBAL = 0, 1
_FUNC_INFO = struct.Struct("<II")  # struct bpf_func_info: insn_off (slots), type_id

# Prototypes by name: (return type, ((parameter name, type), ...)), types from _INTS or "ptr"
ENTRY = ("int", (("ctx", "ptr"),))  # int prog(void *ctx)
CALLBACK = ("long", (("index", "__u64"), ("ctx", "ptr")))  # long cb(__u64 index, void *ctx)
_INTS = {"int": (4, True), "long": (8, True), "__u64": (8, False), "__u32": (4, False)}


def function_btf(programs: Dict[str, Tuple[Sequence, Sequence[Tuple[str, tuple]]]]):
    """BTF for the functions of several DSL programs, and each program's ``func_info``.

    ``programs`` maps a program name to ``(instructions, [(label, prototype), ...])``: the
    subprograms of that program by label, each with its prototype (:data:`CALLBACK`...);
    the entry (instruction 0) is the program's name with :data:`ENTRY`'s prototype. Returns
    ``(btf bytes, {program name: func_info bytes})``.
    """
    writer = BTFWriter()
    types: Dict[str, int] = {}

    def type_of(name):
        if name not in types:
            if name == "ptr":
                types[name] = writer.add_ptr(0)
            else:
                size, signed = _INTS[name]
                types[name] = writer.add_int(name, size, signed)
        return types[name]

    def func(name, prototype, linkage):
        ret, params = prototype
        proto = writer.add_func_proto(type_of(ret), [(p, type_of(t)) for p, t in params])
        return writer.add_func(name, proto, linkage)

    infos: Dict[str, bytes] = {}
    for program, (insns, subprograms) in programs.items():
        slots = label_slots(insns)
        records: List[Tuple[int, int]] = [(0, func(program, ENTRY, BTF_FUNC_GLOBAL))]
        for label, prototype in subprograms:
            if label not in slots:
                raise AssemblerError(f"program {program!r}: no label {label!r} starts a "
                                     f"function")
            records.append((slots[label], func(label, prototype, BTF_FUNC_STATIC)))
        records.sort()
        infos[program] = b"".join(_FUNC_INFO.pack(slot, type_id) for slot, type_id in records)
    return writer.encode(), infos
