"""Tests of pybpf.perfbuf against the kernel: samples from real programs, rings that wrap,
LOST records when the reader stalls, two CPUs, the wakeup watermark, closing, bad input."""

import errno
import os
import re
import select
import subprocess
from contextlib import contextmanager

import pytest

from pybpf import host
from pybpf.abi import PERF_ATTR_DISABLED, PERF_ATTR_WATERMARK, MapType
from pybpf.errors import UsageError
from pybpf.events import Poller
from pybpf.maps import PAGE_SIZE, Map
from pybpf.perfbuf import PerfBuffer

import event_producers as ep
from support import require_tool

pytestmark = pytest.mark.kernel


@pytest.fixture
def perf_map():
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="events") as m:
        yield m


@contextmanager
def producer(perf_map, size):
    """A loaded perf_producer of ``size``-byte records, with its own maps."""
    with ep.scratch(size) as scratch, ep.counters("seq") as seq, \
            ep.load(ep.perf_producer(size), events=perf_map, scratch=scratch, seq=seq) as prog:
        yield prog


def collect(pb, size, timeout=0):
    """(seq, cpu, pb.cpu) of every waiting sample; a sample is the record plus perf's
    padding to 4 bytes short of a multiple of 8."""
    got = []

    def take(record):
        assert len(record) == size + 4, len(record)  # 64 -> 68: 4 + 68 = 72 = 9 * 8
        got.append(ep.check_record(record[:size], size) + (pb.cpu,))

    pb.poll(take, timeout=timeout)
    return got


def test_map_without_max_entries_gets_one_slot_per_possible_cpu(perf_map):
    assert perf_map.max_entries == host.possible_cpus()


@pytest.mark.parametrize("size", [16, 64, 256, 4096])
def test_samples_arrive_whole_and_in_order(perf_map, size):
    with PerfBuffer(perf_map, page_count=8) as pb, producer(perf_map, size) as prog:
        assert ep.run(prog, 6, cpu=0) == 0  # 6 * (4096 + 16) fit in 8 pages
        assert collect(pb, size) == [(seq, 0, 0) for seq in range(1, 7)]
        assert pb.lost == 0 and not pb.ready()


def test_rings_wrap_and_records_across_the_end_are_whole(perf_map):
    # 80-byte samples (8 header + 4 size + 64 + 4 padding) in a 4096-byte ring
    with PerfBuffer(perf_map, page_count=1) as pb, producer(perf_map, 64) as prog:
        seqs = []
        for _ in range(500):
            ep.run(prog, 20, cpu=0)
            seqs += [seq for seq, _, _ in collect(pb, 64)]
        assert seqs == list(range(1, 10_001)) and pb.lost == 0
        assert pb._rings[0].control[129] == 10_000 * 80  # data_tail: 195 times round


def test_a_stalled_reader_gets_lost_records_counted_exactly(perf_map):
    reported = []
    with PerfBuffer(perf_map, page_count=1,
                    lost_callback=lambda cpu, n: reported.append((cpu, n))) as pb, \
            producer(perf_map, 64) as prog:
        ep.run(prog, 100, cpu=0)
        # perf keeps one byte free: 4095 bytes hold 51 samples of 80 bytes; 49 are lost
        assert [seq for seq, _, _ in collect(pb, 64)] == list(range(1, 52))
        assert pb.lost == 0  # the kernel writes the LOST record once there is room
        ep.run(prog, 1, cpu=0)
        assert [seq for seq, _, _ in collect(pb, 64)] == [101]
        assert pb.lost == 49 and pb.lost_per_cpu[0] == 49 and reported == [(0, 49)]


def test_two_cpus(perf_map):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    runs, rounds = 5000, 10
    with PerfBuffer(perf_map, page_count=64) as pb, producer(perf_map, 64) as prog:
        got = {0: [], 1: []}

        def take(record):
            assert len(record) == 68
            seq, cpu = ep.check_record(record[:64], 64)
            assert cpu == pb.cpu
            got[cpu].append(seq)

        ep.read_while_producing(ep.produce_on_two_cpus(prog, runs * rounds, runs), pb, take,
                                deadline=120)
        ep.run(prog, 1, cpu=0)  # flushes a pending LOST count
        ep.run(prog, 1, cpu=1)
        for seq, cpu, _ in collect(pb, 64):
            got[cpu].append(seq)
        for cpu in (0, 1):
            seqs = got[cpu]
            assert seqs == sorted(set(seqs)) and seqs[-1] == runs * rounds + 1
            assert len(seqs) + pb.lost_per_cpu[cpu] == runs * rounds + 1


def test_the_wakeup_watermark_is_the_kernels(perf_map):
    with producer(perf_map, 64) as prog:
        with PerfBuffer(perf_map, page_count=4) as pb:  # woken at every sample
            ep.run(prog, 1, cpu=0)
            assert select.select(pb.filenos(), [], [], 0)[0] == [pb.filenos()[0]]
        with PerfBuffer(perf_map, page_count=4, wakeup_watermark=2000) as pb:
            ep.run(prog, 25, cpu=0)  # 25 * 80 = 2000 bytes: not more than the mark
            assert select.select(pb.filenos(), [], [], 0)[0] == []
            ep.run(prog, 1, cpu=0)  # 2080 bytes
            assert select.select(pb.filenos(), [], [], 0)[0] == [pb.filenos()[0]]
            assert len(collect(pb, 64)) == 26


