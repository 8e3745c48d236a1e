"""probes: uprobes and uretprobes on a program built for the test (by API, by section name,
through the uprobe PMU and through tracefs), libbpf attaching the same object for the same
workload, kprobes and ksyscalls (a clear error on a kernel without CONFIG_KPROBES), and
perf_event programs sampling CPU clocks and counting page faults."""

import os
import struct
import time

import pytest

from pybpf import features, tracefs
from pybpf.abi import PERF_TYPE_SOFTWARE, ProgType
from pybpf.attach import attach, attach_all
from pybpf.host import online_cpus
from pybpf.errors import AttachError, NotSupportedError, SymbolError, UsageError
from pybpf.probes import attach_kprobe, attach_ksyscall, attach_perf_event, attach_uprobe
from pybpf.symbols import find_function, ld_cache

from attach_support import (
    PROBE_TARGET_C, build_c, count_pids_program, counted, libbpf_counts, load, pid_map,
    sum_returns_program, waiting, watch,
)

pytestmark = pytest.mark.kernel

CALLS = 1000
PERF_COUNT_SW_PAGE_FAULTS = 2


@pytest.fixture(scope="module", params=["pie", "no-pie"])
def target(request, tmp_path_factory):
    """The test program, built as a position-independent executable (ET_DYN: symbol values
    are file-relative) and as a fixed-address one (ET_EXEC: they are not)."""
    flags = ["-fPIE", "-pie"] if request.param == "pie" else ["-fno-pie", "-no-pie"]
    return build_c(tmp_path_factory.mktemp(request.param), "probe_target", PROBE_TARGET_C,
                   *flags)


def expected_output(pid):
    """What the test program prints: the sum of 2*i for i < CALLS, plus CALLS times its pid."""
    return f"{CALLS * (CALLS - 1) + CALLS * pid}\n"


def test_uprobe_counts_every_call(target):
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog, \
            waiting([target, str(CALLS)]) as child:
        watch(pids, child.pid)
        with attach_uprobe(prog, target, "pybpf_probe_me") as link:
            assert link.description.startswith(f"uprobe/{target}:pybpf_probe_me+0x")
            assert child.go() == expected_output(child.pid)
        assert counted(pids, child.pid) == CALLS


def test_uretprobe_sees_the_return_values(target):
    with pid_map() as pids, sum_returns_program(pids) as prog, \
            waiting([target, str(CALLS)]) as child:
        watch(pids, child.pid)
        with attach_uprobe(prog, target, "pybpf_probe_me", retprobe=True):
            child.go()
        assert counted(pids, child.pid) == CALLS * (CALLS - 1)  # the sum of 2 * i


def test_uprobe_limited_to_one_process(target):
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog, \
            waiting([target, str(CALLS)]) as chosen, waiting([target, str(CALLS)]) as other:
        watch(pids, chosen.pid)
        watch(pids, other.pid)
        with attach_uprobe(prog, target, "pybpf_probe_me", pid=chosen.pid):
            chosen.go()
            other.go()
        assert (counted(pids, chosen.pid), counted(pids, other.pid)) == (CALLS, 0)


def test_uprobe_through_tracefs_events(target, monkeypatch):
    """Without a uprobe PMU (kernels < 4.17) a uprobe is a tracefs event, removed on close."""
    monkeypatch.setattr(features._REGISTRY["uprobe_pmu"], "answers", {(): False})
    events = tracefs.probe_events_file("uprobe")
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog, \
            waiting([target, str(CALLS)]) as child:
        watch(pids, child.pid)
        with attach_uprobe(prog, target, "pybpf_probe_me"):
            mine = [line for line in open(events) if f"pybpf_{os.getpid()}_" in line]
            assert len(mine) == 1 and mine[0].startswith("p:uprobes/pybpf_")
            assert f"{target}:0x" in mine[0]
            child.go()
        assert counted(pids, child.pid) == CALLS
        assert not [line for line in open(events) if f"pybpf_{os.getpid()}_" in line]


