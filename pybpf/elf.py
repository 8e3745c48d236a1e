"""Load clang-compiled BPF ELF objects (``clang -O2 -g -target bpf -c``) into specs.

An ELF relocatable object is a list of *sections* (named byte ranges) plus a *symbol table*
(names for offsets inside sections) and *relocation sections* (``.rel<name>``: "the 8 bytes at
offset X of section <name> refer to symbol S"). A BPF object uses them this way:

* every executable section holds programs, one per ``STT_FUNC`` symbol; the section's name
  (libbpf's convention, ``SEC("tracepoint/syscalls/sys_enter_execve")``) says the program type
  and where it attaches. ``.text`` holds the functions programs call (bpf-to-bpf calls);
* ``.maps`` holds BTF-defined maps (their parameters live in the BTF types of the variables),
  ``maps`` legacy ``struct bpf_map_def`` records; ``.data``, ``.rodata*`` and ``.bss`` hold
  global variables, each section becoming a one-element array map;
* ``license`` and ``version`` hold the license string and a kernel version;
* undefined symbols are *externs* (``__kconfig`` values, ``__ksym`` kernel symbols and
  kfuncs), described by the ``.kconfig`` and ``.ksyms`` BTF DATASECs (:mod:`pybpf.externs`).

The compiler cannot know map file descriptors or where ``.text`` functions will land, so it
leaves relocations (``Documentation/bpf/llvm_reloc.rst``): ``R_BPF_64_64`` on a 64-bit
immediate load of a map (or of a global variable: map value + offset, or of a callback
function), ``R_BPF_64_32`` on a call to a function. This module interprets them into the
symbolic references of :mod:`pybpf.asm` (``ref`` = map name or function label) which loading
resolves, exactly as for programs written with the DSL. ``R_BPF_64_ABS64/ABS32`` appear in data
and debug sections and ``R_BPF_64_NODYLD32`` in ``.BTF``/``.BTF.ext``: they are never applied
as addresses (there is no address space to apply them to).

pyelftools reads only the container (headers, section bytes, symbols, relocation records); all
BPF meaning is given here. Malformed input raises :class:`pybpf.errors.ElfError` (or
:class:`BTFError`) naming the section and offset, never an internal exception.
"""

from __future__ import annotations

import functools
import io
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional

from construct import Int32ul
from elftools.common.exceptions import ELFError as _PyElfError
from elftools.construct import ConstructError as _PyElfConstructError
from elftools.elf.elffile import ELFFile

from . import abi, externs
from .abi import MapFlags, MapType
from .asm import Instruction, opcodes as oc
from .btf import BTF, BTFExt, CoreRelo, CoreReloRecord, Kind
from .btf.values import construct_for
from .errors import BTFError, CoreError, DecodeError, ElfError
from .limits import INSNS_LIMIT, MAX_INSNS, MAX_OBJECT_SIZE, read_file
from .sections import known_sections, section_prog_flags, section_program_type
from .spec import CollectionSpec, MapSpec, ProgramSpec, object_name
from .variables import Variable

