"""CO-RE, compile once -- run everywhere: relocating a program's field accesses against the
types of the kernel it is loaded into.

A program compiled against one kernel's headers reads ``task->real_parent`` at the offset that
kernel had. clang (``-g``, ``__builtin_preserve_access_index``, libbpf's ``BPF_CORE_READ``)
records, for each instruction whose offset, size or constant comes from a type layout, a
*relocation*: the local type (``struct task_struct`` as the program saw it), an *access
string* (``"0:57:2"``: element 0 of a pointer to it, then member 57, then member 2 of that)
and a :class:`CoreKind` (the field's byte offset, its size, whether it exists...). The DSL
records its field references the same way (:mod:`pybpf.asm.core`), so both paths end here.

At load, :func:`relocate` does what libbpf does (``tools/lib/bpf/relo_core.c``):

1. *Candidates*: the kernel types of a compatible kind whose name is the local type's
   *essential* name, the name without a ``___flavour`` suffix (``task_struct___old`` is
   looked for as ``task_struct``, and so are kernel types ``task_struct___2``); vmlinux first,
   module BTF only when vmlinux has none.
2. *Matching*: the access string is replayed on each candidate by member *name* (through
   anonymous structs and unions, checking that member types are compatible) and by array
   index; enumerators by essential name; whole types by structure (``TYPE_MATCHES`` by the
   stricter rules of ``bpf_core_types_match``).
3. *Value*: each matching candidate gives the value for the kernel (byte offset, size,
   existence, signedness, shifts that extract a bitfield, type id, size, enum value). All
   candidates must agree; otherwise the relocation is ambiguous, an error.
4. *Patch*: the instruction is checked to hold the value the compiler computed from the local
   type (not for bitfields, where compilers legitimately differ) and gets the kernel's: an ALU
   immediate, a load/store offset (with the access size changed when the field's size
   changed, for pointers and unsigned integers), or a 64-bit immediate load.

When no candidate matches, existence checks give 0, and any other instruction is *poisoned*:
it becomes a call of the helper id ``0xbad2310`` that no kernel has. A program whose poisoned
instruction is unreachable (guarded by ``bpf_core_field_exists``) loads; otherwise the verifier
names that instruction. Malformed relocations raise :class:`~pybpf.errors.CoreError` naming
the program, the instruction, the local type and the access string.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..asm import opcodes as oc
from ..asm.insn import Instruction
from ..errors import BTFError, CoreError
from .types import BTF, BTF_INT_SIGNED, COMPOSITE, ENUMS, Kind, QUALIFIERS, SIZED

POISON_HELPER = 0xBAD2310  # "bad relo": no kernel has helper 195896080
MAX_SPEC_LEN = 64  # libbpf's BPF_CORE_SPEC_MAX_LEN: accessors in one access string
MAX_DEPTH = 32  # how deep type comparisons go before giving up (libbpf's, too)
SHRT_MAX = 0x7FFF  # the largest load/store offset a relocation may write
_SIZE_FOLLOWS = QUALIFIERS | {Kind.VAR, Kind.DECL_TAG}


class CoreKind(IntEnum):
    """``enum bpf_core_relo_kind``: what a CO-RE relocation asks of the target kernel's types."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12


FIELD_KINDS = frozenset(CoreKind(k) for k in range(0, 6))
TYPE_KINDS = frozenset({CoreKind.TYPE_ID_LOCAL, CoreKind.TYPE_ID_TARGET, CoreKind.TYPE_EXISTS,
                        CoreKind.TYPE_SIZE, CoreKind.TYPE_MATCHES})
ENUMVAL_KINDS = frozenset({CoreKind.ENUMVAL_EXISTS, CoreKind.ENUMVAL_VALUE})
_SHOWN = {CoreKind.FIELD_BYTE_SIZE: "sizeof", CoreKind.FIELD_EXISTS: "exists",
          CoreKind.FIELD_SIGNED: "signed", CoreKind.FIELD_LSHIFT_U64: "lshift_u64",
          CoreKind.FIELD_RSHIFT_U64: "rshift_u64", CoreKind.TYPE_ID_LOCAL: "type_id_local",
          CoreKind.TYPE_ID_TARGET: "type_id_kernel", CoreKind.TYPE_EXISTS: "exists",
          CoreKind.TYPE_SIZE: "sizeof", CoreKind.TYPE_MATCHES: "matches",
          CoreKind.ENUMVAL_EXISTS: "exists"}


