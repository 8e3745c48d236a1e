"""Tests of pybpf.ringbuf: the reader over memory laid out as the kernel lays it out (busy,
discarded and wrapping records, exceptions), then against the kernel: real producers on one
and two CPUs, a stalled consumer, a second process, closing, bad input, the Poller."""

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from construct import Int64ul, Struct

from pybpf import features, libc
from pybpf.abi import BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, MapType
from pybpf.asm import Builder, format_insn, macros, resolve
from pybpf.errors import AssemblerError, NotSupportedError, UsageError
from pybpf.events import Poller, decoder
from pybpf.fd import FD
from pybpf.maps import PAGE_SIZE, Map
from pybpf.perfbuf import PerfBuffer
from pybpf.ringbuf import RingBuffer

import event_producers as ep

ROOT = Path(__file__).resolve().parent.parent


# --- the reader over hand-laid-out memory (no kernel) -----------------------------------------


class FakeRing:
    """A ring laid out as the kernel does it, in plain memory: consumer and producer
    positions, a data area of ``size`` bytes seen twice in a row, records with 8-byte
    headers (length | BUSY | DISCARD, page offset) padded to 8 bytes."""

    def __init__(self, size, record_type=None):
        self.size = size
        self.consumer, self.producer = bytearray(8), bytearray(8)
        self.data = bytearray(2 * size)
        self.rb = RingBuffer.__new__(RingBuffer)
        self.rb._fd = FD(os.open(os.devnull, os.O_RDONLY), "fake ring buffer")
        self.rb.name, self.rb.size, self.rb._drops, self.rb._mappings = "fake", size, None, []
        self.rb._use(memoryview(self.consumer), memoryview(self.producer),
                     memoryview(self.data))
        self.rb._decode = decoder(record_type)

    @property
    def consumer_pos(self):
        return struct.unpack("<Q", self.consumer)[0]

    def write(self, payload, flags=0):
        """Append a record as a producer would; returns its position."""
        pos = struct.unpack("<Q", self.producer)[0]
        record = struct.pack("<II", len(payload) | flags, 0) + payload
        record += bytes(-len(record) % 8)
        for i, byte in enumerate(record):  # the same bytes seen at x and x + size
            at = (pos + i) % self.size
            self.data[at] = self.data[at + self.size] = byte
        struct.pack_into("<Q", self.producer, 0, pos + len(record))
        return pos

    def set_flags(self, pos, flags):
        """Change the flags of the record at ``pos`` (as bpf_ringbuf_submit/discard do)."""
        at = pos % self.size
        length = struct.unpack_from("<I", self.data, at)[0] & (BPF_RINGBUF_DISCARD_BIT - 1)
        for where in (at, at + self.size):
            struct.pack_into("<I", self.data, where, length | flags)

    def take(self):
        got = []
        count = self.rb.poll(lambda r: got.append(bytes(r)), timeout=0)
        assert count == len(got)
        return got


def test_records_in_order_and_discarded_ones_skipped():
    ring = FakeRing(4096)
    ring.write(b"first")
    ring.write(b"gone", BPF_RINGBUF_DISCARD_BIT)
    ring.write(b"second record")
    assert ring.take() == [b"first", b"second record"]
    # 8 + 5 -> 16, 8 + 4 -> 16, 8 + 13 -> 24: every record's room, discarded ones too
    assert ring.consumer_pos == 56 and ring.rb.pending == 0
    assert ring.take() == []


def test_a_busy_record_at_the_head_stops_the_reader_and_keeps_the_order():
    ring = FakeRing(4096)
    first = ring.write(b"reserved", BPF_RINGBUF_BUSY_BIT)
    ring.write(b"submitted after it")
    assert ring.take() == [] and ring.consumer_pos == 0 and ring.rb.ready()
    ring.set_flags(first, 0)  # submitted now
    assert ring.take() == [b"reserved", b"submitted after it"]


