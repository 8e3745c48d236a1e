"""Reading the verifier's log: why a program was refused, and where.

The verifier walks every path of a program and, with a log buffer, writes what it does: an
``N: (op) text`` line per instruction it simulates, the register state after it, and, when it
gives up, a line saying why (``R2 !read_ok``, ``invalid mem access 'scalar'``). Some reasons
are followed by more state (``infinite loop detected at insn 0`` then ``cur state: ...`` and
``old state: ...``), and every log ends with statistics (``processed 9 insns ...``). These
functions pick the reason and the instruction out of that text; they need no kernel.
"""

import re

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
