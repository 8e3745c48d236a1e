"""docs/tutorial.md runs: every code block of every chapter, its printed output checked.

The tutorial is read as a list of chapters (``## `` headings), each a list of fenced blocks.
Each chapter is one test, run in a fresh directory where ``bpf``, ``programs``, ``pybpf`` and
``tests`` point at the checkout's (so the paths the reader types from the repository's top
directory work, and the files the chapter writes land in the test's directory):

- ``python``: run in the chapter's namespace (shared by its python blocks, in order); what
  it prints must be the ``output`` block right after it, or nothing when there is none;
- ``console``: each ``$ command`` line runs in bash (``python3`` is the interpreter running
  the tests, pybpf the checkout's); the lines after it, up to the next ``$``, are what it
  prints (stdout and stderr together);
- any language with ``file=NAME`` (```` ```asm file=answer.s ````): the block is written to
  NAME for the blocks after it.

After the language, ``kernel`` marks a block that needs bpf() (its chapter carries the
``kernel`` marker) and ``requires=llvm-mc,clang`` the oracle tools it runs. Any other block is
an error, so that nothing in the tutorial goes unexecuted.

In expected output, only what must vary between runs is masked, with placeholders:
``{{N}}`` an integer, ``{{HEX}}`` a hexadecimal number (``0xffff888104405400``), ``{{...}}``
any text up to the end of the line's next fixed part. Trailing spaces are not compared.
"""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import require_tool

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
LINKED = ("bpf", "programs", "pybpf", "tests")
PLACEHOLDERS = {"{{N}}": r"-?\d+", "{{HEX}}": r"(?:0x)?[0-9a-fA-F]+", "{{...}}": r".*?"}
_FENCE = re.compile(r"^```(\S*)(.*)$")


class Block:
    """One fenced block: its language, options (``kernel``, ``requires=``, ``file=``), text."""

    def __init__(self, language, options, text, line):
        self.language, self.text, self.line = language, text, line
        words = options.split()
        self.kernel = "kernel" in words
        self.tools = [t for w in words if w.startswith("requires=")
                      for t in w[len("requires="):].split(",")]
        self.file = next((w[len("file="):] for w in words if w.startswith("file=")), None)


def chapters(text):
    """``[(title, [Block])]`` of the tutorial's ``## `` chapters."""
    found, blocks, fence, lines = [], None, None, []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is not None:
            if line == "```":
                blocks.append(Block(*fence, "\n".join(lines), number))
                fence, lines = None, []
            else:
                lines.append(line)
            continue
        match = _FENCE.match(line)
        if match:
            if blocks is None:
                raise AssertionError(f"line {number}: a code block before the first chapter")
            fence = match.groups()
        elif line.startswith("## "):
            blocks = []
            found.append((line[3:].strip(), blocks))
    assert fence is None, "a code block is not closed"
    return found


def matches(expected, actual):
    """Whether ``actual`` is ``expected`` with its placeholders filled (trailing spaces and
    blank lines at the end aside)."""
    def lines(text):
        """The text without trailing spaces and trailing blank lines."""
        return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines())

    pattern = re.escape(lines(expected))
    for placeholder, regex in PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(placeholder), regex)
    return re.fullmatch(pattern, lines(actual)) is not None


def _workdir(tmp_path):
    """Make ``tmp_path`` look like the checkout; the environment its commands run in."""
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    python3 = bin_dir / "python3"  # a script, not a link: a venv's python finds its packages
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def _run_python(block, namespace):
    """Run a python block in the chapter's namespace; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.text, f"{TUTORIAL}:{block.line}", "exec"), namespace)
    return out.getvalue()


def _run_console(block, cwd, env):
    """Each ``$`` command of a console block: (command, expected, actual)."""
    steps, command, expected = [], None, []
    for line in block.text.splitlines() + ["$ "]:
        if line.startswith("$ "):
            if command:
                steps.append((command, "\n".join(expected)))
            command, expected = line[2:], []
        else:
            expected.append(line)
    for command, expected in steps:
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, timeout=120,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        yield command, expected, result.stdout


def _params():
    """One test per chapter, with the kernel marker when a block of it needs bpf()."""
    params = []
    for title, blocks in chapters(TUTORIAL.read_text()):
        marks = [pytest.mark.kernel] if any(b.kernel for b in blocks) else []
        params.append(pytest.param(title, blocks, marks=marks, id=title.split(".")[0]))
    return params


@pytest.mark.parametrize("title, blocks", _params())
def test_chapter(title, blocks, tmp_path, monkeypatch):
    """Every block of the chapter, in order; every output as the tutorial shows it."""
    for tool in {t for b in blocks for t in b.tools}:
        require_tool(tool)
    env = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__tutorial__"}
    for index, block in enumerate(blocks):
        where = f"{title}, the block at line {block.line}"
        if block.file:
            (tmp_path / block.file).write_text(block.text + "\n")
        elif block.language == "python":
            printed = _run_python(block, namespace)
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            expected = following.text if following and following.language == "output" else ""
            assert matches(expected, printed), f"{where} printed:\n{printed}"
        elif block.language == "console":
            for command, expected, printed in _run_console(block, tmp_path, env):
                assert matches(expected, printed), f"{where}: `{command}` printed:\n{printed}"
        elif block.language == "output":
            assert index and blocks[index - 1].language == "python", \
                f"{where}: an output block follows a python block"
        else:
            raise AssertionError(f"{where}: a {block.language!r} block without file= would "
                                 "not run; write it as python, console or file=NAME")


def test_the_tutorial_has_its_chapters():
    """Chapters 1 to N, in order, none empty."""
    titles = [title for title, _blocks in chapters(TUTORIAL.read_text())]
    assert [t.split(".")[0] for t in titles] == [str(n) for n in range(1, len(titles) + 1)]
    assert all(blocks for _title, blocks in chapters(TUTORIAL.read_text()))


def test_placeholders_match_only_what_they_say():
    """The comparison itself can fail: a placeholder stands for its kind of text only."""
    assert matches("fd {{N}}\nat {{HEX}}", "fd 7\nat 0xffff888104405400\n")
    assert not matches("fd {{N}}", "fd seven")
    assert matches("took {{...}} ns (1 run)", "took 692 ns (1 run)  ")
    assert not matches("r0 = 42", "r0 = 43")
    assert not matches("one line", "one line\nand another")
