"""attach: tracefs, tracepoint ids, tracepoint and raw tracepoint links, section names."""

import errno
import os
import re
import subprocess
import time

import pytest
from hypothesis import given, settings, strategies as st

from pybpf import attach as attach_module
from pybpf import features, syscalls, tracefs
from pybpf.abi import ProgType
from pybpf.attach import Link, attach, attach_raw_tracepoint, attach_tracepoint
from pybpf.tracefs import tracepoint_id
from pybpf.errors import AttachError, BPFError, SyscallError, TracefsError, UsageError
from pybpf.sections import SECTIONS, match_section
from attach_support import count_pids_program, pid_map
from support import Deadline, require_tool


def exec_true(pids):
    """Fork a child, register its pid, let it exec /bin/true once; the pid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)
        os.execv("/bin/true", ["/bin/true"])
    os.close(read_end)
    syscalls.map_update_elem(pids.fd, pid.to_bytes(8, "little"), bytes(8))
    os.write(write_end, b"x")
    os.close(write_end)
    os.waitpid(pid, 0)
    return pid


def counts(pids, children):
    return [int.from_bytes(syscalls.map_lookup_elem(pids.fd, c.to_bytes(8, "little"), 8),
                           "little") for c in children]


def bpftool_shows(kind, obj_id):
    out = subprocess.run([require_tool("bpftool"), kind, "show", "id", str(obj_id)],
                         capture_output=True, text=True)
    return out.returncode == 0


@pytest.mark.kernel
def test_tracepoint_counts_execs_exactly_and_detaches():
    with pid_map() as pids, count_pids_program(ProgType.TRACEPOINT, pids) as prog:
        prog_id = prog.id
        with attach(prog, "tracepoint/syscalls/sys_enter_execve") as link:
            assert link.id is not None and bpftool_shows("link", link.id)
            children = [exec_true(pids) for _ in range(5)]
            assert counts(pids, children) == [1] * 5
            link_id = link.id
        link.close()  # idempotent
        assert not bpftool_shows("link", link_id)
        late = exec_true(pids)
        assert counts(pids, [late]) == [0]
    deadline = Deadline(5)  # the kernel frees programs after an RCU grace period
    while bpftool_shows("prog", prog_id) and deadline.wait(f"program {prog_id} to be freed"):
        time.sleep(0.02)


@pytest.mark.kernel
def test_ioctl_fallback_when_links_are_missing(monkeypatch):
    def old_kernel(*args, **kwargs):
        raise SyscallError(errno.EINVAL, "BPF_LINK_CREATE")
    monkeypatch.setattr(features._REGISTRY["perf_link"], "answers", {})
    monkeypatch.setattr(syscalls, "link_create", old_kernel)
    with pid_map() as pids, count_pids_program(ProgType.TRACEPOINT, pids) as prog:
        with attach_tracepoint(prog, "syscalls", "sys_enter_execve") as link:
            assert link.id is None
            child = exec_true(pids)
            assert counts(pids, [child]) == [1]
            with pytest.raises(AttachError, match="5.15"):
                link.pin("/sys/fs/bpf/nowhere")
            with pytest.raises(AttachError, match="cookies"):
                attach_tracepoint(prog, "syscalls", "sys_enter_execve", cookie=7)


@pytest.mark.kernel
def test_perf_link_support_is_probed_once_and_real_errors_are_raised(monkeypatch):
    real, calls = syscalls.link_create, []

    def einval_for_real_targets(prog_fd, target_fd, attach_type, **kw):
        calls.append(target_fd)
        if target_fd == 0xFFFFFFFF:  # the probe: this kernel has perf links (EBADF)
            return real(prog_fd, target_fd, attach_type, **kw)
        raise SyscallError(errno.EINVAL, "BPF_LINK_CREATE")

    perf_link = features._REGISTRY["perf_link"]
    monkeypatch.setattr(perf_link, "answers", {})
    monkeypatch.setattr(syscalls, "link_create", einval_for_real_targets)
    with pid_map() as pids, count_pids_program(ProgType.TRACEPOINT, pids) as prog:
        for _ in range(2):
            with pytest.raises(SyscallError) as info:  # no silent ioctl fallback
                attach_tracepoint(prog, "syscalls", "sys_enter_execve")
            assert info.value.errno == errno.EINVAL
    assert calls.count(0xFFFFFFFF) == 1 and perf_link.answers == {(): True}


@pytest.mark.kernel
def test_raw_tracepoint_counts_and_detaches():
    with pid_map() as pids, count_pids_program(ProgType.RAW_TRACEPOINT, pids) as prog:
        me = os.getpid().to_bytes(8, "little")
        syscalls.map_update_elem(pids.fd, me, bytes(8))
        with attach(prog, "raw_tp/sys_enter") as link:
            for _ in range(10):
                os.getppid()
            seen = counts(pids, [os.getpid()])[0]
            assert seen >= 10
            assert "raw_tracepoint/sys_enter" in repr(link)
        after = counts(pids, [os.getpid()])[0]
        os.getppid()
        assert counts(pids, [os.getpid()])[0] == after
        with pytest.raises(AttachError, match="unknown raw tracepoint"):
            attach_raw_tracepoint(prog, "no_such_tracepoint_here")


@pytest.mark.kernel
def test_wrong_program_type_and_unknown_tracepoint():
    with pid_map() as pids, count_pids_program(ProgType.TRACEPOINT, pids) as prog:
        with pytest.raises(AttachError, match="RAW_TRACEPOINT"):
            attach(prog, "raw_tracepoint/sys_enter")
        with pytest.raises(AttachError, match="syscalls/sys_enter_nothing.*ls .*events/syscalls"):
            attach(prog, "tp/syscalls/sys_enter_nothing")
    assert tracepoint_id("syscalls", "sys_enter_execve") > 0


class FakeProgram:
    type = ProgType.TRACEPOINT
    name = "fake"
    fd = -1

    class spec:
        section = "tp_btf"
        expected_attach_type = 0


@pytest.mark.parametrize("section, message", [
    ("tracepoint", "tracepoint/<category>/<name>"),
    ("tp/syscalls", "tp/<category>/<name>"),
    ("raw_tp/a/b", "raw_tp/<name>"),
    ("tracepoint/syscalls/", "tracepoint/<category>/<name>"),
    ("raw_tp.w/", "raw_tp.w/<name>"),
    ("no_such_section", "'no_such_section' is not one of libbpf's section names"),
    ("xdp", "it attaches to a network interface: attach_xdp(prog, 'eth0')"),
    ("cgroup/sock_create", "it attaches to a cgroup v2 directory: attach_cgroup(prog, path)"),
    ("sk_msg", "needs a SOCKMAP or SOCKHASH"),
    ("usdt/x", "USDT probes"),
    ("struct_ops/x", "registering a struct_ops map"),
    ("kprobe.multi/x", "CONFIG_FPROBE"),
    ("tc", "use tcx/ingress or tcx/egress sections instead"),
    ("syscall", "run with prog.test_run"),
    ("fentry/x", "a BTF-typed hook (tp_btf, fentry, fexit, fmod_ret, lsm) needs a TRACING or "
                 "LSM program"),
    ("iter/task", "an iterator needs a TRACING program"),
    ("kprobe/x", "a kprobe needs a KPROBE program"),
])
def test_section_names(section, message):
    with pytest.raises(AttachError, match=re.escape(message)):
        attach(FakeProgram(), section)


def test_every_libbpf_section_is_attached_or_explained():
    """The table of section kinds: each of libbpf's names is either attached by name, or
    unsupported_reason says what it needs, in one line."""
    from pybpf.attach import _BY_SECTION, unsupported_reason
    from pybpf.sections import SECTIONS

    for name, *_ in SECTIONS:
        reason = unsupported_reason(name)
        if name in _BY_SECTION:
            assert reason is None
        else:
            assert reason and "\n" not in reason and "pybpf does not know" not in reason, name


def test_sections_are_read_by_the_elf_loaders_table(monkeypatch):
    seen = []

    def spy(section):
        seen.append(section)
        return "raw_tp", ProgType.RAW_TRACEPOINT, 0, "a/b"

    monkeypatch.setattr(attach_module, "match_section", spy)
    with pytest.raises(AttachError, match="should be my_raw/<name>"):
        attach(FakeProgram(), "my_raw/a/b")
    assert seen == ["my_raw/a/b"]


def test_section_defaults_to_the_spec():
    with pytest.raises(AttachError, match="should be tp_btf|BTF-typed hook"):
        attach(FakeProgram())


def test_tracefs_missing_without_root(monkeypatch, tmp_path):
    monkeypatch.setattr(tracefs, "TRACEFS_PATHS", (str(tmp_path / "a"),))
    monkeypatch.setattr(tracefs, "_found", {})
    monkeypatch.setattr(tracefs.os, "geteuid", lambda: 1000)
    with pytest.raises(TracefsError, match="mount -t tracefs nodev /sys/kernel/tracing"):
        tracefs.tracefs_path()


def test_tracefs_mount_without_a_mount_command(monkeypatch, tmp_path):
    monkeypatch.setattr(tracefs, "TRACEFS_PATHS", (str(tmp_path / "a"),))
    monkeypatch.setattr(tracefs, "_found", {})
    monkeypatch.setattr(tracefs.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))  # no mount(8) to be found
    with pytest.raises(TracefsError, match="mount command could not run.*install mount"):
        tracefs.tracefs_path()


def test_unreadable_tracepoint_id_is_an_attach_error(monkeypatch, tmp_path):
    (tmp_path / "events" / "syscalls" / "sys_enter_execve").mkdir(parents=True)
    monkeypatch.setattr(tracefs, "_found", {"path": str(tmp_path)})

    def refused(path, *args):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(tracefs, "open", refused, raising=False)
    with pytest.raises(AttachError, match="sys_enter_execve.*root only.*sudo"):
        tracepoint_id("syscalls", "sys_enter_execve")


def test_tracefs_second_location(monkeypatch, tmp_path):
    (tmp_path / "b" / "events").mkdir(parents=True)
    monkeypatch.setattr(tracefs, "TRACEFS_PATHS", (str(tmp_path / "a"), str(tmp_path / "b")))
    monkeypatch.setattr(tracefs, "_found", {})
    assert tracefs.tracefs_path() == str(tmp_path / "b")


def test_link_close_is_idempotent():
    read_end, write_end = os.pipe()
    link = Link("test", link_fd=read_end, perf_fd=write_end)
    with link:
        assert link.fd == read_end
    link.close()
    with pytest.raises(UsageError, match="link test is closed"):
        _ = link.fd
    with pytest.raises(OSError):
        os.fstat(read_end)


_SECTION_TEXT = st.sampled_from([row[0] for row in SECTIONS]).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from(["", "/"]),
                           st.text(max_size=30))).map("".join) | st.text(max_size=40)


@pytest.mark.kernel
@given(section=_SECTION_TEXT)
@settings(max_examples=400, deadline=None)
def test_fuzz_section_names(section):
    """Any section text, on a program of the type it names (its fd is no open file: the
    kernel answers EBADF where it gets that far): a clear BPFError, never an internal
    exception, and no fd left open."""
    found = match_section(section)
    before = sorted(os.listdir("/proc/self/fd"))

    class Fake(FakeProgram):
        type = found[1] if found else ProgType.KPROBE
        fd = 2**31 - 1

        class spec:
            expected_attach_type = found[2] if found else 0

    Fake.spec.section = section
    with pytest.raises(BPFError) as info:
        attach(Fake())
    assert str(info.value) and sorted(os.listdir("/proc/self/fd")) == before
