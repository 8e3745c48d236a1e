"""BPF programs that write event records, for the ring/perf buffer tests and bench/bench_events.py.

Each is a socket filter run by ``BPF_PROG_TEST_RUN`` (``repeat=N`` runs it N times in the
kernel, on the calling thread's CPU): no external events needed. Every record is
``size`` bytes: u64 sequence number (per CPU, from 1), u64 CPU id, then the sequence number
again in every remaining 8-byte word, so a record that arrives torn or shifted shows.
"""

import os
import struct
import threading
import time
from contextlib import contextmanager

from pybpf.abi import BPF_F_CURRENT_CPU, MapType, ProgType
from pybpf.asm import DW, R0, R1, R2, R3, R4, R5, R6, R7, R10, W, Builder, macros
from pybpf.maps import Map
from pybpf.program import Program

RECORD_HEAD = struct.Struct("<QQ")  # seq, cpu


def _next_seq(b, on_failure):
    """r7 = ++seq[this CPU] (the per-CPU counter map "seq"); to ``on_failure`` if no slot."""
    b.st(W, R10, -4, 0)
    b.ld_map_fd(R1, "seq")
    b.mov(R2, R10)
    b.add(R2, -4)
    b.call("map_lookup_elem")
    b.jeq(R0, 0, on_failure)
    b.ldx(DW, R7, R0, 0)
    b.add(R7, 1)
    b.stx(DW, R0, 0, R7)


def _fill(b, size):
    """Write the record at r6: seq (r7), the CPU id, then seq in every other word."""
    assert size >= 16 and size % 8 == 0, size
    b.stx(DW, R6, 0, R7)
    b.call("get_smp_processor_id")
    b.stx(DW, R6, 8, R0)
    for offset in range(16, size, 8):
        b.stx(DW, R6, offset, R7)


def _ringbuf_done(b, helper):
    """bpf_ringbuf_submit or bpf_ringbuf_discard of the record at r6."""
    b.mov(R1, R6)
    b.mov(R2, 0)
    b.call(helper)


def ringbuf_producer(size, discard_odd=False):
    """Reserve ``size`` bytes in "events" (a failure counted in "drops"), number the record,
    submit it; with ``discard_odd`` records with an odd sequence number are discarded."""
    b = Builder()
    macros.ringbuf_reserve(b, "events", size, drops="drops", on_failure="out")
    b.mov(R6, R0)
    _next_seq(b, "discard")
    _fill(b, size)
    if discard_odd:
        b.mov(R1, R7)
        b.and_(R1, 1)
        b.jne(R1, 0, "discard")
    _ringbuf_done(b, "ringbuf_submit")
    b.ja("out")
    b.label("discard")
    _ringbuf_done(b, "ringbuf_discard")
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    return b.instructions


def perf_producer(size):
    """Number a ``size``-byte record in the per-CPU scratch map "scratch" and send it with
    bpf_perf_event_output to "events" (this CPU's ring); r0 = the helper's result."""
    b = Builder()
    b.mov(R6, R1)  # the context, for the helper
    b.st(W, R10, -4, 0)
    b.ld_map_fd(R1, "scratch")
    b.mov(R2, R10)
    b.add(R2, -4)
    b.call("map_lookup_elem")
    b.jeq(R0, 0, "out")
    b.mov(R3, R6)
    b.mov(R6, R0)
    b.stx(DW, R10, -16, R3)  # keep the context while r6 is the record
    _next_seq(b, "out")
    _fill(b, size)
    b.ldx(DW, R1, R10, -16)
    b.ld_map_fd(R2, "events")
    b.lddw(R3, BPF_F_CURRENT_CPU)
    b.mov(R4, R6)
    b.mov(R5, size)
    b.call("perf_event_output")
    b.exit()
    b.label("out")
    b.mov(R0, 1)
    b.exit()
    return b.instructions


