"""Hooks named at load time (attach_btf_id), attached against the kernel: tp_btf through
BPF_LINK_CREATE (and the older BPF_RAW_TRACEPOINT_OPEN), task iterators read as text, and
fentry/fexit/fmod_ret/lsm (BPF trampolines), which this kernel refuses to load: then the
refusal is one clear error."""

import errno
import json
import os
import re
import subprocess
import threading
import time

import pytest

from pybpf import syscalls
from pybpf.attach import IterLink, attach, attach_iter, attach_tracing
from pybpf.errors import AttachError, BPFPermissionError, SyscallError, UsageError

from attach_support import OBJECTS, build_c, libbpf_counts, load, waiting
from support import require_tool

pytestmark = pytest.mark.kernel

CALLS = 50
GETPPID_CALLER = (r"#include <unistd.h>" "\n"
                  r"int main(int argc, char **argv) { char c; while (read(0, &c, 1) > 0); "
                  f"for (int i = 0; i < {CALLS}; i++) getppid(); return 0; }}" "\n")


@pytest.fixture(scope="module")
def caller(tmp_path_factory):
    """A program that calls getppid() CALLS times once its stdin closes."""
    return build_c(tmp_path_factory.mktemp("caller"), "caller", GETPPID_CALLER)


def bpftool_link(link_id):
    out = subprocess.run([require_tool("bpftool"), "-j", "link", "show", "id", str(link_id)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_tp_btf_counts_every_call_and_detaches(caller):
    with load("tracing") as coll:
        with waiting([caller]) as child:
            coll.maps["target"][0] = child.pid
            with attach(coll.programs["sys_enter"]) as link:
                assert link.description == "tp_btf/sys_enter"
                assert bpftool_link(link.id)["type"] == "raw_tracepoint"  # (tp_btf's kind)
                child.go()
        assert coll.maps["counts"][0] == CALLS
        with waiting([caller]) as late:  # detached: not counted
            coll.maps["target"][0] = late.pid
            late.go()
        assert coll.maps["counts"][0] == CALLS


@pytest.mark.oracle
def test_libbpf_attaches_tracing_o_to_the_same_counts(caller, tmp_path):
    """libbpf's bpf_program__attach() on the same object and workload: the same counts (its
    kprobes fail to attach with libbpf too, here)."""
    with waiting([caller]) as child:
        theirs = libbpf_counts(tmp_path, "tracing.o", child.pid, child.go)
    with load("tracing") as coll, waiting([caller]) as child:
        coll.maps["target"][0] = child.pid
        with attach(coll.programs["sys_enter"]):
            child.go()
        ours = [coll.maps["counts"][i] for i in range(16)]
    assert theirs == ours == [CALLS] + [0] * 15


def test_tracing_links_fall_back_to_raw_tracepoint_open(caller, monkeypatch):
    """A kernel that makes no tracing links with BPF_LINK_CREATE answers EINVAL; then
    BPF_RAW_TRACEPOINT_OPEN attaches it (as libbpf does), except with a cookie."""
    real = syscalls.link_create

    def no_tracing_links(prog_fd, target_fd, attach_type, *args, **kwargs):
        if kwargs.get("tracing_cookie") is not None:
            raise SyscallError(errno.EINVAL, "BPF_LINK_CREATE")
        return real(prog_fd, target_fd, attach_type, *args, **kwargs)

    opened = []
    real_open = syscalls.raw_tracepoint_open
    monkeypatch.setattr(syscalls, "link_create", no_tracing_links)
    monkeypatch.setattr(syscalls, "raw_tracepoint_open",
                        lambda name, fd: opened.append(name) or real_open(name, fd))
    with load("tracing") as coll, waiting([caller]) as child:
        coll.maps["target"][0] = child.pid
        with attach_tracing(coll.programs["sys_enter"]) as link:
            assert opened == [None] and bpftool_link(link.id)["type"] == "raw_tracepoint"
            child.go()
        assert coll.maps["counts"][0] == CALLS
        with pytest.raises(SyscallError) as info:
            attach_tracing(coll.programs["sys_enter"], cookie=7)
        assert info.value.errno == errno.EINVAL


def _threads():
    """``{tid: comm}`` of this process, from /proc."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            found[int(tid)] = f.read().rstrip("\n")
    return found


@pytest.fixture
def three_threads():
    """This process with two more threads, parked until the test ends."""
    done = threading.Event()
    threads = [threading.Thread(target=done.wait, name=f"pybpf-t{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    yield
    done.set()
    for thread in threads:
        thread.join(10)


def _listed(text):
    return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1]
            for line in text.splitlines()}


def test_task_iterator_lists_this_process(three_threads):
    with load("tracing") as coll:
        coll.maps["target"][0] = os.getpid()
        with attach(coll.programs["list_threads"]) as it:
            assert isinstance(it, IterLink) and bpftool_link(it.id)["type"] == "iter"
            first, second = it.read_text(), it.read_text()  # each read runs it again
            expected = _threads()
        assert len(expected) == 3
        assert _listed(first) == _listed(second) == expected


def test_task_iterator_limited_to_one_process(three_threads):
    """The kernel walks only the tasks of pid (bpf_iter_link_info.task); the program prints
    every task it is given (target 0)."""
    with load("tracing") as coll:
        coll.maps["target"][0] = 0
        with attach_iter(coll.programs["list_threads"], pid=os.getpid()) as it:
            assert _listed(it.read_text()) == _threads()
        with attach_iter(coll.programs["list_threads"]) as everything:
            listed = _listed(everything.read_text())
        assert listed.get(2) == "kthreadd" and set(_threads()) < set(listed)
        with pytest.raises(UsageError, match="give map, or pid/tid, not both"):
            attach_iter(coll.programs["list_threads"], map=coll.maps["counts"], pid=1)
        with pytest.raises(AttachError, match="is not an iterator"):
            attach_iter(coll.programs["sys_enter"])
        with pytest.raises(AttachError, match="an iterator is attached with attach_iter"):
            attach_tracing(coll.programs["list_threads"])


def test_trampolines_attach_or_the_refusal_is_clear(bpffs):
    """fentry, fexit, fmod_ret and lsm need BPF trampolines, which this VM's kernel refuses
    to load (EPERM although every capability is there: a security policy), to libbpf too.
    Elsewhere they attach: fentry and fexit see each time.sleep(), fmod_ret and lsm make
    getsid() fail."""
    try:
        coll = load("trampolines")
    except BPFPermissionError as exc:
        message = str(exc)
        assert re.match(r"program '\w+': BPF_PROG_LOAD: ", message), message
        assert "a security policy forbids it" in message
        assert "fentry/fexit/fmod_ret/lsm programs (BPF trampolines)" in message
        assert "\n" not in message
        libbpf = subprocess.run([require_tool("bpftool"), "-d", "prog", "loadall",
                                 os.path.join(OBJECTS, "trampolines.o"), str(bpffs / "t")],
                                capture_output=True, text=True)
        assert libbpf.returncode != 0
        assert "BPF program load failed: Operation not permitted" in libbpf.stderr
        return
    with coll:
        coll.maps["target"][0] = os.getpid()
        links = [attach(prog) for prog in coll.programs.values()]
        try:
            for _ in range(5):
                time.sleep(0.001)
            coll.maps["target"][1] = 1  # deny getsid()
            with pytest.raises(PermissionError):
                os.getsid(0)
            coll.maps["target"][1] = 0
            assert os.getsid(0) > 0
        finally:
            for link in links:
                link.close()
        counts = [coll.maps["counts"][i] for i in range(5)]
        assert counts[0] == counts[1] == counts[2] >= 5  # fentry, fexit, fexit saw ret 0
        assert counts[3] == 2 and counts[4] >= 1  # fmod_ret saw both getsid(); lsm ran
        # when fmod_ret did not deny (the second call)
