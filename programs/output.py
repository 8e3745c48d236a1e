"""How the tracker prints: Go's ``log`` line format, terminal-safe names, the table."""

import sys
import time
import unicodedata


def log_line(message, now=None):
    """``2023/12/01 12:34:56 message``: the line format of Go's log package, local time."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
    return f"{stamp} {message}"


# Characters that print as nothing, or as blank space, though Unicode calls them letters.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
# Unicode categories that do not print as a visible character of their own: format and
# bidi controls (Cf), line/paragraph separators and non-ASCII spaces (Zl, Zp, Zs), and
# combining marks (Mn, Mc, Me), which draw over the character before them (U+0336 strikes
# through the ", " before a name).
_UNSAFE_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Zs", "Mn", "Mc", "Me"})
FIELD_SEPARATOR = ", "  # between the fields of a table line: escaped inside a name


def _is_safe(char):
    """True for a character that prints as itself, visibly, on its own."""
    if char == "\\":
        return False
    if char.isascii():
        return char.isprintable()
    return (char.isprintable() and char not in _INVISIBLE_LETTERS
            and unicodedata.category(char) not in _UNSAFE_CATEGORIES)


def safe_name(raw):
    """A process name as text that cannot change the terminal or fake a table field.

    ``raw`` is the comm bytes from the kernel, cut at the first NUL. Printable UTF-8 is kept;
    control characters, bidi controls, invisible and combining characters, backslashes and
    bytes that are not UTF-8 become ``\\xNN`` escapes (``\\\\`` for a backslash), so
    ``\\x1b[2J`` is shown, not obeyed. The field separator ``", "`` becomes ``\\x2c `` so that
    a process named ``, Executions: 9`` cannot add a field to its line.
    """
    raw = bytes(raw).split(b"\0", 1)[0]
    text = raw.decode("utf-8", errors="surrogateescape")
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif _is_safe(char):
            out.append(char)
        elif char == "\\":
            out.append("\\\\")
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out).replace(FIELD_SEPARATOR, "\\x2c ")


def table_lines(counts, names):
    """The lines of one report: a header, one line per process, a separator.

    ``counts`` maps PID to executions, ``names`` PID to raw comm bytes. Sorted by executions
    (most first), then by PID.
    """
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"Tracked {len(rows)} processes:"]
    for pid, count in rows:
        name = safe_name(names.get(pid, b""))
        lines.append(f"PID: {pid}{FIELD_SEPARATOR}Name: {name}{FIELD_SEPARATOR}"
                     f"Executions: {count}")
    lines.append("---")
    return lines


def emit(lines):
    """Write ``lines`` to stdout as timestamped log lines and flush, so ``| grep`` sees them
    at once."""
    now = time.time()
    sys.stdout.write("".join(log_line(line, now) + "\n" for line in lines))
    sys.stdout.flush()
