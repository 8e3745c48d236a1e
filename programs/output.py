"""How the tracker prints: Go's ``log`` line format, terminal-safe names, the table."""

import json
import re
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


def _decoded(raw):
    """``raw`` bytes as text, each byte that is not UTF-8 kept as a lone surrogate."""
    return bytes(raw).decode("utf-8", errors="surrogateescape")


def _escaped(char):
    """``\\xNN`` escapes for one character: a byte that was not UTF-8, or each byte of the
    character's UTF-8 encoding."""
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8"))


def safe_text(raw):
    """Bytes from the kernel or a process as text that prints as itself and cannot change
    the terminal: printable UTF-8 is kept; control characters, bidi controls, invisible and
    combining characters and bytes that are not UTF-8 become ``\\xNN`` escapes, and a
    backslash ``\\\\``, so that ``\\x1b[2J`` is shown, not obeyed, and reads back unambiguously."""
    if _PRINTABLE_ASCII.fullmatch(raw):  # the common case, at C speed
        return raw.decode("ascii")
    out = []
    for char in _decoded(raw):
        if _is_safe(char):
            out.append(char)
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(_escaped(char))
    return "".join(out)


_PRINTABLE_ASCII = re.compile(rb"[ -\[\]-~]*")  # printable ASCII but the backslash


def safe_name(raw):
    """A process name (comm bytes, cut at the first NUL) as :func:`safe_text`, with the table's
    field separator ``", "`` written ``\\x2c `` so that a process named ``, Executions: 9``
    cannot add a field to its line."""
    return safe_text(bytes(raw).split(b"\0", 1)[0]).replace(FIELD_SEPARATOR, "\\x2c ")


def json_text(raw):
    """Bytes as a lossless JSON string value: valid UTF-8 is kept (JSON escapes its control
    characters), a byte that is not UTF-8 becomes the text ``\\xNN`` and a backslash ``\\\\``
    so that the two cannot be confused."""
    if b"\\" not in raw:
        try:
            return bytes(raw).decode("utf-8")  # valid UTF-8 without a backslash: as it is
        except UnicodeDecodeError:
            pass
    out = []
    for char in _decoded(raw):
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= ord(char) <= 0xDCFF:
            out.append(_escaped(char))
        else:
            out.append(char)
    return "".join(out)


_SHELL_PLAIN = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")  # words a shell reads as they are
_QUOTABLE_ASCII = re.compile(r"[ -&(-\[\]-~]*")  # printable ASCII but ' and \: safe in '...'


def shell_quote(raw, always=False):
    """One argument as a shell word that reads back to the same bytes, and is terminal-safe.

    Plain words stay as they are (unless ``always``); text that prints safely is put in
    single quotes; anything else (a quote, control or invisible characters, bytes that are
    not UTF-8) in bash's ``$'...'`` with ``\\xNN`` escapes. The empty argument is ``''``.
    """
    text = _decoded(raw)
    if not always and _SHELL_PLAIN.fullmatch(text):
        return text
    if _QUOTABLE_ASCII.fullmatch(text) or all(_is_safe(char) and char != "'" for char in text):
        return f"'{text}'"
    out = []
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif _is_safe(char):
            out.append(char)
        else:
            out.append(_escaped(char))
    return "$'" + "".join(out) + "'"


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


def rfc3339(ns):
    """``2026-11-30T12:34:56.123456789Z``: a wall-clock time in ns as RFC 3339, UTC."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def table_json(counts, names, untracked, untracked_total, now_ns=None):
    """One report as a JSON object: the processes (most executions first, as in the table),
    and the executions the full maps could not count, since the last report and in all."""
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "type": "table",
        "time": rfc3339(time.time_ns() if now_ns is None else now_ns),
        "processes": [{"pid": pid, "name": json_text(bytes(names.get(pid, b"")).split(b"\0")[0]),
                       "executions": count} for pid, count in rows],
        "untracked_execs": untracked,
        "untracked_execs_total": untracked_total,
    }


def write_json(obj):
    """One JSON object as one line on stdout, flushed (``| jq`` sees it at once). Every
    character outside ASCII is written as a ``\\uXXXX`` escape, so that the line itself is
    terminal-safe (C1 controls and bidi overrides are not escaped by JSON otherwise)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
