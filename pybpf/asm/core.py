"""CO-RE in the DSL: kernel struct fields by name, resolved against the kernel a program is
loaded into, with no compiler and no kernel headers.

Declare the types a program reads as a C program would (a ``vmlinux.h`` excerpt: only the
fields you use, in any order, with any flavour suffix), then use their fields as operands::

    from pybpf.asm import DW, R0, R1, R2, R3, R6, R7, Builder, core

    types = core.Types('''
        struct task_struct {
            int tgid;
            struct task_struct *real_parent;
            struct mm_struct *mm;
            char comm[16];
        };
        struct mm_struct { unsigned long arg_start, arg_end; };
        enum pid_type { PIDTYPE_PID, PIDTYPE_TGID };
    ''')
    task = types.struct("task_struct")

    b = Builder()
    b.call("get_current_task")
    b.mov(R6, R0)
    b.ldx(DW, R1, R6, task.offsetof("real_parent"))  # a load at the kernel's offset
    b.mov(R2, task.sizeof("comm"))                     # the kernel's size of a field
    b.mov(R3, types.enum("pid_type").value("PIDTYPE_TGID"))
    b.core_read(R7, R6, task, "real_parent->tgid", stack=-8)   # bpf_probe_read_kernel chain
    b.core_load(R7, R6, task, "real_parent->tgid")             # direct loads (BTF pointers)

Each operand is a :class:`CoreOperand`: the value the *local* declaration gives (what the
instruction holds in a listing before loading) and a CO-RE relocation, recorded on the
instruction exactly as clang records one in ``.BTF.ext`` (the local type, an access string
such as ``"0:1"``, a :class:`~pybpf.btf.core.CoreKind`). Loading relocates it with the same
engine as clang objects (:mod:`pybpf.btf.core`): the field is found by *name* in the running
kernel's BTF, so the declared offsets, order and sizes do not matter; a field or enumerator
the kernel lacks makes its instruction invalid (``exists()`` checks guard such code). The
disassembly shows each relocation (``r1 = *(u64 *)(r6 + 8)  ; CO-RE task_struct.real_parent``).

Where a CO-RE operand may go: the offset of ``ldx``/``ldxsx``/``st``/``stx``, the immediate
of an ALU instruction (``mov``, ``add``...) and the value of ``lddw``.

Operands, on ``types.struct(name)`` (or ``types.union(name)``) and a member path
(``"comm"``, ``"se.sum_exec_runtime"``, ``"comm[2]"``; anonymous structs and unions are
looked through):

- ``offsetof(path)`` byte offset, ``sizeof(path)`` byte size (``sizeof()``: the type's),
  ``exists(path)`` 1 or 0 (``exists()``: the type), ``signed(path)`` 1 or 0,
  ``lshift(path)``/``rshift(path)`` the shifts that extract a bitfield from a 64-bit load,
  ``type_id()`` the kernel's BTF id, ``matches()`` 1 if the kernel's type has every declared
  member with a matching type;
- on ``types.enum(name)``: ``value(enumerator)``, ``exists(enumerator)``.

Declarations: ``struct``/``union``/``enum`` definitions and ``typedef``; members with
pointers, arrays (``[N]``, several dimensions), bitfields (``: N``), nested and anonymous
``struct``/``union``; C integer types and the kernel's fixed-width names (``u32``, ``__u64``,
``pid_t``...); ``const``/``volatile``; ``__attribute__((...))`` is ignored. Layout follows
the C ABI (natural alignment), as a compiler would lay the declaration out.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from pybpf.asm.builder import CoreOperand
from pybpf.asm.operands import int_like
from pybpf.btf.core import CoreKind, CoreRelo, local_value
from pybpf.btf.types import BTF, Kind
from pybpf.btf.writer import BTFWriter
from pybpf.errors import AssemblerError


def _int_spellings():
    """C integer type words (sorted, as a tuple) -> (clang's name, size, signed)."""
    table = {("_Bool",): ("_Bool", 1, False), ("bool",): ("_Bool", 1, False),
             ("char",): ("char", 1, True), ("char", "signed"): ("signed char", 1, True),
             ("char", "unsigned"): ("unsigned char", 1, False)}
    for name, size, words in (("short", 2, ["short"]), ("int", 4, []),
                              ("long", 8, ["long"]), ("long long", 8, ["long", "long"])):
        for sign, signed in (("", True), ("signed", True), ("unsigned", False)):
            for with_int in (False, True):
                key = words + [sign] * bool(sign) + ["int"] * with_int
                if key:
                    table[tuple(sorted(key))] = (name if signed else f"unsigned {name}",
                                                 size, signed)
    return table


_INTS = _int_spellings()
_INT_WORDS = {"char", "short", "int", "long", "signed", "unsigned", "_Bool", "bool"}
_TYPEDEFS = {  # the kernel's fixed-width and common names -> (size, signed)
    **{f"{prefix}{sign}{bits}": (bits // 8, sign == "s") for prefix in ("", "__")
       for sign in ("u", "s") for bits in (8, 16, 32, 64)},
    **{f"__{order}{bits}": (bits // 8, False) for order in ("le", "be") for bits in (16, 32, 64)},
    "pid_t": (4, True), "uid_t": (4, False), "gid_t": (4, False), "dev_t": (4, False),
    "umode_t": (2, False), "size_t": (8, False), "ssize_t": (8, True), "loff_t": (8, True),
}
_TOKEN = re.compile(r"\s+|/\*.*?\*/|//[^\n]*|(?P<tok>0[xX][0-9a-fA-F]+|\d+|[A-Za-z_]\w*|"
                    r"[{};,*\[\]:=()\-])", re.S)


class Types:
    """Local type declarations (C text) for CO-RE field references; ``btf`` is the BTF
    they become, the local BTF of the relocations."""

    def __init__(self, declarations: str):
        parser = _Parser(declarations)
        parser.parse()
        self._ids = parser.ids
        self.btf: BTF = parser.writer.btf(".BTF (DSL types)")

    def struct(self, name: str) -> LocalStruct:
        """The declared ``struct name`` (a union also answers to its name here)."""
        for kind in ("struct", "union"):
            if (kind, name) in self._ids:
                return LocalStruct(self, self._ids[(kind, name)])
        raise AssemblerError(f"no struct or union {name!r} is declared (declared: "
                             f"{', '.join(sorted(n for k, n in self._ids if k != 'enum'))})")

    def union(self, name: str) -> LocalStruct:
        """The declared ``union name``."""
        if ("union", name) not in self._ids:
            raise AssemblerError(f"no union {name!r} is declared")
        return LocalStruct(self, self._ids[("union", name)])

    def enum(self, name: str) -> LocalEnum:
        """The declared ``enum name``."""
        if ("enum", name) not in self._ids:
            raise AssemblerError(f"no enum {name!r} is declared")
        return LocalEnum(self, self._ids[("enum", name)])

    def typedef(self, name: str) -> LocalType:
        """A declared typedef (for ``exists()``, ``sizeof()``, ``type_id()``)."""
        if ("typedef", name) not in self._ids:
            raise AssemblerError(f"no typedef {name!r} is declared")
        return LocalType(self, self._ids[("typedef", name)])

    def _operand(self, kind, type_id, access) -> CoreOperand:
        relo = CoreRelo(kind, type_id, access, self.btf)
        return CoreOperand(local_value(relo), relo)


class LocalType:
    """A declared type, for the relocations of whole types."""

    def __init__(self, types: Types, type_id: int):
        self.types, self.id = types, type_id
        self.name = types.btf.name(type_id)

    def exists(self) -> CoreOperand:
        """1 if the kernel has this type, else 0."""
        return self.types._operand(CoreKind.TYPE_EXISTS, self.id, "0")

    def sizeof(self) -> CoreOperand:
        """The kernel's size of this type in bytes."""
        return self.types._operand(CoreKind.TYPE_SIZE, self.id, "0")

    def type_id(self) -> CoreOperand:
        """The kernel's BTF id of this type (0 if it has none)."""
        return self.types._operand(CoreKind.TYPE_ID_TARGET, self.id, "0")

    def matches(self) -> CoreOperand:
        """1 if the kernel's type matches the declaration (bpf_core_type_matches), else 0."""
        return self.types._operand(CoreKind.TYPE_MATCHES, self.id, "0")


class LocalStruct(LocalType):
    """A declared struct or union: its fields as CO-RE operands."""

    def offsetof(self, path: str) -> CoreOperand:
        """The kernel's byte offset of the field ``path`` (``comm``, ``se.vruntime``,
        ``comm[2]``; the byte holding a bitfield's first bit: see :meth:`lshift`)."""
        return self._field(CoreKind.FIELD_BYTE_OFFSET, path)

    def sizeof(self, path: Optional[str] = None) -> CoreOperand:
        """The kernel's size of the field ``path`` in bytes, or of the type without one."""
        if path is None:
            return super().sizeof()
        return self._field(CoreKind.FIELD_BYTE_SIZE, path)

    def exists(self, path: Optional[str] = None) -> CoreOperand:
        """1 if the kernel's type has the field ``path`` (or without one: the type), else 0."""
        if path is None:
            return super().exists()
        return self._field(CoreKind.FIELD_EXISTS, path)

    def signed(self, path: str) -> CoreOperand:
        """1 if the kernel's field ``path`` is a signed integer or enum, else 0."""
        return self._field(CoreKind.FIELD_SIGNED, path)

    def lshift(self, path: str) -> CoreOperand:
        """How far to shift a 64-bit load of the field (at ``offsetof``, ``sizeof`` bytes)
        left so that its top bit lands in bit 63 (bitfields)."""
        return self._field(CoreKind.FIELD_LSHIFT_U64, path)

    def rshift(self, path: str) -> CoreOperand:
        """How far to shift back right (``>>`` or ``s>>``) after :meth:`lshift`."""
        return self._field(CoreKind.FIELD_RSHIFT_U64, path)

    def field(self, path: str) -> LocalField:
        """The local declaration of the field ``path``: access string, type, size, bits."""
        return _resolve_path(self.types.btf, self.id, path)

    def _field(self, kind, path):
        return self.types._operand(kind, self.id, self.field(path).access)


class LocalEnum(LocalType):
    """A declared enum: its enumerators' kernel values."""

    def value(self, enumerator: str) -> CoreOperand:
        """The kernel's value of ``enumerator`` (matched by name, ``___flavour`` aside)."""
        return self.types._operand(CoreKind.ENUMVAL_VALUE, self.id, self._index(enumerator))

    def exists(self, enumerator: Optional[str] = None) -> CoreOperand:
        """1 if the kernel's enum has ``enumerator`` (without one: if it has the enum)."""
        if enumerator is None:
            return super().exists()
        return self.types._operand(CoreKind.ENUMVAL_EXISTS, self.id, self._index(enumerator))

    def _index(self, enumerator):
        names = [e.name for e in self.types.btf.type(self.id).enumerators]
        if enumerator not in names:
            raise AssemblerError(f"enum {self.name} declares no {enumerator!r} (declared: "
                                 f"{', '.join(names)})")
        return str(names.index(enumerator))


# -- pointer chains --------------------------------------------------------------------------

def _chain(struct, path):
    """``[(composite, member path, LocalField)]``: ``"real_parent->tgid"`` split at ``->``, every
    step but the last a pointer to a declared struct or union."""
    if not isinstance(struct, LocalStruct):
        raise AssemblerError(f"the struct of a CO-RE read is a types.struct(...), not "
                             f"{struct!r}")
    steps, composite = [], struct
    segments = path.split("->")
    for position, segment in enumerate(segments):
        segment = segment.strip()
        field = composite.field(segment)
        steps.append((composite, segment, field))
        if position < len(segments) - 1:
            if field.pointee is None:
                raise AssemblerError(f"{field.text} is not a pointer to a struct or union: "
                                     f"'->' cannot follow it ({path!r})")
            composite = LocalStruct(composite.types, field.pointee)
    last = steps[-1][2]
    if last.kind not in (Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.PTR) or last.size > 8:
        raise AssemblerError(f"{last.text} is a {last.kind.name.lower()}: a CO-RE read gives an "
                             "integer, an enum or a pointer (copy other fields with "
                             "probe_read_kernel and offsetof/sizeof operands)")
    return steps


def emit_read(b, dst, src, struct, path, stack):
    """:meth:`Builder.core_read`: bpf_probe_read_kernel through each pointer of the chain."""
    from pybpf.asm.insn import DW, R1, R2, R3, R10

    steps = _chain(struct, path)
    given, stack = stack, int_like(stack)
    if stack is None or stack % 8 or not -512 <= stack <= -8:
        raise AssemblerError(f"stack must be a multiple of 8 in -512..-8 (the 8 bytes at "
                             f"r10 + stack), not {given!r}")
    parts = [part.strip() for part in path.split("->")]
    b.comment(f"r{int(dst)} = BPF_CORE_READ((struct {struct.name} *)r{int(src)}, "
              f"{', '.join(parts)})")
    current = src
    for position, (composite, segment, _) in enumerate(steps):
        last = position == len(steps) - 1
        if last:
            b.st(DW, R10, stack, 0)  # a shorter kernel field leaves the rest zero
        b.mov(R1, R10)
        b.add(R1, stack)
        b.mov(R2, composite.sizeof(segment) if last else 8)
        b.mov(R3, current)
        b.add(R3, composite.offsetof(segment))
        b.call("probe_read_kernel")
        b.ldx(DW, dst, R10, stack)
        current = dst
    composite, segment, field = steps[-1]
    if field.bitfield_size or (field.signed and field.size < 8):
        b.lsh(dst, composite.lshift(segment))
        (b.arsh if field.signed else b.rsh)(dst, composite.rshift(segment))


def emit_load(b, dst, src, struct, path, scratch):
    """:meth:`Builder.core_load`: direct loads along the chain."""
    from pybpf.asm.insn import B, DW, H, W

    steps = _chain(struct, path)
    parts = [part.strip() for part in path.split("->")]
    b.comment(f"r{int(dst)} = ((struct {struct.name} *)r{int(src)})->{'->'.join(parts)}")
    current = src
    for composite, segment, _ in steps[:-1]:
        b.ldx(DW, dst, current, composite.offsetof(segment))
        current = dst
    composite, segment, field = steps[-1]
    if not field.bitfield_size:
        b.ldx(field.size, dst, current, composite.offsetof(segment))
        if field.signed and field.size < 8:
            b.lsh(dst, 64 - 8 * field.size)
            b.arsh(dst, 64 - 8 * field.size)
        return
    if scratch is None or int(scratch) in (int(dst), int(current)):
        raise AssemblerError(f"{field.text} is a bitfield: its load size is the kernel's, "
                             "chosen at run time; pass scratch=<a register other than dst and "
                             "src> to hold it")
    labels = [f"_core{len(b._insns)}_{size}" for size in ("b", "h", "w", "done")]
    b.mov(scratch, composite.sizeof(segment))
    for size, label in ((1, labels[0]), (2, labels[1]), (4, labels[2])):
        b.jeq(scratch, size, label)
    b.ldx(DW, dst, current, composite.offsetof(segment))
    for size, label in ((B, labels[0]), (H, labels[1]), (W, labels[2])):
        b.ja(labels[3])
        b.label(label)
        b.ldx(size, dst, current, composite.offsetof(segment))
    b.label(labels[3])
    b.lsh(dst, composite.lshift(segment))
    (b.arsh if field.signed else b.rsh)(dst, composite.rshift(segment))


# -- member paths ----------------------------------------------------------------------------

class LocalField:
    """A field of a local type: the ``access`` string to it, where it is (``bit_offset``,
    ``bitfield_size``), its type id (qualifiers skipped), ``size`` in bytes, and for a
    pointer to a struct or union, the pointee's id."""

    def __init__(self, btf, access, bit_offset, bitfield_size, type_id, text):
        self.access, self.bit_offset, self.bitfield_size = access, bit_offset, bitfield_size
        self.type_id, self.text = type_id, text
        t = btf.type(type_id)
        self.kind = t.kind
        self.size = btf.size_of(type_id)
        self.signed = (t.kind == Kind.INT and bool(t.int.encoding & 1)) or (
            t.kind in (Kind.ENUM, Kind.ENUM64) and bool(t.kind_flag))
        self.pointee = None
        if t.kind == Kind.PTR:
            target = btf.skip_qualifiers(t.type)
            if btf.kind(target) in (Kind.STRUCT, Kind.UNION):
                self.pointee = target


_PATH = re.compile(r"\s*(?:\.?\s*([A-Za-z_]\w*)|\[\s*(\d+)\s*\])")


def _resolve_path(btf, root, path):
    """The :class:`LocalField` at ``path`` in struct ``root``: member names (through anonymous
    members, whose indexes the access string includes) and ``[N]`` array indexes."""
    raw, type_id, bit_offset, bitfield = [0], root, 0, 0
    position, text = 0, btf.name(root)
    if not path.strip():
        raise AssemblerError(f"an empty field path in {text}")
    while position < len(path):
        match = _PATH.match(path, position)
        if not match or match.end() == position:
            raise AssemblerError(f"cannot read field path {path!r} at {path[position:]!r} "
                                 "(member names, '.', and [N])")
        position = match.end()
        type_id = btf.skip_qualifiers(type_id)
        t = btf.type(type_id)
        if match.group(1):
            if t.kind not in (Kind.STRUCT, Kind.UNION):
                raise AssemblerError(f"{text} is not a struct or union: it has no member "
                                     f"{match.group(1)!r}")
            found = _find_member(btf, t, match.group(1))
            if found is None:
                names = ", ".join(m.name for m in t.members if m.name)
                raise AssemblerError(f"{text} has no member {match.group(1)!r} (members: "
                                     f"{names})")
            indexes, offset, member = found
            raw += indexes
            bit_offset += offset
            bitfield = member.bitfield_size
            type_id = member.type
            text += f".{match.group(1)}"
        else:
            index = int(match.group(2))
            if t.kind != Kind.ARRAY:
                raise AssemblerError(f"{text} is not an array: no element [{index}]")
            if index >= t.array.nelems:
                raise AssemblerError(f"{text}[{index}] is past the end ({t.array.nelems} "
                                     "elements)")
            raw.append(index)
            type_id = t.array.type
            bit_offset += index * btf.size_of(type_id) * 8
            bitfield = 0
            text += f"[{index}]"
    access = ":".join(map(str, raw))
    return LocalField(btf, access, bit_offset, bitfield, btf.skip_qualifiers(type_id), text)


def _find_member(btf, t, name, depth=0):
    """``(member indexes, bit offset, member)`` of ``name`` in ``t``, through anonymous
    members (depth-first, as C looks them up)."""
    for index, member in enumerate(t.members):
        if member.name == name:
            return [index], member.bit_offset, member
        if not member.name and depth < 32:
            inner = btf.type(btf.skip_qualifiers(member.type))
            if inner.kind in (Kind.STRUCT, Kind.UNION):
                found = _find_member(btf, inner, name, depth + 1)
                if found is not None:
                    return [index] + found[0], member.bit_offset + found[1], found[2]
    return None


# -- C declarations --------------------------------------------------------------------------

class _Parser:
    """Recursive descent over a subset of C declarations, writing BTF as it goes."""

    def __init__(self, text: str):
        self.tokens: List[str] = []
        self.lines: List[int] = []
        line, position = 1, 0
        for match in _TOKEN.finditer(text):
            if match.start() != position:
                bad = text[position:match.start()]
                raise AssemblerError(f"line {line}: unexpected {bad!r} in the declarations")
            if match.group("tok"):
                self.tokens.append(match.group("tok"))
                self.lines.append(line)
            line += match.group(0).count("\n")
            position = match.end()
        if position != len(text):
            raise AssemblerError(f"line {line}: unexpected {text[position:position + 20]!r} in "
                                 "the declarations")
        self.position = 0
        self.writer = BTFWriter()
        self.ids: Dict[Tuple[str, str], int] = {}
        self.layouts: Dict[int, Tuple[int, int]] = {}  # id -> (size, alignment), when known
        self.defined: set = set()
        self.ints: Dict[str, int] = {}  # C integer type name -> id
        self.array_index = 0

    # tokens

    def peek(self, offset=0):
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, expected=None):
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            want = f"{expected!r}" if expected else "more"
            raise self.error(f"expected {want}, found {token or 'the end'!r}")
        self.position += 1
        return token

    def error(self, message):
        index = min(self.position, len(self.tokens) - 1)
        line = self.lines[index] if self.lines else 1
        return AssemblerError(f"line {line}: {message} (in the CO-RE type declarations)")

    def name(self):
        token = self.take()
        if not re.match(r"[A-Za-z_]\w*$", token):
            raise self.error(f"expected a name, found {token!r}")
        return token

    def skip_attributes(self):
        while self.peek() == "__attribute__":
            self.take()
            depth = 0
            while True:
                token = self.take()
                depth += {"(": 1, ")": -1}.get(token, 0)
                if depth == 0 and token == ")":
                    break

    # declarations

    def parse(self):
        while self.peek() is not None:
            if self.peek() == "typedef":
                self.take()
                base = self.base_type()
                name, type_id, _ = self.declarator(base)
                self.ids[("typedef", name)] = self.writer.add_typedef(name, type_id)
                self.layouts[self.ids[("typedef", name)]] = self.layout(type_id)
            else:
                self.base_type()
            self.skip_attributes()
            self.take(";")
        undefined = [f"{k} {n}" for (k, n), i in self.ids.items()
                     if k in ("struct", "union") and i not in self.defined]
        for kind_name in undefined:  # only ever pointed to: forward declarations
            kind, name = kind_name.split()
            self.writer.forward(self.ids[(kind, name)])

    def base_type(self):
        """The type id a declaration starts with (defining a struct/union/enum if it does)."""
        while self.peek() in ("const", "volatile", "static", "extern", "__attribute__"):
            if self.peek() == "__attribute__":
                self.skip_attributes()
            else:
                self.take()
        token = self.peek()
        if token in ("struct", "union"):
            return self.composite(self.take())
        if token == "enum":
            self.take()
            return self.enum()
        if token == "void":
            self.take()
            return 0
        if token in _INT_WORDS:
            words = []
            while self.peek() in _INT_WORDS:
                words.append(self.take())
            return self.integer(tuple(sorted(words)), " ".join(words))
        name = self.name()
        if ("typedef", name) in self.ids:
            return self.ids[("typedef", name)]
        if name in _TYPEDEFS:
            size, signed = _TYPEDEFS[name]
            words = {1: ("char",), 2: ("short",), 4: ("int",), 8: ("long",)}[size]
            base = self.integer(tuple(sorted(words + ("signed" if signed else "unsigned",))),
                                name)
            self.ids[("typedef", name)] = self.writer.add_typedef(name, base)
            self.layouts[self.ids[("typedef", name)]] = (size, size)
            return self.ids[("typedef", name)]
        raise self.error(f"unknown type {name!r} (declare it, or use a C integer type)")

    def integer(self, key, text):
        """The INT for C integer type words (sorted), written once."""
        if key not in _INTS:
            raise self.error(f"{text!r} is not a C integer type")
        name, size, signed = _INTS[key]
        if name not in self.ints:
            self.ints[name] = self.writer.add_int(name, size, signed=signed,
                                                  boolean=name == "_Bool")
            self.layouts[self.ints[name]] = (size, size)
        return self.ints[name]

    def composite(self, kind):
        self.skip_attributes()
        name = self.name() if self.peek() != "{" else ""
        if name and (kind, name) not in self.ids:
            self.ids[(kind, name)] = self.writer.add_struct(name, union=kind == "union")
        if self.peek() != "{":
            if not name:
                raise self.error(f"an anonymous {kind} needs a body")
            return self.ids[(kind, name)]
        type_id = self.ids[(kind, name)] if name else self.writer.add_struct(
            "", union=kind == "union")
        if type_id in self.defined:
            raise self.error(f"{kind} {name} is defined twice")
        self.take("{")
        members = []
        while self.peek() != "}":
            members.extend(self.member_declaration())
        self.take("}")
        self.skip_attributes()
        self.lay_out(type_id, kind == "union", members)
        return type_id

    def member_declaration(self):
        """``[(name, type id, bitfield size)]`` of one member declaration (``int a, b;``,
        ``struct { ... };`` for an anonymous member)."""
        base = self.base_type()
        if self.peek() == ";":
            self.take()
            if self.writer.kind(base) in (Kind.STRUCT, Kind.UNION) and not \
                    self.writer.name(base):
                return [("", base, 0)]
            raise self.error("a member declaration needs a name")
        members = []
        while True:
            members.append(self.declarator(base))
            if self.peek() != ",":
                break
            self.take()
        self.skip_attributes()
        self.take(";")
        return members

    def declarator(self, base):
        """``(name, type id, bitfield size)``: ``*``s, a name, ``[N]``s, ``: bits``."""
        type_id = base
        while self.peek() in ("*", "const", "volatile"):
            if self.take() == "*":
                type_id = self.writer.add_ptr(type_id)
                self.layouts[type_id] = (8, 8)
        name = self.name()
        dims = []
        while self.peek() == "[":
            self.take()
            dims.append(self.number())
            self.take("]")
        for count in reversed(dims):
            type_id = self.array(type_id, count)
        bits = 0
        if self.peek() == ":":
            self.take()
            bits = self.number()
            if not 0 < bits <= 8 * self.layout(type_id)[0] or self.writer.kind(type_id) not in (
                    Kind.INT, Kind.ENUM, Kind.TYPEDEF):
                raise self.error(f"bitfield {name}: {bits} bits of a "
                                 f"{self.layout(type_id)[0]}-byte integer")
        return name, type_id, bits

    def number(self):
        token = self.take()
        negative = token == "-"
        if negative:
            token = self.take()
        if not re.match(r"(0[xX][0-9a-fA-F]+|\d+)$", token):
            raise self.error(f"expected a number, found {token!r}")
        value = int(token, 0)
        return -value if negative else value

    def array(self, elem, count):
        if ("index", "") not in self.ids:
            self.ids[("index", "")] = self.writer.add_int("__ARRAY_SIZE_TYPE__", 4)
        size, align = self.layout(elem)
        type_id = self.writer.add_array(elem, count, self.ids[("index", "")])
        self.layouts[type_id] = (size * count, align)
        return type_id

    def enum(self):
        name = self.name() if self.peek() != "{" else ""
        if self.peek() != "{":
            if ("enum", name) not in self.ids:
                raise self.error(f"enum {name} is used before it is defined")
            return self.ids[("enum", name)]
        self.take("{")
        values, value = [], 0
        while self.peek() != "}":
            enumerator = self.name()
            if self.peek() == "=":
                self.take()
                value = self.number()
            values.append((enumerator, value))
            value += 1
            if self.peek() != ",":
                break
            self.take()
        self.take("}")
        signed = any(v < 0 for _, v in values)
        size = 4 if all(-(1 << 31) <= v < (1 << 32) for _, v in values) else 8
        type_id = self.writer.add_enum(name, size, values, signed)
        self.layouts[type_id] = (size, size)
        if name:
            self.ids[("enum", name)] = type_id
        return type_id

    # layout

    def layout(self, type_id):
        """(size, alignment) of a type; an error for one not yet defined (by value)."""
        if type_id in self.layouts:
            return self.layouts[type_id]
        what = f"{self.writer.kind(type_id).name.lower()} {self.writer.name(type_id)}" \
            if type_id else "void"
        raise self.error(f"{what} is used by value before it is defined (or has no size)")

    def lay_out(self, type_id, union, members):
        """Offsets as the C ABI gives them: each member at its natural alignment; a bitfield
        in the current unit of its type if it fits there, else in the next."""
        placed, position, align, end = [], 0, 1, 0
        for name, member_type, bits in members:
            size, member_align = self.layout(member_type)
            unit = size * 8
            if union:
                offset = 0
            elif bits:
                offset = position
                if position // unit != (position + bits - 1) // unit:
                    offset = _align(position, unit)
            else:
                offset = _align(position, member_align * 8)
            placed.append((name, member_type, offset, bits))
            position = offset + (bits or size * 8)
            end = max(end, position)
            align = max(align, member_align)
        size = _align(-(-end // 8), align)
        self.writer.set_members(type_id, size, placed)
        self.layouts[type_id] = (size, align)
        self.defined.add(type_id)


def _align(value, to):
    """``value`` rounded up to a multiple of ``to``."""
    return -(-value // to) * to
