"""Fuzz the ELF loader: mutate bytes of the committed test objects, load each with load_spec,
and apply each program's CO-RE relocations against the running kernel's BTF.

Every case must either load or raise ElfError/BTFError/CoreError (the documented errors); any
other exception is a bug and is printed with the input that caused it. Hypothesis generates
the mutations, half of them of any object (a few overwritten bytes, or a truncation), half
aimed at the CO-RE relocation records of tests/core/*.o (a field of a ``bpf_core_relo``
record set to an interesting or random value, or bytes of the block or of the access strings
overwritten).

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

from pybpf import elf  # noqa: E402
from pybpf.btf import core  # noqa: E402
from pybpf.btf.kernel import running_kernel  # noqa: E402
from pybpf.errors import CoreError, ElfError  # noqa: E402

TESTS = os.path.join(os.path.dirname(__file__), "..", "tests")
OBJECTS = {os.path.relpath(p, TESTS): open(p, "rb").read()
           for p in sorted(glob.glob(os.path.join(TESTS, "elf", "*.o"))
                           + glob.glob(os.path.join(TESTS, "core", "*.o")))}
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


def load_and_relocate(data, kernel):
    """load_spec, then each program's CO-RE relocations; returns how far it got."""
    spec = elf.load_spec(data)
    relocated = 0
    for name, program in spec.programs.items():
        if any(insn.core is not None for insn in program.insns):
            core.relocate(program.insns, kernel, name)
            relocated += 1
    return "relocated" if relocated else "loaded"


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
    @given(st.one_of(mutated_objects(), mutated_core_relos()))
    def run(data):
        try:
            outcomes[load_and_relocate(data, kernel)] += 1
        except (ElfError, CoreError) as exc:
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
