"""The running kernel's types: ``/sys/kernel/btf/vmlinux`` and the split BTF of its modules.

The kernel describes its own structs, enums and functions in BTF (``CONFIG_DEBUG_INFO_BTF``):
vmlinux in one blob (5.5 MB, about 127,000 types on Linux 6.18), each module with BTF in
``/sys/kernel/btf/<module>``, a *split* blob continuing vmlinux's ids and strings. This is
what CO-RE relocates programs against, and where fentry/fexit/tp_btf/lsm programs and kfunc
calls find the BTF ids of their targets.

:class:`KernelBTF` reads vmlinux once (one walk over its records, no type decoded) and a
module's blob only when a query reaches it; types are decoded when asked for::

    kernel = running_kernel()                    # cached for the process
    kernel.struct("task_struct").member("real_parent").offset      # bytes
    kernel.enum("pid_type").value("PIDTYPE_TGID")
    kernel.func("do_sys_openat2").id                                # attach_btf_id

Reading files is all this module does with the system: the types are plain data, and the
CO-RE engine (:mod:`pybpf.btf.core`) takes a :class:`KernelBTF` as an argument.
"""

from __future__ import annotations

import functools
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

from ..errors import BTFError
from .types import BTF, COMPOSITE, ENUMS, Enumerator, Kind, Member, Type

SYSFS_BTF = "/sys/kernel/btf"


