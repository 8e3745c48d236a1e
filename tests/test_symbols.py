"""symbols: function offsets in ELF binaries against readelf, the dynamic linker's cache
against ``ldconfig -p``, library and program lookup, and fuzzed input (section targets, ELF
files, cache files): nothing but clear errors."""

import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pybpf import symbols
from pybpf.errors import AttachError, SymbolError
from pybpf.sections import parse_kprobe_target, parse_uprobe_target
from pybpf.symbols import find_function, ld_cache, parse_ld_cache, resolve_binary

from attach_support import PROBE_TARGET_C, build_c
from support import require_tool

LIBC = ld_cache().get("libc.so.6") or "/lib/x86_64-linux-gnu/libc.so.6"


def readelf_functions(path):
    """``{name: file offset}`` of the defined FUNC symbols, from readelf's symbol and
    program header tables (the oracle)."""
    readelf = require_tool("readelf")
    headers = subprocess.run([readelf, "-lW", path], capture_output=True, text=True,
                             check=True).stdout
    loads = [(int(m[1], 16), int(m[0], 16), int(m[2], 16)) for m in re.findall(
        r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)", headers,
        re.M)]  # (vaddr, offset, filesz)
    table = subprocess.run([readelf, "-W", "--dyn-syms", "-s", path], capture_output=True,
                           text=True, check=True).stdout
    found = {}
    for value, kind, ndx, name in re.findall(
            r"^\s*\d+:\s+([0-9a-f]+)\s+\d+\s+(\w+)\s+\w+\s+\w+\s+(\w+)\s+(\S+)", table, re.M):
        address = int(value, 16)
        if kind != "FUNC" or ndx == "UND":
            continue
        for vaddr, offset, filesz in loads:
            if vaddr <= address < vaddr + filesz:
                found.setdefault(name.split("@")[0], set()).add(address - vaddr + offset)
    return found


@pytest.mark.parametrize("name", ["getpid", "malloc", "free", "read", "write", "fork",
                                  "pthread_create", "memcpy@GLIBC_2.2.5"])
def test_libc_offsets_match_readelf(name):
    expected = readelf_functions(LIBC)[name.split("@")[0]]
    assert find_function(LIBC, name).offset in expected


@pytest.mark.parametrize("flags", [["-fPIE", "-pie"], ["-fno-pie", "-no-pie"]])
def test_offsets_in_a_program_built_here(tmp_path, flags):
    path = build_c(tmp_path, "probe_target", PROBE_TARGET_C, *flags)
    (offset,) = readelf_functions(path)["pybpf_probe_me"]
    found = find_function(path, "pybpf_probe_me")
    assert (found.name, found.offset) == ("pybpf_probe_me", offset)
    if "-no-pie" in flags:  # fixed addresses: the value is not the file offset
        assert found.value > offset
    subprocess.run([require_tool("strip"), path], check=True)
    with pytest.raises(SymbolError, match="no function 'pybpf_probe_me'.*stripped"):
        find_function(path, "pybpf_probe_me")


def test_versioned_names():
    assert find_function(LIBC, "getpid").name == "getpid@@GLIBC_2.2.5"
    assert find_function(LIBC, "getpid@@GLIBC_2.2.5").offset == \
        find_function(LIBC, "getpid").offset
    assert find_function(LIBC, "memcpy@GLIBC_2.2.5").name == "memcpy@GLIBC_2.2.5"
    with pytest.raises(SymbolError, match="indirect function \\(STT_GNU_IFUNC"):
        find_function(LIBC, "memcpy@@GLIBC_2.14")
    with pytest.raises(SymbolError, match="no function 'getpid@GLIBC_9.9'"):
        find_function(LIBC, "getpid@GLIBC_9.9")


def test_ld_cache_is_what_ldconfig_lists():
    out = subprocess.run([require_tool("ldconfig"), "-p"], capture_output=True, text=True,
                         check=True).stdout
    arch = {"x86_64": "libc6,x86-64", "aarch64": "libc6,AArch64"}[os.uname().machine]
    expected = {}
    for name, flags, path in re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", out, re.M):
        if flags == arch:
            expected.setdefault(name, path)
    assert ld_cache() == expected and len(expected) > 10


