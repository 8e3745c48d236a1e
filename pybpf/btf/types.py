"""The ``.BTF`` type graph: a header, a list of type records, a string table.

Type ids are positions in the list, counted from 1 (id 0 is ``void``). Each record is a
12-byte ``struct btf_type`` (name offset; ``info`` = kind << 24 | vlen, kind_flag in bit 31;
a size or a type id) followed by a tail that depends on its kind: struct members, enum values,
array bounds, function parameters... (the kernel's ``include/uapi/linux/btf.h``).

Records differ in size, so finding type *n* means walking the n-1 before it. :class:`BTF`
walks once, keeping where each record starts, and decodes a type only when it is asked for.
Every record is a whole number of 32-bit words, so the type section is kept as an ``array`` of
words: the walk reads them without unpacking, and the loader's fix-ups write them in place.
Finding types by name needs no per-type Python code either: the walk, the name lookups and
what they search are C loops (``map``, ``bytes.find``) over packed arrays, so the kernel's
127,000 types are ready for lookups in a few tens of milliseconds.

*Split* BTF (a kernel module's, ``/sys/kernel/btf/<module>``) continues another BTF, its *base*
(vmlinux): its first type id is the base's count, and string offsets past the end of the base's
string table are its own.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from enum import IntEnum
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import BTFError

BTF_MAGIC = 0xEB9F
MAX_TYPES = 0xFFFFF  # the kernel's BTF_MAX_TYPE
MAX_RESOLVE_DEPTH = 32  # the kernel's: typedefs, qualifiers and arrays chained to a sized type
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off and len
_SIGNED = struct.Struct("n")  # a C ssize_t: the size of hash(), packed by _pack_signed
_CHUNK = 2048  # bytes of string table per count of the string index (see _string_index)
BTF_INT_SIGNED = 1 << 0
BTF_INT_CHAR = 1 << 1
BTF_INT_BOOL = 1 << 2


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


# Kinds whose third word is a size; the others (but FWD) hold a type id there.
SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.DATASEC, Kind.FLOAT,
                   Kind.ENUM64})
# Kinds that only name or qualify another type; looking through them finds the type itself.
QUALIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
COMPOSITE = frozenset({Kind.STRUCT, Kind.UNION})
ENUMS = frozenset({Kind.ENUM, Kind.ENUM64})
_REFERENCING = QUALIFIERS | {Kind.PTR, Kind.FUNC, Kind.FUNC_PROTO, Kind.VAR, Kind.DECL_TAG}
_TAIL_WORDS = {Kind.INT: 1, Kind.ARRAY: 3, Kind.VAR: 1, Kind.DECL_TAG: 1}
_ITEM_WORDS = {Kind.STRUCT: 3, Kind.UNION: 3, Kind.ENUM: 2, Kind.FUNC_PROTO: 2,
               Kind.DATASEC: 3, Kind.ENUM64: 3}


class IntInfo(NamedTuple):
    """An INT's encoding (``BTF_INT_SIGNED``, ``BTF_INT_CHAR``, ``BTF_INT_BOOL`` bits), bit
    offset (always 0 from compilers) and width in bits."""

    encoding: int
    offset: int
    bits: int


class ArrayInfo(NamedTuple):
    """An ARRAY's element type, index type and element count."""

    type: int
    index_type: int
    nelems: int


class Member(NamedTuple):
    """A STRUCT or UNION member: offset in bits; ``bitfield_size`` is 0 unless a bitfield."""

    name: str
    type: int
    bit_offset: int
    bitfield_size: int


class Param(NamedTuple):
    """A FUNC_PROTO parameter (``name`` is empty in prototypes of pointers to functions)."""

    name: str
    type: int


class Enumerator(NamedTuple):
    """An ENUM or ENUM64 value, signed when the enum's kind_flag says so."""

    name: str
    value: int


class VarSecinfo(NamedTuple):
    """A DATASEC entry: the VAR (or FUNC) type, its offset and size in the section."""

    type: int
    offset: int
    size: int