def test_a_busy_record_in_the_middle_ends_the_batch_there():
    ring = FakeRing(4096)
    ring.write(b"a")
    busy = ring.write(b"b", BPF_RINGBUF_BUSY_BIT)
    ring.write(b"c")
    assert ring.take() == [b"a"] and ring.consumer_pos == busy
    ring.set_flags(busy, BPF_RINGBUF_DISCARD_BIT)  # discarded in the end
    assert ring.take() == [b"c"] and ring.rb.pending == 0


def test_a_record_across_the_end_of_the_ring_comes_whole_through_the_second_mapping():
    ring = FakeRing(4096)
    ring.write(bytes(4064))  # 4072 bytes of room: the next header is at 4072
    assert len(ring.take()) == 1
    payload = bytes(range(200))
    assert ring.write(payload) == 4072  # header 4072..4079, data 4080..4279: wraps at 4096
    assert ring.take() == [payload]
    assert ring.consumer_pos == 4072 + 208


def test_one_call_reads_at_most_one_ring_worth_from_a_producer_that_never_stops():
    ring = FakeRing(4096)
    ring.write(bytes(56))  # 64 bytes per record: 64 records fill the ring once

    def keep_producing(record):
        ring.write(bytes(56))

    assert ring.rb.consume(keep_producing) == 64


def test_a_callback_that_raises_stops_after_the_record_it_was_given():
    ring = FakeRing(4096)
    for n in range(1, 6):
        ring.write(bytes([n]))
    seen = []

    def fail_on_3(record):
        seen.append(record[0])
        if record[0] == 3:
            raise KeyError("three")

    try:
        ring.rb.poll(fail_on_3, timeout=0)
    except KeyError:  # the position is stored before the exception reaches the caller
        assert seen == [1, 2, 3] and ring.consumer_pos == 3 * 16
        assert ring.take() == [b"\x04", b"\x05"]
    else:
        pytest.fail("the callback's KeyError did not propagate")


def test_a_record_read_cannot_decode_is_read_past_before_the_error():
    ring = FakeRing(4096, "<Q")
    for payload in (b"\x01" * 8, b"\x02" * 8, b"\x03" * 4, b"\x04" * 8):
        ring.write(payload)  # 16 bytes each with header and padding; the third too short
    got = []
    try:
        for value in ring.rb.read(timeout=0):
            got.append(value)
    except UsageError as exc:
        assert "a record of 4 bytes is shorter than the record type" in str(exc)
        assert got == [0x0101010101010101, 0x0202020202020202]
        assert ring.consumer_pos == 3 * 16
    else:
        pytest.fail("the short record raised nothing")


def test_a_record_kept_after_its_callback_cannot_be_read():
    ring = FakeRing(4096)
    ring.write(b"x" * 8)
    kept = []
    ring.rb.poll(kept.append, timeout=0)
    with pytest.raises(ValueError, match="released"):
        bytes(kept[0])


def test_records_decoded_by_struct_construct_or_a_callable():
    for record_type, expected in [
        ("<QI", (7, 9)), ("<Q", 7),
        (Struct("seq" / Int64ul), {"seq": 7}),
        (lambda record: bytes(record[:2]), b"\x07\x00"),
    ]:
        ring = FakeRing(4096, record_type)
        ring.write(struct.pack("<QI", 7, 9))
        got = []
        ring.rb.poll(got.append, timeout=0)
        assert len(got) == 1
        value = got[0]
        assert (dict((k, v) for k, v in value.items() if not k.startswith("_"))
                if isinstance(expected, dict) else value) == expected


def test_a_record_shorter_than_its_type_is_a_usage_error():
    ring = FakeRing(4096, "<QQ")
    ring.write(b"12345678")
    with pytest.raises(UsageError, match=r"a record of 8 bytes is shorter than the record "
                                         r"type '<QQ' \(16 bytes\)"):
        ring.rb.poll(lambda v: None, timeout=0)
    construct_ring = FakeRing(4096, Struct("a" / Int64ul, "b" / Int64ul))
    construct_ring.write(b"12345678")
    with pytest.raises(UsageError, match="a record of 8 bytes cannot be parsed"):
        construct_ring.rb.poll(lambda v: None, timeout=0)


