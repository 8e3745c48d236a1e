"""BTF, the BPF Type Format: the C types of a BPF object, compact enough for the kernel.

clang ``-g`` puts two sections in a BPF object:

* ``.BTF`` -- a header, then a list of *types* and a table of NUL-terminated *strings*. Type ids
  are positions in the list, counted from 1 (id 0 is ``void``). Each type is a 12-byte
  ``struct btf_type`` (name offset, ``info`` = kind | vlen | kind_flag, size-or-type) followed by
  a tail that depends on its kind (struct members, enum values, array bounds, function
  parameters...). See the kernel's ``include/uapi/linux/btf.h`` and ``Documentation/bpf/btf.rst``.
* ``.BTF.ext`` -- per ELF section, records that tie instructions to BTF: *func_info* (this
  instruction starts a function of this FUNC type) and *line_info* (this instruction comes from
  this file, line and column; the source text is in ``.BTF``'s strings). Offsets in the object
  are byte offsets into the section; the kernel wants instruction (slot) indexes. The third kind
  of record, *core_relo*, marks the instructions whose offsets, sizes or constants depend on
  the kernel's type layout (CO-RE: compile once, run everywhere); pybpf does not apply them
  yet, so a program that has them refuses to load (:class:`~pybpf.errors.CoreError`).

The kernel's ``BPF_BTF_LOAD`` needs two fix-ups clang leaves to the loader (as libbpf does): a
``DATASEC`` (the variables of one ELF section) has size 0 and its variables offset 0; the real
values are the ELF section's size and each variable symbol's value. Kernels from 6.0 on accept
every kind clang emits (ENUM64, DECL_TAG, TYPE_TAG), so no kind is rewritten.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Dict, List, Optional

from construct import (
    Adapter, Array, Bytes, BytesInteger, Computed, ConstructError, Float32l, Float64l, Int8ul,
    Int16ul, Int32sl, Int32ul, Padding, Pass, Struct, Switch, this,
)

from .errors import BTFError

BTF_MAGIC = 0xEB9F
MAX_TYPES = 0xFFFFF  # the kernel's BTF_MAX_TYPE


class Kind(IntEnum):
    """``BTF_KIND_*``: the kind of a type, bits 24-28 of ``btf_type.info``."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Kinds whose third word is a type id rather than a size; qualifiers are looked through.
_REFERENCING = {Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.FUNC,
                Kind.FUNC_PROTO, Kind.VAR, Kind.DECL_TAG, Kind.TYPE_TAG}
