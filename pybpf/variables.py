"""Global variables: an object's ``.data``, ``.rodata`` and ``.bss`` variables, by name.

A C global is a byte range of a *data section* (``.data``: initialised, ``.bss``: zeroed,
``.rodata``: constant), and each data section becomes a one-element array map; the BTF
``DATASEC`` of the section says which variable lives where, with which type. Tools use them as
*knobs*: ``const volatile unsigned int targ_uid = -1;`` sits in ``.rodata``, user space sets
it before the load (libbpf's skeletons: ``skel->rodata->targ_uid = 1000``), and since the map
is frozen read-only before the programs load, the verifier knows the value and drops the code
it disables. ``.data``/``.bss`` variables stay writable by both sides after the load.

:class:`Variable` describes one variable and converts values of its BTF type: an ``int`` that
must fit its width and sign, a ``bool``, an enum (its value or an enumerator's name), a
``char[N]`` string, arrays (lists), floats, pointers (ints), and structs (dicts, through
:func:`pybpf.btf.values.construct_for`); raw ``bytes`` of the exact size fit any type. Text,
as ``pybpf load --set NAME=VALUE`` gives it, is parsed by the same type.
:class:`Variables` is the by-name mapping over some storage: a
:class:`~pybpf.spec.CollectionSpec`'s data before the load (:class:`SpecVariables`), the maps
themselves after it (:class:`pybpf.collection.LoadedVariables`).
"""

from __future__ import annotations

import struct
from collections.abc import MutableMapping
from dataclasses import dataclass

from .btf import BTF_INT_BOOL, BTF_INT_CHAR, BTF_INT_SIGNED, Kind
from .errors import BPFError, UsageError

_TRUE, _FALSE = ("1", "true", "yes", "y", "on"), ("0", "false", "no", "n", "off")
_QUALIFIERS = (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG)


@dataclass
class Variable:
    """One global variable: ``size`` bytes at ``offset`` of data map ``map_name`` (ELF
    ``section``), of BTF type ``type_id`` in ``btf``. ``linkage`` is the VAR's (0 static,
    1 global)."""

    name: str
    section: str
    map_name: str
    offset: int
    size: int
    type_id: int
    btf: object
    linkage: int = 1

    @property
    def codec(self) -> "_Codec":
        """The converter between Python values and this variable's bytes."""
        codec = self.__dict__.get("_codec")
        if codec is None:
            codec = self.__dict__["_codec"] = _codec_for(self.btf, self.type_id, self.size)
        return codec

    @property
    def type_name(self) -> str:
        """The variable's C type as declared, qualifiers aside (``uid_t``, ``char[16]``)."""
        return self.codec.name

    def encode(self, value) -> bytes:
        """``value`` as this variable's bytes; UsageError naming the variable if it does not
        fit its type."""
        try:
            return self.codec.encode(value)
        except _Misfit as exc:
            raise UsageError(f"variable {self.name!r} ({self.type_name}, {self.size} bytes in "
                             f"{self.section}): {exc}") from None

    def decode(self, raw: bytes):
        """This variable's bytes as a Python value."""
        return self.codec.decode(bytes(raw))

    def parse(self, text: str):
        """The value ``text`` means for this variable's type (``pybpf load --set``)."""
        try:
            return self.codec.parse(text)
        except _Misfit as exc:
            raise UsageError(f"variable {self.name!r} ({self.type_name}): cannot use "
                             f"{text!r}: {exc}") from None


class Variables(MutableMapping):
    """Global variables by name (``variables``: name -> :class:`Variable`), read and written
    in the data maps ``maps`` (by name: specs or loaded maps, see the subclasses)."""

    def __init__(self, maps, variables):
        self._maps = maps
        self._vars = variables

    def _map(self, var):
        """The map ``var`` lives in; UsageError if it is gone from ``maps``."""
        found = self._maps.get(var.map_name)
        if found is None:
            raise UsageError(f"variable {var.name!r}: its map {var.map_name!r} is not there "
                             f"any more")
        return found

    def info(self, name) -> Variable:
        """The :class:`Variable` called ``name``; UsageError listing the known ones."""
        var = self._vars.get(name) if isinstance(name, str) else None
        if var is None:
            known = ", ".join(sorted(self._vars)) or "none: the object has no global variables"
            raise UsageError(f"no global variable {name!r}; variables: {known}")
        return var

    def __getitem__(self, name):
        var = self.info(name)
        return var.decode(self._read(var))

    def __setitem__(self, name, value):
        var = self.info(name)
        self._write(var, var.encode(value))

    def set(self, name, value) -> None:
        """Set ``name`` from a Python value or from text parsed by its type (a char array
        takes text as it is)."""
        var = self.info(name)
        if isinstance(value, str) and not isinstance(var.codec, _Chars):
            value = var.parse(value)
        self._write(var, var.encode(value))

    def __delitem__(self, name):
        raise UsageError(f"global variable {name!r} cannot be deleted; assign it a value")

    def __iter__(self):
        return iter(self._vars)

    def __len__(self):
        return len(self._vars)

    def __repr__(self):
        return f"<{type(self).__name__} {sorted(self._vars)}>"

    def _read(self, var) -> bytes:
        raise NotImplementedError

    def _write(self, var, raw: bytes) -> None:
        raise NotImplementedError