EM_NONE, EM_BPF = 0, 247
SHT_NOBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL = 8, 2, 3, 9
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
SHN_UNDEF = 0
R_BPF_NONE, R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32 = 0, 1, 2, 3
R_BPF_64_NODYLD32, R_BPF_64_32 = 4, 10
RELOC_NAMES = {R_BPF_NONE: "R_BPF_NONE", R_BPF_64_64: "R_BPF_64_64",
               R_BPF_64_ABS64: "R_BPF_64_ABS64", R_BPF_64_ABS32: "R_BPF_64_ABS32",
               R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32", R_BPF_64_32: "R_BPF_64_32"}
INSN_SIZE = 8
LIBBPF_PIN_BY_NAME = 1

def load_spec(source) -> CollectionSpec:
    """The maps and programs of a BPF ELF object (a path, or the file's bytes)."""
    return open_object(source).collection_spec()


def open_object(source) -> "ElfObject":
    """The parsed object (sections, symbols, relocations, BTF) of a path or the file's bytes."""
    return ElfObject(_read(source))


def _read(source):
    """The bytes of an object given as a path or as bytes, at most MAX_OBJECT_SIZE."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > MAX_OBJECT_SIZE:
            raise ElfError(f"the object is larger than {MAX_OBJECT_SIZE:,} bytes, the most "
                           "pybpf reads as an ELF object")
        return data
    return read_file(os.fspath(source), MAX_OBJECT_SIZE, "an ELF object", ElfError)


# -- the ELF container ----------------------------------------------------------------------

@dataclass
class Section:
    """One ELF section, read eagerly: ``data`` is empty for NOBITS (``.bss``)."""

    index: int
    name: str
    type: int
    flags: int
    size: int
    link: int
    info: int
    data: bytes

    @property
    def executable(self):
        return bool(self.flags & SHF_EXECINSTR)


@dataclass
class Symbol:
    """One symbol: ``value`` is its offset in section ``shndx`` (0: undefined)."""

    index: int
    name: str
    value: int
    size: int
    type: str  # STT_FUNC, STT_OBJECT, STT_SECTION, STT_NOTYPE...
    bind: str  # STB_GLOBAL, STB_LOCAL, STB_WEAK
    shndx: int


@dataclass
class Relocation:
    """One ``Elf64_Rel``: the ``type`` fix-up at ``offset`` of its section, against ``symbol``."""

    offset: int
    type: int
    symbol: Symbol


_ELF_HEADER = struct.Struct("<4sBBBBB7xHHIQQQIHHHHHH")


_SECTION_LINK = struct.Struct("<I")  # sh_link, at offset 40 of a 64-byte section header


def _check_header(data):
    """Check what pyelftools would trip over or misread: class, byte order, machine, tables."""
    if len(data) < _ELF_HEADER.size:
        raise ElfError(f"truncated file: {len(data)} bytes, an ELF header needs 64", "ELF header")
    (magic, klass, endian, _, _, _, e_type, machine, _, _, _, shoff, _, _, _, _, shentsize,
     shnum, shstrndx) = _ELF_HEADER.unpack_from(data)
    if magic != b"\x7fELF":
        raise ElfError("not an ELF file (no \\x7fELF magic)", "ELF header", 0)
    if klass != 2:
        raise ElfError("not a 64-bit ELF object (BPF objects are ELFCLASS64)", "ELF header", 4)
    if endian != 1:
        raise ElfError("big-endian object: build for this host's byte order with "
                       "`clang -target bpfel` (or bpf on a little-endian host)", "ELF header", 5)
    if machine not in (EM_BPF, EM_NONE):
        raise ElfError(f"e_machine is {machine}, not EM_BPF ({EM_BPF}): not a BPF object "
                       "(compile with clang -target bpf)", "ELF header", 18)
    if e_type != 1:
        raise ElfError(f"e_type is {e_type}, not ET_REL: pass the object file (clang -c)",
                       "ELF header", 16)
    if shnum == 0 or shentsize != 64 or shoff + shnum * 64 > len(data):
        raise ElfError(f"section header table ({shnum} entries of {shentsize} bytes at "
                       f"{shoff:#x}) does not fit in the file ({len(data)} bytes): truncated?",
                       "ELF header", 40)
    if shstrndx >= shnum:
        raise ElfError(f"section name table index {shstrndx} is out of range ({shnum} "
                       "sections)", "ELF header", 62)
    for index in range(shnum):
        link = _SECTION_LINK.unpack_from(data, shoff + index * 64 + 40)[0]
        if link >= shnum:
            raise ElfError(f"section {index} links to section {link}, but there are only "
                           f"{shnum} sections", "section headers", index * 64 + 40)


def _read_sections(elf, data):
    sections = []
    for index in range(elf.num_sections()):
        s = elf.get_section(index)
        start, size = s["sh_offset"], s["sh_size"]
        name = s.name or f"#{index}"
        if s["sh_type"] != "SHT_NOBITS" and start + size > len(data):
            raise ElfError(f"section data ({size} bytes at {start:#x}) runs past the end of "
                           f"the file ({len(data)} bytes): truncated?", name)
        content = b"" if s["sh_type"] == "SHT_NOBITS" else data[start:start + size]
        sections.append(Section(index, name, _sh_type(s), s["sh_flags"], size,
                                s["sh_link"], s["sh_info"], content))
    return sections


def _sh_type(section):
    header = section.header
    return {"SHT_SYMTAB": SHT_SYMTAB, "SHT_STRTAB": SHT_STRTAB, "SHT_REL": SHT_REL,
            "SHT_NOBITS": SHT_NOBITS}.get(header["sh_type"], -1)


def _read_symbols(elf, sections):
    symtab = [s for s in sections if s.type == SHT_SYMTAB]
    if not symtab:
        return []
    if len(symtab) > 1:
        raise ElfError("more than one symbol table", symtab[1].name)
    section = elf.get_section(symtab[0].index)
    if symtab[0].link >= len(sections):
        raise ElfError(f"string table index {symtab[0].link} is out of range",
                       symtab[0].name)
    if sections[symtab[0].link].type != SHT_STRTAB:
        raise ElfError(f"the symbol names' section ({symtab[0].link}) is not a string table",
                       symtab[0].name)
    symbols = []
    for index, sym in enumerate(section.iter_symbols()):
        shndx = sym["st_shndx"]
        if isinstance(shndx, str):  # SHN_UNDEF, SHN_ABS, SHN_COMMON...
            shndx = SHN_UNDEF if shndx == "SHN_UNDEF" else -1
        elif shndx >= len(sections):
            raise ElfError(f"symbol {index} ({sym.name!r}) is in section {shndx}, but there "
                           f"are only {len(sections)} sections", symtab[0].name, index * 24)
        symbols.append(Symbol(index, sym.name, sym["st_value"], sym["st_size"],
                              sym["st_info"]["type"], sym["st_info"]["bind"], shndx))
    return symbols


def _read_relocations(elf, sections, symbols):
    """``{target section index: [Relocation]}`` from the SHT_REL sections of loaded (SHF_ALLOC)
    sections: code, maps, data. The others patch debug information (``.rel.debug_info`` of
    an object built against vmlinux.h holds thousands) and ``.BTF``, which are never loaded."""
    relocations = {}
    for section in sections:
        if section.type != SHT_REL:
            continue
        if section.info >= len(sections):
            raise ElfError(f"relocations for section index {section.info}, which does not "
                           "exist", section.name)
        target = sections[section.info]
        if not target.flags & SHF_ALLOC:
            continue
        entries = relocations.setdefault(target.index, [])
        for number, rel in enumerate(elf.get_section(section.index).iter_relocations()):
            entries.append(_relocation(rel, number, section, target, symbols))
    return relocations


def _relocation(rel, number, section, target, symbols):
    offset, sym = rel["r_offset"], rel["r_info_sym"]
    if sym >= len(symbols):
        raise ElfError(f"relocation {number} refers to symbol {sym}, but there are only "
                       f"{len(symbols)} symbols", section.name, number * 16)
    width = 4 if rel["r_info_type"] in (R_BPF_64_ABS32, R_BPF_64_NODYLD32) else 8
    if offset + width > target.size:
        raise ElfError(f"relocation {number} points at offset {offset:#x}, past the end of "
                       f"{target.name} ({target.size} bytes)", section.name, number * 16)
    return Relocation(offset, rel["r_info_type"], symbols[sym])


class Container:
    """The sections, symbols and relocations of an ELF object, read and checked eagerly."""

    def __init__(self, data: bytes):
        _check_header(data)
        try:
            elf = ELFFile(io.BytesIO(data))
            self.sections = _read_sections(elf, data)
            self.symbols = _read_symbols(elf, self.sections)
            self.relocations = _read_relocations(elf, self.sections, self.symbols)
        except (_PyElfError, _PyElfConstructError, UnicodeDecodeError, ValueError,
                OverflowError, struct.error) as exc:  # pyelftools reading damaged headers
            raise ElfError(f"malformed ELF object: {exc}") from None

    def section(self, name) -> Optional[Section]:
        """The first section called ``name``, or None."""
        return next((s for s in self.sections if s.name == name), None)

    def symbols_in(self, section: Section, types=None) -> List[Symbol]:
        """The named symbols of ``section`` (of ``types`` when given), by offset."""
        found = [s for s in self.symbols if s.shndx == section.index and s.name
                 and s.type != "STT_SECTION" and (types is None or s.type in types)]
        return sorted(found, key=lambda s: s.value)


# -- from container to specs ---------------------------------------------------------------

@dataclass
class Function:
    """One function symbol of an executable section; its instructions are decoded when first
    used (a program that never calls it never pays for it, nor fails on it)."""

    name: str
    section: Section
    offset: int  # bytes from the start of the section
    size: int

    @property
    def insns(self) -> List[Instruction]:
        """The decoded instructions; ElfError if any is one the kernel would refuse."""
        return self._decoded[0]

    @property
    def slots(self) -> List[int]:
        """The byte offset of each instruction from the function's start."""
        return self._decoded[1]

    @functools.cached_property
    def _decoded(self):
        return _decode_function(self)


class ElfObject:
    """Turns one ELF object into a CollectionSpec; each step reads what earlier ones found."""

    def __init__(self, data: bytes):
        self.elf = Container(data)
        self.license = self._license()
        self.kern_version = self._version()
        self.btf, self.btf_ext = self._btf()
        self.externs = externs.collect(self.btf, [
            (s.name, s.bind == "STB_WEAK") for s in self.elf.symbols
            if s.shndx == SHN_UNDEF and s.name and s.type == "STT_NOTYPE"
            and s.bind in ("STB_GLOBAL", "STB_WEAK")])
        self.maps: Dict[str, MapSpec] = {}
        self.map_symbols: Dict[tuple, str] = {}  # (section index, offset) -> map name
        self.data_maps: Dict[int, str] = {}  # data section index -> map name
        self.variables: Dict[str, Variable] = {}
        self._collect_maps()
        self.functions = self._functions()
        self.core_relos = self._core_relos()

    def collection_spec(self) -> CollectionSpec:
        programs = {}
        for section in self.elf.sections:
            if not section.executable or not section.size:
                continue
            if section.size % INSN_SIZE:
                raise ElfError(f"size {section.size} is not a multiple of 8 (one instruction)",
                               section.name)
            entries = [f for f in self.functions.values() if f.section is section]
            if not entries:
                raise ElfError("executable section without function symbols", section.name)
            if section.name != ".text":  # .text holds the functions programs call
                for function in entries:
                    programs[function.name] = self._program(function)
        self._check_init_slots(programs)
        raw_btf = self.btf.encode() if self.btf is not None else None
        return CollectionSpec(maps=self.maps, programs=programs, btf=raw_btf,
                              externs=self.externs, var_info=self.variables)

    # -- license, version, BTF ------------------------------------------------------------

    def _license(self):
        section = self.elf.section("license")
        if section is None:
            return ""
        return section.data.split(b"\0", 1)[0].decode("ascii", "replace")

    def _version(self):
        section = self.elf.section("version")
        if section is None:
            return 0
        if len(section.data) != 4:
            raise ElfError(f"version section is {len(section.data)} bytes, expected a u32",
                           "version")
        return int.from_bytes(section.data, "little")

    def _btf(self):
        section = self.elf.section(".BTF")
        if section is None:
            return None, None
        btf = BTF.parse(section.data)
        btf.fixup_datasecs(*self._datasec_layout(btf), skip=externs.SECTIONS)
        ext_section = self.elf.section(".BTF.ext")
        ext = BTFExt.parse(ext_section.data, btf) if ext_section is not None else None
        return btf, ext

    def _datasec_layout(self, btf):
        """Section sizes and ``(section, variable) -> offset`` for the BTF DATASEC fix-up."""
        sizes, offsets = {}, {}
        for type_id in btf.ids((Kind.DATASEC,)):
            section = self.elf.section(btf.name(type_id))
            if section is None:
                continue  # reported by fixup_datasecs
            sizes[section.name] = section.size
            for symbol in self.elf.symbols_in(section):
                offsets[(section.name, symbol.name)] = symbol.value
        return sizes, offsets

    # -- maps -----------------------------------------------------------------------------

    def _collect_maps(self):
        for section in self.elf.sections:
            if section.name == ".maps":
                self._btf_maps(section)
            elif section.name == "maps":
                self._legacy_maps(section)
            elif _is_data_section(section):
                self._data_map(section)
        size = externs.kconfig_size(self.externs)
        if size:
            self._kconfig_map(size)

    def _add_map(self, spec, section, offset):
        """Record a map of ``maps``/``.maps``; its symbol is at ``offset`` of ``section``."""
        if spec.name in self.maps:
            raise ElfError(f"two maps are called {spec.name!r}", section.name, offset)
        self.maps[spec.name] = spec
        if not _is_data_section(section):
            self.map_symbols[(section.index, offset)] = spec.name

    def _btf_maps(self, section):
        if self.btf is None:
            raise ElfError("BTF-defined maps need the .BTF section: compile with -g",
                           section.name)
        datasec = self.btf.find(".maps", Kind.DATASEC)
        if datasec is None:
            raise BTFError("no DATASEC '.maps' describes the .maps section", ".BTF")
        for name, var, offset, _ in self.btf.datasec_vars(datasec):
            self._add_map(_btf_map(self.btf, name, var, section, offset), section, offset)
        for relocation in self.elf.relocations.get(section.index, []):
            self._init_slot(section, datasec, relocation)

    def _init_slot(self, section, datasec, relocation):
        """One ``.values = {[i] = &x}`` initialiser of a map of maps or program array: an
        ``R_BPF_64_ABS64`` in ``.maps`` at slot ``i`` of the map's ``values`` member (its
        last), against map (or program) ``x``."""
        where = relocation.offset
        owner = next(((name, var, offset) for name, var, offset, size
                      in self.btf.datasec_vars(datasec) if offset <= where < offset + size),
                     None)
        if owner is None or relocation.type != R_BPF_64_ABS64:
            raise ElfError(f"relocation at {where:#x} of .maps is not a .values initialiser "
                           f"of a map", section.name, where)
        name, var, offset = owner
        spec = self.maps[name]
        members = self.btf.members(self.btf.skip_qualifiers(self.btf.type(var).type))
        values_at = members[-1].bit_offset // 8 if spec.init_slots is not None else None
        if values_at is None or where - offset < values_at or (where - offset - values_at) % 8:
            raise ElfError(f"map {name!r}: relocation at {where:#x} is not in the slots of its "
                           f"__array(values, ...) member", section.name, where)
        slot = (where - offset - values_at) // 8
        if slot >= spec.max_entries:
            raise ElfError(f"map {name!r}: .values initialises slot {slot}, but max_entries is "
                           f"{spec.max_entries}", section.name, where)
        target = relocation.symbol
        code = 0 < target.shndx < len(self.elf.sections) and \
            self.elf.sections[target.shndx].executable
        if spec.type == MapType.PROG_ARRAY and code:
            spec.init_slots[slot] = target.name
        elif spec.type != MapType.PROG_ARRAY and (target.shndx, target.value) in \
                self.map_symbols:
            spec.init_slots[slot] = self.map_symbols[(target.shndx, target.value)]
        else:
            wanted = "a program" if spec.type == MapType.PROG_ARRAY else "a map of .maps"
            raise ElfError(f"map {name!r}: .values[{slot}] refers to {target.name!r}, which is "
                           f"not {wanted}", section.name, where)

    def _check_init_slots(self, programs):
        """Check that a program array's initialisers name programs (not .text functions)."""
        for spec in self.maps.values():
            for slot, target in (spec.init_slots or {}).items():
                if spec.type == MapType.PROG_ARRAY and target not in programs:
                    raise ElfError(f"map {spec.name!r}: .values[{slot}] is {target!r}, a "
                                   f"function that is not a program (give it a SEC())", ".maps")

    def _legacy_maps(self, section):
        symbols = self.elf.symbols_in(section)
        if not symbols:
            raise ElfError("legacy maps section without map symbols", section.name)
        size = section.size // len(symbols)
        if size < _MAP_DEF.size:
            raise ElfError(f"{len(symbols)} maps in {section.size} bytes: each struct "
                           f"bpf_map_def needs {_MAP_DEF.size}", section.name)
        for symbol in symbols:
            self._add_map(_legacy_map(symbol, section, size), section, symbol.value)

    def _data_map(self, section):
        """A global data section as a one-element array map (libbpf's internal maps):
        read-only for programs and frozen if ``.rodata*``, memory-mappable when its BTF
        DATASEC has a global (non-static) variable, each variable recorded by name."""
        name = object_name(section.name)
        btf_id = 0
        if self.btf is not None:
            btf_id = self.btf.find(section.name, Kind.DATASEC) or 0
        rodata = section.name.startswith(".rodata")
        flags = MapFlags.RDONLY_PROG if rodata else 0
        if btf_id and any(var.linkage for var in self._record_variables(section, btf_id)):
            flags |= MapFlags.MMAPABLE
        spec = MapSpec(
            name=name, type=MapType.ARRAY, key_size=4, key_type=Int32ul,
            value_size=section.size, max_entries=1, flags=flags,
            data=None if section.type == SHT_NOBITS else section.data, freeze=rodata,
            btf_value_type_id=btf_id, section=section.name,
            value_type=construct_for(self.btf, btf_id) if btf_id else None)
        self._add_map(spec, section, 0)
        self.data_maps[section.index] = name

    def _record_variables(self, section, datasec):
        """The variables of a data section's DATASEC, remembered by name (a name already
        taken by another section's variable as ``section:name``)."""
        found = []
        for var_name, var, offset, size in self.btf.datasec_vars(datasec):
            if self.btf.kind(var) != Kind.VAR or offset + size > section.size:
                raise BTFError(f"DATASEC {section.name!r} entry {var_name!r} is not a variable "
                               f"inside the section", ".BTF")
            t = self.btf.type(var)
            variable = Variable(var_name, section.name, object_name(section.name), offset,
                                size, t.type, self.btf, t.linkage)
            key = var_name if var_name not in self.variables else f"{section.name}:{var_name}"
            self.variables[key] = variable
            found.append(variable)
        return found

    def _kconfig_map(self, size):
        """The ``.kconfig`` map: the values of the .kconfig externs, read-only for programs,
        filled and frozen by the loader (:func:`pybpf.externs.kconfig_data`)."""
        btf_id = self.btf.find(externs.KCONFIG, Kind.DATASEC) or 0
        if externs.KCONFIG in self.maps:
            raise ElfError("a map is already called .kconfig", externs.KCONFIG)
        self.maps[externs.KCONFIG] = MapSpec(
            name=externs.KCONFIG, type=MapType.ARRAY, key_size=4, key_type=Int32ul,
            value_size=size, max_entries=1, flags=MapFlags.RDONLY_PROG | MapFlags.MMAPABLE,
            freeze=True, btf_value_type_id=btf_id, section=externs.KCONFIG,
            value_type=construct_for(self.btf, btf_id) if btf_id else None)

    # -- programs -------------------------------------------------------------------------

    def _functions(self) -> Dict[tuple, Function]:
        """Every function symbol of every executable section, by (section index, byte
        offset); nothing is decoded yet."""
        functions = {}
        for section in self.elf.sections:
            if section.executable and section.size:
                for symbol in self.elf.symbols_in(section, ("STT_FUNC",)):
                    functions[(section.index, symbol.value)] = Function(
                        symbol.name, section, symbol.value, symbol.size)
        return functions

    def _core_relos(self) -> Dict[int, Dict[int, CoreReloRecord]]:
        """``.BTF.ext``'s CO-RE relocation records, by section index and byte offset; each
        must name an instruction (not the second half of a 64-bit load) of an executable
        section, once."""
        found = {}
        if self.btf_ext is None:
            return found
        for name, records in self.btf_ext.core_relos.items():
            section = self.elf.section(name)
            if section is None or not section.executable:
                raise BTFError(f"CO-RE relocations for section {name!r}, which is not an "
                               "executable section of this object", ".BTF.ext")
            starts = {f.offset + slot for f in self.functions.values() if f.section is section
                      for slot in f.slots}
            by_offset = found.setdefault(section.index, {})
            for number, record in enumerate(records):
                if record.insn_off not in starts:
                    raise BTFError(f"CO-RE relocation #{number} of section {name!r} points at "
                                   f"byte offset {record.insn_off}, where no instruction of a "
                                   "function starts", ".BTF.ext")
                if record.insn_off in by_offset:
                    raise BTFError(f"two CO-RE relocations for the instruction at byte offset "
                                   f"{record.insn_off} of section {name!r}", ".BTF.ext")
                by_offset[record.insn_off] = record
        return found

    def _program(self, entry: Function) -> ProgramSpec:
        """The entry function, then every function it calls (transitively), linked by label."""
        prog_type, attach_type, target = _program_section(entry.section.name)
        linker = _Linker(self, entry)
        return ProgramSpec(
            name=entry.name, type=prog_type, insns=linker.insns, license=self.license,
            section=entry.section.name, expected_attach_type=attach_type,
            attach_target=target, kern_version=self.kern_version,
            func_info=linker.func_info(), line_info=linker.line_info(),
            flags=section_prog_flags(entry.section.name), externs=linker.externs)

    def relocations_of(self, function: Function) -> Dict[int, Relocation]:
        """The relocations inside ``function``, by section byte offset."""
        start, end = function.offset, function.offset + function.slots[-1] + 16
        return {r.offset: r for r in self.elf.relocations.get(function.section.index, [])
                if start <= r.offset < end}

    def function_at(self, section_index, offset, where, at) -> Function:
        """The function starting at ``offset`` of a section, else ElfError at ``where``+``at``."""
        function = self.functions.get((section_index, offset))
        if function is None:
            target = self.elf.sections[section_index].name
            raise ElfError(f"call or function reference to {target}+{offset:#x}, where no "
                           "function starts", where, at)
        return function


def _program_section(name):
    """``section_program_type(name)``; ElfError listing libbpf's names for an unknown one."""
    kind = section_program_type(name)
    if kind is None:
        raise ElfError(f"unknown program section name {name!r}; known names (libbpf's "
                       f"conventions): {known_sections()}", name)
    return kind


def _is_data_section(section):
    names = (".data", ".rodata", ".bss")
    return bool(section.flags & SHF_ALLOC) and section.size > 0 and any(
        section.name == n or section.name.startswith(n + ".") for n in names)


_MAP_DEF = struct.Struct("<5I")  # struct bpf_map_def: type, key/value size, max_entries, flags


def _map_type(value, name, section, offset):
    try:
        return MapType(value)
    except ValueError:
        raise ElfError(f"map {name!r} has unsupported map type {value}", section.name,
                       offset) from None


def _legacy_map(symbol, section, size):
    if symbol.value + size > section.size:
        raise ElfError(f"map {symbol.name!r} at {symbol.value:#x} does not fit in the section",
                       section.name, symbol.value)
    record = section.data[symbol.value:symbol.value + size]
    map_type, key_size, value_size, max_entries, flags = _MAP_DEF.unpack_from(record)
    if any(record[_MAP_DEF.size:]):
        raise ElfError(f"map {symbol.name!r} uses struct bpf_map_def fields past map_flags "
                       "(id, pinning, inner maps), which pybpf does not support",
                       section.name, symbol.value + _MAP_DEF.size)
    return MapSpec(name=symbol.name,
                   type=_map_type(map_type, symbol.name, section, symbol.value),
                   key_size=key_size, value_size=value_size, max_entries=max_entries,
                   flags=flags)


_BTF_MAP_INTS = {"type", "max_entries", "map_flags", "key_size", "value_size", "pinning",
                 "numa_node", "map_extra"}
_MAP_IN_MAP = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)


