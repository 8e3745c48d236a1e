"""Fuzz the ELF loader with mutated objects, and (--kernel) the kernel with what it loads.

The committed test objects (tests/elf, tests/core, tests/objects) are mutated five ways, a
fifth of the cases each: a few bytes overwritten anywhere, or the file cut short; a few bytes
overwritten inside one section's contents, headers intact (these mostly load, and so reach
the kernel); the CO-RE relocation records of tests/core/*.o damaged (a field of a
``bpf_core_relo`` record set to an interesting or random value, or bytes of the core_relo
block or of the access strings overwritten); the externs of the corpus (tests/objects): a
word of the ``.kconfig``/``.ksyms`` DATASEC records or of their VAR/FUNC records (types,
linkage, offsets, sizes, counts), or a field of an undefined symbol (binding, type, section,
value); the map definitions of the corpus: a word of the ``.maps`` DATASEC or of a map's
struct record (the ``__array(values, ...)`` members of maps of maps), or a field of a
``.rel.maps`` relocation (the ``.values`` initialisers: offset, symbol, type).

Each case must load with ``elf.load_spec``; every program's CO-RE relocations are applied
against the running kernel's BTF, its externs resolved as a load would (the .kconfig values
against a fixed kernel config; kfuncs and ksyms against the running kernel's BTF and
kallsyms), and its labels and map names must link; or the case raises ElfError/BTFError/
CoreError/ExternError, the documented errors ("relocated": CO-RE relocations applied,
"resolved": externs resolved).

With ``--kernel`` (as root), every spec that loads is then created in the running kernel
with ``pybpf.collection.Collection`` (BTF, maps, programs relocated against the running
kernel; nothing attached, nothing pinned: pinning is cleared) and closed. Any BPFError is a
documented outcome (the kernel refusing what the mutation broke, reported as pybpf's
errors); anything else is a crash, and a file descriptor left open after the collection is
closed is a failure. A guard keeps the kernel safe: a mutated ARRAY max_entries once made
the kernel zero gigabytes and log a 22 s soft lockup, so a spec whose maps would take more
than --max-map-bytes (default 16 MiB) each is skipped and counted.

    python bench/fuzz_elf.py [--cases 20000] [--seed S] [--kernel] [--max-map-bytes N]
"""

import glob
import io
import os
import struct
import sys

from elftools.elf.elffile import ELFFile
from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from fuzzing import Failure, run  # noqa: E402
from pybpf import elf, externs, ksyms  # noqa: E402
from pybpf.abi import MapType  # noqa: E402
from pybpf.asm import resolve  # noqa: E402
from pybpf.btf import BTF, Kind, core  # noqa: E402
from pybpf.btf.kernel import running_kernel  # noqa: E402
from pybpf.errors import BPFError, CoreError, ElfError, ExternError  # noqa: E402

TESTS = os.path.join(HERE, "..", "tests")
OBJECTS = {}
for _path in sorted(glob.glob(os.path.join(TESTS, "elf", "*.o"))
                    + glob.glob(os.path.join(TESTS, "core", "*.o"))
                    + glob.glob(os.path.join(TESTS, "objects", "*.o"))):
    with open(_path, "rb") as _file:
        OBJECTS[os.path.relpath(_path, TESTS)] = _file.read()
KCONFIG = "CONFIG_HZ=250\nCONFIG_BPF_SYSCALL=y\n# CONFIG_KPROBES is not set\nCONFIG_BLK_DEV=m\n" \
    'CONFIG_DEFAULT_HOSTNAME="(none)"\n'
RELEASE = "6.18.44"


