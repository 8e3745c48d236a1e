"""Fuzz the ELF loader: mutate bytes of the committed test objects, load each with load_spec,
apply each program's CO-RE relocations against the running kernel's BTF, and resolve its
externs as a load would (the .kconfig values against a fixed kernel config; kfuncs and ksyms
against the running kernel's BTF and kallsyms), without loading anything into the kernel.

Every case must either load or raise ElfError/BTFError/CoreError/ExternError (the documented
errors); any other exception is a bug and is printed with the input that caused it.
Hypothesis generates the mutations, a quarter each:

- any object (tests/elf, tests/core, tests/objects): a few overwritten bytes, or a truncation;
- the CO-RE relocation records of tests/core/*.o (a field of a ``bpf_core_relo`` record set
  to an interesting or random value, or bytes of the block or of the access strings);
- the externs of the corpus (tests/objects): a word of the ``.kconfig``/``.ksyms`` DATASEC
  records or of their VAR/FUNC records (types, linkage, offsets, sizes, counts), or a field of
  an undefined symbol (binding, type, section, value);
- the map definitions of the corpus: a word of the ``.maps`` DATASEC or of a map's struct
  record (the ``__array(values, ...)`` members of maps of maps), or a field of a ``.rel.maps``
  relocation (the ``.values`` initialisers: offset, symbol, type).

Prints one row of a Markdown table (run, outcomes, crashes, total); ``run_all.py`` prints
its header.

    python bench/fuzz_elf.py [--cases 5000] [--seed 0]
"""

import argparse
import collections
import glob
import io
import os
import struct
import sys
import time
import traceback

import elftools
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pybpf import elf, externs, ksyms  # noqa: E402
from pybpf.btf import BTF, Kind, core  # noqa: E402
from pybpf.btf.kernel import running_kernel  # noqa: E402
from pybpf.errors import CoreError, ElfError, ExternError  # noqa: E402

TESTS = os.path.join(os.path.dirname(__file__), "..", "tests")
OBJECTS = {os.path.relpath(p, TESTS): open(p, "rb").read()
           for p in sorted(glob.glob(os.path.join(TESTS, "elf", "*.o"))
                           + glob.glob(os.path.join(TESTS, "core", "*.o"))
                           + glob.glob(os.path.join(TESTS, "objects", "*.o")))}
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


CORE = {name: core_regions(data) for name, data in OBJECTS.items()
        if name.startswith("core")}  # the objects with CO-RE relocations


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


def load_and_relocate(data, kernel, resolver):
    """load_spec, then each program's CO-RE relocations and externs; returns how far it got."""
    spec = elf.load_spec(data)
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
            resolver.bind(insns, program.externs, name)
            resolved += 1
    return "resolved" if resolved else "relocated" if relocated else "loaded"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kernel = running_kernel()
    outcomes, crashes = collections.Counter(), []

    @seed(args.seed)
    @settings(max_examples=args.cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.one_of(mutated_objects(), mutated_core_relos(), mutated_externs(),
                     mutated_map_definitions()))
    def run(data):
        try:
            with ksyms.Resolver(kernel) as resolver:  # each case's own (damaged) externs
                outcomes[load_and_relocate(data, kernel, resolver)] += 1
        except (ElfError, CoreError, ExternError) as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # the bug this benchmark hunts
            outcomes["CRASH " + type(exc).__name__] += 1
            crashes.append((exc, data))

    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    total = sum(outcomes.values())
    crashed = sum(v for k, v in outcomes.items() if k.startswith("CRASH"))
    counts = ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common() if not k.startswith("CRASH"))
    print(f"| Python {sys.version.split()[0]}, pyelftools {elftools.__version__}, "
          f"`--cases {args.cases} --seed {args.seed}` | {counts} | {crashed:,} | "
          f"{total:,} in {elapsed:.1f} s |")
    for exc, _data in crashes[:5]:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"\ncrash: {exc!r} at {where.filename}:{where.lineno}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