def _btf_map(btf, name, var, section, offset, inner=False):
    """A MapSpec from the BTF of a ``.maps`` variable: a struct of __uint/__type fields, and
    for a map of maps or a program array an ``__array(values, ...)`` last member."""
    struct_id = btf.skip_qualifiers(btf.type(var).type) if btf.kind(var) == Kind.VAR \
        else var if inner else 0
    if btf.kind(struct_id) != Kind.STRUCT:
        raise BTFError(f"map {name!r} is not a struct variable", section.name, offset)
    ints, types = {}, {}
    members = btf.members(struct_id)
    for index, (field, type_id, _, _) in enumerate(members):
        if field == "values":
            types["values"] = _values_member(btf, name, type_id, index == len(members) - 1,
                                             inner, section, offset)
            continue
        pointer = btf.type(btf.skip_qualifiers(type_id))
        if pointer.kind != Kind.PTR:
            raise BTFError(f"map {name!r} field {field!r} is not a __uint/__type pointer",
                           section.name, offset)
        if field in _BTF_MAP_INTS:
            nelems = btf.array_nelems(pointer.type)
            if nelems is None:
                raise BTFError(f"map {name!r} field {field!r} is not __uint(...)",
                               section.name, offset)
            ints[field] = nelems
        elif field in ("key", "value"):
            types[field] = pointer.type
        else:
            raise ElfError(f"map {name!r} has field {field!r}, which pybpf does not support "
                           f"(known: {', '.join(sorted(_BTF_MAP_INTS))}, key, value, values)",
                           section.name, offset)
    return _btf_map_spec(btf, name, ints, types, section, offset)


