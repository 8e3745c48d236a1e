"""``Layout``: a kernel struct as a precompiled ``struct.Struct`` with named fields.

:mod:`pybpf.layouts` (generated from the construct declarations in :mod:`pybpf.attrs`) is a
table of these; :mod:`pybpf.syscalls` packs and unpacks the bpf() attrs with them.
"""

import struct


class Layout:
    """One kernel struct: a precompiled ``struct.Struct``, its field names and its size.

    ``layout.struct.pack(*values)`` takes every field in order (the fastest way, for the hot
    paths); :meth:`pack` takes fields by name, :meth:`unpack` returns them by name.
    """

    def __init__(self, name, fmt, fields):
        self.name = name
        self.struct = struct.Struct(fmt)
        self.fields = fields
        self.size = self.struct.size
        # every field's zero value, in order: 0 for integers, NUL bytes for char arrays
        self._zeros = dict(zip(fields, self.struct.unpack(bytes(self.size))))

    def pack(self, **values):
        """The struct's bytes, with the fields named in ``values`` and every other one zero."""
        merged = {**self._zeros, **values}
        if len(merged) != len(self._zeros):
            unknown = ", ".join(sorted(set(values) - set(self.fields)))
            raise TypeError(f"{self.name} has no field {unknown}")
        return self.struct.pack(*merged.values())

    def unpack(self, data):
        """The fields of ``data`` (bytes or a buffer of at least :attr:`size` bytes), by name."""
        return dict(zip(self.fields, self.struct.unpack_from(data)))
