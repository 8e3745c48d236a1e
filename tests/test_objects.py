"""The corpus (tests/objects: CO-RE objects written as libbpf tools write them), loaded by pybpf
and by libbpf. libbpf is the oracle: ``bpftool prog loadall`` for each object as it is, and
libbpf.so itself (tests/libbpf_oracle.py) with knobs set and a kernel config given; the
kernel's translated instructions must be the same, map ids aside. Where libbpf cannot load an
object on this kernel, pybpf must fail too, with the same errno and a clear error."""

import gzip
import glob
import os
import re
import subprocess

import pytest

from support import require_tool
from libbpf_oracle import LibbpfObject, bpftool_xlated, xlated_masked
from pybpf import elf, ksyms
from pybpf.collection import Collection
from pybpf.errors import BPFError, UsageError

HERE = os.path.join(os.path.dirname(__file__), "objects")
OBJECTS = sorted(glob.glob(os.path.join(HERE, "*.bpf.o")))


def path(name):
    return os.path.join(HERE, name)


def libbpf_has_syscall_wrapper():
    """What libbpf 1.1 answers for LINUX_HAS_SYSCALL_WRAPPER: it creates a kprobe on
    __x64_sys_bpf, so without kprobes (no kprobe PMU, no tracefs kprobe_events) it says 0."""
    return os.path.exists("/sys/bus/event_source/devices/kprobe") or \
        os.path.exists("/sys/kernel/tracing/kprobe_events")


@pytest.mark.kernel
@pytest.mark.oracle
@pytest.mark.parametrize("obj", OBJECTS, ids=os.path.basename)
def test_pybpf_loads_what_libbpf_loads_with_the_same_instructions(obj, bpffs, monkeypatch):
    if os.path.basename(obj) == "kprobes.bpf.o" and not libbpf_has_syscall_wrapper():
        # libbpf probes the wrapper with a kprobe; pybpf reads the kernel's BTF (see below)
        monkeypatch.setattr(ksyms.Resolver, "has_syscall_wrapper", lambda self: False)
    loaded = subprocess.run([require_tool("bpftool"), "prog", "loadall", obj,
                             str(bpffs / "libbpf")], capture_output=True, text=True)
    if loaded.returncode:
        failed = re.findall(r"prog '(\w+)': failed to load: -(\d+)", loaded.stderr)
        assert failed, loaded.stderr
        with pytest.raises(BPFError) as info:
            Collection(elf.load_spec(obj))
        assert info.value.errno == int(failed[0][1]), (str(info.value), failed)
        return
    with Collection(elf.load_spec(obj)) as coll:
        assert coll.programs and sorted(coll.programs) == sorted(os.listdir(bpffs / "libbpf"))
        for name, prog in coll.programs.items():
            theirs = bpftool_xlated("pinned", str(bpffs / "libbpf" / name))
            assert xlated_masked(prog.xlated_insns()) == xlated_masked(theirs), name


@pytest.mark.kernel
def test_ksyscall_programs_see_the_syscall_wrapper_this_kernel_has():
    """pybpf answers LINUX_HAS_SYSCALL_WRAPPER from the kernel's BTF: __x64_sys_bpf is the
    wrapper that receives the caller's registers (libbpf answers with a kprobe, 0 here)."""
    dump = subprocess.run([require_tool("bpftool"), "btf", "dump", "file",
                           "/sys/kernel/btf/vmlinux"], capture_output=True, text=True).stdout
    has_wrapper = re.search(r"\] FUNC '__x64_sys_bpf' ", dump) is not None
    with Collection(elf.load_spec(path("kprobes.bpf.o"))) as coll:
        assert coll.maps[".kconfig"][0].LINUX_HAS_SYSCALL_WRAPPER == has_wrapper
    assert has_wrapper  # on this x86-64 kernel


# -- knobs: .rodata set before the load ----------------------------------------------------

def _xlated(spec, program, **options):
    with Collection(spec, **options) as coll:
        return coll.programs[program].xlated_insns()


