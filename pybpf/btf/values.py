"""Values described by BTF as ``construct`` types: how pybpf decodes and encodes the keys and
values of maps whose types are in an object's BTF.

The only use of ``construct`` in :mod:`pybpf.btf`: reading BTF itself needs ``struct`` only.
"""

from __future__ import annotations

from construct import (
    Adapter, Array, Bytes, BytesInteger, Float32l, Float64l, Padding, Pass, Struct,
)

from .types import BTF, BTF_INT_CHAR, BTF_INT_SIGNED, Kind, Member


def construct_for(btf: BTF, type_id: int):
    """A ``construct`` type that decodes and encodes values of a BTF type.

    Structs become Structs with their member names, arrays Arrays, ``char[]`` strings,
    integers and enums ints; what has no simple layout (bitfields, unions) stays Bytes.
    """
    return _Builder(btf).build(type_id, frozenset())


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
        t = btf.type(type_id)
        if t.kind == Kind.INT:
            return self._int(t, size)
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            return BytesInteger(size, signed=bool(t.kind_flag), swapped=True) if size else Pass
        if t.kind == Kind.PTR:
            return BytesInteger(8, swapped=True)
        if t.kind == Kind.FLOAT and size in (4, 8):
            return Float32l if size == 4 else Float64l
        if t.kind == Kind.ARRAY:
            return self._array(t.array, active | {type_id})
        if t.kind == Kind.STRUCT:
            return self._struct(t.members, size, active | {type_id})
        if t.kind == Kind.DATASEC:
            fields = [Member(name, btf.type(var).type if btf.kind(var) == Kind.VAR else var,
                             offset * 8, 0) for name, var, offset, _ in btf.datasec_vars(type_id)]
            return self._struct(fields, size, active | {type_id})
        return Bytes(size)

    @staticmethod
    def _int(t, size):
        if size == 0 or t.int.bits != size * 8 or t.int.offset:
            return Bytes(size)
        return BytesInteger(size, signed=bool(t.int.encoding & BTF_INT_SIGNED), swapped=True)

    def _array(self, array, active):
        btf = self.btf
        elem = btf.type(btf.skip_qualifiers(array.type))
        if elem.kind == Kind.INT and btf.size_of(elem.id) == 1 and (
                elem.int.encoding & BTF_INT_CHAR or elem.name == "char"):
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