def _values_member(btf, name, type_id, last, inner, section, offset):
    """The ``__array(values, ...)`` member of a map of maps (the inner map's struct id) or of
    a program array (0): a zero-length array of pointers, the map's last member."""
    if inner:
        raise ElfError(f"map {name!r}: an inner map cannot itself hold maps", section.name,
                       offset)
    if not last:
        raise ElfError(f"map {name!r}: __array(values, ...) must be the last member",
                       section.name, offset)
    array = btf.type(btf.skip_qualifiers(type_id))
    if array.kind != Kind.ARRAY or array.array.nelems:
        raise BTFError(f"map {name!r}: values must be an array of 0 elements (__array)",
                       section.name, offset)
    pointer = btf.type(btf.skip_qualifiers(array.array.type))
    if pointer.kind != Kind.PTR:
        raise BTFError(f"map {name!r}: values must be an array of pointers", section.name,
                       offset)
    target = btf.skip_qualifiers(pointer.type)
    if btf.kind(target) == Kind.FUNC_PROTO:
        return 0
    if btf.kind(target) != Kind.STRUCT:
        raise BTFError(f"map {name!r}: values must point to an inner map definition "
                       f"(a struct) or to programs (a function)", section.name, offset)
    return target


def _btf_map_spec(btf, name, ints, types, section, offset):
    if "type" not in ints:
        raise ElfError(f"map {name!r} has no __uint(type, ...)", section.name, offset)
    key_id, value_id = types.get("key", 0), types.get("value", 0)
    pinning = ints.get("pinning", 0)
    if pinning not in (0, LIBBPF_PIN_BY_NAME):
        raise ElfError(f"map {name!r} has unsupported pinning {pinning}", section.name, offset)
    map_type = _map_type(ints["type"], name, section, offset)
    inner_map, init_slots = None, None
    if "values" in types:
        inner_map = _values_spec(btf, name, map_type, types, ints, section, offset)
        init_slots = {}  # filled from the .values relocations
        ints["value_size"] = 4  # a map or program fd
    return MapSpec(
        name=name, type=map_type,
        key_size=btf.size_of(key_id) if key_id else ints.get("key_size", 0),
        value_size=btf.size_of(value_id) if value_id else ints.get("value_size", 0),
        max_entries=ints.get("max_entries", 0), flags=ints.get("map_flags", 0),
        numa_node=ints.get("numa_node"), map_extra=ints.get("map_extra", 0),
        pinning="by_name" if pinning else None,
        btf_key_type_id=key_id, btf_value_type_id=value_id,
        key_type=construct_for(btf, key_id) if key_id else None,
        value_type=construct_for(btf, value_id) if value_id else None,
        inner_map=inner_map, init_slots=init_slots)


