"""programs.output: terminal-safe text, shell quoting that reads back, lossless JSON text,
the table as JSON."""

import json
import subprocess

from hypothesis import given, settings, strategies as st

from programs.output import json_text, safe_text, shell_quote, table_json
from support import require_tool

ARGUMENTS = st.binary(max_size=40).filter(lambda b: b"\0" not in b)


@settings(max_examples=300, deadline=None)
@given(st.lists(ARGUMENTS, max_size=6))
def test_shell_quoted_arguments_read_back_through_bash(args):
    bash = require_tool("bash")
    words = " ".join(shell_quote(arg) for arg in args)
    out = subprocess.run([bash, "-c", f"printf '%s\\0' {words}" if args else "true"],
                         capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == args


@given(ARGUMENTS)
def test_quoted_and_escaped_text_is_printable_ascii_or_printable_text(raw):
    for text in (shell_quote(raw), safe_text(raw)):
        assert all(char.isprintable() for char in text)
        assert "\x1b" not in text and "\u202e" not in text


def test_shell_quote_forms():
    assert shell_quote(b"ls") == "ls"
    assert shell_quote(b"") == "''"
    assert shell_quote(b"a b") == "'a b'"
    assert shell_quote(b"it's") == "$'it\\'s'"
    assert shell_quote(b"\x1b[2J") == "$'\\x1b[2J'"
    assert shell_quote(b"caf\xc3\xa9") == "'caf\u00e9'"
    assert shell_quote(b"\xff") == "$'\\xff'"
    assert shell_quote(b"ls", always=True) == "'ls'"


@given(ARGUMENTS)
def test_json_text_is_lossless(raw):
    """Decoding json_text's escapes (\\xNN for a byte, \\\\ for a backslash) gives the bytes."""
    text = json.loads(json.dumps(json_text(raw)))
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1] == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif text[i] == "\\":
            out.append(0x5C)
            i += 2
        else:
            out += text[i].encode()
            i += 1
    assert bytes(out) == raw


def test_the_table_as_json():
    obj = table_json({5678: 1, 1234: 2}, {1234: b"bash\0\0", 5678: b"l\xffs"}, 3, 7,
                     now_ns=1_700_000_000_123_456_789)
    assert obj == {
        "type": "table", "time": "2023-11-14T22:13:20.123456789Z",
        "processes": [{"pid": 1234, "name": "bash", "executions": 2},
                      {"pid": 5678, "name": "l\\xffs", "executions": 1}],
        "untracked_execs": 3, "untracked_execs_total": 7,
    }