_QUALIFIERS = {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
_SIZED = {Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.DATASEC, Kind.FLOAT, Kind.ENUM64}
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1

BTF_HEADER = Struct(
    "magic" / Int16ul, "version" / Int8ul, "flags" / Int8ul, "hdr_len" / Int32ul,
    "type_off" / Int32ul, "type_len" / Int32ul, "str_off" / Int32ul, "str_len" / Int32ul,
)
_MEMBER = Struct("name_off" / Int32ul, "type" / Int32ul, "offset" / Int32ul)
_TAILS = {
    Kind.INT: Int32ul,  # encoding << 24 | bit offset << 16 | bits
    Kind.ARRAY: Struct("type" / Int32ul, "index_type" / Int32ul, "nelems" / Int32ul),
    Kind.STRUCT: Array(this.vlen, _MEMBER),
    Kind.UNION: Array(this.vlen, _MEMBER),
    Kind.ENUM: Array(this.vlen, Struct("name_off" / Int32ul, "val" / Int32sl)),
    Kind.FUNC_PROTO: Array(this.vlen, Struct("name_off" / Int32ul, "type" / Int32ul)),
    Kind.VAR: Int32ul,  # linkage
    Kind.DATASEC: Array(this.vlen, Struct("type" / Int32ul, "offset" / Int32ul,
                                          "size" / Int32ul)),
    Kind.DECL_TAG: Int32sl,  # component_idx
    Kind.ENUM64: Array(this.vlen, Struct("name_off" / Int32ul, "val_lo32" / Int32ul,
                                         "val_hi32" / Int32ul)),
}
BTF_TYPE = Struct(
    "name_off" / Int32ul,
    "info" / Int32ul,
    "size_type" / Int32ul,
    "kind" / Computed((this.info >> 24) & 0x1F),
    "vlen" / Computed(this.info & 0xFFFF),
    "kind_flag" / Computed(this.info >> 31),
    "tail" / Switch(this.kind, _TAILS, default=Pass),
)

class BTF:
    """The types and strings of a ``.BTF`` section: ``types[id]`` (``types[0]`` is void)."""

    def __init__(self, types: List, strings: bytes, offsets: List[int], section=".BTF"):
        self.types = types
        self.strings = strings
        self.offsets = offsets  # byte offset of each type's record inside the section
        self.section = section

    # -- parsing --------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, section: str = ".BTF") -> "BTF":
        """Parse and check a ``.BTF`` section; malformed input raises :class:`BTFError`."""
        header = _parse(BTF_HEADER, data, section, 0)
        _check_header(header, data, section)
        base = header.hdr_len
        types_blob = data[base + header.type_off: base + header.type_off + header.type_len]
        strings = data[base + header.str_off: base + header.str_off + header.str_len]
        if strings and (strings[0] != 0 or strings[-1] != 0):
            raise BTFError("string table must start and end with a NUL byte", section,
                           base + header.str_off)
        types, offsets = _parse_types(types_blob, section, base + header.type_off)
        btf = cls([None] + types, strings, [0] + offsets, section)
        btf._check()
        return btf

    def _check(self):
        """Every string offset and type id in range, no loop through qualifiers or arrays."""
        for type_id in range(1, len(self.types)):
            for name_off in _name_offsets(self.types[type_id]):
                self._string_at(name_off, type_id)
            for ref in _type_refs(self.types[type_id]):
                if ref >= len(self.types):
                    self._fail(f"refers to type id {ref}, but there are only "
                               f"{len(self.types) - 1} types", type_id)
        for type_id in range(1, len(self.types)):
            self.size_of(type_id)

    def _fail(self, message, type_id):
        raise BTFError(f"type [{type_id}] {message}", self.section, self.offsets[type_id])

    def _string_at(self, offset, type_id=None):
        if offset >= max(len(self.strings), 1):
            message = f"string offset {offset} is past the string table ({len(self.strings)} bytes)"
            if type_id is None:
                raise BTFError(message, self.section)
            self._fail(message, type_id)
        end = self.strings.find(b"\0", offset)
        return self.strings[offset:end].decode("utf-8", "replace")

    # -- queries --------------------------------------------------------------------------

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string table."""
        return self._string_at(offset)

    def name(self, type_id: int) -> str:
        """The name of a type ("" for anonymous types and void)."""
        return self._string_at(self.types[type_id].name_off) if type_id else ""

    def kind(self, type_id: int) -> Kind:
        """The kind of a type (UNKN for void)."""
        return Kind(self.types[type_id].kind) if type_id else Kind.UNKN

    def find(self, name: str, kind: Optional[Kind] = None) -> Optional[int]:
        """The id of the first type called ``name`` (of ``kind`` when given), or None."""
        for type_id in range(1, len(self.types)):
            if self.name(type_id) == name and (kind is None or self.kind(type_id) == kind):
                return type_id
        return None

    def skip_qualifiers(self, type_id: int) -> int:
        """The id behind typedefs, const, volatile, restrict and type tags."""
        seen = set()
        while type_id and self.kind(type_id) in _QUALIFIERS:
            if type_id in seen:
                self._fail("is part of a typedef/qualifier loop", type_id)
            seen.add(type_id)
            type_id = self.types[type_id].size_type
        return type_id

    def size_of(self, type_id: int, _seen=None) -> int:
        """The size in bytes of a type, as the kernel computes it; loops raise BTFError."""
        seen = _seen if _seen is not None else set()
        if type_id in seen:
            self._fail("is part of a type loop", type_id)
        seen.add(type_id)
        if type_id == 0:
            return 0
        t = self.types[type_id]
        kind = Kind(t.kind)
        if kind in _SIZED:
            return t.size_type
        if kind == Kind.PTR:
            return 8
        if kind == Kind.ARRAY:
            return t.tail.nelems * self.size_of(t.tail.type, seen)
        if kind in _QUALIFIERS or kind == Kind.VAR:
            return self.size_of(t.size_type, seen)
        return 0

    def array_nelems(self, type_id: int) -> Optional[int]:
        """``nelems`` of an ARRAY type (after qualifiers), else None."""
        type_id = self.skip_qualifiers(type_id)
        return self.types[type_id].tail.nelems if self.kind(type_id) == Kind.ARRAY else None

    def members(self, type_id: int):
        """``(name, type_id, bit_offset, bitfield_size)`` of a STRUCT or UNION's members."""
        t = self.types[type_id]
        for m in t.tail:
            if t.kind_flag:
                yield self.string(m.name_off), m.type, m.offset & 0xFFFFFF, m.offset >> 24
            else:
                yield self.string(m.name_off), m.type, m.offset, 0

    def datasec_vars(self, type_id: int):
        """``(var name, var type id, offset, size)`` of a DATASEC's variables."""
        for info in self.types[type_id].tail:
            yield self.name(info.type), info.type, info.offset, info.size

    # -- preparing for the kernel ---------------------------------------------------------

    def fixup_datasecs(self, section_sizes: Dict[str, int], symbols: Dict[str, int]):
        """Set DATASEC sizes and variable offsets from the ELF (as libbpf does), in place.

        ``section_sizes`` maps ELF section names to sizes, ``symbols`` maps
        ``(section name, variable name)`` to the symbol's value (its offset in the section).
        """
        for type_id in range(1, len(self.types)):
            if self.kind(type_id) != Kind.DATASEC:
                continue
            section = self.name(type_id)
            t = self.types[type_id]
            if section not in section_sizes:
                self._fail(f"DATASEC {section!r} names no ELF section", type_id)
            t.size_type = section_sizes[section]
            for info in t.tail:
                var = self.name(info.type)
                if (section, var) not in symbols:
                    self._fail(f"variable {var!r} of DATASEC {section!r} has no ELF symbol",
                               type_id)
                info.offset = symbols[(section, var)]
                if max(info.offset, t.size_type) > 0xFFFFFFFF:
                    self._fail(f"DATASEC {section!r} is too big for BTF's 32-bit sizes", type_id)
            t.tail = sorted(t.tail, key=lambda info: info.offset)

    def encode(self) -> bytes:
        """The raw ``.BTF`` bytes for ``BPF_BTF_LOAD`` (header, types, strings)."""
        types = b"".join(BTF_TYPE.build(t) for t in self.types[1:])
        header = BTF_HEADER.build(dict(
            magic=BTF_MAGIC, version=1, flags=0, hdr_len=BTF_HEADER.sizeof(), type_off=0,
            type_len=len(types), str_off=len(types), str_len=len(self.strings)))
        return header + types + self.strings

    # -- decoding values ------------------------------------------------------------------

    def construct_for(self, type_id: int):
        """A ``construct`` type that decodes and encodes values of a BTF type.

        Structs become Structs with their member names, arrays Arrays, ``char[]`` strings,
        integers and enums ints; what has no simple layout (bitfields, unions) stays Bytes.
        """
        return _Builder(self).build(type_id, set())


class _CharArray(Adapter):
    """A ``char[N]`` field: a str up to the first NUL, padded with NULs when encoded.

    Bytes that are not UTF-8 decode as ``\\xNN`` escapes, so nothing is lost from view.
    """

    def _decode(self, obj, context, path):
        return obj.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")

    def _encode(self, obj, context, path):
        data = obj.encode() if isinstance(obj, str) else bytes(obj)
        return data.ljust(self.subcon.length, b"\0")


class _Builder:
    """Builds construct types from BTF types (one instance per call, loops guarded)."""

    def __init__(self, btf: BTF):
        self.btf = btf

    def build(self, type_id, active):
        btf = self.btf
        type_id = btf.skip_qualifiers(type_id)
        size = btf.size_of(type_id)
        if type_id in active:  # a struct containing itself cannot be laid out
            return Bytes(size)
        kind = btf.kind(type_id)
        t = btf.types[type_id]
        if kind == Kind.INT:
            return self._int(t, size)
        if kind in (Kind.ENUM, Kind.ENUM64):
            return BytesInteger(size, signed=bool(t.kind_flag), swapped=True) if size else Pass
        if kind == Kind.PTR:
            return BytesInteger(8, swapped=True)
        if kind == Kind.FLOAT and size in (4, 8):
            return Float32l if size == 4 else Float64l
        if kind == Kind.ARRAY:
            return self._array(t.tail, active | {type_id})
        if kind == Kind.STRUCT:
            return self._struct(list(btf.members(type_id)), size, active | {type_id})
        if kind == Kind.DATASEC:
            fields = [(name, btf.types[var].size_type if btf.kind(var) == Kind.VAR else var,
                       offset * 8, 0) for name, var, offset, _ in btf.datasec_vars(type_id)]
            return self._struct(fields, size, active | {type_id})
        return Bytes(size)

    def _int(self, t, size):
        encoding = t.tail >> 24
        if size == 0 or (t.tail & 0xFF) != size * 8 or (t.tail >> 16) & 0xFF:
            return Bytes(size)
        return BytesInteger(size, signed=bool(encoding & BTF_INT_SIGNED), swapped=True)

    def _array(self, array, active):
        btf = self.btf
        elem = btf.skip_qualifiers(array.type)
        if btf.kind(elem) == Kind.INT and btf.size_of(elem) == 1 and (
                btf.types[elem].tail >> 24 & BTF_INT_CHAR or btf.name(elem) == "char"):
            return _CharArray(Bytes(array.nelems))
        return Array(array.nelems, self.build(array.type, active))

    def _struct(self, members, size, active):
        fields, position = [], 0
        for index, (name, type_id, bit_offset, bitfield) in enumerate(members):
            if bitfield or bit_offset % 8 or bit_offset // 8 < position:
                return Bytes(size)
            if bit_offset // 8 > position:
                fields.append(Padding(bit_offset // 8 - position))
            fields.append((name or f"_{index}") / self.build(type_id, active))
            position = bit_offset // 8 + self.btf.size_of(type_id)
        if position > size:
            return Bytes(size)
        if position < size:
            fields.append(Padding(size - position))
        return Struct(*fields)


# -- .BTF helpers -------------------------------------------------------------------------

def _parse(struct, data, section, offset):
    """``struct.parse(data)``, construct's errors turned into BTFError at ``offset``."""
    try:
        return struct.parse(data)
    except ConstructError as exc:
        raise BTFError(f"truncated or malformed record: {exc.__class__.__name__}",
                       section, offset) from None


def _check_header(header, data, section):
    if header.magic != BTF_MAGIC:
        raise BTFError(f"bad magic {header.magic:#06x} (expected {BTF_MAGIC:#06x}); "
                       "is this a big-endian object?", section, 0)
    if header.version != 1:
        raise BTFError(f"unsupported BTF version {header.version}", section, 2)
    if header.hdr_len < BTF_HEADER.sizeof():
        raise BTFError(f"header length {header.hdr_len} is too small", section, 4)
    for name in ("type", "str"):
        start = header.hdr_len + header[f"{name}_off"]
        if start + header[f"{name}_len"] > len(data):
            raise BTFError(f"{name} section ({header[name + '_len']} bytes at {start}) runs "
                           f"past the end of .BTF ({len(data)} bytes)", section, start)
    if header.type_len % 4:
        raise BTFError(f"type section length {header.type_len} is not a multiple of 4",
                       section, header.hdr_len + header.type_off)


def _parse_types(blob, section, base):
    """The type records of the type section and the offset of each in the ``.BTF`` section."""
    types, offsets, position = [], [], 0
    while position < len(blob):
        if len(types) >= MAX_TYPES:
            raise BTFError(f"more than {MAX_TYPES} types", section, base + position)
        size = record_size(blob, position)
        if size is None:
            raise BTFError(f"type [{len(types) + 1}] has an unknown kind", section,
                           base + position)
        types.append(_parse(BTF_TYPE, blob[position:position + size], section,
                            base + position))
        offsets.append(base + position)
        position += size
    return types, offsets


_ITEM_SIZES = {Kind.STRUCT: 12, Kind.UNION: 12, Kind.ENUM: 8, Kind.FUNC_PROTO: 8,
               Kind.DATASEC: 12, Kind.ENUM64: 12}
_FIXED_TAILS = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}


def record_size(blob, position):
    """Bytes taken by the type record at ``position`` (12 + its tail), None for a bad kind.

    Type records differ in size, so this is what walking the type list needs; it also serves
    tools/gen_helpers.py, which scans the kernel's 100 000-odd types for one enum.
    """
    info = int.from_bytes(blob[position + 4:position + 8], "little")
    kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
    if not Kind.INT <= kind <= max(Kind):
        return None
    return 12 + _FIXED_TAILS.get(kind, 0) + _ITEM_SIZES.get(kind, 0) * vlen


def _name_offsets(t):
    yield t.name_off
    if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FUNC_PROTO, Kind.ENUM64):
        for item in t.tail:
            yield item.name_off


def _type_refs(t):
    if t.kind in _REFERENCING:
        yield t.size_type
    if t.kind == Kind.ARRAY:
        yield t.tail.type
        yield t.tail.index_type
    elif t.kind in (Kind.STRUCT, Kind.UNION, Kind.FUNC_PROTO, Kind.DATASEC):
        for item in t.tail:
            yield item.type


# -- .BTF.ext -----------------------------------------------------------------------------

# struct btf_ext_header: magic, version, flags, hdr_len, then (offset, length) of the func_info
# and line_info blocks, and, when hdr_len reaches 32, of the core_relo block.
_EXT_HEADER = struct.Struct("<HBBIIIII")
_EXT_CORE = struct.Struct("<II")  # core_relo_off, core_relo_len
_EXT_SECTION = struct.Struct("<II")  # btf_ext_info_sec: sec_name_off, num_info


@dataclass
class FuncInfo:
    """``bpf_func_info``: the function of BTF type ``type_id`` starts at ``insn_off`` bytes."""

    insn_off: int
    type_id: int


@dataclass
class LineInfo:
    """``bpf_line_info``: the instruction at ``insn_off`` bytes comes from this source line."""

    insn_off: int
    file_name_off: int
    line_off: int
    line_col: int

    @property
    def line(self) -> int:
        return self.line_col >> 10

    @property
    def column(self) -> int:
        return self.line_col & 0x3FF


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


@dataclass
class CoreReloRecord:
    """``bpf_core_relo`` as stored: the instruction at ``insn_off`` bytes reads something of
    local BTF type ``type_id`` along the access string at ``access_str_off`` (``"0:1:2"``:
    element 0, member 1, member 2); ``kind`` (a :class:`CoreKind` value when valid) says what."""

    insn_off: int
    type_id: int
    access_str_off: int
    kind: int


@dataclass(frozen=True)
class CoreRelo:
    """A CO-RE relocation as an instruction carries it: ``kind`` of the local type
    ``type_id`` of ``btf`` (the program's own BTF), along the access string ``access``."""

    kind: int
    type_id: int
    access: str
    btf: BTF = field(repr=False, compare=False)

    def describe(self) -> str:
        """``field_byte_offset of task_struct 0:57``: the relocation in words, for messages."""
        kind = CoreKind(self.kind).name.lower() if self.kind in CoreKind.__members__.values() \
            else f"kind {self.kind}"
        return f"{kind} of {self.local_type_name()} access {self.access}"

    def local_type_name(self) -> str:
        """The local type's name (``[id]`` when it has none or the id is out of range)."""
        if 0 < self.type_id < len(self.btf.types):
            return self.btf.name(self.type_id) or f"[{self.type_id}]"
        return f"[{self.type_id}]"


class BTFExt:
    """``.BTF.ext``: func_info, line_info and CO-RE relocation records by ELF section name."""

    def __init__(self, func_info: Dict[str, List[FuncInfo]],
                 line_info: Dict[str, List[LineInfo]],
                 core_relos: Optional[Dict[str, List[CoreReloRecord]]] = None):
        self.func_info = func_info
        self.line_info = line_info
        self.core_relos = core_relos or {}

    @classmethod
    def parse(cls, data: bytes, btf: BTF, section: str = ".BTF.ext") -> "BTFExt":
        """Parse ``.BTF.ext``; section names are looked up in ``btf``'s strings."""
        if len(data) < _EXT_HEADER.size:
            raise BTFError(f"truncated header: {len(data)} bytes, it needs {_EXT_HEADER.size}",
                           section, 0)
        magic, version, _, hdr_len, func_off, func_len, line_off, line_len = \
            _EXT_HEADER.unpack_from(data)
        if magic != BTF_MAGIC or version != 1:
            raise BTFError(f"bad magic {magic:#06x} or version {version}", section, 0)
        if hdr_len < _EXT_HEADER.size or hdr_len > len(data):
            raise BTFError(f"bad header length {hdr_len}", section, 4)
        blocks = [(func_off, func_len, 8, FuncInfo), (line_off, line_len, 16, LineInfo)]
        if hdr_len >= _EXT_HEADER.size + _EXT_CORE.size:
            core_off, core_len = _EXT_CORE.unpack_from(data, _EXT_HEADER.size)
            blocks.append((core_off, core_len, 16, CoreReloRecord))
        parsed = [_ext_records(data, hdr_len + off, length, size, record, btf, section)
                  for off, length, size, record in blocks]
        return cls(*parsed)


def _ext_records(data, start, length, min_size, record, btf, section):
    """``{ELF section: [record]}`` from one ``btf_ext_info`` block: a record size, then for
    each ELF section its name, its record count and the records (only the first ``min_size``
    bytes of each are known; a newer, longer record keeps its known prefix)."""
    if length == 0:
        return {}
    end = start + length
    if end > len(data) or length < 4:
        raise BTFError(f"info block of {length} bytes at {start} runs past the end "
                       f"({len(data)} bytes)", section, start)
    rec_size = int.from_bytes(data[start:start + 4], "little")
    if rec_size < min_size or rec_size % 4:
        raise BTFError(f"record size {rec_size} is invalid (at least {min_size}, "
                       "multiple of 4)", section, start)
    fields = struct.Struct(f"<{min_size // 4}I")
    records, position = {}, start + 4
    while position < end:
        if position + _EXT_SECTION.size > end:
            raise BTFError("truncated section header in an info block", section, position)
        name_off, count = _EXT_SECTION.unpack_from(data, position)
        name = btf.string(name_off)
        position += _EXT_SECTION.size
        if position + count * rec_size > end:
            raise BTFError(f"{count} records for section {name!r} run past the end "
                           "of the block", section, position)
        if name in records:
            raise BTFError(f"section {name!r} appears twice in one info block", section,
                           position - _EXT_SECTION.size)
        records[name] = [record(*fields.unpack_from(data, p))
                         for p in range(position, position + count * rec_size, rec_size)]
        position += count * rec_size
    return records