class Type:
    """One decoded type. Every type has ``id``, ``kind``, ``name`` ("" if anonymous),
    ``kind_flag`` and ``vlen``; the rest depends on the kind:

    - ``size``: INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC (bytes);
    - ``type``: the type referred to by PTR, TYPEDEF, the qualifiers, FUNC (its FUNC_PROTO),
      FUNC_PROTO (the return type), VAR, DECL_TAG;
    - ``int`` (:class:`IntInfo`), ``array`` (:class:`ArrayInfo`), ``members`` (STRUCT,
      UNION), ``params`` (FUNC_PROTO), ``enumerators`` (ENUM, ENUM64), ``vars`` (DATASEC),
      ``linkage`` (VAR, FUNC), ``component_idx`` (DECL_TAG: -1 for the type itself).
    """

    __slots__ = ("id", "kind", "name", "kind_flag", "vlen", "size", "type", "int", "array",
                 "members", "params", "enumerators", "vars", "linkage", "component_idx")

    def __init__(self, type_id, kind, name, kind_flag, vlen):
        self.id, self.kind, self.name = type_id, kind, name
        self.kind_flag, self.vlen = kind_flag, vlen
        self.size = self.type = self.linkage = self.component_idx = 0
        self.int = self.array = None
        self.members = self.params = self.enumerators = self.vars = ()

    def __repr__(self):
        return f"<Type [{self.id}] {self.kind.name} {self.name or '(anon)'!r}>"