@pytest.mark.kernel
@pytest.mark.oracle
def test_a_knob_keeps_a_branch_the_default_prunes_as_with_libbpf():
    obj = path("execsnoop.bpf.o")
    default = _xlated(elf.load_spec(obj), "execve_enter")
    spec = elf.load_spec(obj)
    spec.variables["targ_uid"] = 1000
    filtered = _xlated(spec, "execve_enter")
    # the verifier knows the frozen default (-1) and drops the filter: fewer instructions
    assert len(filtered) > len(default)
    with LibbpfObject(obj) as lib:
        assert xlated_masked(lib.xlated("execve_enter")) == xlated_masked(default)
    with LibbpfObject(obj, knobs={".rodata": {"targ_uid": (1000).to_bytes(4, "little")}}) as lib:
        assert xlated_masked(lib.xlated("execve_enter")) == xlated_masked(filtered)


@pytest.mark.kernel
@pytest.mark.oracle
def test_string_and_bool_knobs_set_from_text_load_as_with_libbpf():
    obj = path("execsnoop.bpf.o")
    spec = elf.load_spec(obj)
    spec.set_variable("targ_comm", "bash")
    spec.set_variable("ignore_failed", "false")
    ours = _xlated(spec, "execve_exit")
    knobs = {".rodata": {"targ_comm": b"bash".ljust(16, b"\0"), "ignore_failed": b"\0"}}
    with LibbpfObject(obj, knobs=knobs) as lib:
        assert xlated_masked(lib.xlated("execve_exit")) == xlated_masked(ours)
    assert ours != _xlated(elf.load_spec(obj), "execve_exit")


# -- .kconfig ------------------------------------------------------------------------------

CONFIG = """# a kernel config written for the test
CONFIG_HZ=1000
CONFIG_BPF_SYSCALL=y
CONFIG_KPROBES=y
CONFIG_BLK_DEV=m
CONFIG_DEFAULT_HOSTNAME="pybpf-host"
"""


def _kconfig_values(coll):
    """The .kconfig map's value, decoded with its BTF (the externs by name)."""
    return coll.maps[".kconfig"][0]


@pytest.mark.kernel
@pytest.mark.oracle
def test_kconfig_from_a_given_config_file_loads_as_with_libbpf(tmp_path):
    obj = path("biolatency.bpf.o")
    config = tmp_path / "config.gz"
    config.write_bytes(gzip.compress(CONFIG.encode()))
    with Collection(elf.load_spec(obj), kconfig=str(config)) as coll:
        values = _kconfig_values(coll)
        assert (values.CONFIG_HZ, values.CONFIG_BPF_SYSCALL, values.CONFIG_KPROBES,
                values.CONFIG_BLK_DEV, values.CONFIG_DEFAULT_HOSTNAME,
                values.CONFIG_PYBPF_ABSENT) == (1000, True, True, 2, "pybpf-host", 0)
        ours = coll.programs["record_kconfig"].xlated_insns()
    with LibbpfObject(obj, kconfig=CONFIG) as lib:
        assert xlated_masked(lib.xlated("record_kconfig")) == xlated_masked(ours)


@pytest.mark.kernel
def test_kconfig_values_are_the_running_kernels():
    config = gzip.decompress(open("/proc/config.gz", "rb").read()).decode()
    settings = dict(re.findall(r"^(CONFIG_\w+)=(.*)$", config, re.M))
    release = os.uname().release
    major, minor, patch = (int(n) for n in re.match(r"(\d+)\.(\d+)\.(\d+)", release).groups())
    spec = elf.load_spec(path("biolatency.bpf.o"))
    with Collection(spec) as coll:
        values = _kconfig_values(coll)
    assert values.LINUX_KERNEL_VERSION == (major << 16) + (minor << 8) + min(patch, 255)
    assert values.CONFIG_HZ == int(settings["CONFIG_HZ"])
    assert values.CONFIG_BPF_SYSCALL == (settings.get("CONFIG_BPF_SYSCALL") == "y")
    assert values.CONFIG_KPROBES == (settings.get("CONFIG_KPROBES") == "y")
    assert values.CONFIG_BLK_DEV == {"y": 1, "m": 2}.get(settings.get("CONFIG_BLK_DEV"), 0)
    assert values.CONFIG_DEFAULT_HOSTNAME == settings["CONFIG_DEFAULT_HOSTNAME"].strip('"')
    assert values.CONFIG_PYBPF_ABSENT == 0
    assert values.LINUX_HAS_BPF_COOKIE == 1  # Linux >= 5.15