@dataclass(frozen=True)
class CoreRelo:
    """A CO-RE relocation as an instruction carries it: ``kind`` of the local type
    ``type_id`` of ``btf`` (the program's own BTF), along the access string ``access``."""

    kind: int
    type_id: int
    access: str
    btf: BTF = field(repr=False, compare=False)

    def describe(self) -> str:
        """The relocation as C-like text: ``task_struct.real_parent`` (an offset),
        ``sizeof(task_struct.comm)``, ``pid_type::PIDTYPE_TGID``, ``exists(task_struct)``;
        raw (``kind 9 of [4] access 0:1``) when the relocation does not parse."""
        try:
            spec = parse_spec(self)
        except CoreError:
            return f"{self._kind_name()} of {self.local_type_name()} access {self.access}"
        shown = _SHOWN.get(spec.kind)
        return f"{shown}({spec.path()})" if shown else spec.path()

    def summary(self) -> str:
        """``CO-RE field_byte_offset of task_struct access 0:57 (task_struct.real_parent)``:
        everything an error message names about the relocation."""
        text = f"CO-RE {self._kind_name()} of {self.local_type_name()} access {self.access!r}"
        try:
            spec = parse_spec(self)
        except CoreError:
            return text
        return f"{text} ({spec.path()})"

    def local_type_name(self) -> str:
        """The local type's name (``[id]`` when it has none or the id is out of range)."""
        if 0 < self.type_id < len(self.btf):
            try:
                return self.btf.name(self.type_id) or f"[{self.type_id}]"
            except BTFError:
                pass
        return f"[{self.type_id}]"

    def _kind_name(self):
        return CoreKind(self.kind).name.lower() if self.kind in set(CoreKind) \
            else f"kind {self.kind}"


class Accessor(NamedTuple):
    """One semantic step of an access: member ``index`` (named ``name``) of the struct or
    union ``type_id``, or (``name`` None) element ``index`` of an array of ``type_id``."""

    type_id: int
    index: int
    name: Optional[str]


@dataclass
class Spec:
    """An access string replayed on one BTF: libbpf's ``bpf_core_spec``. ``accessors`` holds
    the named members and array indexes, ``raw`` every index of the string (anonymous
    members included), ``bit_offset`` where the field starts."""

    btf: BTF
    root_id: int
    kind: CoreKind
    accessors: List[Accessor] = field(default_factory=list)
    raw: List[int] = field(default_factory=list)
    bit_offset: int = 0

    def path(self) -> str:
        """``task_struct.real_parent``, ``task_struct.comm[2]``, ``pid_type::PIDTYPE_TGID``."""
        name = self.btf.name(self.root_id) or f"[{self.root_id}]"
        if self.kind in ENUMVAL_KINDS:
            return f"{name}::{self.accessors[0].name}"
        if self.kind in TYPE_KINDS:
            return name
        text = name
        for i, accessor in enumerate(self.accessors):
            if accessor.name:
                text += f".{accessor.name}"
            elif i > 0 or accessor.index > 0:
                text += f"[{accessor.index}]"
        return text


class Result(NamedTuple):
    """What a relocation becomes (libbpf's ``bpf_core_relo_res``): the value the instruction
    should hold now (``orig``, checked when ``validate``) and the kernel's (``new``), or
    ``poison``; the field sizes and types decide whether a load's size may change."""

    orig: int
    new: int
    poison: bool
    validate: bool
    orig_size: int = 0
    new_size: int = 0
    fail_size_change: bool = False


class _Failure(Exception):
    """A relocation that cannot be computed; :func:`relocate` names the instruction."""


# -- the program -----------------------------------------------------------------------------

def relocate(insns: List[Instruction], target, program: str = "") -> List[Instruction]:
    """Copies of ``insns`` with every CO-RE relocation (``insn.core``) applied against
    ``target`` (a :class:`~pybpf.btf.kernel.KernelBTF`: vmlinux and module BTF). A poisoned
    64-bit load becomes two poisoned calls (the slots, hence jump offsets, stay the same).
    """
    out: List[Instruction] = []
    candidates: Dict[Tuple[int, int], list] = {}
    for index, insn in enumerate(insns):
        relo = insn.core
        if relo is None:
            out.append(insn)
            continue
        try:
            result = _resolve(relo, target, candidates)
            out.extend(patch(insn, relo, result))
        except (_Failure, BTFError) as exc:
            raise CoreError(f"{relo.summary()}: {exc}", program, index,
                            relo.local_type_name(), relo.access) from None
    return out