INTERESTING = [0, 1, 2, 7, 8, 12, 13, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def core_regions(data):
    """File offsets of an object's CO-RE records: (first record of the first section, record
    count, record size, (start, end) of the core_relo block, (start, end) of .BTF's string
    table, where the access strings are)."""
    sections = ELFFile(io.BytesIO(data))
    ext, btf = sections.get_section_by_name(".BTF.ext"), sections.get_section_by_name(".BTF")
    raw = ext.data()
    hdr_len, = struct.unpack_from("<I", raw, 4)
    core_off, core_len = struct.unpack_from("<II", raw, 24)
    rec_size, _, count = struct.unpack_from("<III", raw, hdr_len + core_off)
    block = ext["sh_offset"] + hdr_len + core_off
    btf_hdr_len, str_off, str_len = (struct.unpack_from("<I", btf.data(), i)[0]
                                     for i in (4, 16, 20))
    strings = btf["sh_offset"] + btf_hdr_len + str_off
    return (block + 4 + 8, count, rec_size, (block, block + core_len),
            (strings, strings + str_len))


def section_ranges(data):
    """(offset, size) of every section with contents in the file."""
    return [(s["sh_offset"], s["sh_size"]) for s in ELFFile(io.BytesIO(data)).iter_sections()
            if s["sh_type"] != "SHT_NOBITS" and s["sh_size"]]


CORE = {name: core_regions(data) for name, data in OBJECTS.items()
        if name.startswith("core")}  # the objects with CO-RE relocations
SECTIONS = {name: section_ranges(data) for name, data in OBJECTS.items()}


def btf_records(data, datasec_names):
    """File offsets and sizes of the .BTF records of the DATASECs ``datasec_names`` and of
    the types they list (VARs, FUNCs) and those types' own types (a map's struct)."""
    sections = ELFFile(io.BytesIO(data))
    section = sections.get_section_by_name(".BTF")
    raw = section.data()
    hdr_len, type_off = struct.unpack_from("<II", raw, 4)[0], struct.unpack_from("<I", raw, 8)[0]
    types_at = section["sh_offset"] + hdr_len + type_off
    btf = BTF.parse(raw)
    starts, ends = {}, sorted(btf._starts) + [len(btf._words)]

    def record(type_id):
        start = btf._start(type_id)
        starts[type_id] = (types_at + 4 * start, 4 * (ends[ends.index(start) + 1] - start))
    for name in datasec_names:
        datasec = btf.find(name, Kind.DATASEC)
        if datasec is None:
            continue
        record(datasec)
        for var in btf.type(datasec).vars:
            record(var.type)
            inner = btf.skip_qualifiers(btf.type(var.type).type)
            if btf.kind(var.type) == Kind.VAR and inner >= btf.first_id:
                record(inner)
    return list(starts.values())


def elf_entries(data, section_name, entry_size, predicate=lambda entry: True):
    """File offsets of the ``entry_size``-byte entries of a section (those ``predicate``
    keeps, given the entry's bytes)."""
    section = ELFFile(io.BytesIO(data)).get_section_by_name(section_name)
    if section is None:
        return []
    start = section["sh_offset"]
    return [start + i for i in range(0, section["sh_size"], entry_size)
            if predicate(data[start + i:start + i + entry_size])]


def _undefined(entry):
    return struct.unpack_from("<H", entry, 6)[0] == 0 and entry[4] >> 4 in (1, 2)  # GLOBAL/WEAK


EXTERNS = {name: (btf_records(data, (".kconfig", ".ksyms")),
                  elf_entries(data, ".symtab", 24, _undefined))
           for name, data in OBJECTS.items() if name.startswith("objects")}
EXTERNS = {name: regions for name, regions in EXTERNS.items() if regions[1]}
MAP_DEFS = {name: (btf_records(data, (".maps",)), elf_entries(data, ".rel.maps", 16))
            for name, data in OBJECTS.items() if name.startswith("objects")}
MAP_DEFS = {name: regions for name, regions in MAP_DEFS.items() if regions[1]}


def _word(draw):
    return draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 2**32 - 1)))


