"""Mutation testing: plant one small bug at a time in a module and see whether its tests fail.

    python3 tools/mutate.py [--budget 900] [--jobs 2] [--json out.json] [module ...]
    python3 tools/mutate.py --survivors-of before.json      # rerun only those survivors

Each mutant is one change to one place of the module's syntax tree: a comparison flipped
(``<`` to ``<=``, ``==`` to ``!=``, ``in`` to ``not in``), an arithmetic or bitwise operator
swapped (``+`` to ``-``, ``<<`` to ``>>``, ``|`` to ``&``), ``and`` to ``or``, a ``not``
dropped, a number changed by one, ``True`` to ``False``, ``break`` to ``continue``, a
statement (a call, an augmented assignment) removed, or a returned value replaced by None.
Strings and docstrings are left alone. The mutated module replaces the original in a copy of
the source tree and the tests chosen for that module run there (``pytest -x``), each mutant
with a time limit; a mutant survives when they all pass. Of the module's tests, only those
that run the mutated line are run (coverage.py records which test runs which line, once per
module); a line no test function runs directly (module level, fixtures, subprocesses) gets
all of them, and so does a mutant that survives its chosen tests, before it counts as a
survivor. A module's mutants run in a fixed
random order until its time budget is spent (so a run cut short tried a random sample); those
left are reported as not run.

The tests of the kernel layer run too (root and bpf() needed, as for the suite); the source
tree itself is never changed. The table printed is Markdown; ``--json`` keeps every mutant.
"""

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: module -> the test files that check it, fast ones first (pytest -x stops at the first
#: failure, so most mutants are killed within seconds).
MODULES = {
    "pybpf/asm/opcodes.py": ["tests/test_disasm.py", "tests/test_asm.py", "tests/test_asm_text.py",
                             "tests/test_semantics.py"],
    "pybpf/asm/insn.py": ["tests/test_disasm.py", "tests/test_asm.py", "tests/test_asm_text.py",
                          "tests/test_semantics.py"],
    "pybpf/asm/text.py": ["tests/test_asm_text.py", "tests/test_asm.py", "tests/test_disasm.py"],
    "pybpf/disasm.py": ["tests/test_disasm.py", "tests/test_cli.py"],
    "pybpf/maps.py": ["tests/test_maps.py", "tests/test_collection.py", "tests/test_hardening.py"],
    "pybpf/program.py": ["tests/test_program.py", "tests/test_collection.py"],
    "pybpf/elf.py": ["tests/test_elf.py", "tests/test_collection.py", "tests/test_parity.py"],
    "programs/output.py": ["tests/test_output.py", "tests/test_execve.py",
                           "tests/test_events.py", "tests/test_hardening.py"],
    "programs/execve.py": ["tests/test_execve.py", "tests/test_hardening.py"],
    "programs/execve_bpf.py": ["tests/test_execve.py", "tests/test_parity.py"],
    "programs/events.py": ["tests/test_events_records.py", "tests/test_events.py"],
    "pybpf/btf/core.py": ["tests/test_core.py", "tests/test_asm_core.py"],
    "pybpf/externs.py": ["tests/test_externs.py", "tests/test_ksyms.py", "tests/test_elf.py"],
    "pybpf/events.py": ["tests/test_ringbuf.py", "tests/test_perfbuf.py"],
    "pybpf/ringbuf.py": ["tests/test_ringbuf.py"],
    "pybpf/perfbuf.py": ["tests/test_perfbuf.py"],
    "pybpf/btf/types.py": ["tests/test_btf.py", "tests/test_elf.py", "tests/test_collection.py"],
    "pybpf/syscalls.py": ["tests/test_syscalls.py", "tests/test_maps.py",
                          "tests/test_program.py"],
}

_COMPARE = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
            ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
            ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
           ast.Div: ast.Mult, ast.Mod: ast.FloorDiv, ast.LShift: ast.RShift,
           ast.RShift: ast.LShift, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
           ast.BitXor: ast.BitOr, ast.Pow: ast.Mult}
_SYMBOL = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
           ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
           ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/",
           ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&",
           ast.BitXor: "^", ast.Pow: "**", ast.And: "and", ast.Or: "or"}