def resolve(relo: CoreRelo, target) -> Result:
    """The :class:`Result` of one relocation against ``target``'s types; CoreError when it
    cannot be computed (see :func:`relocate` for the error naming the instruction)."""
    try:
        return _resolve(relo, target, {})
    except (_Failure, BTFError) as exc:
        raise CoreError(f"{relo.summary()}: {exc}", local_type=relo.local_type_name(),
                        access=relo.access) from None


def _resolve(relo, target, candidates):
    """:func:`resolve`; ``candidates`` caches candidate types by local type, pruned to the
    matching ones after each relocation, as libbpf does."""
    local = _parse_spec(relo)
    if local.kind == CoreKind.TYPE_ID_LOCAL:
        return Result(local.root_id, local.root_id, False, False)
    local_type = relo.btf.type(relo.type_id)
    if not local_type.name:
        raise _Failure("anonymous local types cannot be relocated (they have no name to find "
                       "in the kernel)")
    key = (id(relo.btf), relo.type_id)
    if key not in candidates:
        candidates[key] = find_candidates(local_type, target)
    cands = candidates[key]
    chosen: Optional[Tuple[Spec, Result]] = None
    matched = []
    for btf, type_id in cands:
        spec = match_spec(local, btf, type_id)
        if spec is None:
            continue
        result = _calc(local, spec)
        if chosen is None:
            chosen = (spec, result)
        elif spec.bit_offset != chosen[0].bit_offset:
            raise _Failure(f"ambiguous: kernel types [{chosen[0].root_id}] and "
                           f"[{spec.root_id}] both match, at different offsets "
                           f"({chosen[0].bit_offset} and {spec.bit_offset} bits)")
        elif (result.poison, result.new) != (chosen[1].poison, chosen[1].new):
            raise _Failure(f"ambiguous: kernel types [{chosen[0].root_id}] and "
                           f"[{spec.root_id}] both match, with different values "
                           f"({chosen[1].new} and {result.new})")
        matched.append((btf, type_id))
    if matched:
        cands[:] = matched  # later relocations of this type look at these only
        return chosen[1]
    return _calc(local, None)


def local_value(relo: CoreRelo) -> int:
    """What the instruction holds before relocation: the value the local types give (what a
    compiler writes; the DSL writes it too, so that both pass the same check)."""
    try:
        local = _parse_spec(relo)
        if local.kind in FIELD_KINDS:
            return _field_value(local).value
        if local.kind in TYPE_KINDS:
            return _type_value(local)
        return _enum_value(local)
    except (_Failure, BTFError) as exc:
        raise CoreError(f"{relo.summary()}: {exc}", local_type=relo.local_type_name(),
                        access=relo.access) from None


# -- local spec ------------------------------------------------------------------------------

def parse_spec(relo: CoreRelo) -> Spec:
    """The access string replayed on the local type (libbpf's ``bpf_core_parse_spec``);
    CoreError when the kind, the type or the access string is invalid."""
    try:
        return _parse_spec(relo)
    except (_Failure, BTFError) as exc:
        raise CoreError(f"CO-RE {relo._kind_name()} of {relo.local_type_name()} access "
                        f"{relo.access!r}: {exc}", local_type=relo.local_type_name(),
                        access=relo.access) from None