def _overwrite_record_word(draw, data, records):
    """Set one 32-bit word of one of the BTF ``records`` (file offset, size) of ``data``."""
    start, size = draw(st.sampled_from(records))
    at = start + 4 * draw(st.integers(0, size // 4 - 1))
    data[at:at + 4] = struct.pack("<I", _word(draw))


@st.composite
def mutated_externs(draw):
    """A corpus object with externs, a word of an extern BTF record or a field of an
    undefined symbol (st_info, st_shndx or st_value) changed."""
    name = draw(st.sampled_from(sorted(EXTERNS)))
    records, symbols = EXTERNS[name]
    data = bytearray(OBJECTS[name])
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            _overwrite_record_word(draw, data, records)
        else:
            entry = draw(st.sampled_from(symbols))
            field = draw(st.sampled_from([(4, 1), (6, 2), (8, 8)]))  # info, shndx, value
            value = draw(st.integers(0, 2 ** (8 * field[1]) - 1))
            data[entry + field[0]:entry + sum(field)] = value.to_bytes(field[1], "little")
    return bytes(data)


@st.composite
def mutated_map_definitions(draw):
    """A corpus object with .values initialisers, a word of a .maps BTF record or a field
    of a .rel.maps relocation (r_offset, symbol index, type) changed."""
    name = draw(st.sampled_from(sorted(MAP_DEFS)))
    records, relocations = MAP_DEFS[name]
    data = bytearray(OBJECTS[name])
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            _overwrite_record_word(draw, data, records)
        else:
            at = draw(st.sampled_from(relocations)) + draw(st.sampled_from([0, 8, 12]))
            width = 8 if at % 16 == 0 else 4
            data[at:at + width] = _word(draw).to_bytes(width, "little")
    return bytes(data)


@st.composite
def mutated_objects(draw):
    """A fixture object with a few bytes overwritten, or cut short."""
    data = bytearray(OBJECTS[draw(st.sampled_from(sorted(OBJECTS)))])
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def mutated_sections(draw):
    """A fixture object with a few bytes overwritten inside one section's contents (code,
    maps, BTF, data, relocations, symbols): headers intact, so that most of these load and
    reach the kernel."""
    name = draw(st.sampled_from(sorted(OBJECTS)))
    data = bytearray(OBJECTS[name])
    start, size = draw(st.sampled_from(SECTIONS[name]))
    for _ in range(draw(st.integers(1, 8))):
        data[start + draw(st.integers(0, size - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def mutated_core_relos(draw):
    """A CO-RE object with its relocation records (or their access strings) damaged."""
    name = draw(st.sampled_from(sorted(CORE)))
    first, count, rec_size, (block_start, block_end), (str_start, str_end) = CORE[name]
    data = bytearray(OBJECTS[name])
    for _ in range(draw(st.integers(1, 3))):
        mode = draw(st.sampled_from(["field", "field", "block", "strings"]))
        if mode == "field":  # insn_off, type_id, access_str_off or kind of one record
            record = draw(st.integers(0, count - 1))
            position = first + record * rec_size + 4 * draw(st.integers(0, 3))
            value = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 2**32 - 1)))
            data[position:position + 4] = struct.pack("<I", value)
        elif mode == "block":
            data[draw(st.integers(block_start, block_end - 1))] = draw(st.integers(0, 255))
        else:  # the access strings ("0:1:2") live in .BTF's string table
            data[draw(st.integers(str_start, str_end - 1))] = draw(
                st.sampled_from(list(b"0123456789:\0x-")))
    return bytes(data)


def map_bytes(spec):
    """About how much kernel memory creating the map ``spec`` takes (and zeroes)."""
    if spec.type in (MapType.RINGBUF, MapType.USER_RINGBUF):
        return spec.max_entries
    if spec.type == MapType.ARENA:
        return spec.max_entries * 4096
    copies = os.cpu_count() if "PERCPU" in spec.type.name else 1
    size = spec.max_entries * (spec.key_size + spec.value_size * copies)
    return size + (map_bytes(spec.inner_map) if spec.inner_map is not None else 0)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def relocate_and_resolve(spec, kernel, resolver):
    """Each program of ``spec`` with its CO-RE relocations applied, its externs resolved and
    its labels and maps linked, as a load would; returns how far it got."""
    relocated = resolved = 0
    if externs.kconfig_size(spec.externs):
        externs.kconfig_data(spec.externs, KCONFIG, RELEASE,
                             {"LINUX_HAS_BPF_COOKIE": 1, "LINUX_HAS_SYSCALL_WRAPPER": 1})
        resolved += 1
    for name, program in spec.programs.items():
        insns = program.insns
        if any(insn.core is not None for insn in insns):
            insns = core.relocate(insns, kernel, name)
            relocated += 1
        if program.externs:
            insns = resolver.bind(insns, program.externs, name)
            resolved += 1
        resolve(insns, dict.fromkeys(spec.maps, 0))  # its labels and maps link
    return "resolved" if resolved else "relocated" if relocated else "loaded"


def check(data, args):
    spec = elf.load_spec(data)
    if not args.kernel:
        with ksyms.Resolver(running_kernel()) as resolver:  # each case's own externs
            return relocate_and_resolve(spec, running_kernel(), resolver)
    if any(map_bytes(m) > args.max_map_bytes for m in spec.maps.values()):
        return "loaded; not created: a map larger than --max-map-bytes"
    spec.maps = {name: m.copy(pinning=None) for name, m in spec.maps.items()}
    from pybpf.collection import Collection

    before = open_fds()
    try:
        with Collection(spec, kernel_btf=running_kernel()):
            pass
    finally:
        if open_fds() != before:
            raise Failure(f"{open_fds() - before} file descriptors left open")
    return "loaded into the kernel"


def arguments(parser):
    parser.add_argument("--kernel", action="store_true",
                        help="create each loaded spec in the kernel (needs root)")
    parser.add_argument("--max-map-bytes", type=int, default=16 << 20, metavar="N",
                        help="skip specs with a map larger than N bytes (default 16 MiB)")


if __name__ == "__main__":
    kernel = "--kernel" in sys.argv
    title = ("ELF objects into the kernel (load_spec, then Collection)" if kernel else
             "ELF loader (elf.load_spec, CO-RE relocation, externs)")
    sys.exit(run(title, st.one_of(mutated_objects(), mutated_sections(), mutated_core_relos(),
                           mutated_externs(), mutated_map_definitions()),
                 check, BPFError if kernel else (ElfError, CoreError, ExternError),
                 arguments=arguments))
