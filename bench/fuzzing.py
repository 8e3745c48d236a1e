"""What the fuzzers in this folder share: their command line, the run, and the report.

A fuzzer is a hypothesis strategy (the inputs) and a check: a function that takes one input and
returns the name of what happened ("loaded", "parsed"...), raises one of the errors the code
under test documents, or raises :class:`Failure` when a property does not hold (a round trip
that changes the input, a file descriptor left open). Anything else it raises is a crash: the
bug a fuzzer hunts. The report counts cases by outcome, crashes by type and place (with the
first input that caused each), and the distinct messages of the documented errors (exact,
and as kinds with numbers and quoted names masked).

Every fuzzer takes ``--cases N`` and ``--seed S``; without ``--seed`` it draws a fresh one and
prints it, so that a run can be repeated exactly.
"""

import argparse
import collections
import os
import platform
import random
import re
import sys
import time
import traceback

import hypothesis
from hypothesis import HealthCheck, Phase, given, seed, settings


class Failure(Exception):
    """A property of the code under test did not hold for this input (not a crash)."""


class Tally:
    """The outcomes of one run."""

    def __init__(self):
        self.outcomes = collections.Counter()
        self.checks = collections.Counter()  # checks after the run (not cases), by result
        self.messages = collections.Counter()  # documented errors, by exact message
        self.problems = {}  # (kind, type, where) -> (count, message, first input)

    def ok(self, outcome):
        self.outcomes[outcome] += 1

    def error(self, exc):
        self.outcomes[type(exc).__name__] += 1
        self.messages[str(exc)] += 1

    def problem(self, kind, exc, data):
        """A crash or a failed property: counted by type and place, first input kept."""
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"
        self.outcomes[f"{kind} {type(exc).__name__}"] += 1
        key = (kind, type(exc).__name__, where)
        count, message, first = self.problems.get(key, (0, str(exc), data))
        self.problems[key] = (count + 1, message, first)

    @property
    def failed(self):
        return bool(self.problems)

    def report(self, title, command, elapsed):
        total = sum(self.outcomes.values())
        script = os.path.basename(sys.argv[0])
        print(f"### {title} (`bench/{script}`)\n")
        print(f"`{command}`, Python {platform.python_version()}, hypothesis "
              f"{hypothesis.__version__}{versions()}: {total:,} cases in {elapsed:.1f} s "
              f"({total / max(elapsed, 1e-9):,.0f} cases/s).\n")
        print("| outcome | cases |\n|---|---:|")
        for outcome, count in self.outcomes.most_common():
            print(f"| {outcome} | {count:,} |")
        if self.checks:
            print("\n| further check | count |\n|---|---:|")
            for check, count in self.checks.most_common():
                print(f"| {check} | {count:,} |")
        kinds = collections.Counter()
        for message, count in self.messages.items():
            kinds[message_kind(message)] += count
        print(f"\nDistinct messages of the documented errors: {len(self.messages):,} "
              f"({len(kinds):,} kinds once numbers and quoted names are masked); the most "
              "frequent kinds:\n")
        for kind, count in kinds.most_common(5):
            print(f"- {count:,}: `{kind[:100]}`")
        if not self.problems:
            print("\nCrashes and failed properties: none.")
        for (kind, name, where), (count, message, data) in self.problems.items():
            print(f"\n{kind} {name} at {where} ({count} cases): {message[:300]}")
            print(f"  first input: {data[:120]!r}")


def repeat_command(argv, run_seed):
    """The command line that repeats this run: the options given, and the seed used."""
    words, after_seed = [], False
    for word in argv[1:]:
        if not after_seed and word != "--seed" and not word.startswith("--seed="):
            words.append(word)
        after_seed = word == "--seed"
    return " ".join(["python3", f"bench/{os.path.basename(argv[0])}", *words,
                     "--seed", str(run_seed)])


def versions():
    """``, pyelftools 0.33`` when the fuzzer uses pyelftools (its version changes what
    damaged objects trip over), else nothing."""
    elftools = sys.modules.get("elftools")
    return f", pyelftools {elftools.__version__}" if elftools is not None else ""


def message_kind(message):
    """A message with its numbers, quoted names, quoted bytes and quoted source line (an
    AssemblerError's ``instruction 3 (r1 = x): ...``) masked: errors of one kind look alike."""
    message = re.sub(r"^instruction (\d+) \(.*?\): (line \d+: )?", "instruction N (…): ",
                     message)
    message = re.sub(r"'[^']*'", "'…'", message)
    message = re.sub(r"\(bytes [0-9a-f ]+\)", "(bytes …)", message)
    return re.sub(r"0x[0-9a-fA-F]+|\d+", "N", message)


def run(title, strategy, check, documented, *, arguments=None, finish=None,
        default_cases=5_000):
    """Parse the command line (``arguments(parser)`` adds a fuzzer's own options), run
    ``check(input, args)`` on ``--cases`` inputs drawn from ``strategy`` with ``--seed``,
    then ``finish(tally, args)`` if given; print the report and return the exit status (1
    if anything crashed or failed)."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--cases", type=int, default=default_cases)
    parser.add_argument("--seed", type=int, default=None,
                        help="hypothesis seed (default: a fresh one, printed)")
    if arguments is not None:
        arguments(parser)
    args = parser.parse_args()
    run_seed = random.SystemRandom().randrange(1 << 32) if args.seed is None else args.seed
    command = repeat_command(sys.argv, run_seed)
    print(f"{title}: {command}", file=sys.stderr, flush=True)
    tally = Tally()

    @seed(run_seed)
    @settings(max_examples=args.cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(strategy)
    def case(data):
        try:
            tally.ok(check(data, args))
        except documented as exc:
            tally.error(exc)
        except Failure as exc:
            tally.problem("FAILED", exc, data)
        except Exception as exc:  # the bug a fuzzer hunts
            tally.problem("CRASH", exc, data)

    start = time.perf_counter()
    case()
    if finish is not None:
        finish(tally, args)
    tally.report(title, command, time.perf_counter() - start)
    sys.stdout.flush()
    return 1 if tally.failed else 0
