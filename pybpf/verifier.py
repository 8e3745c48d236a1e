"""Reading the verifier's log: why a program was refused, and where.

The verifier walks every path of a program and, with a log buffer, writes what it does: an
``N: (op) text`` line per instruction it simulates, the register state after it, and, when it
gives up, a line saying why (``R2 !read_ok``, ``invalid mem access 'scalar'``). Some reasons
are followed by more state (``infinite loop detected at insn 0`` then ``cur state: ...`` and
``old state: ...``), and every log ends with statistics (``processed 9 insns ...``). These
functions pick the reason and the instruction out of that text; they need no kernel.
"""

import re
import textwrap
from collections import namedtuple

_STATISTICS = re.compile(r"^(processed \d+ insns|verification time|stack depth)")
_STATE = re.compile(
    r"^(\d+: R\d|\d+: frame\d|(cur|old) state:|from \d+ to \d+:|R\d+[_=]|frame\d+:|"
    r"mark_precise|last_idx|regs=|parent |; )")
_INSN = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")


def reason_lines(log):
    """The log's lines without the statistics at its end and without register-state dumps."""
    return [line for line in log.rstrip("\0").splitlines()
            if line.strip() and not _STATISTICS.match(line) and not _STATE.match(line)]


def summary(log):
    """The line of a verifier log that says why the program was refused.

    That is the last line that is neither statistics nor register state; a reason printed on
    an indented line of its own, or about the context, comes with the instruction before it.
    """
    lines = reason_lines(log)
    if not lines:
        return ""
    last = lines[-1]
    if len(lines) > 1 and (last[0].isspace() or last.startswith("invalid bpf_context")):
        return f"{lines[-2].strip()}: {last.strip()}"
    return last.strip()


def failing_slot(log):
    """The instruction slot the verifier stopped at: the last ``N: (op) ...`` line, or None."""
    slot = None
    for line in log.splitlines():
        match = _INSN.match(line)
        if match:
            slot = int(match.group(1))
    return slot


# -- the walk, step by step (log_level 2) ---------------------------------------------------
#
# With log_level 2 the verifier prints every instruction it simulates, each followed by the
# registers (and stack slots) the instruction touched, as it knows them afterwards:
#
#     8: (15) if r0 == 0x0 goto pc+4        ; R0=map_value(map=exec_count,ks=4,vs=8)
#
# A conditional jump whose two ways are both possible is followed one way at once; the other
# is pushed and explored later, its start printed as ``from 8 to 13: R0=0 R10=fp0 ...``. Where
# the state after an instruction is printed on a line of its own (``12: R0=scalar()`` after a
# call, once precision tracking has had its say), it belongs to the instruction before. A path
# that reaches a state already proven safe stops there: ``13: safe``.

_STEP = re.compile(r"^(\d+): \(([0-9a-f]{2})\) (.*?)\s*(?:; (.*))?$")
_STATE_LINE = re.compile(r"^(\d+): (?!\()(.*)$")
_FROM = re.compile(r"^from (\d+) to (\d+)(?: \(speculative execution\))?: ?(.*)$")

Step = namedtuple("Step", "slot path state")
Step.__doc__ = """The verifier at instruction ``slot`` on path ``path`` (1, 2...): ``state`` is
what it knows after it, as the log prints it ('' when the log prints nothing)."""
Branch = namedtuple("Branch", "path parent source target state")
Branch.__doc__ = """Path ``path`` begins: the other way of the jump at ``source`` (taken on
path ``parent``), going to ``target`` with ``state`` ('safe': pruned at once)."""
Walk = namedtuple("Walk", "start steps branches pruned statistics")
Walk.__doc__ = """A parsed log_level 2 log: the state at the start, every :class:`Step` and
:class:`Branch` in the log's order, ``pruned`` as ``{path: slot}`` where a path stopped at a
state already proven safe, and the closing statistics line."""


def walk(log):
    """The verifier's walk through a program, from its log_level 2 log (see above)."""
    start, steps, branches, pruned, statistics = "", [], [], {}, ""
    path, last = 1, None  # last: the record a state line on its own may belong to
    for line in log.rstrip("\0").splitlines():
        step = _STEP.match(line)
        if step:
            last = Step(int(step.group(1)), path, step.group(4) or "")
            steps.append(last)
            continue
        branch = _FROM.match(line)
        if branch:
            source, target, state = int(branch.group(1)), int(branch.group(2)), branch.group(3)
            parent = next((s.path for s in reversed(steps) if s.slot == source), path)
            path = len(branches) + 2
            branches.append(Branch(path, parent, source, target, state))
            if state == "safe":
                pruned[path] = target
            last = None
            continue
        alone = _STATE_LINE.match(line)
        if alone:
            slot, state = int(alone.group(1)), alone.group(2).strip()
            if state == "safe":
                pruned[path] = slot
            elif not steps and not start:
                start = state
            elif last is not None and not last.state and last.slot != slot:
                steps[-1] = last = last._replace(state=state)
            continue
        if _STATISTICS.match(line) and line.startswith("processed"):
            statistics = line.strip()
    return Walk(start, steps, branches, pruned, statistics)


def interleave(insns, log, reason=None):
    """The program's listing with, under each instruction, what the verifier knew after it
    on every path that went through it (from a log_level 2 ``log``).

    ``insns`` are the program's instructions as written (labels and comments show);
    ``reason``, for a refused program, is the verifier's reason, shown where it stopped.
    """
    from pybpf.disasm import disassemble

    parsed = walk(log)
    under = {}
    refused = parsed.steps[-1] if reason is not None and parsed.steps else None
    for step in parsed.steps:
        if step is refused:
            said = f"REFUSED: {reason}"
        else:
            said = step.state or "(no register touched)"
        under.setdefault(step.slot, []).append(f"path {step.path}: {said}")
    for branch in parsed.branches:
        what = "stops at once: its state is covered by one already proven safe" \
            if branch.state == "safe" else branch.state
        under.setdefault(branch.source, []).append(
            f"path {branch.parent}, jumping to {branch.target}, is explored later as path "
            f"{branch.path}: {what}")
    for path, slot in parsed.pruned.items():
        if not any(b.path == path and b.state == "safe" for b in parsed.branches):
            under.setdefault(slot, []).append(
                f"path {path} stops here: its state is covered by one already proven safe")
    paths = len(parsed.branches) + 1
    followed = f"each of the {paths} paths" if paths > 1 else "the one path"
    heading = (f"Under each instruction, what the verifier knew after it on {followed} it "
               "followed: the registers and stack slots the "
               "instruction touched, as its log prints them. Path 1 starts at the first "
               "instruction" + (f" with {parsed.start}" if parsed.start else "")
               + ("; each other path at the other way of a conditional jump." if paths > 1
                  else "."))
    out = textwrap.wrap(heading, 100, break_on_hyphens=False)
    for line in disassemble(insns).splitlines():
        out.append(line)
        slot = _LISTED.match(line)
        if slot:
            notes = under.get(int(slot.group(1)))
            out += [f"\t  {note}" for note in notes] if notes else ["\t  (no path reaches it)"]
    if parsed.statistics:
        out.append(parsed.statistics)
    return "\n".join(out) + "\n"


_LISTED = re.compile(r"^\s*(\d+):\t")
