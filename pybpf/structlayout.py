"""``Layout``: a kernel struct as a precompiled ``struct.Struct`` with named fields.

:mod:`pybpf.layouts` (generated from the construct declarations in :mod:`pybpf.attrs`) is a
table of these; :mod:`pybpf.syscalls` and :mod:`pybpf.perf` pack and unpack the kernel's
structs with them. Every integer pybpf hands the kernel goes through :meth:`Layout.pack` or
:meth:`Layout.pack_values`, so this is the one place where a value too large, negative or
not a number for its field becomes a clear :class:`~pybpf.errors.UsageError` instead of a
``struct.error`` (or, worse, a silently truncated number).
"""

import re
import struct

from .errors import UsageError

_RANGES = {  # struct format code -> (C type name, lowest, highest)
    "B": ("u8", 0, (1 << 8) - 1), "H": ("u16", 0, (1 << 16) - 1),
    "I": ("u32", 0, (1 << 32) - 1), "L": ("u32", 0, (1 << 32) - 1),
    "Q": ("u64", 0, (1 << 64) - 1), "b": ("s8", -(1 << 7), (1 << 7) - 1),
    "h": ("s16", -(1 << 15), (1 << 15) - 1), "i": ("s32", -(1 << 31), (1 << 31) - 1),
    "l": ("s32", -(1 << 31), (1 << 31) - 1), "q": ("s64", -(1 << 63), (1 << 63) - 1),
}


def _field_offsets(fmt, fields):
    """Each field's byte offset in a little-endian, unaligned format (``x`` is padding)."""
    offsets, names, at = {}, iter(fields), 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt):
        count = int(count or 1)
        if code == "x":
            at += count
        elif code == "s":
            offsets[next(names)] = at
            at += count
        else:
            for _ in range(count):
                offsets[next(names)] = at
                at += struct.calcsize("<" + code)
    return offsets


def _field_codes(fmt):
    """The format code of each field of a little-endian format (``x`` padding has no field)."""
    codes = []
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt):
        if code == "x":
            continue
        codes.extend([code] if code == "s" else [code] * int(count or 1))
    return codes


class Layout:
    """One kernel struct: a precompiled ``struct.Struct``, its field names and its size.

    :meth:`pack_values` takes every field in order (the fastest way, for the hot paths);
    :meth:`pack` takes fields by name, :meth:`unpack` returns them by name.
    """

    def __init__(self, name, fmt, fields):
        self.name = name
        self.struct = struct.Struct(fmt)
        self.fields = fields
        self.size = self.struct.size
        self._codes = _field_codes(fmt)
        self.offsets = _field_offsets(fmt, fields)  # field name -> byte offset
        # every field's zero value, in order: 0 for integers, NUL bytes for char arrays
        self._zeros = dict(zip(fields, self.struct.unpack(bytes(self.size))))

    def pack(self, **values):
        """The struct's bytes, with the fields named in ``values`` and every other one zero."""
        merged = {**self._zeros, **values}
        if len(merged) != len(self._zeros):
            unknown = ", ".join(sorted(set(values) - set(self.fields)))
            raise TypeError(f"{self.name} has no field {unknown}")
        return self.pack_values(*merged.values())

    def pack_values(self, *values):
        """The struct's bytes from every field's value in order; UsageError naming the field
        when a value does not fit it."""
        try:
            return self.struct.pack(*values)
        except (struct.error, TypeError, OverflowError):
            raise self._misfit(values) from None

    def _misfit(self, values):
        """The UsageError for the first value that does not fit its field."""
        for field, code, value in zip(self.fields, self._codes, values):
            if code == "s":
                if not isinstance(value, (bytes, bytearray)):
                    return UsageError(f"{self.name}.{field} must be bytes, not {value!r}")
                continue
            ctype, low, high = _RANGES[code]
            if not isinstance(value, int):
                return UsageError(f"{field} must be an integer, not {value!r} (the kernel's "
                                  f"{self.name}.{field} is a {ctype})")
            if not low <= value <= high:
                return UsageError(f"{field} = {value} does not fit the kernel's "
                                  f"{self.name}.{field}, a {ctype} ({low}..{high})")
        return UsageError(f"{self.name}: cannot pack {values!r}")

    def unpack(self, data):
        """The fields of ``data`` (bytes or a buffer of at least :attr:`size` bytes), by name."""
        return dict(zip(self.fields, self.struct.unpack_from(data)))