def slow_ringbuf_producer():
    """Reserve 8 bytes in "events", spin until may_goto's loop budget runs out (about 8
    million rounds of bpf_ktime_get_ns: half a second here), then write SLOW_MARKER and
    submit: a record that stays BUSY all that time."""
    b = Builder()
    b.ld_map_fd(R1, "events")
    b.mov(R2, 8)
    b.mov(R3, 0)
    b.call("ringbuf_reserve")
    b.jeq(R0, 0, "out")
    b.mov(R6, R0)
    b.label("spin")
    b.may_goto("done")
    b.call("ktime_get_ns")
    b.ja("spin")
    b.label("done")
    b.st(DW, R6, 0, SLOW_MARKER)
    _ringbuf_done(b, "ringbuf_submit")
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    return b.instructions


SLOW_MARKER = 0xB05E


def counters(name):
    """A PERCPU_ARRAY of one u64 counter per CPU (the "seq" and "drops" maps)."""
    return Map.create(MapType.PERCPU_ARRAY, 4, 8, 1, name=name)


def scratch(size):
    """The per-CPU record buffer of perf_producer."""
    return Map.create(MapType.PERCPU_ARRAY, 4, size, 1, name="scratch")


def load(insns, **maps):
    """The program loaded as a socket filter with ``maps`` by name."""
    return Program.from_instructions(insns, ProgType.SOCKET_FILTER, maps=maps,
                                     name="producer")


@contextmanager
def on_cpu(cpu):
    """Run the calling thread on ``cpu`` only, meanwhile (test runs happen on the caller's
    CPU)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run(program, runs, cpu=None):
    """Run ``program`` ``runs`` times in the kernel (one BPF_PROG_TEST_RUN), on ``cpu`` if
    given; its last return value."""
    if cpu is None:
        return program.test_run(bytes(64), repeat=runs).retval
    with on_cpu(cpu):
        return program.test_run(bytes(64), repeat=runs).retval


def check_record(record, size):
    """(seq, cpu) of a record, after checking its size and that every filler word is seq."""
    assert len(record) == size, (len(record), size)
    seq, cpu = RECORD_HEAD.unpack_from(record)
    words = struct.unpack_from(f"<{(size - 16) // 8}Q", record, 16)
    assert words == (seq,) * len(words), f"record {seq} is torn: {words[:4]}..."
    return seq, cpu


def fail_at(stop, seen):
    """A callback that appends each value to ``seen`` and raises RuntimeError at ``stop``."""
    def callback(value):
        seen.append(value)
        if value == stop:
            raise RuntimeError(f"stop at {stop}")

    return callback


def produce_on_two_cpus(program, per_cpu, chunk, room=None):
    """Two threads pinned to CPUs 0 and 1, each running ``program`` ``per_cpu`` times in
    batches of ``chunk``; with ``room()``, a batch starts only once ``room()`` is true. The
    threads and the event that stops them early."""
    stop = threading.Event()

    def work(cpu):
        os.sched_setaffinity(0, {cpu})
        done = 0
        while done < per_cpu and not stop.is_set():
            if room is not None and not room():
                time.sleep(0.0002)
                continue
            batch = min(chunk, per_cpu - done)
            program.test_run(bytes(64), repeat=batch)
            done += batch

    threads = [threading.Thread(target=work, args=(cpu,)) for cpu in (0, 1)]
    for thread in threads:
        thread.start()
    return threads, stop


def read_while_producing(running, buffer, callback, deadline=600):
    """Read ``buffer`` into ``callback`` while the producers of :func:`produce_on_two_cpus`
    run, then what is left; the seconds it took."""
    threads, stop = running
    start = time.monotonic()
    try:
        while any(thread.is_alive() for thread in threads):
            buffer.poll(callback, timeout=0.01)
            if time.monotonic() - start > deadline:
                raise RuntimeError("the producers did not finish in time")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    while buffer.poll(callback, timeout=0):
        pass
    return time.monotonic() - start