def _parse_spec(relo):
    btf = relo.btf
    if relo.kind not in set(CoreKind):
        raise _Failure(f"unknown relocation kind {relo.kind}")
    kind = CoreKind(relo.kind)
    if not 0 < relo.type_id < len(btf):
        raise _Failure(f"local type [{relo.type_id}] is not in the program's BTF "
                       f"({len(btf) - 1} types)")
    raw = _access_indexes(relo.access)
    spec = Spec(btf, relo.type_id, kind, raw=raw)
    if kind in TYPE_KINDS:
        if relo.access != "0":
            raise _Failure(f"a {kind.name} relocation has access string \"0\", not "
                           f"{relo.access!r}")
        return spec
    type_id = _skip(btf, relo.type_id)
    t = btf.type(type_id)
    if kind in ENUMVAL_KINDS:
        if t.kind not in ENUMS or len(raw) > 1 or raw[0] >= t.vlen:
            raise _Failure(f"needs one enumerator index of an enum; {t.kind.name} "
                           f"{t.name or '(anon)'} has {t.vlen} (access {relo.access!r})")
        spec.accessors.append(Accessor(type_id, raw[0], t.enumerators[raw[0]].name))
        return spec
    spec.accessors.append(Accessor(type_id, raw[0], None))
    spec.bit_offset = raw[0] * _resolve_size(btf, type_id) * 8
    for position, index in enumerate(raw[1:], 1):
        type_id = _skip(btf, type_id)
        t = btf.type(type_id)
        if t.kind in COMPOSITE:
            if index >= t.vlen:
                raise _Failure(f"member index {index} (position {position}) is out of range: "
                               f"{t.name or '(anon)'} has {t.vlen} members")
            member = t.members[index]
            spec.bit_offset += member.bit_offset
            if member.name:
                spec.accessors.append(Accessor(type_id, index, member.name))
            type_id = member.type
        elif t.kind == Kind.ARRAY:
            elem = _skip(btf, t.array.type)
            if not _is_flex(btf, spec.accessors[-1], t) and index >= t.array.nelems:
                raise _Failure(f"array index {index} (position {position}) is out of range: "
                               f"the array has {t.array.nelems} elements")
            spec.accessors.append(Accessor(elem, index, None))
            spec.bit_offset += index * _resolve_size(btf, elem) * 8
            type_id = elem
        else:
            raise _Failure(f"index {index} (position {position}) goes into {t.kind.name} "
                           f"[{type_id}], which is neither a struct, a union nor an array")
    return spec


def _access_indexes(access):
    """``"0:1:2"`` as [0, 1, 2]; _Failure unless it is non-empty decimal indexes."""
    parts = access.split(":")
    if not access or not all(p.isdigit() and p.isascii() for p in parts):
        raise _Failure(f"access string {access!r} is not a list of indexes like \"0:1:2\"")
    if len(parts) > MAX_SPEC_LEN:
        raise _Failure(f"access string has {len(parts)} indexes, more than {MAX_SPEC_LEN}")
    return [int(p) for p in parts]


def _is_flex(btf, accessor, array):
    """A flexible array: ``T x[]`` as the last member of a struct (libbpf's ``is_flex_arr``)."""
    if accessor.name is None or array.array.nelems > 0:
        return False
    return accessor.index == btf.type(accessor.type_id).vlen - 1


# -- candidates ------------------------------------------------------------------------------