def test_uprobe_section_names_find_libc_by_name(target):
    """uprobe.o attaches to libc.so.6:getpid by its section names, as libbpf would: the
    library found through the dynamic linker's cache, the function by its symbol."""
    libc = ld_cache()["libc.so.6"]
    with load("uprobe") as coll, waiting([target, str(CALLS)]) as child:
        coll.maps["target"][0] = child.pid
        links = attach_all(coll.programs)
        try:
            offset = find_function(libc, "getpid").offset
            assert sorted(link.description for link in links) == [
                f"uprobe/{libc}:getpid+{offset:#x}", f"uretprobe/{libc}:getpid+{offset:#x}"]
            child.go()
        finally:
            for link in links:
                link.close()
        counts = coll.maps["counts"]
        assert (counts[0], counts[1], counts[2]) == (CALLS, CALLS, CALLS * child.pid)


@pytest.mark.oracle
def test_libbpf_attaches_uprobe_o_to_the_same_counts(target, tmp_path):
    """The same object, attached by libbpf's bpf_program__attach() for the same workload:
    the same counts."""
    with waiting([target, str(CALLS)]) as child:
        theirs = libbpf_counts(tmp_path, "uprobe.o", child.pid, child.go)
    with load("uprobe") as coll, waiting([target, str(CALLS)]) as child2:
        coll.maps["target"][0] = child2.pid
        links = attach_all(coll.programs)
        child2.go()
        for link in links:
            link.close()
        ours = [coll.maps["counts"][i] for i in range(16)]
    assert theirs[:2] == ours[:2] == [CALLS, CALLS]
    assert (theirs[2] // child.pid, ours[2] // child2.pid) == (CALLS, CALLS)
    assert theirs[3:] == ours[3:] == [0] * 13


def test_uprobe_errors(target):
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog:
        with pytest.raises(SymbolError, match=f"no function 'no_such_function' in {target}"):
            attach_uprobe(prog, target, "no_such_function")
        with pytest.raises(SymbolError, match="calls 'getpid' but does not define it.*libc"):
            attach_uprobe(prog, target, "getpid")
        with pytest.raises(SymbolError, match="cannot find 'libnothing.so.9' in "
                                              "LD_LIBRARY_PATH, /etc/ld.so.cache"):
            attach_uprobe(prog, "libnothing.so.9", "f")
        with pytest.raises(AttachError, match="takes no offset"):
            attach_uprobe(prog, target, "pybpf_probe_me", 4, retprobe=True)
        with pytest.raises(UsageError, match="pid must be"):
            attach_uprobe(prog, target, "pybpf_probe_me", pid=-7)
        with pytest.raises(AttachError, match="section 'uprobe/nocolon' names|BINARY:FUNCTION"):
            attach(prog, "uprobe/nocolon")
    with pid_map() as pids, count_pids_program(ProgType.TRACEPOINT, pids) as prog:
        with pytest.raises(AttachError, match="a uprobe needs a KPROBE program"):
            attach_uprobe(prog, target, "pybpf_probe_me")


def _has_kprobes():
    return features.have("kprobe_pmu") or features.have("kprobe_events")


@pytest.mark.parametrize("section", ["kprobe/do_nanosleep", "kretprobe/do_nanosleep",
                                     "ksyscall/nanosleep", "kretsyscall/clock_nanosleep"])
def test_kprobes_attach_or_say_the_kernel_cannot(section):
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog:
        watch(pids, os.getpid())
        if not _has_kprobes():  # this kernel (no CONFIG_KPROBES): one clear error
            with pytest.raises(NotSupportedError) as info:
                attach(prog, section)
            message = str(info.value)
            assert "cannot attach kprobes" in message and "CONFIG_KPROBES" in message
            assert "fentry/<function>" in message and "\n" not in message
            return
        with attach(prog, section):
            time.sleep(0.001)
        assert counted(pids, os.getpid()) >= 1


def test_kprobe_target_errors():
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog:
        with pytest.raises(AttachError, match="FUNCTION or FUNCTION\\+OFFSET"):
            attach(prog, "kprobe/do-nanosleep")
        with pytest.raises(AttachError, match="takes no offset"):
            attach(prog, "kretprobe/do_nanosleep+0x4")
        with pytest.raises(AttachError, match="names no target"):
            attach(prog, "kprobe")
        with pytest.raises(AttachError, match="invalid system call name"):
            attach_ksyscall(prog, "../x")
        with pytest.raises(AttachError, match="invalid kernel function name"):
            attach_kprobe(prog, "a b")


# -- perf_event ---------------------------------------------------------------------------

def _busy_on(cpu, seconds):
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    finally:
        os.sched_setaffinity(0, before)


def test_perf_event_samples_the_clock_of_every_cpu():
    with load("perf") as coll:
        prog = coll.programs["on_sample"]
        links = attach_perf_event(prog, frequency=1000)
        try:
            assert [link.description[-5:] for link in links] == [
                f"CPU {cpu}" for cpu in online_cpus()]
            for cpu in sorted(os.sched_getaffinity(0)):
                _busy_on(cpu, 0.2)
        finally:
            for link in links:
                link.close()
        per_cpu = coll.maps["samples"][0]
        busy = sorted(os.sched_getaffinity(0))
        assert all(per_cpu[cpu] > 0 for cpu in busy), per_cpu
        after = list(per_cpu)
        _busy_on(busy[0], 0.05)
        assert coll.maps["samples"][0] == after  # detached: no more samples


# Touches its first argument's number of new pages, 20 every 10 ms, once a byte arrives on
# its stdin; says "done" and stays until its stdin closes. perf throttles an event that
# overflows more than perf_event_max_sample_rate / HZ times in one tick (a throttled event may
# count faults it does not sample), so the pages come slowly, and nothing faults at exit while
# the event is open (a Python child freeing its memory at exit did, hundreds in one tick).
TOUCH_PAGES_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec pause = {0, 10000000};
	long pages = atol(argv[1]);
	char byte, *memory;

	if (read(0, &byte, 1) != 1)
		return 1;
	memory = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED)
		return 1;
	for (long i = 0; i < pages; i++) {
		memory[i * 4096] = 1;
		if (i % 20 == 19)
			nanosleep(&pause, NULL);
	}
	if (write(1, "done\n", 5) != 5)
		return 1;
	while (read(0, &byte, 1) > 0)
		;
	return 0;
}
"""


def test_perf_event_runs_once_per_event(tmp_path):
    """Sampling every page fault of one process (period 1): the program runs as many times
    as the perf event counts faults (the event's own counter, read from its fd), at least
    once per page touched."""
    touch_pages = build_c(tmp_path, "touch_pages", TOUCH_PAGES_C)
    with load("perf") as coll, waiting([touch_pages, "300"]) as child:
        prog = coll.programs["on_sample"]
        (link,) = attach_perf_event(prog, period=1, type=PERF_TYPE_SOFTWARE,
                                    config=PERF_COUNT_SW_PAGE_FAULTS, cpus=[-1], pid=child.pid)
        with link:
            child.process.stdin.write("g")
            child.process.stdin.flush()
            assert child.process.stdout.readline() == "done\n"
            faults = struct.unpack("<Q", os.read(link._perf.fileno(), 8))[0]
        samples = sum(coll.maps["samples"][0])
        child.go()
    assert samples == faults >= 300, (samples, faults)


def test_perf_event_usage_errors():
    with load("perf") as coll:
        prog = coll.programs["on_sample"]
        with pytest.raises(UsageError, match="either a sampling frequency"):
            attach_perf_event(prog)
        with pytest.raises(UsageError, match="positive integer"):
            attach_perf_event(prog, frequency=0)
        with pytest.raises(AttachError, match="perf_event.*attach_perf_event"):
            attach(prog)
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog:
        with pytest.raises(AttachError, match="a perf event needs a PERF_EVENT program"):
            attach_perf_event(prog, frequency=99)


def test_every_probe_link_closes_its_fds(target):
    before = sorted(os.listdir("/proc/self/fd"))
    with pid_map() as pids, count_pids_program(ProgType.KPROBE, pids) as prog:
        attach_uprobe(prog, target, "pybpf_probe_me").close()
        attach_uprobe(prog, target, "pybpf_probe_me", retprobe=True).close()
    with load("perf") as coll:
        for link in attach_perf_event(coll.programs["on_sample"], frequency=10):
            link.close()
    assert sorted(os.listdir("/proc/self/fd")) == before