def _values_spec(btf, name, map_type, types, ints, section, offset):
    """The inner map template of a map of maps (None for a program array), checking that the
    ``values`` member suits the map type and that no value type contradicts it."""
    if types.get("value") or ints.get("value_size", 4) != 4:
        raise ElfError(f"map {name!r}: __array(values, ...) holds 4-byte fds; it cannot also "
                       f"have a value type or size", section.name, offset)
    inner = types["values"]
    if map_type == MapType.PROG_ARRAY and not inner:
        return None
    if map_type not in _MAP_IN_MAP or not inner:
        raise ElfError(f"map {name!r}: __array(values, ...) needs a map of maps (with an inner "
                       f"map definition) or a program array (with a function type)",
                       section.name, offset)
    return _btf_map(btf, f"{name}.inner", inner, section, offset, inner=True)


def _check_bounds(function):
    """ElfError unless the function's symbol covers whole instructions inside its section."""
    section, start, size = function.section, function.offset, function.size
    if start % INSN_SIZE or size % INSN_SIZE or not size or start + size > section.size:
        raise ElfError(f"function {function.name!r} ({size} bytes at {start:#x}) does not "
                       "cover whole instructions inside the section", section.name, start)


def _decode_function(function):
    """(instructions, byte offsets from the start) of a function, decoded strictly: the
    kernel would refuse an invalid instruction, so loading refuses it too, saying where."""
    _check_bounds(function)
    section, start = function.section, function.offset
    insns, slots, offset, end = [], [], start, start + function.size
    while offset < end:
        try:
            insn = Instruction.decode(section.data, offset)
        except DecodeError as exc:
            raise ElfError(f"undecodable instruction in {function.name!r}: {exc}",
                           section.name, offset) from None
        insns.append(insn)
        slots.append(offset - start)
        offset += insn.slots * INSN_SIZE
    if offset > end:
        raise ElfError(f"function {function.name!r} ends inside a 64-bit load", section.name,
                       offset - 2 * INSN_SIZE)
    return insns, slots