@pytest.mark.kernel
def test_a_missing_strong_kconfig_extern_is_one_clear_error(tmp_path):
    config = tmp_path / "config"
    config.write_text("CONFIG_HZ=100\n# CONFIG_BPF_SYSCALL is not set\n")
    with pytest.raises(BPFError, match="extern \\(kconfig\\) 'CONFIG_BPF_SYSCALL' has no value "
                       "in the kernel's configuration; declare it __weak") as info:
        Collection(elf.load_spec(path("biolatency.bpf.o")), kconfig=str(config))
    assert info.value.name == "CONFIG_BPF_SYSCALL"
    with pytest.raises(BPFError, match="cannot read the kernel config"):
        Collection(elf.load_spec(path("biolatency.bpf.o")), kconfig=str(tmp_path / "none"))


# -- variables after the load --------------------------------------------------------------

@pytest.mark.kernel
def test_bss_and_data_are_read_and_written_through_the_maps_memory():
    spec = elf.load_spec(path("opensnoop.bpf.o"))
    with Collection(spec) as coll:
        data = coll.maps[".data"]
        assert data.spec.flags & 1 << 10  # BPF_F_MMAPABLE
        assert coll.variables["open_flags_mask"] == -1
        coll.variables["open_flags_mask"] = 0x41
        assert data[0].open_flags_mask == 0x41  # the kernel's copy, read with a lookup
        value = data[0]
        value.open_flags_mask = 7
        data[0] = value
        assert coll.variables["open_flags_mask"] == 7  # seen through the memory
        assert coll.variables["opens"] == 0
        with pytest.raises(UsageError, match="'targ_tgid' is in .rodata, frozen"):
            coll.variables["targ_tgid"] = 1


@pytest.mark.kernel
def test_kfuncs_and_ksyms_work_in_the_loaded_programs():
    """tasks.bpf.o's tp_btf programs, attached with a bare BPF_LINK_CREATE: the parent found
    with bpf_task_from_pid under bpf_rcu_read_lock is ours, the typeless ksym is kallsyms'
    address, the weak absent ones read 0, and new tasks are seen through bpf_task_acquire."""
    from pybpf import syscalls
    from pybpf.abi import AttachType

    kallsyms = open("/proc/kallsyms").read()
    address = int(re.search(r"^([0-9a-f]+) T do_unlinkat$", kallsyms, re.M).group(1), 16)
    with Collection(elf.load_spec(path("tasks.bpf.o"))) as coll:
        links = [syscalls.link_create(coll.programs[name].fd, 0, AttachType.TRACE_RAW_TP)
                 for name in ("task_newtask", "lookup_parent")]
        try:
            child = subprocess.run(["true"])
            assert child.returncode == 0
            os.getppid()
            seen = coll.variables["seen"]
        finally:
            for link in links:
                os.close(link)
    assert (seen.parent_tgid, seen.unlinkat_addr, seen.absent_addr) == \
        (os.getppid(), address, 0)
    assert (seen.absent_kfunc_exists, seen.absent_var_exists) == (0, 0)
    assert seen.new_tasks >= 1


@pytest.mark.kernel
def test_variables_go_through_lookups_where_data_cannot_be_mapped(monkeypatch):
    """On a kernel without BPF_F_MMAPABLE arrays (< 5.5) the data maps are created without the
    flag, and variables are read and written with map lookups and updates."""
    from pybpf import features

    monkeypatch.setitem(features._REGISTRY["mmapable_array"].answers, (), False)
    with Collection(elf.load_spec(path("opensnoop.bpf.o"))) as coll:
        assert not coll.maps[".data"].spec.flags & 1 << 10
        coll.variables["open_flags_mask"] = 0x41
        assert coll.maps[".data"][0].open_flags_mask == 0x41
        assert coll.variables["open_flags_mask"] == 0x41