def essential_name(name: str) -> str:
    """``task_struct___old`` -> ``task_struct``: the name before the last ``___`` flavour
    separator (``X___Y`` with X and Y not underscores), or the whole name."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


def _kinds_compatible(a: Kind, b: Kind) -> bool:
    return a == b or (a in ENUMS and b in ENUMS)


def find_candidates(local_type, target) -> List[Tuple[BTF, int]]:
    """The kernel types a local type may be: a compatible kind and the same essential name;
    vmlinux's, or when vmlinux has none, every module's (libbpf's ``bpf_core_find_cands``)."""
    essential = essential_name(local_type.name)
    found = _candidates_in(target.vmlinux, essential, local_type.kind)
    if not found:
        for _, btf in target.modules():
            found.extend(_candidates_in(btf, essential, local_type.kind, btf.first_id))
    return found


def _candidates_in(btf, essential, kind, first_id=1):
    """Types of ``btf`` (ids from ``first_id``) named ``essential`` or a flavour of it."""
    names = [essential] + [btf.string(o) for o in btf.strings_containing(b"___")]
    found = set()
    for name in names:
        if name == essential or essential_name(name) == essential:
            found.update((btf, type_id) for type_id in btf.find_all(name)
                         if type_id >= first_id
                         and _kinds_compatible(btf.kind(type_id), kind))
    return sorted(found, key=lambda c: c[1])


# -- matching --------------------------------------------------------------------------------

def match_spec(local: Spec, btf: BTF, type_id: int) -> Optional[Spec]:
    """The local access replayed on kernel type ``type_id`` of ``btf``, or None when it does
    not fit (libbpf's ``bpf_core_spec_match``)."""
    target = Spec(btf, type_id, local.kind)
    if local.kind in TYPE_KINDS:
        if local.kind == CoreKind.TYPE_MATCHES:
            ok = types_match(local.btf, local.root_id, btf, type_id)
        else:
            ok = types_are_compatible(local.btf, local.root_id, btf, type_id)
        return target if ok else None
    accessor = local.accessors[0]
    if local.kind in ENUMVAL_KINDS:
        type_id = _skip(btf, type_id)
        t = btf.type(type_id)
        if t.kind not in ENUMS:
            return None
        wanted = essential_name(accessor.name)
        for index, enumerator in enumerate(t.enumerators):
            if essential_name(enumerator.name) == wanted:
                target.accessors.append(Accessor(type_id, index, enumerator.name))
                target.raw.append(index)
                return target
        return None
    for position, accessor in enumerate(local.accessors):
        type_id = _skip(btf, type_id)
        t = btf.type(type_id)
        if accessor.name:
            type_id = _match_member(local.btf, accessor, btf, type_id, target)
            if type_id is None:
                return None
            continue
        if position > 0:
            if t.kind != Kind.ARRAY:
                return None
            if not _is_flex(btf, target.accessors[-1], t) and accessor.index >= t.array.nelems:
                return None
            type_id = _skip(btf, t.array.type)
        if len(target.raw) == MAX_SPEC_LEN:
            raise _Failure(f"the kernel's type nests deeper than {MAX_SPEC_LEN} accessors")
        target.accessors.append(Accessor(type_id, accessor.index, None))
        target.raw.append(accessor.index)
        target.bit_offset += accessor.index * _resolve_size(btf, type_id) * 8
    return target


def _match_member(local_btf, accessor, btf, type_id, target):
    """Find the member named like the local accessor's in ``type_id``, looking into
    anonymous members; record it in ``target``; the member's type id, or None."""
    t = btf.type(_skip(btf, type_id))
    if t.kind not in COMPOSITE:
        return None
    local_member = local_btf.type(accessor.type_id).members[accessor.index]
    for index, member in enumerate(t.members):
        if len(target.raw) == MAX_SPEC_LEN:
            raise _Failure(f"the kernel's type nests deeper than {MAX_SPEC_LEN} accessors")
        target.bit_offset += member.bit_offset
        target.raw.append(index)
        if not member.name:
            found = _match_member(local_btf, accessor, btf, member.type, target)
            if found is not None:
                return found
        elif member.name == local_member.name:
            if not fields_are_compatible(local_btf, local_member.type, btf, member.type):
                target.bit_offset -= member.bit_offset
                target.raw.pop()
                return None
            target.accessors.append(Accessor(t.id, index, member.name))
            return member.type
        target.bit_offset -= member.bit_offset
        target.raw.pop()
    return None


def fields_are_compatible(local_btf, local_id, btf, type_id) -> bool:
    """May a local field of type ``local_id`` be read as a kernel field of type ``type_id``?
    Structs and unions: any; pointers, floats: any; ints: not old-style bit ints; enums and
    forward declarations: same essential name or anonymous; arrays: compatible elements."""
    for _ in range(MAX_DEPTH):
        lt = local_btf.type(_skip(local_btf, local_id))
        tt = btf.type(_skip(btf, type_id))
        if lt.kind in COMPOSITE and tt.kind in COMPOSITE:
            return True
        if not _kinds_compatible(lt.kind, tt.kind):
            return False
        if lt.kind in (Kind.PTR, Kind.FLOAT):
            return True
        if lt.kind in ENUMS or lt.kind == Kind.FWD:
            a, b = essential_name(lt.name), essential_name(tt.name)
            return not a or not b or a == b
        if lt.kind == Kind.INT:
            return lt.int.offset == 0 and tt.int.offset == 0
        if lt.kind != Kind.ARRAY:
            return False
        local_id, type_id = lt.array.type, tt.array.type
    raise _Failure(f"array types nest deeper than {MAX_DEPTH}")


def types_are_compatible(local_btf, local_id, btf, type_id, level=MAX_DEPTH) -> bool:
    """libbpf's ``bpf_core_types_are_compat`` (TYPE_EXISTS, TYPE_SIZE, TYPE_ID_TARGET):
    same kinds through pointers, arrays and function prototypes; names ignored below the
    root; ints of any size and sign, but not old-style bit ints."""
    if not _kinds_compatible(local_btf.kind(local_id), btf.kind(type_id)):
        return False
    for _ in range(MAX_DEPTH):
        lt = local_btf.type(_skip(local_btf, local_id))
        tt = btf.type(_skip(btf, type_id))
        if not _kinds_compatible(lt.kind, tt.kind):
            return False
        if lt.kind in (Kind.UNKN, Kind.STRUCT, Kind.UNION, Kind.FWD) or lt.kind in ENUMS:
            return True
        if lt.kind == Kind.INT:
            return lt.int.offset == 0 and tt.int.offset == 0
        if lt.kind == Kind.PTR:
            local_id, type_id = lt.type, tt.type
        elif lt.kind == Kind.ARRAY:
            local_id, type_id = lt.array.type, tt.array.type
        elif lt.kind == Kind.FUNC_PROTO:
            if lt.vlen != tt.vlen:
                return False
            for lp, tp in zip(lt.params, tt.params):
                if level <= 0:
                    raise _Failure(f"function prototypes nest deeper than {MAX_DEPTH}")
                if not types_are_compatible(local_btf, _skip(local_btf, lp.type), btf,
                                            _skip(btf, tp.type), level - 1):
                    return False
            local_id, type_id = lt.type, tt.type
        else:
            return False
    raise _Failure(f"types nest deeper than {MAX_DEPTH}")


def compatible(local_btf, local_id, btf, type_id) -> bool:
    """:func:`types_are_compatible`, False (instead of an error) for types that nest too
    deeply or are malformed: how a ``__ksym`` extern's type is checked against the kernel's
    variable or kfunc, as libbpf checks it."""
    try:
        return types_are_compatible(local_btf, local_id, btf, type_id)
    except (_Failure, BTFError):
        return False


def types_match(local_btf, local_id, btf, type_id, behind_ptr=False, level=MAX_DEPTH) -> bool:
    """libbpf's ``bpf_core_types_match`` (TYPE_MATCHES): same names (flavours aside) and
    kinds; every local member has a member of the same name and matching type in the
    kernel's; every local enumerator a kernel one of the same name; ints of the same size
    and sign; arrays of the same length; prototypes alike. Behind a pointer, a struct also
    matches a forward declaration of it and members are not compared."""
    if level <= 0:
        raise _Failure(f"types nest deeper than {MAX_DEPTH}")
    for _ in range(MAX_DEPTH):
        lt = local_btf.type(_skip(local_btf, local_id))
        tt = btf.type(_skip(btf, type_id))
        if not _names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == Kind.UNKN:
            return tk == Kind.UNKN
        if lk == Kind.FWD:
            if behind_ptr and tk != Kind.FWD:
                return (tk == Kind.STRUCT and not lt.kind_flag) or (
                    tk == Kind.UNION and bool(lt.kind_flag))
            return tk == Kind.FWD and lt.kind_flag == tt.kind_flag
        if lk in ENUMS:
            return tk in ENUMS and _enums_match(lt, tt)
        if lk in COMPOSITE:
            if behind_ptr:
                return lk == tk or (tk == Kind.FWD and (lk == Kind.UNION) == bool(tt.kind_flag))
            return lk == tk and _composites_match(local_btf, lt, btf, tt, level)
        if lk == Kind.INT:
            return (tk == Kind.INT and lt.size == tt.size
                    and lt.int.encoding & BTF_INT_SIGNED == tt.int.encoding & BTF_INT_SIGNED)
        if lk == Kind.PTR:
            if tk != Kind.PTR:
                return False
            behind_ptr = True
            local_id, type_id = lt.type, tt.type
        elif lk == Kind.ARRAY:
            if tk != Kind.ARRAY or lt.array.nelems != tt.array.nelems:
                return False
            local_id, type_id = lt.array.type, tt.array.type
        elif lk == Kind.FUNC_PROTO:
            if tk != Kind.FUNC_PROTO or lt.vlen != tt.vlen:
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not types_match(local_btf, lp.type, btf, tp.type, behind_ptr, level - 1):
                    return False
            local_id, type_id = lt.type, tt.type
        else:
            return False
    raise _Failure(f"types nest deeper than {MAX_DEPTH}")


def _names_match(local, target):
    if not target:
        return not local
    return essential_name(local) == essential_name(target)


def _enums_match(lt, tt):
    if lt.size != tt.size or lt.vlen > tt.vlen:
        return False
    names = [e.name for e in tt.enumerators]
    return all(any(_names_match(e.name, n) for n in names) for e in lt.enumerators)


def _composites_match(local_btf, lt, btf, tt, level):
    if lt.vlen > tt.vlen:
        return False
    for lm in lt.members:
        if not any(_names_match(lm.name, tm.name)
                   and types_match(local_btf, lm.type, btf, tm.type, False, level - 1)
                   for tm in tt.members):
            return False
    return True


# -- values ----------------------------------------------------------------------------------

class _Field(NamedTuple):
    value: int
    size: int  # the field's element size, for a load whose size may change (offsets only)
    type_id: int
    validate: bool


def _calc(local: Spec, target: Optional[Spec]) -> Result:
    """The relocation's result from the local spec and the matching kernel spec (None: no
    candidate matched; libbpf's ``bpf_core_calc_relo``)."""
    kind = local.kind
    if kind in FIELD_KINDS:
        orig = _field_value(local)
        if target is None and kind != CoreKind.FIELD_EXISTS:
            return Result(orig.value, 0, True, orig.validate)
        new = _field_value(target) if target is not None else _Field(0, 0, 0, True)
        fail = False
        if orig.size != new.size:
            ot, nt = local.btf.type(orig.type_id), target.btf.type(new.type_id)
            fail = not (ot.kind == nt.kind == Kind.PTR or (
                ot.kind == nt.kind == Kind.INT and ot.int.encoding != BTF_INT_SIGNED
                and nt.int.encoding != BTF_INT_SIGNED))
        return Result(orig.value, new.value, False, orig.validate, orig.size, new.size, fail)
    if kind in TYPE_KINDS:
        orig = _type_value(local)
        new = _type_value(target) if target is not None else 0
        return Result(orig, new, False, kind != CoreKind.TYPE_ID_TARGET)
    orig = _enum_value(local)
    if target is None:
        if kind == CoreKind.ENUMVAL_VALUE:
            return Result(orig, 0, True, True)
        return Result(orig, 0, False, True)
    return Result(orig, _enum_value(target), False, True)


def _field_value(spec: Spec) -> _Field:
    kind, btf = spec.kind, spec.btf
    if kind == CoreKind.FIELD_EXISTS:
        return _Field(1, 0, 0, True)
    last = spec.accessors[-1]
    if last.name is None:  # an array element (or the root itself)
        if kind == CoreKind.FIELD_BYTE_OFFSET:
            return _Field(spec.bit_offset // 8, _element_size(btf, last.type_id), last.type_id,
                          True)
        if kind == CoreKind.FIELD_BYTE_SIZE:
            return _Field(_resolve_size(btf, last.type_id), 0, 0, True)
        raise _Failure(f"{kind.name} cannot be applied to an array element")
    member = btf.type(last.type_id).members[last.index]
    field_id = _skip(btf, member.type)
    mt = btf.type(field_id)
    bit_off, bit_size = spec.bit_offset, member.bitfield_size
    bitfield = bit_size > 0
    if bitfield:
        byte_size = mt.size
        if byte_size <= 0:
            raise _Failure(f"bitfield {member.name} has a type of size {byte_size}")
        byte_off = bit_off // 8 // byte_size * byte_size
        while bit_off + bit_size - byte_off * 8 > byte_size * 8:
            if byte_size >= 8:
                raise _Failure(f"bitfield {member.name} cannot be read with one 64-bit load")
            byte_size *= 2
            byte_off = bit_off // 8 // byte_size * byte_size
    else:
        byte_size = _resolve_size(btf, field_id)
        byte_off = bit_off // 8
        bit_size = byte_size * 8
    if kind == CoreKind.FIELD_BYTE_OFFSET:
        if bitfield:
            return _Field(byte_off, 0, 0, False)
        return _Field(byte_off, _element_size(btf, field_id), field_id, True)
    if kind == CoreKind.FIELD_BYTE_SIZE:
        return _Field(byte_size, 0, 0, not bitfield)
    if kind == CoreKind.FIELD_SIGNED:
        signed = (mt.kind in ENUMS and bool(mt.kind_flag)) or (
            mt.kind == Kind.INT and bool(mt.int.encoding & BTF_INT_SIGNED))
        return _Field(int(signed), 0, 0, True)
    if kind == CoreKind.FIELD_LSHIFT_U64:
        return _Field(64 - (bit_off + bit_size - byte_off * 8), 0, 0, not bitfield)
    return _Field(64 - bit_size, 0, 0, True)  # FIELD_RSHIFT_U64


def _element_size(btf, type_id):
    """The size of a type, or of its innermost element for an array: what one load reads."""
    t = btf.type(_skip(btf, type_id))
    for _ in range(MAX_DEPTH):
        if t.kind != Kind.ARRAY:
            return _resolve_size(btf, t.id)
        t = btf.type(_skip(btf, t.array.type))
    raise _Failure(f"arrays nest deeper than {MAX_DEPTH}")


def _type_value(spec: Spec) -> int:
    if spec.kind == CoreKind.TYPE_ID_TARGET:
        return spec.root_id
    if spec.kind == CoreKind.TYPE_SIZE:
        return _resolve_size(spec.btf, spec.root_id)
    return 1  # TYPE_EXISTS, TYPE_MATCHES: it matched


def _enum_value(spec: Spec) -> int:
    if spec.kind == CoreKind.ENUMVAL_EXISTS:
        return 1
    accessor = spec.accessors[0]
    t = spec.btf.type(accessor.type_id)
    value = t.enumerators[accessor.index].value
    if t.kind == Kind.ENUM:  # btf_enum.val is an s32, widened to 64 bits with its sign
        value &= 0xFFFFFFFF
        if value >> 31:
            value -= 1 << 32
    return value & 0xFFFFFFFFFFFFFFFF


def _skip(btf, type_id):
    """The type id behind typedefs and qualifiers (a chain too long is a BTFError)."""
    return btf.skip_qualifiers(type_id)


def _resolve_size(btf, type_id):
    """libbpf's ``btf__resolve_size``: the bytes of a type with a size (through typedefs,
    qualifiers, variables, arrays); _Failure for void, functions, forward declarations."""
    nelems, first = 1, type_id
    for _ in range(MAX_DEPTH):
        t = btf.type(type_id)
        if t.kind in SIZED or t.kind == Kind.PTR:
            size = t.size if t.kind in SIZED else 8
            if nelems * size > 0xFFFFFFFF:
                break
            return nelems * size
        if t.kind in _SIZE_FOLLOWS:
            type_id = t.type
        elif t.kind == Kind.ARRAY:
            nelems *= t.array.nelems
            type_id = t.array.type
        else:
            break
    name = btf.name(first)
    raise _Failure(f"type [{first}]{' ' + name if name else ''} has no size")


# -- patching --------------------------------------------------------------------------------

_SIZES = {bits: size for size, bits in oc.SIZE_BITS.items()}  # size bits -> bytes


def patch(insn: Instruction, relo: CoreRelo, result: Result) -> List[Instruction]:
    """The instruction(s) ``insn`` becomes (libbpf's ``bpf_core_patch_insn``): its immediate,
    offset or 64-bit immediate set to the kernel's value, or poisoned."""
    if result.poison:
        return poison(insn)
    cls = insn.opcode & 0x07
    new = result.new
    if cls in (oc.ALU, oc.ALU64):
        if insn.opcode & oc.X:
            raise _Failure(f"instruction {insn.opcode:#04x} takes a register, not an "
                           "immediate to relocate")
        _check_orig(result, insn.imm, "immediate")
        new32 = new & 0xFFFFFFFF
        return [replace(insn, imm=new32 - (1 << 32) if new32 >> 31 else new32)]
    if cls in (oc.LDX, oc.ST, oc.STX):
        _check_orig(result, insn.off, "offset")
        if new > SHRT_MAX:
            raise _Failure(f"offset {new} does not fit a load/store's 16-bit offset")
        if result.fail_size_change:
            return poison(insn)
        opcode = insn.opcode
        if result.new_size != result.orig_size:
            size = _SIZES.get(opcode & 0x18)
            if size != result.orig_size:
                raise _Failure(f"the instruction accesses {size} bytes, the local field has "
                               f"{result.orig_size}")
            if result.new_size not in oc.SIZE_BITS:
                raise _Failure(f"the kernel's field has {result.new_size} bytes, which no "
                               "single load reads")
            opcode = (opcode & ~0x18) | oc.SIZE_BITS[result.new_size]
        return [replace(insn, opcode=opcode, off=new)]
    if insn.opcode == oc.LD_IMM64 and insn.src == 0 and insn.off == 0:
        _check_orig(result, insn.imm, "64-bit immediate")
        return [replace(insn, imm=new)]
    raise _Failure(f"instruction opcode {insn.opcode:#04x} (src {insn.src}, off {insn.off}) "
                   "cannot carry a CO-RE relocation")



def _check_orig(result, value, what):
    """The instruction must hold what the compiler computed from the local type."""
    if result.validate and value & 0xFFFFFFFFFFFFFFFF != result.orig:
        raise _Failure(f"the instruction's {what} is {value}, but the local type gives "
                       f"{result.orig}: the relocation does not describe this instruction")


def poison(insn: Instruction) -> List[Instruction]:
    """``call 0xbad2310`` in place of ``insn`` (both slots of a 64-bit load): the program
    still loads, and the verifier rejects it only if this instruction can run."""
    first = Instruction(oc.JMP | oc.CALL, imm=POISON_HELPER, labels=insn.labels,
                        comment=insn.comment, core=insn.core)
    if insn.slots == 2:
        return [first, Instruction(oc.JMP | oc.CALL, imm=POISON_HELPER)]
    return [first]
