"""How much pybpf reads, decodes and assembles, each limit with where it comes from.

A program has at most 1,000,000 instructions, counted in 8-byte slots (a 64-bit immediate load
counts two): ``BPF_COMPLEXITY_LIMIT_INSNS`` in ``include/linux/bpf.h``, the most the kernel's
``bpf_prog_load`` accepts from a loader with CAP_BPF (it refuses more with E2BIG). Nothing
larger can ever load, so pybpf refuses it too, before decoding or assembling it. Files are read
with a bounded read, so that a device that never ends (``/dev/zero``) or a pipe costs at most
the limit, never all memory.
"""

MAX_INSNS = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS: instructions (8-byte slots) per program
MAX_INSN_BYTES = MAX_INSNS * 8  # raw instruction bytes of one program
MAX_OBJECT_SIZE = 64 << 20  # an ELF object: several programs of the largest size, BTF, data
MAX_SOURCE_SIZE = 64 << 20  # assembly text: a largest program at 64 characters a line

INSNS_LIMIT = (f"the kernel's limit of {MAX_INSNS:,} instructions per program "
               "(BPF_COMPLEXITY_LIMIT_INSNS)")


def read_limited(stream, limit, name, what, error, head=b""):
    """``head`` (bytes already read from ``stream``) and the rest of a binary ``stream`` (a
    file, a pipe, a device), at most ``limit`` bytes in all, read with one bounded read;
    raises ``error`` (a pybpf exception class) naming the limit when the stream holds more.
    ``name`` is the file's name and ``what`` the kind of input."""
    data = head + stream.read(limit + 1 - len(head))
    if len(data) > limit:
        raise error(f"{name} is larger than {limit:,} bytes, the most pybpf reads as {what}")
    return data


def read_file(path, limit, what, error):
    """The bytes of the file ``path``, at most ``limit`` (see :func:`read_limited`); a file
    that cannot be opened or read raises ``error`` too."""
    try:
        with open(path, "rb") as stream:
            return read_limited(stream, limit, path, what, error)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