class SpecVariables(Variables):
    """Variables read and set in the initial data of a spec's data maps (``MapSpec.data``),
    before the load."""

    def _data(self, var):
        spec = self._map(var)
        return spec, spec.data if spec.data is not None else bytes(spec.value_size)

    def _read(self, var):
        _, data = self._data(var)
        return data[var.offset:var.offset + var.size].ljust(var.size, b"\0")

    def _write(self, var, raw):
        spec, data = self._data(var)
        data = bytearray(data.ljust(var.offset + var.size, b"\0"))
        data[var.offset:var.offset + var.size] = raw
        spec.data = bytes(data)


# -- converting values of a BTF type ------------------------------------------------------

class _Misfit(Exception):
    """A value that does not fit a variable's type (reworded by :class:`Variable`)."""


class _Codec:
    """How values of one type become bytes: ``name`` says the type for messages."""

    name = ""
    size = 0

    def encode(self, value) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)) and not isinstance(self, _Chars):
            raw = bytes(value)
            if len(raw) != self.size:
                raise _Misfit(f"{len(raw)} bytes given, the type is {self.size}")
            return raw
        return self.pack(value)

    def pack(self, value) -> bytes:
        raise NotImplementedError

    def decode(self, raw: bytes):
        raise NotImplementedError

    def parse(self, text: str):
        raise _Misfit(f"{self.name} values cannot be given as text; set it from Python")