def _docstrings(tree):
    """The ids of the string constants that are docstrings (left alone)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def mutation_points(tree):
    """``(node index in ast.walk order, kind, description)`` of every mutant of ``tree``."""
    points = []
    for index, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in _COMPARE:
                    what = f"{_SYMBOL[type(op)]} -> {_SYMBOL[_COMPARE[type(op)]]}"
                    points.append((index, ("compare", k), what))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINARY:
            what = f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[_BINARY[type(node.op)]]}"
            points.append((index, ("binary",), what))
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            points.append((index, ("boolean",), f"{_SYMBOL[type(node.op)]} -> {other}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            points.append((index, ("unary",), "not x -> x" if isinstance(node.op, ast.Not)
                           else "-x -> x"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, bool):
            if isinstance(node.value, bool):
                points.append((index, ("constant",), f"{node.value} -> {not node.value}"))
            else:
                points.append((index, ("constant",), f"{node.value} -> {node.value + 1}"))
        elif isinstance(node, ast.Break):
            points.append((index, ("loop",), "break -> continue"))
        elif isinstance(node, ast.Continue):
            points.append((index, ("loop",), "continue -> break"))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            points.append((index, ("return",), "return x -> return None"))
        elif isinstance(node, (ast.Expr, ast.AugAssign)) and not (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            points.append((index, ("delete",), "statement removed"))
    return points


def _mutated_source(tree, nodes, parents, index, kind):
    """The source of ``tree`` with mutation ``kind`` applied at ``nodes[index]`` (the tree
    itself is restored before returning)."""
    node = nodes[index]
    if kind[0] == "compare":
        op = node.ops[kind[1]]
        node.ops[kind[1]] = _COMPARE[type(op)]()
        undo = partial(node.ops.__setitem__, kind[1], op)
    elif kind[0] in ("binary", "boolean"):
        op = node.op
        node.op = _BINARY[type(op)]() if kind[0] == "binary" else (
            ast.Or() if isinstance(op, ast.And) else ast.And())
        undo = partial(setattr, node, "op", op)
    elif kind[0] == "constant":
        value = node.value
        node.value = (not value) if isinstance(value, bool) else value + 1
        undo = partial(setattr, node, "value", value)
    elif kind[0] == "return":
        value = node.value
        node.value = ast.Constant(None)
        undo = partial(setattr, node, "value", value)
    else:  # unary, loop, delete: the node is replaced in its parent
        new = {"unary": lambda: node.operand, "delete": ast.Pass,
               "loop": lambda: ast.Continue() if isinstance(node, ast.Break) else ast.Break()}
        undo = _replace(parents[id(node)], node, new[kind[0]]())
    try:
        return ast.unparse(tree)
    finally:
        undo()


def _replace(parent, old, new):
    """Put ``new`` where ``old`` is in ``parent``; a function that puts ``old`` back."""
    for field, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, field, new)
            return partial(setattr, parent, field, old)
        if isinstance(value, list):
            for position, item in enumerate(value):
                if item is old:
                    value[position] = new
                    return partial(value.__setitem__, position, old)
    raise ValueError("node not found in its parent")


def mutants(module):
    """Every mutant of ``module`` (a path under ROOT): dicts with line, what, code, source."""
    text = (ROOT / module).read_text()
    tree = ast.parse(text)
    lines = text.splitlines()
    original = ast.unparse(tree)
    skip = _docstrings(tree)
    nodes = list(ast.walk(tree))
    parents = {id(child): parent for parent in nodes for child in ast.iter_child_nodes(parent)}
    found = []
    for index, kind, what in mutation_points(tree):
        if id(nodes[index]) in skip:
            continue
        source = _mutated_source(tree, nodes, parents, index, kind)
        if source == original:
            continue
        line = getattr(nodes[index], "lineno", 0)
        code = lines[line - 1].strip() if line else ""
        nth = sum(m["code"] == code and m["what"] == what for m in found)
        found.append({"module": module, "line": line, "what": what, "nth": nth,
                      "statement": _statement_line(nodes[index], parents),
                      "code": code, "source": source})
    return found


def _statement_line(node, parents):
    """The first line of the statement that holds ``node`` (the line coverage records)."""
    while not isinstance(node, ast.stmt) and id(node) in parents:
        node = parents[id(node)]
    return getattr(node, "lineno", 0)


#: each test's own limit, raised: tests run under coverage, two at a time (each mutant has
#: its own limit, three times the baseline)
_SLOW_OK = ["-o", "timeout=300"]


def _key(mutant):
    """What identifies a mutant across runs (line numbers move): module, the code of its
    line, the change, and which of the mutants with that same code and change it is."""
    return mutant["module"], mutant["code"], mutant["what"], mutant["nth"]


class Workspace:
    """A copy of the source tree (with compiled bytecode of the unchanged modules) where one
    module at a time is replaced by a mutant."""

    def __init__(self, parent):
        self.path = Path(tempfile.mkdtemp(dir=parent))
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                               check=True).stdout.decode().split("\0")
        for name in filter(None, files):
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, target)
        subprocess.run([sys.executable, "-m", "compileall", "-q", "pybpf", "programs", "tests"],
                       cwd=self.path, check=True)

    def run(self, module, source, tests, limit):
        """``killed``, ``survived`` or ``timeout`` for ``source`` in place of ``module``."""
        target = self.path / module
        original = target.read_text()
        target.write_text(source)
        # hypothesis replays the failures it saved, drawn from another mutant's tables
        shutil.rmtree(self.path / ".hypothesis", ignore_errors=True)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # a mutant never leaves a .pyc
        try:
            code = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *_SLOW_OK,
                 *tests],
                cwd=self.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=limit, check=False).returncode
        except subprocess.TimeoutExpired:
            return "timeout"
        finally:
            target.write_text(original)
        return "survived" if code == 0 else "killed"


    def coverage(self, module, tests):
        """``{line: test node ids}``: which tests run each line of ``module`` (coverage.py,
        one dynamic context per test function). Lines run only at import, in fixtures or in
        subprocesses have no test: their mutants get every test of the module."""
        import coverage

        data_file = self.path / ".mutate-coverage"
        rc = self.path / ".mutate-coveragerc"
        rc.write_text(f"[run]\ndynamic_context = test_function\ninclude = */{module}\n")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        shutil.rmtree(self.path / ".hypothesis", ignore_errors=True)
        for attempt in (1, 2):  # twice: a busy machine can fail a test once
            result = subprocess.run(
                [sys.executable, "-m", "coverage", "run", f"--rcfile={rc}",
                 f"--data-file={data_file}", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 *_SLOW_OK, *tests],
                cwd=self.path, env=env, capture_output=True, text=True, check=False)
            if result.returncode == 0:
                break
            print(f"the tests of {module} failed without any mutant (attempt {attempt}):\n"
                  + "\n".join(result.stdout.splitlines()[-15:]), file=sys.stderr, flush=True)
        else:
            raise SystemExit(f"the tests of {module} fail without any mutant: fix them first")
        data = coverage.CoverageData(str(data_file))
        data.read()
        path = str(self.path / module)
        by_line = {}
        for line, contexts in (data.contexts_by_lineno(path) or {}).items():
            ids = {_node_id(context) for context in contexts if context}
            by_line[line] = sorted(i for i in ids if i.split("::")[0] in tests)
        return by_line


def _node_id(context):
    """``tests/test_x.py::test_y`` for coverage's context ``test_x.test_y``."""
    module, _, function = context.partition(".")
    return f"tests/{module}.py::{function}"