class Field(NamedTuple):
    """A struct or union member as a program reads it: where it is (``bit_offset`` from the
    start of the outer struct, through any anonymous members), how big, of what type."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless a bitfield
    size: int  # bytes of the member's type (a bitfield's: of its underlying int)

    @property
    def offset(self) -> int:
        """The byte offset (of the byte holding a bitfield's first bit)."""
        return self.bit_offset // 8


class Composite:
    """A STRUCT or UNION of some BTF, with member lookup by name (``a.b`` for nested
    members; anonymous structs and unions are looked through, as C does)."""

    def __init__(self, btf: BTF, type_id: int):
        self.btf = btf
        self.type = btf.type(type_id)
        self.id, self.name, self.size = type_id, self.type.name, self.type.size
        self._by_name: Optional[Dict[str, Tuple[Member, int]]] = None

    @property
    def members(self) -> Tuple[Member, ...]:
        """The members as BTF lists them (anonymous ones included, not looked through)."""
        return self.type.members

    def member(self, path: str) -> Field:
        """The member ``path`` (``real_parent``, or ``se.sum_exec_runtime`` through a nested
        struct); BTFError naming the struct and its members when it has none of that name."""
        composite, bit_offset, found = self, 0, None
        for part in path.split("."):
            if found is not None:
                inner = self.btf.skip_qualifiers(found.type_id)
                if self.btf.kind(inner) not in COMPOSITE:
                    raise BTFError(f"{composite.name}.{found.name} is not a struct or union, "
                                   f"so it has no member {part!r} ({path!r})", self.btf.section)
                composite = Composite(self.btf, inner)
            member, offset = composite._lookup(part)
            bit_offset += offset
            size = self.btf.size_of(member.type)
            found = Field(member.name, member.type, bit_offset, member.bitfield_size, size)
        return found

    def _lookup(self, name):
        """(member, bit offset from this struct's start), through anonymous members."""
        if self._by_name is None:
            self._by_name = {}
            self._index(self.type, 0, 0)
        if name not in self._by_name:
            names = ", ".join(sorted(self._by_name)) or "none"
            raise BTFError(f"{self.type.kind.name.lower()} {self.name or '(anon)'} has no member "
                           f"{name!r} (members: {names})", self.btf.section)
        return self._by_name[name]

    def _index(self, t, base, depth):
        for member in t.members:
            if member.name:
                self._by_name.setdefault(member.name, (member, base + member.bit_offset))
                continue
            inner = self.btf.skip_qualifiers(member.type)
            if self.btf.kind(inner) in COMPOSITE and depth < 32:
                self._index(self.btf.type(inner), base + member.bit_offset, depth + 1)

    def __repr__(self):
        return f"<{self.type.kind.name.lower()} {self.name} [{self.id}] {self.size} bytes>"


class Enum:
    """An ENUM or ENUM64: its values by name."""

    def __init__(self, btf: BTF, type_id: int):
        self.btf = btf
        self.type = btf.type(type_id)
        self.id, self.name, self.size = type_id, self.type.name, self.type.size
        self.values = {e.name: e.value for e in self.type.enumerators}

    @property
    def enumerators(self) -> Tuple[Enumerator, ...]:
        return self.type.enumerators

    def value(self, name: str) -> int:
        """The value of enumerator ``name``; BTFError listing the enumerators if absent."""
        if name not in self.values:
            raise BTFError(f"enum {self.name} has no enumerator {name!r} (enumerators: "
                           f"{', '.join(self.values)})", self.btf.section)
        return self.values[name]


class Func:
    """A kernel function: ``id`` is its FUNC's BTF id (what attach_btf_id and kfunc calls
    name), ``module`` the module whose BTF has it (None: vmlinux); ``params`` are
    ``(name, type id)`` and ``return_type`` a type id (0: void)."""

    def __init__(self, btf: BTF, type_id: int, module: Optional[str]):
        self.btf, self.id, self.module = btf, type_id, module
        self.type = btf.type(type_id)
        self.name = self.type.name
        proto = btf.type(self.type.type)
        self.proto_id = proto.id
        self.params = proto.params
        self.return_type = proto.type

    def __repr__(self):
        where = f" in {self.module}" if self.module else ""
        return f"<func {self.name} [{self.id}]{where}>"


class KernelBTF:
    """vmlinux's BTF and, read on first need, its modules'. Queries look in vmlinux first.

    ``modules`` maps module names to their raw split BTF, or to a callable returning it
    (:meth:`load` passes file readers, so a module is read only when a query reaches it).
    """

    def __init__(self, vmlinux: BTF, modules: Optional[Dict[str, object]] = None):
        self.vmlinux = vmlinux
        self._module_sources = dict(modules or {})
        self._modules: Dict[str, BTF] = {}

    @classmethod
    def from_bytes(cls, vmlinux: bytes, modules: Optional[Dict[str, object]] = None,
                   name: str = "vmlinux") -> KernelBTF:
        """A KernelBTF from raw blobs (``modules``: name -> bytes or a callable)."""
        return cls(BTF.parse(vmlinux, section=name, check=False), modules)

    @classmethod
    def load(cls, directory: str = SYSFS_BTF) -> KernelBTF:
        """The running kernel's: ``<directory>/vmlinux`` now, each module file when needed."""
        vmlinux = os.path.join(directory, "vmlinux")
        try:
            with open(vmlinux, "rb") as f:
                data = f.read()
            names = sorted(n for n in os.listdir(directory) if n != "vmlinux")
        except OSError as exc:
            raise BTFError(f"cannot read the kernel's BTF at {vmlinux}: {exc.strerror} (the "
                           "kernel needs CONFIG_DEBUG_INFO_BTF=y)") from None
        modules = {name: functools.partial(_read, os.path.join(directory, name))
                   for name in names}
        return cls.from_bytes(data, modules, name=vmlinux)

    # -- modules --------------------------------------------------------------------------

    @property
    def module_names(self) -> List[str]:
        return sorted(self._module_sources)

    def module(self, name: str) -> BTF:
        """The split BTF of module ``name`` (read and parsed on first use)."""
        btf = self._modules.get(name)
        if btf is None:
            if name not in self._module_sources:
                raise BTFError(f"no BTF for module {name!r} (modules with BTF: "
                               f"{', '.join(self.module_names) or 'none'})")
            source = self._module_sources[name]
            data = source() if callable(source) else source
            btf = BTF.parse(data, section=name, base=self.vmlinux, check=False)
            self._modules[name] = btf
        return btf

    def modules(self) -> Iterator[Tuple[str, BTF]]:
        """Every module's (name, split BTF), reading each on first use."""
        for name in self.module_names:
            yield name, self.module(name)

    # -- queries --------------------------------------------------------------------------

    def find(self, name: str, kinds) -> List[Tuple[Optional[str], BTF, int]]:
        """``(module or None, BTF, id)`` of the types called ``name`` of ``kinds``: vmlinux's
        if it has any, else every module's."""
        found = [(None, self.vmlinux, i) for i in self.vmlinux.find_all(name, kinds)]
        if found:
            return found
        for module, btf in self.modules():
            found.extend((module, btf, i) for i in btf.find_all(name, kinds)
                         if i >= btf.first_id)
        return found

    def _one(self, what, name, kinds):
        found = self.find(name, kinds)
        if not found:
            raise BTFError(f"the kernel's BTF has no {what} {name!r}", self.vmlinux.section)
        return found[0]

    def struct(self, name: str) -> Composite:
        """``struct name``; BTFError if the kernel has none."""
        _, btf, type_id = self._one("struct", name, (Kind.STRUCT,))
        return Composite(btf, type_id)

    def union(self, name: str) -> Composite:
        """``union name``; BTFError if the kernel has none."""
        _, btf, type_id = self._one("union", name, (Kind.UNION,))
        return Composite(btf, type_id)

    def enum(self, name: str) -> Enum:
        """``enum name`` (32- or 64-bit); BTFError if the kernel has none."""
        _, btf, type_id = self._one("enum", name, ENUMS)
        return Enum(btf, type_id)

    def func(self, name: str) -> Func:
        """The kernel function ``name`` (its FUNC type and prototype); BTFError if none."""
        module, btf, type_id = self._one("function", name, (Kind.FUNC,))
        return Func(btf, type_id, module)

    def type(self, type_id: int, module: Optional[str] = None) -> Type:
        """Type ``type_id`` of vmlinux (or of ``module``'s split BTF)."""
        return (self.module(module) if module else self.vmlinux).type(type_id)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BTFError(f"cannot read module BTF {path}: {exc.strerror}") from None


@functools.lru_cache(maxsize=None)
def running_kernel() -> KernelBTF:
    """The running kernel's :class:`KernelBTF`, read once per process."""
    return KernelBTF.load()