class _Int(_Codec):
    def __init__(self, name, size, signed):
        self.name, self.size, self.signed = name, size, signed
        self.low = -(1 << (size * 8 - 1)) if signed else 0
        self.high = (1 << (size * 8 - 1)) - 1 if signed else (1 << size * 8) - 1

    def pack(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Misfit(f"needs an int, not {type(value).__name__} {value!r}")
        if not self.low <= value <= self.high:
            raise _Misfit(f"{value} does not fit ({self.low}..{self.high})")
        return value.to_bytes(self.size, "little", signed=self.signed)

    def decode(self, raw):
        return int.from_bytes(raw, "little", signed=self.signed)

    def parse(self, text):
        try:
            return int(text.strip(), 0)
        except ValueError:
            raise _Misfit("not an integer (decimal, or 0x/0o/0b prefixed)") from None


class _Bool(_Codec):
    def __init__(self, name, size):
        self.name, self.size = name, size

    def pack(self, value):
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise _Misfit(f"needs True or False, not {value!r}")
        return int(value).to_bytes(self.size, "little")

    def decode(self, raw):
        return any(raw)

    def parse(self, text):
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Misfit(f"not a boolean ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


class _Enum(_Int):
    def __init__(self, name, size, signed, enumerators):
        super().__init__(name, size, signed)
        self.values = {e.name: e.value for e in enumerators}

    def pack(self, value):
        if isinstance(value, str):
            if value not in self.values:
                raise _Misfit(f"{self.name} has no enumerator {value!r} (enumerators: "
                              f"{', '.join(self.values)})")
            value = self.values[value]
        return super().pack(value)

    def parse(self, text):
        return text.strip() if text.strip() in self.values else super().parse(text)


class _Float(_Codec):
    def __init__(self, name, size):
        self.name, self.size = name, size
        self.format = "<f" if size == 4 else "<d"

    def pack(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Misfit(f"needs a number, not {value!r}")
        try:
            return struct.pack(self.format, value)
        except OverflowError:
            raise _Misfit(f"{value} does not fit a {self.size}-byte float") from None

    def decode(self, raw):
        return struct.unpack(self.format, raw)[0]

    def parse(self, text):
        try:
            return float(text)
        except ValueError:
            raise _Misfit("not a number") from None


class _Chars(_Codec):
    """``char[N]``: a str (UTF-8) or bytes of at most N bytes, NUL-padded."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def pack(self, value):
        data = value.encode() if isinstance(value, str) else value
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _Misfit(f"needs a str or bytes, not {type(value).__name__}")
        data = bytes(data)
        if len(data) > self.size:
            raise _Misfit(f"{len(data)} bytes do not fit in {self.size}")
        return data.ljust(self.size, b"\0")

    encode = pack

    def decode(self, raw):
        return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")

    def parse(self, text):
        return text


class _Array(_Codec):
    """Any other array: a list of at most N element values (the rest zero)."""

    def __init__(self, name, element, count):
        self.name, self.element, self.count = name, element, count
        self.size = element.size * count

    def pack(self, value):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise _Misfit(f"needs a list of up to {self.count} values, not {value!r}")
        items = list(value)
        if len(items) > self.count:
            raise _Misfit(f"{len(items)} values do not fit in {self.count}")
        try:
            packed = b"".join(self.element.encode(item) for item in items)
        except _Misfit as exc:
            raise _Misfit(f"an element: {exc}") from None
        return packed.ljust(self.size, b"\0")

    def decode(self, raw):
        step = self.element.size
        return [self.element.decode(raw[i:i + step]) for i in range(0, self.size, step)]

    def parse(self, text):
        return [self.element.parse(part) for part in text.split(",")] if text.strip() else []


class _Composite(_Codec):
    """Structs and unions: dicts built by construct (or raw bytes)."""

    def __init__(self, name, btf, type_id, size):
        self.name, self.btf, self.type_id, self.size = name, btf, type_id, size
        self._construct = None

    def _type(self):
        if self._construct is None:
            from .btf.values import construct_for

            self._construct = construct_for(self.btf, self.type_id)
        return self._construct

    def pack(self, value):
        import construct

        try:
            return self._type().build(value)
        except (construct.ConstructError, struct.error, TypeError, ValueError,
                KeyError) as exc:
            raise _Misfit(f"cannot build it from {value!r}: {exc}") from None

    def decode(self, raw):
        return self._type().parse(raw)


def _codec_for(btf, type_id, size) -> _Codec:
    """The codec of BTF type ``type_id`` (a variable's ``size`` bytes)."""
    name = _declared_name(btf, type_id)
    target = btf.skip_qualifiers(type_id)
    t = btf.type(target)
    if t.kind == Kind.INT:
        if t.int.encoding & BTF_INT_BOOL:
            return _Bool(name, t.size)
        return _Int(name, t.size, bool(t.int.encoding & BTF_INT_SIGNED))
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        return _Enum(name, t.size, bool(t.kind_flag), t.enumerators)
    if t.kind == Kind.PTR:
        return _Int(name, 8, False)
    if t.kind == Kind.FLOAT and t.size in (4, 8):
        return _Float(name, t.size)
    if t.kind == Kind.ARRAY and t.array.nelems:
        element = btf.type(btf.skip_qualifiers(t.array.type))
        if element.kind == Kind.INT and element.size == 1 and (
                element.int.encoding & BTF_INT_CHAR or element.name == "char"):
            return _Chars(name, t.array.nelems)
        return _Array(name, _codec_for(btf, t.array.type, btf.size_of(t.array.type)),
                      t.array.nelems)
    if t.kind in (Kind.STRUCT, Kind.UNION):
        return _Composite(name, btf, target, size)
    return _Raw(name, size)


class _Raw(_Codec):
    """A type with no Python form here: raw bytes of its size only."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def pack(self, value):
        raise _Misfit(f"give it as bytes of its size ({self.size})")

    def decode(self, raw):
        return raw


def _declared_name(btf, type_id) -> str:
    """A C spelling of a type for messages: its first name through qualifiers (``uid_t``,
    ``unsigned int``), ``char[16]`` for arrays, ``struct x``, ``T *`` for pointers."""
    try:
        for _ in range(32):
            t = btf.type(type_id)
            if t.kind not in _QUALIFIERS:
                break
            type_id = t.type
        if t.kind == Kind.ARRAY:
            return f"{_declared_name(btf, t.array.type)}[{t.array.nelems}]"
        if t.kind == Kind.PTR:
            return f"{_declared_name(btf, t.type)} *"
        prefix = {Kind.STRUCT: "struct ", Kind.UNION: "union ", Kind.ENUM: "enum ",
                  Kind.ENUM64: "enum "}.get(t.kind, "")
        return prefix + (t.name or "(anon)") if t.kind != Kind.UNKN else "void"
    except BPFError:
        return "(unknown type)"
