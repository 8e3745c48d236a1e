"""Functions in user-space binaries: where a uprobe goes, and where a shared library lives.

A uprobe is placed on a *file*, at a byte offset in it: the kernel finds the page of the
file's text that holds that offset in every process that maps it. A program names a function
instead (``SEC("uprobe/libc.so.6:getpid")``), so the loader turns the name into the offset,
as libbpf does:

- **the symbol**: the function's entry (``STT_FUNC``) in the dynamic symbol table (what a
  stripped binary keeps) or else the full symbol table. ``name@@VERSION`` and
  ``name@VERSION`` pick one version of a versioned library function.
- **the file offset**: a symbol's value is a virtual address; the loadable segment
  (``PT_LOAD``) that contains it says where those bytes are in the file:
  ``offset = st_value - p_vaddr + p_offset``.
- **the file**: a name without a ``/`` is looked for as the dynamic linker would find it:
  a library (``libc.so.6``) in ``LD_LIBRARY_PATH``, the linker's cache ``/etc/ld.so.cache``
  (what ``ldconfig -p`` lists) and the default directories, or in the files a running
  process has mapped (``/proc/PID/maps``); a program in ``PATH``.

Reading a binary is pure file parsing (pyelftools reads the ELF container); a malformed one
is a :class:`~pybpf.errors.SymbolError`, never an internal exception.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple, Optional

from .errors import SymbolError

LD_SO_CACHE = "/etc/ld.so.cache"
_CACHE_MAGIC_OLD = b"ld.so-1.7.0"
_CACHE_MAGIC_NEW = b"glibc-ld.so.cache1.1"
_CACHE_HEADER_NEW = struct.Struct("<20sIIB3x16x")  # magic+version, nlibs, len_strings, flags
_CACHE_ENTRY_NEW = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
_CACHE_ENTRY_OLD_SIZE = 12  # struct file_entry: flags, key, value
_FLAG_ELF_LIBC6 = 0x0003
# sysdeps/generic/ldconfig.h: the FLAG_*_LIB64 bits a library built for this machine carries
_CACHE_ARCH_FLAGS = {"x86_64": 0x0300, "aarch64": 0x0a00}
# libbpf's extra directories for libraries (besides /usr/lib64 and /usr/lib): Debian's
# multiarch directory of this machine
_MULTIARCH = {"x86_64": "/lib/x86_64-linux-gnu", "aarch64": "/lib/aarch64-linux-gnu"}
_DEFAULT_LIBRARY_DIRS = ("/usr/lib64", "/usr/lib")
_DEFAULT_PROGRAM_DIRS = ("/usr/bin", "/usr/sbin")
_VERSYM_HIDDEN = 0x8000
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: st_name, st_info, st_other, st_shndx, value, size
_VERDEF_SIZE = 20  # sizeof(Elf64_Verdef)
_VERSYM = struct.Struct("<H")  # Elf64_Versym: a version index per dynamic symbol
STT_FUNC, STT_GNU_IFUNC, STB_WEAK, SHN_UNDEF = 2, 10, 2, 0


class FunctionSymbol(NamedTuple):
    """A function found in a binary: its ``name`` (with ``@VERSION`` when versioned), its
    virtual address ``value``, and ``offset``, where it is in the file (what a uprobe takes)."""

    name: str
    value: int
    offset: int


def is_library(name: str) -> bool:
    """Whether ``name`` names a shared library (``libc.so.6``, ``libfoo.so``), as libbpf
    tells them from programs: by the ``.so`` in the name."""
    return name.endswith(".so") or ".so." in name


def resolve_binary(name: str, pid: Optional[int] = None) -> str:
    """The path of the binary a uprobe names: ``name`` itself when it has a ``/``; else the
    library or program the dynamic linker or a shell would find (see the module), or, with
    ``pid``, the file of that name mapped by that process."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise SymbolError(f"invalid binary name {name!r}: give a path or a file name such as "
                          f"libc.so.6")
    if "/" in name:
        return name
    if pid is not None:
        found = _mapped_file(name, pid)
        if found:
            return found
    candidates = _library_candidates(name) if is_library(name) else _program_candidates(name)
    mode = os.R_OK if is_library(name) else os.R_OK | os.X_OK
    for path in candidates:
        if os.access(path, mode) and os.path.isfile(path):
            return path
    where = (f"the files process {pid} maps, " if pid is not None else "") + (
        f"LD_LIBRARY_PATH, {LD_SO_CACHE} and {', '.join(_library_dirs())}"
        if is_library(name) else f"PATH and {', '.join(_DEFAULT_PROGRAM_DIRS)}")
    raise SymbolError(f"cannot find {name!r} in {where}; give its full path")


