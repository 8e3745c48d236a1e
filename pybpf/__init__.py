"""pybpf: a pure-Python eBPF toolkit (assembler, loader, maps, ELF objects).

No clang, LLVM, kernel headers or compiled extension is needed at run time: programs are
built with :mod:`pybpf.asm` (or read from a clang-compiled object by :mod:`pybpf.elf`) and
loaded through the bpf() system call with ``ctypes`` (:mod:`pybpf.syscalls`).
"""

from .errors import (  # noqa: F401
    AssemblerError,
    AttachError,
    BPFError,
    BPFPermissionError,
    BTFError,
    DecodeError,
    ElfError,
    ExternError,
    KeyExistsError,
    MapError,
    MapFullError,
    MapKeyError,
    NotSupportedError,
    SyscallError,
    TracefsError,
    UsageError,
    VerifierError,
)

__version__ = "0.1.0"
