"""BTF, the BPF Type Format: the C types of a BPF object or of the kernel, compact enough for
the kernel to check programs and maps against.

clang ``-g`` puts two sections in a BPF object: ``.BTF`` (the types and their names) and
``.BTF.ext`` (which instruction starts which function, comes from which source line, and
depends on which kernel type's layout). The kernel publishes its own types the same way, in
``/sys/kernel/btf/vmlinux`` and, for each module, ``/sys/kernel/btf/<module>``. Modules:

- :mod:`~pybpf.btf.types`   the type graph (:class:`BTF`): one reader for objects and kernels
- :mod:`~pybpf.btf.ext`     ``.BTF.ext``: func_info, line_info, CO-RE relocation records
- :mod:`~pybpf.btf.core`    CO-RE: relocating field accesses against the running kernel
- :mod:`~pybpf.btf.values`  BTF types as ``construct`` types, to decode map keys and values

The kernel's ``BPF_BTF_LOAD`` needs two fix-ups clang leaves to the loader (as libbpf does): a
``DATASEC`` (the variables of one ELF section) has size 0 and its variables offset 0; the real
values are the ELF section's size and each variable symbol's value
(:meth:`BTF.fixup_datasecs`). Kernels from 6.0 on accept every kind clang emits (ENUM64,
DECL_TAG, TYPE_TAG), so no kind is rewritten.
"""

from .core import CoreKind, CoreRelo
from .ext import BTFExt, CoreReloRecord, FuncInfo, LineInfo
from .types import (
    BTF, BTF_INT_BOOL, BTF_INT_CHAR, BTF_INT_SIGNED, BTF_MAGIC, MAX_RESOLVE_DEPTH, ArrayInfo,
    Enumerator, IntInfo, Kind, Member, Param, Type, VarSecinfo,
)

__all__ = [
    "BTF", "BTF_INT_BOOL", "BTF_INT_CHAR", "BTF_INT_SIGNED", "BTF_MAGIC", "MAX_RESOLVE_DEPTH",
    "ArrayInfo", "BTFExt", "CoreKind", "CoreRelo", "CoreReloRecord", "Enumerator", "FuncInfo",
    "IntInfo", "Kind", "LineInfo", "Member", "Param", "Type", "VarSecinfo",
]