class BTF:
    """The types and strings of one ``.BTF`` blob; ``base`` is the BTF a split BTF continues.

    Build it with :meth:`parse`. ``len(btf)`` counts the type ids (void and the base's types
    included); :meth:`type` decodes one.
    """

    def __init__(self, words: array, starts: List[int], strings: bytes, section: str,
                 types_at: int, base: Optional[BTF] = None):
        self.section = section
        self.strings = strings
        self.base = base
        self.first_id = len(base) if base is not None else 1
        self._words = words  # the type section, one 32-bit word each
        self._starts = starts  # the word where each type's record starts
        self._names = None  # see _name_table
        self._found: Dict[str, List[int]] = {}  # find_all's answers, by name
        self._index = None  # see _string_index
        self._containing: Dict[bytes, List[int]] = {}
        self._types_at = types_at  # byte offset of the type section in the blob, for messages
        self._strings_base = len(base.strings) + base._strings_base if base is not None else 0
        self._decoded: Dict[int, Type] = {}
        self._resolved: Dict[int, Tuple[int, int]] = {}  # id -> (size, chain depth)

    # -- parsing --------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes, section: str = ".BTF", base: Optional[BTF] = None,
              check: bool = True) -> BTF:
        """Read a BTF blob; malformed input raises :class:`BTFError` (section + offset).

        With ``check`` every type is decoded and checked (string offsets, type ids, sizes,
        loops and chains longer than the kernel allows), as the kernel's ``BPF_BTF_LOAD``
        would; without it (the kernel's own BTF) a type is checked when it is decoded.
        """
        hdr_len, type_off, type_len, str_off, str_len = _check_header(data, section, base)
        types_at, strings_at = hdr_len + type_off, hdr_len + str_off
        words = array("I")
        words.frombytes(memoryview(data)[types_at:types_at + type_len])
        if sys.byteorder == "big":
            words.byteswap()
        strings = bytes(data[strings_at:strings_at + str_len])
        starts = _walk(words, section, types_at, len(base) if base is not None else 1)
        btf = cls(words, starts, strings, section, types_at, base)
        if check:
            btf.check()
        return btf

    def check(self):
        """Decode and check every type of this blob (not of its base)."""
        for type_id in range(self.first_id, len(self)):
            t = self.type(type_id)
            for ref in _references(t):
                if not 0 <= ref < len(self):
                    self._fail(f"refers to type id {ref}, but there are only "
                               f"{len(self) - 1} types", type_id)
        for type_id in range(self.first_id, len(self)):
            self.size_of(type_id)

    def _fail(self, message, type_id):
        raise BTFError(f"type [{type_id}] {message}", self.section, self._offset_of(type_id))

    def _offset_of(self, type_id):
        """The byte offset of a type's record in its blob (None for void and base types)."""
        if type_id < self.first_id:
            return None
        return self._types_at + 4 * self._starts[type_id - self.first_id]

    # -- strings and names ----------------------------------------------------------------

    def __len__(self):
        """The number of type ids: void, the base's types and this blob's."""
        return self.first_id + len(self._starts)

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` of the string table (the base's below its
        end); BTFError when the offset is past the table."""
        if offset < self._strings_base:
            return self.base.string(offset)
        local = offset - self._strings_base
        end = self.strings.find(b"\0", local)
        if end < 0:
            raise BTFError(f"string offset {offset} is past the string table "
                           f"({self._strings_base + len(self.strings)} bytes)", self.section)
        return self.strings[local:end].decode("utf-8", "replace")

    def _string_of(self, offset, type_id):
        """:meth:`string`, failing with the type that refers to it."""
        try:
            return self.string(offset)
        except BTFError as exc:
            self._fail(str(exc).split(": ", 1)[-1], type_id)

    def name(self, type_id: int) -> str:
        """The name of a type ("" for anonymous types and void)."""
        return self.type(type_id).name if type_id else ""

    def name_offset(self, type_id: int) -> int:
        """The string-table offset of a type's name (0 for anonymous types and void)."""
        if type_id < self.first_id:
            return self.base.name_offset(type_id) if type_id else 0
        return self._words[self._start(type_id)]

    def kind(self, type_id: int) -> Kind:
        """The kind of a type (UNKN for void), read without decoding the type."""
        if type_id < self.first_id:
            return self.base.kind(type_id) if type_id else Kind.UNKN
        return Kind(self._words[self._start(type_id) + 1] >> 24 & 0x1F)

    def _start(self, type_id):
        index = type_id - self.first_id
        if not 0 <= index < len(self._starts):
            raise BTFError(f"type id {type_id} is out of range (there are {len(self) - 1} "
                           "types)", self.section)
        return self._starts[index]

    def find_all(self, name: str, kinds=None) -> List[int]:
        """The ids of every type called ``name`` (of one of ``kinds`` when given), in order.

        The name's string offsets come from :meth:`string_offsets`, then the types with each
        offset from a C-speed search of the packed name offsets. Answers are remembered.
        """
        found = self._found.get(name)
        if found is None:
            found = self.base.find_all(name) if self.base is not None else []
            if name:
                for offset in self.string_offsets(name.encode()):
                    found.extend(self._ids_named(offset))
            found.sort()
            self._found[name] = found
        if kinds is not None:
            return [type_id for type_id in found if self.kind(type_id) in kinds]
        return list(found)

    def find(self, name: str, kind: Optional[Kind] = None) -> Optional[int]:
        """The id of the first type called ``name`` (of ``kind`` when given), or None."""
        found = self.find_all(name, None if kind is None else (kind,))
        return found[0] if found else None

    def string_offsets(self, text: bytes) -> List[int]:
        """Every offset (the base's included) at which a type name equal to ``text`` may
        start: the strings equal to it, from the string index; or, when some type's name
        starts inside a string (no compiler writes that), every place ``text`` ends one."""
        if not self._name_table()[1]:
            return self._occurrences(text + b"\0")
        offsets = self.base.string_offsets(text) if self.base is not None else []
        hashes, counts = self._string_index()
        strings, whole = self.strings, text + b"\0"
        for position in _every(hashes, _SIGNED.pack(hash(text))[:4], 4):
            start = self._string_start(position // 4, counts)
            if strings.startswith(whole, start):  # not just a string with the same hash
                offsets.append(self._strings_base + start)
        return offsets

    def _string_index(self):
        """``(hashes, counts)``, built on first use: the ``hash()`` of each string of the
        table, packed in table order (a lookup finds its text's hash in them at C speed, and
        its position is the string's rank), and the number of strings that end before each
        :data:`_CHUNK` bytes of the table (which turns a rank into an offset by searching one
        chunk). Two C loops: one split of the table, one map of hash over the parts."""
        if self._index is None:
            strings = self.strings
            parts = strings.split(b"\0")
            hashes = _pack_signed(map(hash, parts), len(parts))
            hashes = memoryview(hashes).cast("I")[::_SIGNED.size // 4].tobytes()  # 4 bytes each
            bounds = range(0, len(strings), _CHUNK)
            ends = map(strings.count, repeat(b"\0"), bounds, map(add, bounds, repeat(_CHUNK)))
            self._index = (hashes, array("I", accumulate(ends, initial=0)))
        return self._index

    def _string_start(self, rank, counts):
        """The offset in this blob's table of its string number ``rank`` (from 0): just past
        the rank-th NUL, found in the chunk :meth:`_string_index` counted it in."""
        if rank == 0:
            return 0
        chunk = bisect_left(counts, rank) - 1  # counts[chunk] < rank <= counts[chunk + 1]
        position = chunk * _CHUNK - 1
        for _ in range(rank - counts[chunk]):
            position = self.strings.find(b"\0", position + 1)
        return position + 1

    def _name_table(self):
        """``(named, whole)``, built on first use. ``named``: the low three bytes of each
        type's name offset (of this blob's types, not the base's), little-endian, for C-speed
        searches; anonymous types are FE FE FE (offsets above 2**24, which the kernel does
        not accept, are told apart when checked): the zero bytes that the many anonymous
        types share with low offsets would keep bytes.find from skipping ahead. ``whole``:
        whether every name starts a string (follows a NUL in the string tables, the base's
        included), as the string index needs."""
        if self._names is None:
            names = _gather(self._words, self._starts)
            packed = array("I", names)
            if sys.byteorder == "big":
                packed.byteswap()
            raw = bytearray(packed.tobytes())
            raw[3::4] = b"\xff" * len(packed)  # a byte no offset has, so that the replace
            raw = raw.replace(b"\0\0\0\xff", b"\xfe\xfe\xfe\xff")  # matches whole words
            named = bytearray(3 * len(packed))
            for byte in range(3):
                named[byte::3] = raw[byte::4]
            preceding = b"\0" + self._all_strings()  # preceding[o]: the byte before offset o
            try:
                whole = not any(_gather(preceding, names))  # (anonymous: offset 0, a NUL too)
            except IndexError:  # a name past the tables: found by no lookup, so no index
                whole = False
            self._names = (bytes(named), whole)
        return self._names

    def _all_strings(self):
        """The string tables as one (the base's, then this blob's): what offsets index."""
        return self.strings if self.base is None else self.base._all_strings() + self.strings

    def _occurrences(self, needle):
        """Every offset (the base's included) at which ``needle`` occurs in the tables."""
        offsets = self.base._occurrences(needle) if self.base is not None else []
        offsets.extend(self._strings_base + p for p in _every(self.strings, needle))
        return offsets

    def strings_containing(self, fragment: bytes) -> List[int]:
        """The offsets (the base's included) of every string containing ``fragment``, by
        one search of the table per blob (remembered)."""
        offsets = self.base.strings_containing(fragment) if self.base is not None else []
        found = self._containing.get(fragment)
        if found is None:
            strings = self.strings
            found = sorted({strings.rfind(b"\0", 0, p) + 1 for p in _every(strings, fragment)})
            self._containing[fragment] = found
        return offsets + [self._strings_base + o for o in found]

    def _ids_named(self, offset):
        """The ids of this blob's types (not the base's) whose name is at ``offset``, by a
        C-speed search of the packed name offsets."""
        named, _ = self._name_table()
        needle = (offset & 0xFFFFFF).to_bytes(3, "little")
        ids = (self.first_id + p // 3 for p in _every(named, needle, 3))
        return [i for i in ids if self.name_offset(i) == offset]  # not one cut to 3 bytes

    # -- decoding -------------------------------------------------------------------------

    def type(self, type_id: int) -> Type:
        """The decoded type ``type_id`` (cached); BTFError when out of range or malformed."""
        t = self._decoded.get(type_id)
        if t is not None:
            return t
        if type_id < self.first_id:
            if type_id == 0:
                return _VOID
            return self.base.type(type_id)
        t = self._decode(type_id)
        self._decoded[type_id] = t
        return t

    def _decode(self, type_id):
        w = self._words
        start = self._start(type_id)
        name_off, info, size_type = w[start], w[start + 1], w[start + 2]
        kind, vlen = Kind(info >> 24 & 0x1F), info & 0xFFFF
        t = Type(type_id, kind, self._string_of(name_off, type_id), info >> 31, vlen)
        tail = start + 3
        if kind in SIZED:
            t.size = size_type
        elif kind in _REFERENCING:
            t.type = size_type
        if kind == Kind.INT:
            t.int = IntInfo(w[tail] >> 24 & 0x0F, w[tail] >> 16 & 0xFF, w[tail] & 0xFF)
        elif kind == Kind.ARRAY:
            t.array = ArrayInfo(w[tail], w[tail + 1], w[tail + 2])
        elif kind in COMPOSITE:
            t.members = tuple(self._members(tail, vlen, t.kind_flag, type_id))
        elif kind in ENUMS:
            t.enumerators = tuple(self._enumerators(tail, t, type_id))
        elif kind == Kind.FUNC_PROTO:
            t.params = tuple(Param(self._string_of(w[i], type_id), w[i + 1])
                             for i in range(tail, tail + 2 * vlen, 2))
        elif kind == Kind.DATASEC:
            t.vars = tuple(VarSecinfo(w[i], w[i + 1], w[i + 2])
                           for i in range(tail, tail + 3 * vlen, 3))
        elif kind == Kind.VAR:
            t.linkage = w[tail]
        elif kind == Kind.FUNC:
            t.linkage = vlen
        elif kind == Kind.DECL_TAG:
            t.component_idx = w[tail] - (1 << 32) if w[tail] >> 31 else w[tail]
        return t

    def _members(self, tail, vlen, kind_flag, type_id):
        w = self._words
        for i in range(tail, tail + 3 * vlen, 3):
            offset = w[i + 2]
            if kind_flag:
                yield Member(self._string_of(w[i], type_id), w[i + 1], offset & 0xFFFFFF,
                             offset >> 24)
            else:
                yield Member(self._string_of(w[i], type_id), w[i + 1], offset, 0)

    def _enumerators(self, tail, t, type_id):
        w = self._words
        if t.kind == Kind.ENUM:
            for i in range(tail, tail + 2 * t.vlen, 2):
                value = w[i + 1]
                if t.kind_flag and value >> 31:
                    value -= 1 << 32
                yield Enumerator(self._string_of(w[i], type_id), value)
        else:
            for i in range(tail, tail + 3 * t.vlen, 3):
                value = w[i + 2] << 32 | w[i + 1]
                if t.kind_flag and value >> 63:
                    value -= 1 << 64
                yield Enumerator(self._string_of(w[i], type_id), value)

    # -- queries --------------------------------------------------------------------------

    def skip_qualifiers(self, type_id: int) -> int:
        """The id behind typedefs, const, volatile, restrict and type tags (at most
        :data:`MAX_RESOLVE_DEPTH` of them; a loop or a longer chain raises BTFError)."""
        first = type_id
        for _ in range(MAX_RESOLVE_DEPTH + 1):
            if self.kind(type_id) not in QUALIFIERS:
                return type_id
            type_id = self.type(type_id).type
        self._fail(f"is a chain of more than {MAX_RESOLVE_DEPTH} typedefs and qualifiers "
                   "(or part of a loop)", first)

    def size_of(self, type_id: int) -> int:
        """The size in bytes of a type, as the kernel computes it (0 for void, functions and
        forward declarations); a loop, or a chain of more than :data:`MAX_RESOLVE_DEPTH`
        typedefs, qualifiers and arrays, raises BTFError. Sizes are remembered, so checking
        every type of a blob costs one step per type, however the chains fan out."""
        resolved = self._resolved.get(type_id)
        if resolved is not None:
            return resolved[0]
        chain, seen = [], set()  # the ids followed from type_id, none resolved yet
        while type_id not in self._resolved:
            if type_id in seen:
                self._fail("is part of a type loop (through typedefs, qualifiers or arrays)",
                           type_id)
            if len(chain) == MAX_RESOLVE_DEPTH + 1:
                break
            chain.append(type_id)
            seen.add(type_id)
            step = self._size_step(type_id)
            if isinstance(step, int):
                type_id = step
                continue
            self._resolved[chain.pop()] = step
            break
        size, depth = self._resolved.get(type_id, (0, MAX_RESOLVE_DEPTH))
        for link in reversed(chain):
            depth += 1
            if depth > MAX_RESOLVE_DEPTH:
                self._fail(f"starts a chain of more than {MAX_RESOLVE_DEPTH} typedefs, "
                           "qualifiers and arrays (the kernel's limit)", chain[0])
            if self.kind(link) == Kind.ARRAY:
                size *= self.type(link).array.nelems
                if size > 0xFFFFFFFF:
                    self._fail("is an array of more than 4 GiB", link)
            self._resolved[link] = (size, depth)
        return size

    def _size_step(self, type_id):
        """One step of :meth:`size_of`: ``(size, 0)`` for a type with a size of its own, else
        the id of the type whose size it takes."""
        if type_id == 0:
            return (0, 0)
        t = self.type(type_id)
        if t.kind in SIZED:
            return (t.size, 0)
        if t.kind == Kind.PTR:
            return (8, 0)
        if t.kind == Kind.ARRAY:
            return t.array.type
        if t.kind in QUALIFIERS or t.kind == Kind.VAR:
            return t.type
        return (0, 0)

    def array_nelems(self, type_id: int) -> Optional[int]:
        """``nelems`` of an ARRAY type (after qualifiers), else None."""
        t = self.type(self.skip_qualifiers(type_id))
        return t.array.nelems if t.kind == Kind.ARRAY else None

    def members(self, type_id: int) -> Tuple[Member, ...]:
        """The members of a STRUCT or UNION."""
        return self.type(type_id).members

    def datasec_vars(self, type_id: int):
        """``(var name, var type id, offset, size)`` of a DATASEC's variables."""
        for info in self.type(type_id).vars:
            yield self.name(info.type), info.type, info.offset, info.size

    def ids(self, kinds=None):
        """Every type id of this blob (not the base's), of ``kinds`` when given."""
        if kinds is None:
            return range(self.first_id, len(self))
        return [i for i in range(self.first_id, len(self)) if self.kind(i) in kinds]

    # -- preparing for the kernel ---------------------------------------------------------

    def fixup_datasecs(self, section_sizes: Dict[str, int], symbols: Dict[tuple, int],
                       skip=()):
        """Set DATASEC sizes and variable offsets from the ELF (as libbpf does), in place.

        ``section_sizes`` maps ELF section names to sizes, ``symbols`` maps
        ``(section name, variable name)`` to the symbol's value (its offset in the section).
        The variables are then sorted by offset: the kernel wants them in order. DATASECs
        named in ``skip`` (``.kconfig``, ``.ksyms``: externs, no ELF section) are left to
        the loader's extern step.
        """
        for type_id in self.ids((Kind.DATASEC,)):
            section = self.name(type_id)
            if section in skip:
                continue
            if section not in section_sizes:
                self._fail(f"DATASEC {section!r} names no ELF section", type_id)
            size = section_sizes[section]
            entries = []
            for var_type, _, var_size in self.type(type_id).vars:
                var = self.name(var_type)
                if (section, var) not in symbols:
                    self._fail(f"variable {var!r} of DATASEC {section!r} has no ELF symbol",
                               type_id)
                entries.append((var_type, symbols[(section, var)], var_size))
            self.set_datasec(type_id, size, entries)

    # -- rewriting types in place (the loader's fix-ups) ------------------------------------

    def set_datasec(self, type_id: int, size: int, entries) -> None:
        """Give DATASEC ``type_id`` its ``size`` and its ``(var type, offset, size)``
        entries (as many as it has), sorted by offset as the kernel wants them."""
        entries = sorted(entries, key=itemgetter(1))
        if max([size] + [offset for _, offset, _ in entries]) > 0xFFFFFFFF:
            self._fail(f"DATASEC {self.name(type_id)!r} is too big for BTF's 32-bit sizes",
                       type_id)
        start = self._start(type_id)
        self._words[start + 2] = size
        for i, (var_type, offset, var_size) in enumerate(entries):
            self._words[start + 3 + 3 * i:start + 6 + 3 * i] = array(
                "I", (var_type, offset, var_size))
        self._changed(type_id)

    def set_var(self, type_id: int, linkage: int, target: Optional[int] = None) -> None:
        """Set a VAR's linkage (0 static, 1 global, 2 extern) and, if given, its type."""
        start = self._start(type_id)
        self._words[start + 3] = linkage
        if target is not None:
            self._words[start + 2] = target
        self._changed(type_id)

    def set_func_linkage(self, type_id: int, linkage: int) -> None:
        """Set a FUNC's linkage (0 static, 1 global, 2 extern: kept in its vlen bits)."""
        start = self._start(type_id)
        self._words[start + 1] = self._words[start + 1] & ~0xFFFF | linkage
        self._changed(type_id)

    def name_params(self, proto_id: int, name_offset: int) -> None:
        """Give the unnamed typed parameters of FUNC_PROTO ``proto_id`` the name at string
        offset ``name_offset`` (the kernel wants every parameter of a FUNC named)."""
        start = self._start(proto_id)
        for i in range(start + 3, start + 3 + 2 * self.type(proto_id).vlen, 2):
            if self._words[i + 1] and not self._words[i]:
                self._words[i] = name_offset
        self._changed(proto_id)

    def add_var(self, name_offset: int, target: int, linkage: int) -> int:
        """Append a VAR (named by the string at ``name_offset``) of type ``target``; its id."""
        self._starts.append(len(self._words))
        self._words.extend((name_offset, Kind.VAR << 24, target, linkage))
        self._names, self._found = None, {}
        return len(self) - 1

    def _changed(self, type_id):
        """Forget what was decoded or resolved of a type rewritten in place."""
        self._decoded.pop(type_id, None)
        self._resolved.pop(type_id, None)

    def encode(self) -> bytes:
        """The raw ``.BTF`` bytes for ``BPF_BTF_LOAD`` (header, types, strings)."""
        words = self._words
        if sys.byteorder == "big":
            words = array("I", words)
            words.byteswap()
        types = words.tobytes()
        header = HEADER.pack(BTF_MAGIC, 1, 0, HEADER.size, 0, len(types), len(types),
                             len(self.strings))
        return header + types + self.strings


_VOID = Type(0, Kind.UNKN, "", 0, 0)


def _check_header(data, section, base):
    """``(hdr_len, type_off, type_len, str_off, str_len)`` of a BTF blob, checked."""
    if len(data) < HEADER.size:
        raise BTFError(f"truncated header: {len(data)} bytes, a BTF header needs {HEADER.size}",
                       section, 0)
    magic, version, _, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise BTFError(f"bad magic {magic:#06x} (expected {BTF_MAGIC:#06x}); "
                       "is this a big-endian object?", section, 0)
    if version != 1:
        raise BTFError(f"unsupported BTF version {version}", section, 2)
    if not HEADER.size <= hdr_len <= len(data):
        raise BTFError(f"header length {hdr_len} is invalid", section, 4)
    for name, off, length in (("type", type_off, type_len), ("string", str_off, str_len)):
        start = hdr_len + off
        if start + length > len(data):
            raise BTFError(f"{name} section ({length} bytes at {start}) runs past the end of "
                           f"the BTF ({len(data)} bytes)", section, start)
    if type_len % 4 or type_off % 4:
        raise BTFError(f"type section ({type_len} bytes at {type_off}) is not made of 32-bit "
                       "words", section, hdr_len + type_off)
    start = hdr_len + str_off
    if str_len and (data[start + str_len - 1] != 0 or (base is None and data[start] != 0)):
        raise BTFError("string table must start and end with a NUL byte", section,
                       hdr_len + str_off)
    return hdr_len, type_off, type_len, str_off, str_len


def _record_words(info):
    """The words a record with this ``info`` word takes: 3, its kind's fixed tail, and vlen
    items of its kind's size; _UnknownKind for a kind this BTF version does not have."""
    kind = info >> 24 & 0x1F
    if not Kind.INT <= kind <= Kind.ENUM64:
        raise _UnknownKind(kind)
    return 3 + _TAIL_WORDS.get(kind, 0) + _ITEM_WORDS.get(kind, 0) * (info & 0xFFFF)


class _UnknownKind(Exception):
    """A record of a kind this BTF version does not have (stops the walk)."""


def _walk(words, section, types_at, first_id):
    """The word index of each record of a type section (a list: the lookups and the
    gathers read it without making an int per entry): one pass, one step per record.

    The step of each distinct ``info`` word (a BTF has a few thousand) is computed the first
    time it is met, when the plain-dict lookup fails: a plain dict is what CPython's loop
    runs fastest. A record that starts on the last word has no info word: the IndexError
    ends the walk short of the end."""
    end = len(words)
    starts, position, steps = [], 0, {}
    append = starts.append
    try:
        while position < end:
            try:
                while position < end:
                    append(position)
                    position += steps[words[position + 1]]
            except KeyError as missing:
                starts.pop()  # appended before its step was known: appended again next
                steps[missing.args[0]] = _record_words(missing.args[0])
    except _UnknownKind as exc:
        raise BTFError(f"type [{first_id + len(starts)}] has an unknown kind {exc}",
                       section, types_at + 4 * position) from None
    except IndexError:
        pass
    if position != end:
        raise BTFError(f"type [{first_id + len(starts) - 1}] runs past the end of the type "
                       "section", section, types_at + 4 * starts[-1])
    if len(starts) + first_id - 1 > MAX_TYPES:
        raise BTFError(f"more than {MAX_TYPES} types", section, types_at)
    return starts


def _gather(words, positions):
    """``[words[p] for p in positions]`` at C speed (itemgetter returns a tuple for two or
    more positions)."""
    if len(positions) < 2:
        return [words[p] for p in positions]
    return itemgetter(*positions)(words)


def _pack_signed(values, count):
    """``count`` signed integers packed as C ``ssize_t`` (what ``hash()`` returns), native
    order: struct converts them faster than ``array("q")`` does."""
    return struct.pack(f"{count}n", *values)


def _every(haystack, needle, align=1):
    """Every position of ``needle`` in ``haystack`` that is a multiple of ``align``, found by
    bytes.find (C speed)."""
    position = haystack.find(needle)
    while position >= 0:
        if position % align == 0:
            yield position
        position = haystack.find(needle, position + 1)


def _references(t):
    """Every type id a decoded type refers to."""
    if t.kind in _REFERENCING:
        yield t.type
    if t.kind == Kind.ARRAY:
        yield t.array.type
        yield t.array.index_type
    for item in t.members + t.params + t.vars:
        yield item.type
