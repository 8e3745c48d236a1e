"""libbpf itself (the installed libbpf.so, called through ctypes: a test oracle only) loading
an object with knobs set and a kernel config given, as a skeleton-based tool does; and
``bpftool prog loadall``, which loads an object as it is. The tests compare the translated
instructions of libbpf's programs with pybpf's."""

import ctypes
import ctypes.util
import json
import subprocess

from elftools.elf.elffile import ELFFile

from support import require_tool, skip_or_fail
from pybpf import syscalls


class OpenOpts(ctypes.Structure):
    """libbpf 1.1's ``struct bpf_object_open_opts``."""

    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("_attach_prog_fd", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p), ("kernel_log_buf", ctypes.c_char_p),
                ("kernel_log_size", ctypes.c_size_t), ("kernel_log_level", ctypes.c_uint32)]


def libbpf():
    """The libbpf shared library, its functions typed; skipped (failed in CI) without it."""
    path = ctypes.util.find_library("bpf")
    if path is None:
        skip_or_fail("libbpf.so is not installed (apt-get install libbpf1)")
    lib = ctypes.CDLL(path, use_errno=True)
    p = ctypes.c_void_p
    for name, restype, argtypes in [
            ("bpf_object__open_file", p, [ctypes.c_char_p, ctypes.POINTER(OpenOpts)]),
            ("libbpf_get_error", ctypes.c_long, [p]),
            ("bpf_object__find_map_by_name", p, [p, ctypes.c_char_p]),
            ("bpf_map__initial_value", p, [p, ctypes.POINTER(ctypes.c_size_t)]),
            ("bpf_map__set_initial_value", ctypes.c_int, [p, ctypes.c_char_p, ctypes.c_size_t]),
            ("bpf_object__load", ctypes.c_int, [p]),
            ("bpf_object__find_program_by_name", p, [p, ctypes.c_char_p]),
            ("bpf_program__fd", ctypes.c_int, [p]),
            ("bpf_map__fd", ctypes.c_int, [p]),
            ("bpf_object__close", None, [p])]:
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def symbol_offsets(path, section):
    """``{variable: offset}`` of an object's ``section``, from its ELF symbols (pyelftools)."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == section)
        return {sym.name: sym["st_value"] for sym in elf.get_section_by_name(".symtab")
                .iter_symbols() if sym["st_shndx"] == index and sym.name}


class LibbpfObject:
    """An object loaded by libbpf, with ``knobs`` (``{section: {variable: bytes}}``) written
    into the data maps' initial values and ``kconfig`` (text) given as extra kernel config;
    ``xlated(name)`` is a program's translated instructions. Close it (or use ``with``)."""

    def __init__(self, path, knobs=None, kconfig=None):
        self.lib = libbpf()
        self.opts = OpenOpts(sz=ctypes.sizeof(OpenOpts),
                             kconfig=kconfig.encode() if kconfig else None)
        self.obj = self.lib.bpf_object__open_file(path.encode(), ctypes.byref(self.opts))
        if not self.obj or self.lib.libbpf_get_error(self.obj):
            raise OSError(f"libbpf cannot open {path}")
        try:
            for section, values in (knobs or {}).items():
                self._set(path, section, values)
            err = self.lib.bpf_object__load(self.obj)
            if err:
                raise OSError(-err, f"libbpf cannot load {path}")
        except BaseException:
            self.close()
            raise

    def _set(self, path, section, values):
        # libbpf names internal maps <first 8 characters of the object name><section>
        name = (path.rsplit("/", 1)[-1].split(".")[0][:8] + section).encode()
        m = self.lib.bpf_object__find_map_by_name(self.obj, name)
        size = ctypes.c_size_t()
        data = bytearray(ctypes.string_at(self.lib.bpf_map__initial_value(m, size), size.value))
        offsets = symbol_offsets(path, section)
        for variable, raw in values.items():
            data[offsets[variable]:offsets[variable] + len(raw)] = raw
        assert self.lib.bpf_map__set_initial_value(m, bytes(data), len(data)) == 0

    def xlated(self, program):
        prog = self.lib.bpf_object__find_program_by_name(self.obj, program.encode())
        return syscalls.prog_xlated_insns(self.lib.bpf_program__fd(prog))

    def close(self):
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def xlated_masked(raw):
    """Program bytes with the ids of maps (64-bit loads of map fds and values) zeroed."""
    out = bytearray(raw)
    for offset in range(0, len(out), 8):
        if out[offset] == 0x18 and out[offset + 1] >> 4 in (1, 2) and offset + 16 <= len(out):
            out[offset + 4:offset + 8] = bytes(4)
    return bytes(out)


def bpftool_xlated(*program):
    """A program (``id N`` or ``pinned PATH``) as raw bytes, from ``bpftool prog dump
    xlated``."""
    dump = json.loads(subprocess.run(
        [require_tool("bpftool"), "prog", "dump", "xlated", *program, "opcodes", "-j"],
        capture_output=True, text=True, check=True).stdout)
    raw = bytearray()
    for insn in dump:
        ops = insn["opcodes"]
        raw.append(int(ops["code"], 16))
        raw.append(int(ops["src_reg"], 16) << 4 | int(ops["dst_reg"], 16))
        raw.extend(int(b, 16) for b in ops["off"] + ops["imm"])
    return bytes(raw)
