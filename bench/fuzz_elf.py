"""Fuzz the ELF loader: mutate bytes of the committed test objects, load each with load_spec.

Every case must either load or raise ElfError/BTFError (the loader's documented errors); any
other exception is a bug and is printed with the input that caused it. Hypothesis generates
the mutations (a few overwritten bytes, or a truncation, of a random fixture object).

    python bench/fuzz_elf.py [--cases 5000] [--seed 0]
"""

import argparse
import collections
import glob
import os
import sys
import time
import traceback

from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pybpf import elf  # noqa: E402
from pybpf.errors import ElfError  # noqa: E402

OBJECTS = {os.path.basename(p): open(p, "rb").read()
           for p in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "tests",
                                                  "elf", "*.o")))}


@st.composite
def mutated_objects(draw):
    """A fixture object with a few bytes overwritten, or cut short."""
    data = bytearray(OBJECTS[draw(st.sampled_from(sorted(OBJECTS)))])
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    outcomes, crashes = collections.Counter(), []

    @seed(args.seed)
    @settings(max_examples=args.cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(mutated_objects())
    def run(data):
        try:
            elf.load_spec(data)
            outcomes["loaded"] += 1
        except ElfError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # the bug this benchmark hunts
            outcomes["CRASH " + type(exc).__name__] += 1
            crashes.append((exc, data))

    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    total = sum(outcomes.values())
    print(f"{'outcome':<24}{'cases':>8}")
    for outcome, count in outcomes.most_common():
        print(f"{outcome:<24}{count:>8}")
    print(f"{'total':<24}{total:>8}   in {elapsed:.1f} s ({total / elapsed:.0f} cases/s)")
    for exc, _data in crashes[:5]:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"crash: {exc!r} at {where.filename}:{where.lineno}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