class _Linker:
    """Builds one program: relocated copies of its functions, entry first, callees after."""

    def __init__(self, obj: ElfObject, entry: Function):
        self.obj = obj
        self.entry = entry
        self.placed: List[tuple] = []  # (function, first slot in the program)
        self.insns: List[Instruction] = []
        self.externs: Dict[str, object] = {}  # the .ksyms externs the program refers to
        queue, seen = [entry], {id(entry)}
        while queue:
            function = queue.pop(0)
            for callee in self._append(function):
                if id(callee) not in seen:
                    seen.add(id(callee))
                    queue.append(callee)

    def _append(self, function):
        """Append ``function``'s relocated instructions; returns the functions it references."""
        slot = sum(insn.slots for insn in self.insns)
        _check_bounds(function)
        if slot + function.size // INSN_SIZE > MAX_INSNS:  # checked before decoding it
            entry = self.placed[0][0] if self.placed else function
            raise ElfError(f"program {entry.name!r} with the functions it calls is more than "
                           f"{INSNS_LIMIT}", entry.section.name, entry.offset)
        twin = next((placed for placed, _ in self.placed if placed.name == function.name), None)
        if twin is not None:  # the labels that link calls would be ambiguous
            raise ElfError(f"program {self.entry.name!r} uses two functions named "
                           f"{function.name!r} ({twin.section.name}+{twin.offset:#x} and "
                           f"{function.section.name}+{function.offset:#x}); pybpf links "
                           "functions by name", function.section.name, function.offset)
        self.placed.append((function, slot))
        relocations = self.obj.relocations_of(function)
        lines = line_comments(self.obj, function)
        core = self.obj.core_relos.get(function.section.index, {})
        callees = []
        for index, insn in enumerate(function.insns):
            where = function.offset + function.slots[index]
            insn = Instruction(insn.opcode, insn.dst, insn.src, insn.off, insn.imm,
                               labels=(function.name,) if index == 0 else (),
                               comment=lines.get(where))
            if where in core:
                insn.core = self._core_relo(core[where], len(self.insns))
            relocation = relocations.get(where)
            if relocation is not None:
                callees += self._relocate(insn, relocation, function.section, where)
            elif insn.opcode == oc.JMP | oc.CALL and insn.src == abi.PSEUDO_CALL:
                callees.append(self._local_call(insn, function.section, where))
            self.insns.append(insn)
        return callees

    def _core_relo(self, record, index):
        """The :class:`CoreRelo` an instruction carries, from its ``.BTF.ext`` record."""
        try:
            access = self.obj.btf.string(record.access_str_off)
        except BTFError:
            raise CoreError(f"CO-RE relocation of local type [{record.type_id}] has an access "
                            f"string offset {record.access_str_off} past the string table",
                            self.entry.name, index, local_type=f"[{record.type_id}]") from None
        return CoreRelo(record.kind, record.type_id, access, self.obj.btf)

    def _local_call(self, insn, section, where):
        """A call inside one section needs no relocation: imm is already relative."""
        callee = self.obj.function_at(section.index, where + (insn.imm + 1) * INSN_SIZE,
                                      section.name, where)
        insn.ref = callee.name
        return callee

    def _relocate(self, insn, relocation, section, where):
        """Give ``insn`` the symbolic meaning of its relocation; returns referenced functions."""
        symbol = relocation.symbol
        if symbol.shndx == SHN_UNDEF and symbol.name in self.obj.externs:
            return self._extern(insn, relocation, self.obj.externs[symbol.name], section,
                                where)
        if symbol.shndx == SHN_UNDEF or symbol.shndx < 0:
            raise ElfError(f"reference to {symbol.name or 'an absolute symbol'!r}, which is "
                           "not defined in this object nor an extern (__kconfig, __ksym)",
                           section.name, where)
        target = self.obj.elf.sections[symbol.shndx]
        local_call = insn.opcode == oc.JMP | oc.CALL and insn.src == abi.PSEUDO_CALL
        if relocation.type == R_BPF_64_32 and local_call:
            offset = symbol.value + (insn.imm + 1) * INSN_SIZE
            callee = self.obj.function_at(target.index, offset, section.name, where)
            insn.ref, insn.imm = callee.name, -1
            return [callee]
        if relocation.type == R_BPF_64_64 and insn.opcode == oc.LD_IMM64:
            return self._relocate_load(insn, symbol, target, section, where)
        raise ElfError(f"unsupported relocation {RELOC_NAMES.get(relocation.type, 'type')} "
                       f"({relocation.type}) on instruction opcode {insn.opcode:#04x} against "
                       f"{symbol.name!r}", section.name, where)

    def _extern(self, insn, relocation, ext, section, where):
        """An instruction that uses an extern: a 64-bit load of a .kconfig value becomes a
        load of its address in the ``.kconfig`` map; a kfunc call and a 64-bit load of a
        kernel symbol keep the extern's name in ``ref``, for :mod:`pybpf.ksyms` to resolve
        when the program is loaded."""
        call = insn.opcode == oc.JMP | oc.CALL
        load = insn.opcode == oc.LD_IMM64 and relocation.type == R_BPF_64_64
        if call and relocation.type == R_BPF_64_32 and ext.func:
            insn.src, insn.off, insn.imm, insn.ref = abi.PSEUDO_KFUNC_CALL, 0, 0, ext.name
        elif load and ext.section == externs.KCONFIG:
            offset = ext.offset + (insn.imm & 0xFFFFFFFF)  # REL: the addend is in the insn
            insn.src, insn.imm, insn.ref = abi.PSEUDO_MAP_VALUE, offset << 32, externs.KCONFIG
            return []
        elif load:
            insn.src = abi.PSEUDO_BTF_ID if ext.type_id else 0
            insn.imm, insn.ref = 0, ext.name
        else:
            use = "called" if call else f"used by instruction opcode {insn.opcode:#04x}"
            raise ElfError(f"extern {ext.name!r} ({ext.section}) is {use}: only kfuncs are "
                           f"called, and variables are used through a 64-bit load of their "
                           f"address", section.name, where)
        self.externs[ext.name] = ext
        return []

    def _relocate_load(self, insn, symbol, target, section, where):
        """``ld_imm64`` of a map, of a global variable (map value + offset) or of a function."""
        addend = insn.imm & 0xFFFFFFFF  # REL relocations keep their addend in the instruction
        key = (target.index, symbol.value + addend)
        if key in self.obj.map_symbols:
            insn.src, insn.imm, insn.ref = abi.PSEUDO_MAP_FD, 0, self.obj.map_symbols[key]
            return []
        if target.index in self.obj.data_maps:
            offset = symbol.value + addend
            if offset >= target.size:
                raise ElfError(f"reference to {symbol.name}+{offset:#x}, past the end of "
                               f"{target.name}", section.name, where)
            insn.src, insn.imm = abi.PSEUDO_MAP_VALUE, offset << 32
            insn.ref = self.obj.data_maps[target.index]
            return []
        if target.executable:
            callee = self.obj.function_at(target.index, symbol.value + addend, section.name,
                                          where)
            insn.src, insn.imm, insn.ref = abi.PSEUDO_FUNC, 0, callee.name
            return [callee]
        raise ElfError(f"64-bit load of {symbol.name!r} in section {target.name!r}, which is "
                       "neither a map, global data nor code", section.name, where)

    def func_info(self) -> bytes:
        """``bpf_func_info`` records (slot, FUNC type id) for every placed function."""
        ext = self.obj.btf_ext
        if ext is None:
            return b""
        records = []
        for function, slot in self.placed:
            infos = ext.func_info.get(function.section.name, [])
            match = [i for i in infos if i.insn_off == function.offset]
            if not match:
                return b""  # the kernel wants func_info for all functions or none
            records.append(struct.pack("<II", slot, match[0].type_id))
        return b"".join(records)

    def line_info(self) -> bytes:
        """``bpf_line_info`` records with slots counted from the program's start."""
        ext = self.obj.btf_ext
        if ext is None:
            return b""
        records = []
        for function, slot in self.placed:
            end = function.offset + function.slots[-1]
            for info in ext.line_info.get(function.section.name, []):
                if function.offset <= info.insn_off <= end:
                    records.append(struct.pack(
                        "<4I", slot + (info.insn_off - function.offset) // INSN_SIZE,
                        info.file_name_off, info.line_off, info.line_col))
        return b"".join(records)


def line_comments(obj, function) -> Dict[int, str]:
    """``{section byte offset: C source line}`` where the source line changes."""
    if obj.btf_ext is None:
        return {}
    comments, previous = {}, None
    for info in obj.btf_ext.line_info.get(function.section.name, []):
        if info.insn_off in comments or (info.file_name_off, info.line) == previous:
            continue
        previous = (info.file_name_off, info.line)
        text = obj.btf.string(info.line_off).strip()
        if text:
            comments[info.insn_off] = text
    return comments