def test_a_poller_reads_samples_that_woke_nobody(perf_map):
    with producer(perf_map, 64) as prog, Poller() as poller, \
            PerfBuffer(perf_map, page_count=4, wakeup_watermark=2000) as pb:
        got = []
        poller.add(pb, got.append)
        assert not pb.ready() and poller.poll(timeout=0) == 0
        ep.run(prog, 3, cpu=0)  # 240 bytes: under the mark, nothing wakes a waiter
        assert select.select(pb.filenos(), [], [], 0)[0] == []
        assert pb.ready() and poller.poll(timeout=0) == 3 and len(got) == 3
        assert not pb.ready()


def test_perf_attr_flag_bits_are_the_kernels():
    """PERF_ATTR_* against the bit offsets of perf_event_attr's bitfields in the kernel's
    BTF (bpftool): each bit counts from ``disabled``."""
    raw = subprocess.run([require_tool("bpftool"), "btf", "dump", "file",
                          "/sys/kernel/btf/vmlinux", "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    body = raw.split("STRUCT 'perf_event_attr'", 1)[1].split("\n[", 1)[0]
    bits = {name: int(offset) for name, offset in
            re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+) bitfield_size=1", body)}
    assert 1 << (bits["disabled"] - bits["disabled"]) == PERF_ATTR_DISABLED
    assert 1 << (bits["watermark"] - bits["disabled"]) == PERF_ATTR_WATERMARK


def test_offline_cpus_are_skipped(perf_map, monkeypatch):
    if host.possible_cpus() < 2:
        pytest.skip("needs two possible CPUs")
    monkeypatch.setattr("pybpf.perfbuf.online_cpus", lambda: [0])
    with PerfBuffer(perf_map, page_count=1) as pb, producer(perf_map, 64) as prog:
        assert pb.cpus == [0] and pb.skipped_cpus == list(range(1, host.possible_cpus()))
        # a program on a CPU without an event cannot output: the kernel says ENOENT
        assert ep.run(prog, 1, cpu=1) == (-errno.ENOENT) & 0xFFFFFFFF
        assert ep.run(prog, 1, cpu=0) == 0


def test_a_map_smaller_than_the_cpus_reads_its_slots_only():
    if host.possible_cpus() < 2:
        pytest.skip("needs two possible CPUs")
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 1, name="one") as m, \
            PerfBuffer(m, page_count=1) as pb:
        assert pb.cpus == [0] and pb.skipped_cpus == list(range(1, host.possible_cpus()))


def test_a_callback_that_raises(perf_map):
    with PerfBuffer(perf_map, page_count=2, record_type="<Q") as pb, \
            producer(perf_map, 16) as prog:
        ep.run(prog, 5, cpu=0)
        seen = []
        with pytest.raises(RuntimeError, match="stop at 3"):
            pb.poll(ep.fail_at(3, seen), timeout=0)
        assert pb.poll(seen.append, timeout=0) == 2 and seen == [1, 2, 3, 4, 5]


def _perf_mappings():
    with open("/proc/self/maps") as maps_file:
        return [line for line in maps_file if "perf_event" in line]


def test_close_releases_events_mappings_and_map_slots(perf_map):
    with producer(perf_map, 64) as prog:
        fds, mappings = set(os.listdir("/proc/self/fd")), _perf_mappings()
        pb = PerfBuffer(perf_map, page_count=2)
        assert len(_perf_mappings()) == len(mappings) + len(pb.cpus)
        ep.run(prog, 3, cpu=0)
        assert len(collect(pb, 64)) == 3
        pb.close()
        pb.close()
        assert set(os.listdir("/proc/self/fd")) == fds
        assert _perf_mappings() == mappings
        # the map's slots are empty again: the program's output fails with ENOENT
        assert ep.run(prog, 1, cpu=0) == (-errno.ENOENT) & 0xFFFFFFFF
        with pytest.raises(UsageError, match="closed"):
            pb.poll(print, timeout=0)


def test_bad_input(perf_map):
    for pages in (0, 3, 6, -2, 1.0, True):
        with pytest.raises(UsageError, match=f"page_count must be a power of 2 .*not "
                                             f"{re.escape(repr(pages))}"):
            PerfBuffer(perf_map, page_count=pages)
    with Map.create(MapType.RINGBUF, 0, 0, PAGE_SIZE, name="ring") as ring:
        with pytest.raises(UsageError, match="map 'ring' is a RINGBUF map; PerfBuffer reads "
                                             "PERF_EVENT_ARRAY maps; read it with "
                                             "pybpf.ringbuf.RingBuffer"):
            PerfBuffer(ring)
    with PerfBuffer(perf_map, page_count=1) as pb:
        if len(pb.filenos()) > 1:
            with pytest.raises(UsageError, match="one per CPU"):
                pb.fileno()