def _library_candidates(name):
    """Where the dynamic linker looks for library ``name``, in its order."""
    for directory in _split_path(os.environ.get("LD_LIBRARY_PATH", "")):
        yield os.path.join(directory, name)
    cached = ld_cache().get(name)
    if cached:
        yield cached
    for directory in _library_dirs():
        yield os.path.join(directory, name)


def _library_dirs():
    machine = os.uname().machine
    return _DEFAULT_LIBRARY_DIRS + ((_MULTIARCH[machine],) if machine in _MULTIARCH else ())


def _program_candidates(name):
    """Where a shell looks for program ``name``: PATH, then libbpf's defaults."""
    for directory in list(_split_path(os.environ.get("PATH", ""))) + list(_DEFAULT_PROGRAM_DIRS):
        yield os.path.join(directory, name)


def _split_path(value):
    return [part for part in value.split(":") if part]


def _mapped_file(name, pid):
    """The path of a file named ``name`` (its base name) that process ``pid`` maps, or None."""
    try:
        with open(f"/proc/{int(pid)}/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].rstrip("\n")
                    if path.startswith("/") and os.path.basename(path) == name:
                        return path
    except (OSError, ValueError):
        raise SymbolError(f"cannot read the memory map of process {pid} (/proc/{pid}/maps): "
                          f"no such process, or not allowed") from None
    return None


def ld_cache(path: str = LD_SO_CACHE) -> dict:
    """``{library name: path}`` from the dynamic linker's cache (``ldconfig -p``), for the
    libraries built for this machine; the first entry of a name wins, as it does for the
    linker. Empty when the file is absent or in a format not known here."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    return parse_ld_cache(data, os.uname().machine)


def parse_ld_cache(data: bytes, machine: str) -> dict:
    """The libraries of an ``ld.so.cache`` file's bytes for ``machine`` (``uname -m``).

    glibc writes the "new" format (``glibc-ld.so.cache1.1``: a header, 24-byte entries, then
    the strings, entries' offsets counted from the header), alone or after the old format
    (``ld.so-1.7.0``, 12-byte entries). Malformed bytes give the entries read so far.
    """
    start = 0
    if data.startswith(_CACHE_MAGIC_OLD):
        if len(data) < 16:
            return {}
        count = struct.unpack_from("<I", data, 12)[0]
        start = (16 + count * _CACHE_ENTRY_OLD_SIZE + 7) & ~7  # the new table is 8-aligned
    if data[start:start + len(_CACHE_MAGIC_NEW)] != _CACHE_MAGIC_NEW or \
            len(data) < start + _CACHE_HEADER_NEW.size:
        return {}
    _, count, _, _ = _CACHE_HEADER_NEW.unpack_from(data, start)
    wanted = _FLAG_ELF_LIBC6 | _CACHE_ARCH_FLAGS.get(machine, 0)
    libraries: dict = {}
    for index in range(count):
        at = start + _CACHE_HEADER_NEW.size + index * _CACHE_ENTRY_NEW.size
        if at + _CACHE_ENTRY_NEW.size > len(data):
            break
        flags, key, value, _, _ = _CACHE_ENTRY_NEW.unpack_from(data, at)
        name, path = _cstring(data, start + key), _cstring(data, start + value)
        if flags == wanted and name and path and name not in libraries:
            libraries[name] = path
    return libraries


def _cstring(data, offset):
    """The NUL-terminated string at ``offset`` of ``data``, or None if it runs off the end."""
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        return None
    return os.fsdecode(data[offset:end])


# -- symbols --------------------------------------------------------------------------------

def function_offset(path: str, name: str) -> int:
    """The file offset of function ``name`` in the ELF binary ``path`` (see the module)."""
    return find_function(path, name).offset


def find_function(path: str, name: str) -> FunctionSymbol:
    """The function ``name`` (``func``, ``func@VER`` or ``func@@VER``) of ELF file ``path``.

    The dynamic symbols are searched first, then the full symbol table; several matches at
    the same offset are one function, a global one wins over a weak one, and two different
    global ones are an error (as in libbpf).
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise SymbolError(f"invalid function name {name!r}")
    # pyelftools is imported when a binary is read, not with pybpf.attach: programs that
    # attach no uprobe (the execve tracker) start without it (and the pdb its construct loads)
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.elffile import ELFFile

    # what pyelftools raises on a corrupt file; TypeError too: 0.32 reads a section header
    # past the end of the file as None, then subscripts it (e_shnum 0 sends it to header 0)
    corrupt = (ELFError, ConstructError, struct.error, ValueError, KeyError, IndexError,
               UnicodeDecodeError, OverflowError, TypeError)
    base, _, version = name.partition("@")
    version = version.lstrip("@")
    try:
        with open(path, "rb") as f:
            return _find(ELFFile(f), path, name, base, version)
    except OSError as exc:
        raise SymbolError(f"cannot read {path}: {exc.strerror}") from None
    except corrupt as exc:
        raise SymbolError(f"{path} is not a readable ELF file ({type(exc).__name__}: "
                          f"{exc}); a uprobe needs an ELF executable or shared library"
                          ) from None


def _find(elf, path, name, base, version):
    segments = _load_segments(elf, path)
    tables = {kind: _symbol_table(elf, kind, base) for kind in ("SHT_DYNSYM", "SHT_SYMTAB")}
    ifuncs, undefined = [], False
    for kind, table in tables.items():
        if table is None:
            continue
        versions = _versions(elf) if kind == "SHT_DYNSYM" else None
        found = bind = None
        for index, sym_name, info, shndx, value in table:
            if not _name_matches(sym_name, base, version, versions, index):
                continue
            sym_type, this_bind = info & 0xF, info >> 4
            if sym_type == STT_GNU_IFUNC:
                ifuncs.append(sym_name)
                continue
            if sym_type != STT_FUNC:
                continue
            if shndx == SHN_UNDEF:
                undefined = True
                continue
            this = FunctionSymbol(_versioned(sym_name, versions, index), value,
                                  _file_offset(segments, value, sym_name, path))
            if found is None or (bind == STB_WEAK and this_bind != STB_WEAK):
                found, bind = this, this_bind
            elif this.offset != found.offset and STB_WEAK not in (bind, this_bind):
                raise SymbolError(f"{path}: {name!r} is ambiguous: {found.name} at "
                                  f"{found.offset:#x} and {this.name} at {this.offset:#x}; "
                                  f"name the version (func@@VERSION)")
        if found is not None:
            return found
    if ifuncs:
        raise SymbolError(f"{path}: {name!r} is an indirect function (STT_GNU_IFUNC: its "
                          f"symbol is the resolver that picks an implementation at load "
                          f"time); probe the implementation by its name or by offset")
    if undefined:
        raise SymbolError(f"{path} calls {name!r} but does not define it (it comes from a "
                          f"shared library): probe the library, e.g. uprobe/libc.so.6:{base}")
    stripped = "; the binary is stripped" if tables["SHT_SYMTAB"] is None else ""
    raise SymbolError(f"no function {name!r} in {path} (searched .dynsym and .symtab"
                      f"{stripped})")


def _symbol_table(elf, kind, base):
    """The symbols named ``base`` (or ``base@...``) in the first section of type ``kind``,
    as ``(index, name, st_info, st_shndx, st_value)``; None when there is no such section.
    Read with ``struct`` from the section's bytes, names compared as bytes before decoding:
    pyelftools' symbol objects cost 100 microseconds each (libc has 3,000 symbols, a program
    built with debug symbols 100,000)."""
    for section in elf.iter_sections():
        if section["sh_type"] != kind:
            continue
        if section["sh_entsize"] != _SYM.size:
            raise SymbolError(f"{elf.stream.name}: symbol table {section.name} has "
                              f"{section['sh_entsize']}-byte entries, not {_SYM.size} (a "
                              f"64-bit ELF file is needed)")
        data = _section_data(elf, section)
        strings = _section_data(elf, elf.get_section(section["sh_link"]))
        prefix = base.encode()
        found = []
        usable = len(data) - len(data) % _SYM.size
        for index, (st_name, info, _, shndx, value, _) in enumerate(
                _SYM.iter_unpack(data[:usable])):
            if strings.startswith(prefix, st_name):
                end = strings.find(b"\0", st_name)
                found.append((index, strings[st_name:end if end >= 0 else len(strings)]
                              .decode("utf-8", "replace"), info, shndx, value))
        return found
    return None


def _section_data(elf, section):
    """A section's bytes, once its header is known to point inside the file (a corrupt size
    must not make pyelftools read gigabytes)."""
    size = elf.stream.seek(0, os.SEEK_END)
    if section["sh_type"] != "SHT_NOBITS" and section["sh_offset"] + section["sh_size"] > size:
        raise SymbolError(f"{elf.stream.name}: section {section.name!r} ({section['sh_size']} "
                          f"bytes at {section['sh_offset']:#x}) runs past the end of the "
                          f"file ({size} bytes): truncated or corrupt")
    return section.data()


def _load_segments(elf, path):
    """``[(p_vaddr, p_offset, p_filesz)]`` of the loadable segments."""
    segments = [(seg["p_vaddr"], seg["p_offset"], seg["p_filesz"]) for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD"]
    if not segments:
        raise SymbolError(f"{path} has no loadable segment (PT_LOAD): not an executable or "
                          f"shared library (a uprobe cannot go in an object file)")
    return segments


def _file_offset(segments, value, name, path):
    """Where virtual address ``value`` is in the file: in the segment holding it."""
    for vaddr, offset, filesz in segments:
        if vaddr <= value < vaddr + filesz:
            return value - vaddr + offset
    raise SymbolError(f"{path}: function {name!r} is at {value:#x}, outside every loadable "
                      f"segment's file bytes: the symbol table is wrong")


def _versions(elf):
    """``(version index of each dynamic symbol, {version index: name})`` of a binary's
    versioned dynamic symbols (``.gnu.version`` and ``.gnu.version_d``), or None."""
    versym = defs = None
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_GNU_versym":
            versym = section
        elif section["sh_type"] == "SHT_GNU_verdef":
            defs = section
    if versym is None or defs is None:
        return None
    data = _section_data(elf, versym)
    indexes = [entry[0] for entry in _VERSYM.iter_unpack(data[:len(data) & ~1])]
    names = {}
    _section_data(elf, defs)  # (checks that the section is in the file)
    most = defs["sh_size"] // _VERDEF_SIZE  # a vd_next loop must not run 2**32 times
    for count, (verdef, aux) in enumerate(defs.iter_versions()):
        if count >= most:
            break
        for entry in aux:  # the first name is the version's own; the others its parents
            names[verdef["vd_ndx"]] = entry.name
            break
    return indexes, names


def _version_of(versions, index):
    """The version name of dynamic symbol ``index`` (None when unversioned), and whether it
    is hidden (an old default: ``name@VER`` rather than ``name@@VER``)."""
    if versions is None:
        return None, False
    indexes, names = versions
    ndx = indexes[index] if index < len(indexes) else 0
    return names.get(ndx & ~_VERSYM_HIDDEN), bool(ndx & _VERSYM_HIDDEN)


def _name_matches(symbol, base, version, versions, index):
    """Whether symbol ``symbol`` (the ``index``-th of its table) is ``base[@version]``."""
    head, _, own = symbol.partition("@")
    if head != base:
        return False
    if not version:
        return True
    if own:  # .symtab spells the version in the name
        return own.lstrip("@") == version
    return _version_of(versions, index)[0] == version


def _versioned(name, versions, index):
    """``name@@VER`` (default version) or ``name@VER`` for a versioned dynamic symbol."""
    version, hidden = _version_of(versions, index)
    if version is None or "@" in name:
        return name
    return f"{name}{'@' if hidden else '@@'}{version}"