def baseline(workspace, module, tests):
    """(seconds the unchanged tests of ``module`` take under coverage, which tests run each
    line); they must pass."""
    start = time.monotonic()
    covered = workspace.coverage(module, tests)  # also checks that they pass
    return time.monotonic() - start, covered


def mutate_module(module, workspaces, budget, only=None):
    """Run the mutants of ``module`` (only those whose key is in ``only``, if given)."""
    tests = MODULES[module]
    todo = [m for m in mutants(module) if only is None or _key(m) in only]
    random.Random(0).shuffle(todo)  # a run cut short by the budget tried a random sample
    seconds, covered = baseline(workspaces[0], module, tests)
    limit = 3 * seconds + 30
    end = time.monotonic() + budget
    free = list(workspaces)

    def one(mutant):
        if time.monotonic() > end:
            mutant["result"] = "not run"
            return mutant
        chosen = covered.get(mutant["statement"]) or tests  # the tests that run its line
        workspace = free.pop()
        try:
            mutant["result"] = workspace.run(module, mutant["source"], chosen, limit)
            if mutant["result"] == "survived" and chosen != tests:  # subprocesses too
                mutant["result"] = workspace.run(module, mutant["source"], tests, limit)
        finally:
            free.append(workspace)
        return mutant

    start = time.monotonic()
    with ThreadPoolExecutor(len(workspaces)) as pool:
        done = list(pool.map(one, todo))
    return done, time.monotonic() - start


def report(results):
    """The Markdown table of counts per module, then every survivor."""
    out = ["| module | mutants | killed | timeout | survived | not run | seconds |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for module, (done, seconds) in results.items():
        count = {r: sum(m["result"] == r for m in done)
                 for r in ("killed", "timeout", "survived", "not run")}
        out.append(f"| {module} | {len(done)} | {count['killed']} | {count['timeout']} | "
                   f"{count['survived']} | {count['not run']} | {seconds:.0f} |")
    survivors = [m for done, _ in results.values() for m in done if m["result"] == "survived"]
    out.append("")
    out.append(f"Survivors ({len(survivors)}):")
    out.append("")
    out.extend(f"- {m['module']}:{m['line']}: {m['what']}: `{m['code']}`" for m in survivors)
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    parser.add_argument("--budget", type=float, default=900,
                        help="seconds per module (default 900); mutants left are 'not run'")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--json", help="write every mutant and its result to this file")
    parser.add_argument("--survivors-of", metavar="JSON",
                        help="run only the mutants that survived in this earlier --json file")
    parser.add_argument("--list", action="store_true", help="count the mutants and exit")
    args = parser.parse_args()
    only = None
    modules = args.modules or list(MODULES)
    if args.survivors_of:
        earlier = json.loads(Path(args.survivors_of).read_text())
        only = {tuple(k) for k in earlier["survivors"]}
        modules = args.modules or sorted({k[0] for k in only}, key=list(MODULES).index)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"no tests chosen for {', '.join(unknown)}: add them to MODULES")
    if args.list:
        for module in modules:
            print(f"{module}: {len(mutants(module))} mutants")
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as parent:
        workspaces = [Workspace(parent) for _ in range(args.jobs)]
        for module in modules:
            results[module] = mutate_module(module, workspaces, args.budget, only)
            print(report({module: results[module]}).splitlines()[2], flush=True)
    print()
    print(report(results))
    if args.json:
        everything = [{k: v for k, v in m.items() if k != "source"}
                      for done, _ in results.values() for m in done]
        Path(args.json).write_text(json.dumps({
            "mutants": everything,
            "survivors": [_key(m) for m in everything if m["result"] == "survived"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
