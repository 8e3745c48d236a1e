"""Macros: instruction sequences that programs need often, appended to a
:class:`~pybpf.asm.builder.Builder` by one function call each.

A :class:`Builder` method appends exactly one instruction; a macro appends several, with
labels of its own made unique by the position where it starts.
"""

from __future__ import annotations

from pybpf.asm.builder import Builder
from pybpf.asm.insn import DW, R0, R1, R2, R3, R10, W
from pybpf.asm.operands import int_like
from pybpf.errors import AssemblerError


def ringbuf_reserve(b: Builder, ringbuf, size: int, *, drops, on_failure: str,
                    drops_index: int = 0, key_offset: int = -4) -> None:
    """``r0 = bpf_ringbuf_reserve(ringbuf, size, 0)``, counting failures.

    When the ring is full the reservation fails and the record is lost: the macro then adds
    1 to element ``drops_index`` of ``drops`` (a ``PERCPU_ARRAY`` of u64 counters, which
    :class:`pybpf.ringbuf.RingBuffer` reports as ``drops``) and jumps to ``on_failure``.
    Otherwise execution goes on after the macro with r0 pointing to ``size`` bytes, which
    the program must pass to ``bpf_ringbuf_submit`` or ``bpf_ringbuf_discard`` on every
    path. ``ringbuf`` and ``drops`` are map names (or fds); ``size`` is a constant (the
    verifier wants one). Clobbers r1-r5 and the 4 stack bytes at ``r10 + key_offset``.
    """
    given = size
    size = int_like(size)
    if size is None or not 0 < size < 1 << 31:
        raise AssemblerError(f"ringbuf_reserve: size must be a constant number of bytes "
                             f"> 0 (the verifier wants a constant), not {given!r}")
    if not isinstance(on_failure, str):
        raise AssemblerError(f"ringbuf_reserve: on_failure must be a label name, not "
                             f"{on_failure!r}")
    reserved = f"ringbuf_reserve.{b.next_index}.reserved"
    b.ld_map_fd(R1, ringbuf)
    b.mov(R2, size)
    b.mov(R3, 0)
    b.call("ringbuf_reserve")
    b.jne(R0, 0, reserved)
    count(b, drops, drops_index, key_offset)
    b.ja(on_failure)
    b.label(reserved)


def count(b: Builder, counters, index: int = 0, key_offset: int = -4) -> None:
    """Add 1 to element ``index`` of ``counters``, a map of u64 values (a ``PERCPU_ARRAY``
    or ``ARRAY``), atomically. Clobbers r0-r5 and the 4 stack bytes at ``r10 + key_offset``
    (the key)."""
    done = f"count.{b.next_index}.done"
    b.st(W, R10, key_offset, index)
    b.ld_map_fd(R1, counters)
    b.mov(R2, R10)
    b.add(R2, key_offset)
    b.call("map_lookup_elem")
    b.jeq(R0, 0, done)
    b.mov(R1, 1)
    b.atomic_add(DW, R0, 0, R1)
    b.label(done)
    b.mov(R0, 0)