@pytest.mark.parametrize("record_type", [42, "<Z", b"<Q"])
def test_bad_record_types(record_type):
    with pytest.raises(UsageError, match="record_type"):
        decoder(record_type)


@pytest.mark.parametrize("timeout", [-1, "1", True, float("nan")])
def test_bad_timeouts(timeout):
    ring = FakeRing(4096)
    with pytest.raises(UsageError, match="timeout must be None"):
        ring.rb.poll(print, timeout=timeout)


# --- the DSL macro ----------------------------------------------------------------------------


def test_ringbuf_reserve_macro_instructions():
    b = Builder()
    macros.ringbuf_reserve(b, "events", 64, drops="drops", on_failure="out")
    b.mov(ep.R6, ep.R0)
    b.label("out")
    b.exit()
    listing = [format_insn(insn) for insn in resolve(b.instructions, {"events": 7, "drops": 8})]
    assert listing == [  # call 131: bpf_ringbuf_reserve, call 1: bpf_map_lookup_elem
        "ld_pseudo\tr1, 1, 7", "r2 = 64", "r3 = 0", "call 131", "if r0 != 0 goto +11",
        "*(u32 *)(r10 - 4) = 0", "ld_pseudo\tr1, 1, 8", "r2 = r10", "r2 += -4", "call 1",
        "if r0 == 0 goto +2", "r1 = 1", "lock *(u64 *)(r0 + 0) += r1", "r0 = 0",
        "goto +1", "r6 = r0", "exit"]


def test_ringbuf_reserve_macro_takes_an_int_like_size():
    class Size:
        def __index__(self):
            return 64

    built = []
    for size in (64, Size()):
        b = Builder()
        macros.ringbuf_reserve(b, "events", size, drops="drops", on_failure="out")
        b.label("out")
        b.exit()
        built.append([format_insn(i) for i in resolve(b.instructions, {"events": 7, "drops": 8})])
    assert built[0] == built[1] and "r2 = 64" in built[1]


@pytest.mark.parametrize("size", [0, -8, 1 << 31, "64", True, 64.0])
def test_ringbuf_reserve_macro_wants_a_constant_size(size):
    with pytest.raises(AssemblerError, match="size must be a constant number of bytes"):
        macros.ringbuf_reserve(Builder(), "events", size, drops="drops", on_failure="out")


# --- against the kernel -----------------------------------------------------------------------

kernel = pytest.mark.kernel


@pytest.fixture
def maps():
    """The counters of the producers: "seq" (per-CPU sequence numbers) and "drops"."""
    with ep.counters("seq") as seq, ep.counters("drops") as drops:
        yield {"seq": seq, "drops": drops}


def producer(rb, maps, size, **options):
    return ep.load(ep.ringbuf_producer(size, **options), events=rb, **maps)


def collect(rb, size, timeout=0):
    """(seq, cpu) of every record waiting, checked whole."""
    got = []
    rb.poll(lambda record: got.append(ep.check_record(record, size)), timeout=timeout)
    return got


@kernel
@pytest.mark.parametrize("size", [16, 64, 256, 4096])
def test_kernel_records_arrive_whole_and_in_order(maps, size):
    with RingBuffer.create(1 << 20, name="events", drops=maps["drops"]) as rb, \
            producer(rb, maps, size) as prog:
        ep.run(prog, 100, cpu=0)
        assert rb.pending == 100 * (size + 8)  # sizes are multiples of 8: no padding
        assert collect(rb, size) == [(seq, 0) for seq in range(1, 101)]
        assert rb.pending == 0 and rb.drops == 0


@kernel
def test_kernel_ring_wraps_thousands_of_times(maps):
    # 72 bytes per record in 4096: positions not aligned to the ring, records across its end
    with RingBuffer.create(PAGE_SIZE, name="events", drops=maps["drops"]) as rb, \
            producer(rb, maps, 64) as prog:
        seqs = []
        for _ in range(2000):
            ep.run(prog, 50, cpu=0)
            seqs += [seq for seq, _ in collect(rb, 64)]
        assert seqs == list(range(1, 100_001)) and rb.drops == 0
        assert rb._consumer[0] == 100_000 * 72  # the ring went round 1757 times


