"""The layers of ../shared/DESIGN.md, checked: a module imports only from its own layer or the
layers below. Parsing an object, assembling, disassembling and relocating never need the
kernel layer; pybpf never imports the tracker. Every module must be placed in a layer here,
so a new one cannot slip in unclassified."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE, SYSTEM, OBJECTS, CLI, PROGRAMS = range(5)
LAYER_NAMES = ["pure", "system (bpf() and the host)", "kernel objects", "pybpf's CLI",
               "programs"]
LAYERS = {
    # pure: no system calls, testable without privileges
    "pybpf": PURE, "pybpf.errors": PURE, "pybpf.abi": PURE, "pybpf.helpers": PURE,
    "pybpf.spec": PURE, "pybpf.structlayout": PURE, "pybpf.layouts": PURE,
    "pybpf.attrs": PURE, "pybpf.sections": PURE, "pybpf.verifier": PURE, "pybpf.btf": PURE,
    "pybpf.elf": PURE, "pybpf.objdump": PURE, "pybpf.disasm": PURE, "pybpf.argtypes": PURE,
    "pybpf.signals": PURE, "pybpf.asm": PURE, "pybpf.explain": PURE,
    "pybpf.externs": PURE, "pybpf.variables": PURE,
    # the system calls and what they need to know about the host
    "pybpf.libc": SYSTEM, "pybpf.host": SYSTEM, "pybpf.errnos": SYSTEM,
    "pybpf.syscalls": SYSTEM, "pybpf.perf": SYSTEM, "pybpf.tracefs": SYSTEM,
    "pybpf.features": SYSTEM, "pybpf.fd": SYSTEM, "pybpf.symbols": SYSTEM,
    # kernel objects a user holds
    "pybpf.maps": OBJECTS, "pybpf.program": OBJECTS, "pybpf.attach": OBJECTS,
    "pybpf.link": OBJECTS, "pybpf.probes": OBJECTS,
    "pybpf.collection": OBJECTS, "pybpf.events": OBJECTS, "pybpf.ringbuf": OBJECTS,
    "pybpf.perfbuf": OBJECTS, "pybpf.ksyms": OBJECTS,
    # the command line
    "pybpf.cli": CLI, "pybpf.__main__": CLI, "pybpf.runner": CLI,
    "programs": PROGRAMS,
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module):
    """The layer of ``module``: its own entry, else its closest package's."""
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def _imports(path, module):
    """Every pybpf/programs module ``path`` imports (also inside functions), absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from pybpf import syscalls" imports a module
                candidate = f"{base}.{alias.name}"
                found.append((candidate if candidate in _ALL else base, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] in ("pybpf", "programs")]


SOURCES = sorted(p for top in ("pybpf", "programs") for p in (ROOT / top).rglob("*.py"))
_ALL = {_module_name(p) for p in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_the_layers(path):
    module = _module_name(path)
    own = _layer(module)
    assert own is not None, f"{module} is in no layer: add it to LAYERS in {__file__}"
    upward = [f"line {line}: {name} ({LAYER_NAMES[_layer(name)]})"
              for name, line in _imports(path, module)
              if _layer(name) is not None and _layer(name) > own]
    assert not upward, f"{module} ({LAYER_NAMES[own]}) imports from above: {upward}"


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The test itself can fail: a pure module importing the syscalls is reported."""
    fake = ROOT / "pybpf" / "elf.py"
    source = fake.read_text() + "\nfrom . import syscalls\n"
    monkeypatch.setattr(Path, "read_text", lambda self: source)
    assert ("pybpf.syscalls", source.count("\n")) in _imports(fake, "pybpf.elf")
    with pytest.raises(AssertionError, match="imports from above.*pybpf.syscalls"):
        test_imports_go_down_the_layers(fake)