def test_ld_cache_after_the_old_format():
    """A cache in the compatible layout: the old table (ld.so-1.7.0) first, then the new."""
    new = open(symbols.LD_SO_CACHE, "rb").read()
    old = b"ld.so-1.7.0\0" + (2).to_bytes(4, "little") + bytes(24)
    assert parse_ld_cache(old + bytes(-len(old) % 8) + new, os.uname().machine) == ld_cache()
    assert parse_ld_cache(b"nonsense", "x86_64") == {}


def test_resolving_names(tmp_path, monkeypatch):
    assert resolve_binary("/any/path") == "/any/path"
    assert os.path.samefile(resolve_binary("libc.so.6"), LIBC)
    mine = resolve_binary("libc.so.6", pid=os.getpid())  # as this process maps it
    assert os.path.samefile(mine, LIBC) and mine.startswith("/")
    assert resolve_binary("sh") == subprocess.run(["sh", "-c", "command -v sh"],
                                                  capture_output=True, text=True).stdout.strip()
    (tmp_path / "libpybpf.so.1").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert resolve_binary("libpybpf.so.1") == str(tmp_path / "libpybpf.so.1")
    with pytest.raises(SymbolError, match="cannot find 'no-such-program' in PATH"):
        resolve_binary("no-such-program")
    with pytest.raises(SymbolError, match="memory map of process 999999999"):
        resolve_binary("libc.so.6", pid=999999999)


def test_unreadable_binaries(tmp_path):
    with pytest.raises(SymbolError, match="cannot read .*nothing"):
        find_function(str(tmp_path / "nothing"), "f")
    (tmp_path / "text").write_text("not an ELF file")
    with pytest.raises(SymbolError, match="is not a readable ELF file"):
        find_function(str(tmp_path / "text"), "f")
    obj = os.path.join(os.path.dirname(__file__), "attach", "uprobe.o")
    with pytest.raises(SymbolError, match="no loadable segment"):
        find_function(obj, "getpid_entry")


# -- fuzzing ------------------------------------------------------------------------------

@given(st.text(max_size=60))
def test_fuzz_kprobe_targets(text):
    try:
        function, offset = parse_kprobe_target("kprobe/" + text, text)
    except AttachError:
        return
    assert re.fullmatch(r"[A-Za-z0-9_.]+", function) and 0 <= offset < 2**64


@given(st.text(max_size=60) | st.from_regex(r"\A[a-z/._]{1,9}:[a-z_@.]{1,9}(\+\w{0,9})?\Z"))
def test_fuzz_uprobe_targets(text):
    try:
        binary, function, offset = parse_uprobe_target("uprobe/" + text, text)
    except AttachError:
        return
    assert binary and function and ":" not in binary and 0 <= offset < 2**64
    assert f"{binary}:{function}" in text


@given(st.binary(max_size=200), st.integers(0, 200))
@settings(max_examples=300)
def test_fuzz_ld_cache(noise, cut):
    real = open(symbols.LD_SO_CACHE, "rb").read()
    for data in (noise, real[:cut] + noise, b"glibc-ld.so.cache1.1" + noise,
                 real[:48] + noise + real[48 + len(noise):]):
        assert isinstance(parse_ld_cache(data, "x86_64"), dict)


_PROGRAM = {}


def _program_bytes(tmp_path_factory):
    if "data" not in _PROGRAM:
        path = build_c(tmp_path_factory.mktemp("fuzz"), "probe_target", PROBE_TARGET_C)
        _PROGRAM["data"] = open(path, "rb").read()
    return _PROGRAM["data"]


@given(data=st.data())
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_elf_files(tmp_path_factory, tmp_path, data):
    """Mutated copies of a real program: a function is found or a SymbolError says why."""
    original = _program_bytes(tmp_path_factory)
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, len(mutated) - 1))
        if data.draw(st.booleans()):
            where = data.draw(st.integers(0, 63))  # the ELF header, often
        mutated[where] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[:data.draw(st.integers(0, len(mutated)))]
    path = tmp_path / "mutated"
    path.write_bytes(bytes(mutated))
    for name in ("pybpf_probe_me", "main", "getpid", "x@@V"):
        try:
            found = find_function(str(path), name)
        except SymbolError as exc:
            assert "\n" not in str(exc)
            continue
        assert found.offset >= 0