@kernel
def test_kernel_discarded_records_are_skipped(maps):
    with RingBuffer.create(PAGE_SIZE, name="events") as rb, \
            producer(rb, maps, 64, discard_odd=True) as prog:
        ep.run(prog, 40, cpu=0)
        assert collect(rb, 64) == [(seq, 0) for seq in range(2, 41, 2)]
        assert rb.pending == 0  # the discarded records' room is free too


@kernel
def test_kernel_a_stalled_consumer_loses_records_and_the_drops_are_counted(maps):
    with RingBuffer.create(PAGE_SIZE, name="events", drops=maps["drops"]) as rb, \
            producer(rb, maps, 64) as prog:
        ep.run(prog, 100, cpu=0)  # nobody reads meanwhile
        # 72 bytes per record: 56 fit in 4096 (56 * 72 = 4032), the other 44 are refused
        assert rb.drops == 44 and rb.drops_per_cpu[0] == 44
        assert collect(rb, 64) == [(seq, 0) for seq in range(1, 57)]
        ep.run(prog, 10, cpu=0)  # room again
        assert collect(rb, 64) == [(seq, 0) for seq in range(57, 67)] and rb.drops == 44


@kernel
def test_kernel_a_busy_record_holds_back_the_records_after_it(maps):
    # the slow program must still be running when poll() looks; on a busy machine it may
    # finish first (half a second), and then the scenario is played again
    for _ in range(5):
        with RingBuffer.create(PAGE_SIZE, name="events", record_type="<Q") as rb, \
                ep.load(ep.slow_ringbuf_producer(), events=rb) as slow, \
                ep.load(ep.ringbuf_producer(16), events=rb, **maps) as fast:
            thread = threading.Thread(target=ep.run, args=(slow, 1, 1))
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while rb.pending == 0:  # the slow program has reserved its record
                    assert time.monotonic() < deadline, "the slow producer never reserved"
                    time.sleep(0.001)
                ep.run(fast, 1, cpu=0)  # a complete record behind the busy one
                held = []
                count, pending = rb.poll(held.append, timeout=0), rb.pending
                busy_seen = thread.is_alive()
            finally:
                thread.join(timeout=60)
            if count and not busy_seen:
                continue  # the slow producer finished before poll() looked
            assert (count, pending, held) == (0, 16 + 24, [])
            got = []
            assert rb.poll(got.append, timeout=0) == 2
            assert got == [ep.SLOW_MARKER, 1]
            return
    pytest.fail("the slow producer finished before poll() looked, 5 times: make it slower")


@kernel
def test_kernel_two_producers_on_two_cpus(maps):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    runs, rounds = 20_000, 10
    with RingBuffer.create(1 << 18, name="events", drops=maps["drops"]) as rb, \
            producer(rb, maps, 64) as prog:
        got = {0: [], 1: []}

        def take(record):
            seq, cpu = ep.check_record(record, 64)
            got[cpu].append(seq)

        ep.read_while_producing(ep.produce_on_two_cpus(prog, runs * rounds, runs), rb, take,
                                deadline=120)
        drops = rb.drops_per_cpu
        for cpu in (0, 1):  # each CPU's records in order, none twice, every loss counted
            assert got[cpu] == list(range(1, len(got[cpu]) + 1))
            assert len(got[cpu]) + drops[cpu] == runs * rounds
            assert got[cpu], f"nothing from CPU {cpu}"


@kernel
def test_kernel_read_iterates_until_the_timeout(maps):
    with RingBuffer.create(PAGE_SIZE, name="events", record_type="<QQ") as rb, \
            producer(rb, maps, 16) as prog:
        ep.run(prog, 3, cpu=0)
        start = time.monotonic()
        assert [seq for seq, _ in rb.read(timeout=0.2)] == [1, 2, 3]
        assert 0.2 <= time.monotonic() - start < 5
        start = time.monotonic()
        assert list(rb.read(timeout=0.2)) == []  # nothing came: it waited the whole timeout
        assert 0.2 <= time.monotonic() - start < 5


