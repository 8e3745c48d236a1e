""".BTF.ext: records that tie instructions of ELF sections to the types of ``.BTF``.

For each ELF section of code, three kinds of records, each locating an instruction by its byte
offset in the section (the kernel wants instruction slots, counted from a program's start):

* *func_info* -- a function of this FUNC type starts here;
* *line_info* -- this instruction comes from this file, line and column (the source text is in
  ``.BTF``'s strings);
* *core_relo* -- this instruction's offset, size or constant depends on the layout of a kernel
  type (CO-RE, compile once -- run everywhere): which local type, which access (``"0:2:1"``:
  element 0, member 2, member 1) and what is asked (:class:`~pybpf.btf.core.CoreKind`).

Each block starts with its record size; a newer compiler's longer records keep their known
prefix. Malformed blocks raise :class:`~pybpf.errors.BTFError` naming the offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..errors import BTFError
from .types import BTF, BTF_MAGIC

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


@dataclass
class CoreReloRecord:
    """``bpf_core_relo`` as stored: the instruction at ``insn_off`` bytes reads something of
    local BTF type ``type_id`` along the access string at ``access_str_off`` (``"0:1:2"``:
    element 0, member 1, member 2); ``kind`` (a :class:`CoreKind` value when valid) says what."""

    insn_off: int
    type_id: int
    access_str_off: int
    kind: int


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
