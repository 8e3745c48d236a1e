"""pybpf.abi against the running kernel: every enum and flag copied from the uapi headers has
the kernel's value, and no member of the kernel's enums is missing. The kernel's BTF is read
by bpftool (an independent reader), so a wrong or stale copy fails here."""

import re
import subprocess

import pytest

from pybpf import abi
from support import require_tool

_ENUM = re.compile(r"^\[\d+\] ENUM(?:64)? '([^']*)'")
_VALUE = re.compile(r"^\t'(\w+)' val=(-?\d+)")


@pytest.fixture(scope="module")
def kernel_enums():
    """``{enum name: {member: value}}`` and ``{member: value}`` of every enum in vmlinux BTF."""
    raw = subprocess.run([require_tool("bpftool"), "btf", "dump", "file",
                          "/sys/kernel/btf/vmlinux", "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    enums, members, current = {}, {}, None
    for line in raw.splitlines():
        header = _ENUM.match(line)
        if header:
            current = enums.setdefault(header.group(1), {}) if header.group(1) else {}
            continue
        if not line.startswith("\t"):
            current = None
        value = _VALUE.match(line) if current is not None else None
        if value:
            current[value.group(1)] = members[value.group(1)] = int(value.group(2))
    return enums, members


ENUMS = [  # (pybpf enum, kernel enum, prefix of the kernel's names)
    (abi.Cmd, "bpf_cmd", "BPF_"),
    (abi.MapType, "bpf_map_type", "BPF_MAP_TYPE_"),
    (abi.ProgType, "bpf_prog_type", "BPF_PROG_TYPE_"),
    (abi.AttachType, "bpf_attach_type", "BPF_"),
    (abi.LinkType, "bpf_link_type", "BPF_LINK_TYPE_"),
]


@pytest.mark.parametrize("ours, theirs, prefix", ENUMS, ids=[e[1] for e in ENUMS])
def test_enums_are_the_kernels(kernel_enums, ours, theirs, prefix):
    kernel = {name[len(prefix):]: value for name, value in kernel_enums[0][theirs].items()
              if not name.startswith(("__MAX", "MAX_"))}
    wrong = {m.name: (m.value, kernel.get(m.name)) for m in ours if kernel.get(m.name) != m.value}
    assert not wrong, f"ours: (our value, the kernel's): {wrong}"
    # every value the kernel has is there (under one of its names: the kernel keeps aliases
    # such as BPF_PROG_RUN = BPF_PROG_TEST_RUN, CGROUP_STORAGE = CGROUP_STORAGE_DEPRECATED)
    missing = {n: v for n, v in kernel.items() if v not in {m.value for m in ours}}
    assert not missing, f"{theirs} members missing from pybpf.abi.{ours.__name__}: {missing}"


FLAGS = [  # (pybpf flag enum or constants, the kernel's name of each)
    (abi.MapFlags, "BPF_F_{}"),
    (abi.UpdateFlags, "BPF_{}"),
]


@pytest.mark.parametrize("ours, kernel_name", FLAGS, ids=[f[0].__name__ for f in FLAGS])
def test_flags_have_the_kernels_values(kernel_enums, ours, kernel_name):
    members = kernel_enums[1]
    assert {m.name: m.value for m in ours} == {
        m.name: members[kernel_name.format(m.name)] for m in ours}


CONSTANTS = {  # pybpf.abi name: the kernel's enum member
    "BPF_STATS_RUN_TIME": "BPF_STATS_RUN_TIME",
    "PERF_TYPE_HARDWARE": "PERF_TYPE_HARDWARE",
    "PERF_TYPE_SOFTWARE": "PERF_TYPE_SOFTWARE",
    "PERF_TYPE_TRACEPOINT": "PERF_TYPE_TRACEPOINT",
    "PERF_SAMPLE_RAW": "PERF_SAMPLE_RAW",
    "PERF_COUNT_SW_BPF_OUTPUT": "PERF_COUNT_SW_BPF_OUTPUT",
    "PERF_RECORD_LOST": "PERF_RECORD_LOST",
    "PERF_RECORD_SAMPLE": "PERF_RECORD_SAMPLE",
    "BPF_RINGBUF_BUSY_BIT": "BPF_RINGBUF_BUSY_BIT",
    "BPF_RINGBUF_DISCARD_BIT": "BPF_RINGBUF_DISCARD_BIT",
    "BPF_RINGBUF_HDR_SZ": "BPF_RINGBUF_HDR_SZ",
    "BPF_RB_NO_WAKEUP": "BPF_RB_NO_WAKEUP",
    "BPF_RB_FORCE_WAKEUP": "BPF_RB_FORCE_WAKEUP",
    "BPF_RB_AVAIL_DATA": "BPF_RB_AVAIL_DATA",
    "BPF_F_CURRENT_CPU": "BPF_F_CURRENT_CPU",
}


def test_constants_have_the_kernels_values(kernel_enums):
    members = kernel_enums[1]
    assert {name: getattr(abi, name) for name in CONSTANTS} == {
        name: members[kernel] for name, kernel in CONSTANTS.items()}