@kernel
def test_kernel_read_waits_a_whole_timeout_again_after_each_record(maps):
    with RingBuffer.create(PAGE_SIZE, name="events", record_type="<QQ") as rb, \
            producer(rb, maps, 16) as prog:
        ep.run(prog, 1, cpu=0)
        later = threading.Timer(1, ep.run, args=(prog, 1, 0))  # the next record, a second
        seqs = []
        try:
            for seq, _ in rb.read(timeout=10):
                seqs.append(seq)
                if len(seqs) == 1:
                    later.start()  # after the first record was read
                else:
                    break
        finally:
            if later.ident is not None:
                later.join(timeout=10)
        assert seqs == [1, 2]


@kernel
def test_kernel_a_ring_buffer_is_waited_on_through_its_fileno(maps):
    with RingBuffer.create(PAGE_SIZE, name="events") as rb, producer(rb, maps, 16) as prog:
        assert select.select([rb], [], [], 0)[0] == []
        ep.run(prog, 1, cpu=0)
        assert select.select([rb], [], [], 0)[0] == [rb]


def test_a_poller_closes_its_epoll_fd():
    fds = _open_fds()
    poller = Poller()
    assert len(_open_fds() - fds) == 1
    poller.close()
    assert _open_fds() == fds
    poller.close()  # twice is fine


@kernel
def test_kernel_poll_waits_for_a_record(maps):
    with RingBuffer.create(PAGE_SIZE, name="events") as rb, producer(rb, maps, 16) as prog:
        timer = threading.Timer(0.2, ep.run, args=(prog, 1))
        start = time.monotonic()
        timer.start()
        got = []
        assert rb.poll(got.append, timeout=30) == 1
        assert 0.15 <= time.monotonic() - start < 10
        timer.join()
        start = time.monotonic()
        assert rb.poll(got.append, timeout=0.1) == 0
        assert 0.1 <= time.monotonic() - start < 5


@kernel
def test_kernel_a_callback_that_raises(maps):
    with RingBuffer.create(PAGE_SIZE, name="events", record_type="<Q") as rb, \
            producer(rb, maps, 16) as prog:
        ep.run(prog, 6, cpu=0)
        seen = []
        with pytest.raises(RuntimeError, match="stop at 2"):
            rb.poll(ep.fail_at(2, seen), timeout=0)
        assert seen == [1, 2] and rb.pending == 4 * 24
        assert rb.poll(seen.append, timeout=0) == 4 and seen == [1, 2, 3, 4, 5, 6]


