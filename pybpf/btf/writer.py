"""Writing BTF: types added one at a time, names in one deduplicated string table.

This is how pybpf makes types no compiler wrote: the local types of a DSL program's CO-RE
field references (:mod:`pybpf.asm.core`), and hand-made BTF in tests. Each ``add_*`` method
returns the new type's id; a struct may be declared first and given its members later, so
that types can refer to each other (``struct task_struct *real_parent`` inside
``struct task_struct``). :meth:`BTFWriter.btf` returns the result as a checked :class:`BTF`.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Sequence, Tuple

from .types import BTF, BTF_INT_BOOL, BTF_INT_SIGNED, BTF_MAGIC, HEADER, Kind

_WORD = struct.Struct("<I")


class BTFWriter:
    """Builds one BTF blob: ids from 1 (0 is void), or with ``base`` split BTF continuing
    it (ids from ``len(base)``, string offsets past the base's table)."""

    def __init__(self, base: Optional[BTF] = None):
        self.base = base
        self.first_id = len(base) if base is not None else 1
        self._records: List[List[int]] = []  # each type's words: name_off, info, size/type, tail
        self._strings = bytearray(b"\0")
        self._offsets: Dict[str, int] = {"": 0}

    def string(self, text: str) -> int:
        """The offset of ``text`` in the string table (added once)."""
        offset = self._offsets.get(text)
        if offset is None:
            offset = self._offsets[text] = len(self._strings)
            self._strings += text.encode() + b"\0"
        return offset

    def add(self, kind: Kind, name: str = "", size_type: int = 0, vlen: int = 0,
            kind_flag: int = 0, tail: Sequence[int] = ()) -> int:
        """A type record of any kind, raw: ``tail`` is the words after ``size_type``."""
        info = (kind_flag & 1) << 31 | (kind & 0x1F) << 24 | vlen
        self._records.append([self.string(name), info, size_type, *tail])
        return self.first_id + len(self._records) - 1

    def add_int(self, name: str, size: int, signed: bool = False, boolean: bool = False) -> int:
        """An INT of ``size`` bytes (encoding SIGNED, BOOL or none, as clang writes them)."""
        encoding = BTF_INT_SIGNED if signed else BTF_INT_BOOL if boolean else 0
        return self.add(Kind.INT, name, size, tail=(encoding << 24 | size * 8,))

    def add_ptr(self, target: int) -> int:
        return self.add(Kind.PTR, size_type=target)

    def add_typedef(self, name: str, target: int) -> int:
        return self.add(Kind.TYPEDEF, name, target)

    def add_qualifier(self, kind: Kind, target: int) -> int:
        """CONST, VOLATILE, RESTRICT (or TYPE_TAG) of ``target``."""
        return self.add(kind, size_type=target)

    def add_array(self, elem: int, nelems: int, index_type: int = 0) -> int:
        return self.add(Kind.ARRAY, tail=(elem, index_type, nelems))

    def add_fwd(self, name: str, union: bool = False) -> int:
        return self.add(Kind.FWD, name, kind_flag=int(union))

    def add_struct(self, name: str, size: int = 0, members=(), union: bool = False) -> int:
        """A STRUCT (or UNION); ``members`` are ``(name, type, bit_offset, bitfield_size)``,
        or given later with :meth:`set_members`."""
        type_id = self.add(Kind.UNION if union else Kind.STRUCT, name, size)
        if members:
            self.set_members(type_id, size, members)
        return type_id

    def set_members(self, type_id: int, size: int, members) -> None:
        """Give a struct or union its size and members (bitfields set the kind_flag)."""
        record = self._records[type_id - self.first_id]
        bitfields = any(m[3] for m in members)
        tail = []
        for name, member_type, bit_offset, bitfield_size in members:
            offset = bitfield_size << 24 | bit_offset if bitfields else bit_offset
            tail += [self.string(name), member_type, offset]
        kind = record[1] >> 24 & 0x1F
        record[1] = int(bitfields) << 31 | kind << 24 | len(members)
        record[2:] = [size, *tail]

    def add_enum(self, name: str, size: int, values: Sequence[Tuple[str, int]],
                 signed: bool = False) -> int:
        """An ENUM (size up to 4) or ENUM64 (size 8) of ``(name, value)`` pairs."""
        tail = []
        if size == 8:
            for value_name, value in values:
                value &= 0xFFFFFFFFFFFFFFFF
                tail += [self.string(value_name), value & 0xFFFFFFFF, value >> 32]
            return self.add(Kind.ENUM64, name, size, len(values), int(signed), tail)
        for value_name, value in values:
            tail += [self.string(value_name), value & 0xFFFFFFFF]
        return self.add(Kind.ENUM, name, size, len(values), int(signed), tail)

    def add_func_proto(self, ret: int, params: Sequence[Tuple[str, int]] = ()) -> int:
        tail = []
        for param_name, param_type in params:
            tail += [self.string(param_name), param_type]
        return self.add(Kind.FUNC_PROTO, "", ret, len(params), tail=tail)

    def add_func(self, name: str, proto: int, linkage: int = 1) -> int:
        return self.add(Kind.FUNC, name, proto, vlen=linkage)

    def kind(self, type_id: int) -> Kind:
        """The kind of a type written so far (UNKN for void)."""
        return Kind(self._records[type_id - self.first_id][1] >> 24 & 0x1F) if type_id \
            else Kind.UNKN

    def name(self, type_id: int) -> str:
        """The name of a type written so far."""
        offset = self._records[type_id - self.first_id][0]
        return self._strings[offset:self._strings.index(b"\0", offset)].decode()

    def forward(self, type_id: int) -> None:
        """Turn a struct or union that never got members into a forward declaration (FWD),
        as C leaves a struct that is only pointed to."""
        record = self._records[type_id - self.first_id]
        union = record[1] >> 24 & 0x1F == Kind.UNION
        record[1:] = [int(union) << 31 | Kind.FWD << 24, 0]

    def __len__(self):
        """The number of type ids, void and the base's included."""
        return self.first_id + len(self._records)

    def encode(self) -> bytes:
        """The raw blob (split BTF has no leading NUL string: its first string is at the
        offset just past the base's table)."""
        base = self.base
        shift = len(base.strings) if base is not None else 0
        body = bytearray()
        for record in self._records:
            words = list(record)
            if shift:
                words = self._shift_names(words, shift)
            for word in words:
                body += _WORD.pack(word & 0xFFFFFFFF)
        strings = bytes(self._strings[1:] if base is not None else self._strings)
        header = HEADER.pack(BTF_MAGIC, 1, 0, HEADER.size, 0, len(body), len(body), len(strings))
        return header + bytes(body) + strings

    @staticmethod
    def _shift_names(words, shift):
        """A record's string offsets moved past a base table (the split blob drops our
        leading NUL, so offset ``o`` becomes ``shift + o - 1``; 0 stays "")."""
        def moved(offset):
            return shift + offset - 1 if offset else 0
        kind, vlen = words[1] >> 24 & 0x1F, words[1] & 0xFFFF
        words[0] = moved(words[0])
        step = {Kind.STRUCT: 3, Kind.UNION: 3, Kind.ENUM: 2, Kind.ENUM64: 3,
                Kind.FUNC_PROTO: 2}.get(kind)
        if step:
            for i in range(3, 3 + step * vlen, step):
                words[i] = moved(words[i])
        return words

    def btf(self, section: str = ".BTF") -> BTF:
        """The types written so far, parsed and checked."""
        return BTF.parse(self.encode(), section=section, base=self.base)