@kernel
def test_kernel_pinned_ring_read_by_a_second_process(maps, bpffs):
    path = str(bpffs / "events")
    with RingBuffer.create(PAGE_SIZE, name="events") as rb, producer(rb, maps, 64) as prog:
        rb.pin(path)
        ep.run(prog, 30, cpu=0)
        child = subprocess.run(
            [sys.executable, "-c", (
                "import json, sys; from pybpf.ringbuf import RingBuffer\n"
                "with RingBuffer.from_pinned(sys.argv[1], record_type='<QQ') as rb:\n"
                "    got = []; rb.poll(got.append, timeout=5)\n"
                "print(json.dumps(got))"), path],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert child.returncode == 0, child.stderr
        assert json.loads(child.stdout) == [[seq, 0] for seq in range(1, 31)]
        assert rb.pending == 0  # the second process moved the shared consumer position


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _bpf_mappings():
    with open("/proc/self/maps") as maps_file:
        return [line for line in maps_file if "bpf-map" in line]


@kernel
def test_kernel_close_releases_every_fd_and_mapping(maps):
    fds, mappings = _open_fds(), _bpf_mappings()
    rb = RingBuffer.create(PAGE_SIZE * 4, name="events", drops=maps["drops"])
    assert len(_bpf_mappings()) >= len(mappings) + 2  # consumer page, producer + data
    got = []
    with producer(rb, maps, 16) as prog:
        ep.run(prog, 2)
    rb.poll(got.append, timeout=0)
    assert len(got) == 2
    rb.close()
    rb.close()  # twice is fine
    assert _open_fds() == fds and _bpf_mappings() == mappings
    with pytest.raises(UsageError, match="closed"):
        rb.poll(got.append, timeout=0)
    with pytest.raises(UsageError, match="closed"):
        assert rb.pending
    with pytest.raises(UsageError, match="closed"):
        next(rb.read(0))


@kernel
def test_kernel_close_from_a_callback_and_with_a_read_open(maps):
    fds, mappings = _open_fds(), _bpf_mappings()
    rb = RingBuffer.create(PAGE_SIZE, name="events")
    with producer(rb, maps, 16) as prog:
        ep.run(prog, 5)
    got = []

    def close_at_2(record):
        got.append(bytes(record))
        if len(got) == 2:
            rb.close()

    assert rb.poll(close_at_2, timeout=0) == 2  # the loop ends at the close
    del close_at_2
    assert _open_fds() == fds and _bpf_mappings() == mappings

    rb = RingBuffer.create(PAGE_SIZE, name="events")
    with producer(rb, maps, 16) as prog:
        ep.run(prog, 5)
    reading = rb.read(timeout=0)
    next(reading)
    with pytest.raises(UsageError, match="already being read"):
        rb.poll(print, timeout=0)
    rb.close()  # closes the iterator first
    with pytest.raises(StopIteration):
        next(reading)
    assert _open_fds() == fds and _bpf_mappings() == mappings


@kernel
def test_kernel_the_reader_and_the_map_close_independently(maps):
    with Map.create(MapType.RINGBUF, 0, 0, PAGE_SIZE, name="events") as m:
        rb = RingBuffer(m)
    # the map object is closed: the reader's own fd keeps the ring alive
    with producer(rb, maps, 16) as prog:
        ep.run(prog, 1)
    assert len(collect(rb, 16)) == 1
    rb.close()


@kernel
def test_kernel_bad_maps_and_options():
    with Map.create(MapType.HASH, 4, 4, 1, name="counts") as m:
        with pytest.raises(UsageError, match="map 'counts' is a HASH map; RingBuffer reads "
                                             "RINGBUF maps$"):
            RingBuffer(m)
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="perf") as m:
        with pytest.raises(UsageError, match="read it with pybpf.perfbuf.PerfBuffer"):
            RingBuffer(m)
        with pytest.raises(UsageError, match="PerfBuffer reads PERF_EVENT_ARRAY maps"):
            PerfBuffer(Map.create(MapType.HASH, 4, 4, 1))
    with pytest.raises(UsageError, match="RingBuffer reads a RINGBUF map .* not 5"):
        RingBuffer(5)
    with Map.create(MapType.RINGBUF, 0, 0, PAGE_SIZE, name="events") as m, \
            Map.create(MapType.ARRAY, 4, 8, 1, name="plain") as plain:
        with pytest.raises(UsageError, match="drops must be a PERCPU_ARRAY"):
            RingBuffer(m, drops=plain)
        with ep.counters("drops") as drops:
            with pytest.raises(UsageError, match=r"drops_index must be an element of map "
                                                 r"'drops' \(0..0\), not 1"):
                RingBuffer(m, drops=drops, drops_index=1)


@kernel
@pytest.mark.parametrize("size, hint", [
    (PAGE_SIZE * 3, f"use {PAGE_SIZE * 2} or {PAGE_SIZE * 4}"),
    (PAGE_SIZE + 8, f"use {PAGE_SIZE} or {PAGE_SIZE * 2}"),
    (PAGE_SIZE // 2, "e.g."), (0, "e.g."), (-4096, "e.g."), (4096.0, "e.g.")])
def test_kernel_ring_sizes_are_checked_before_the_kernel_is_asked(monkeypatch, size, hint):
    calls = []
    monkeypatch.setattr(libc, "sys_bpf", lambda *a: calls.append(a) or -22)
    with pytest.raises(UsageError, match=f"must be a power of 2 and a multiple of the page "
                                         f"size \\({PAGE_SIZE}\\), not {size!r}; {hint}"):
        RingBuffer.create(size)
    with pytest.raises(UsageError, match="map 'events': a RINGBUF map's max_entries"):
        Map.create(MapType.RINGBUF, 0, 0, size, name="events")
    assert calls == []


@kernel
def test_kernel_without_ring_buffers_the_error_names_the_version(monkeypatch):
    entry = features._REGISTRY["map_type"]
    monkeypatch.setitem(entry.answers, (MapType.RINGBUF,), False)
    with pytest.raises(NotSupportedError, match=r"^RingBuffer: RINGBUF maps need Linux >= "
                                                r"5.8 \(CONFIG_BPF_SYSCALL\); this kernel"):
        RingBuffer.create(PAGE_SIZE)


# --- the Poller -------------------------------------------------------------------------------


@kernel
def test_kernel_poller_waits_on_a_ring_a_perf_buffer_and_a_pipe(maps):
    read_end, write_end = os.pipe()
    with RingBuffer.create(PAGE_SIZE, name="events", record_type="<Q") as rb, \
            Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="events") as perf_map, \
            PerfBuffer(perf_map, page_count=1, record_type="<Q") as pb, \
            ep.scratch(16) as buffer, ep.counters("perfseq") as perf_seq, \
            producer(rb, maps, 16) as ring_prog, \
            ep.load(ep.perf_producer(16), events=perf_map, scratch=buffer,
                    seq=perf_seq) as perf_prog, Poller() as poller:
        ring_got, perf_got, woken = [], [], []
        poller.add(rb, ring_got.append)
        poller.add(pb, perf_got.append)
        poller.add(read_end, lambda fd: woken.append(os.read(fd, 10)))
        start = time.monotonic()
        assert poller.poll(timeout=0.1) == 0 and woken == []
        assert time.monotonic() - start >= 0.1
        ep.run(ring_prog, 3, cpu=0)
        ep.run(perf_prog, 2, cpu=1 if len(os.sched_getaffinity(0)) > 1 else 0)
        assert poller.poll(timeout=5) == 5
        assert ring_got == [1, 2, 3] and perf_got == [1, 2]
        os.write(write_end, b"stop")
        assert poller.poll(timeout=5) == 0 and woken == [b"stop"]
        poller.remove(read_end)
        os.write(write_end, b"again")
        assert poller.poll(timeout=0) == 0 and woken == [b"stop"]
        with pytest.raises(UsageError, match="already being waited on"):
            poller.add(rb, print)
        with pytest.raises(UsageError, match="give the callback"):
            Poller().add(rb)
        with pytest.raises(UsageError, match="neither an event buffer nor a file descriptor"):
            poller.add("stdin")
    os.close(read_end)
    os.close(write_end)


@kernel
def test_kernel_poller_refuses_a_closed_buffer():
    with Poller() as poller:
        rb = RingBuffer.create(PAGE_SIZE, name="events")
        poller.add(rb, print)
        rb.close()
        with pytest.raises(UsageError, match="is closed; remove it from the Poller"):
            poller.poll(timeout=0)


@kernel
def test_kernel_stop_signal_wakes_a_poller():
    from pybpf.signals import StopSignal

    with StopSignal() as stop, RingBuffer.create(PAGE_SIZE, name="events") as rb, \
            Poller() as poller:
        poller.add(rb, print)
        poller.add(stop, lambda source: source.drain())
        threading.Timer(0.1, os.kill, args=(os.getpid(), 15)).start()
        start = time.monotonic()
        while not stop.requested:
            poller.poll(timeout=30)
            assert time.monotonic() - start < 20
        assert stop.signum == 15 and time.monotonic() - start < 20
