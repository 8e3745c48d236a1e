"""libbpf's section names (pybpf.sections) against libbpf itself: for every name in pybpf's
table, ``libbpf_prog_type_by_name()`` of the installed libbpf.so (called through ctypes, a
test oracle only) gives the same program type and expected attach type."""

import ctypes
import ctypes.util
import errno

import pytest

from pybpf.abi import BPF_F_SLEEPABLE, BPF_F_XDP_HAS_FRAGS
from pybpf.sections import SECTIONS, section_prog_flags, section_program_type
from support import skip_or_fail

# Names added after libbpf 1.1 (Debian 12's): an older libbpf does not know them (ESRCH).
NEWER_THAN_LIBBPF_1_1 = {"tc/ingress", "tc/egress", "tcx/ingress", "tcx/egress",
                         "sk_skb/verdict", "cgroup/connect_unix", "cgroup/sendmsg_unix",
                         "cgroup/recvmsg_unix", "netfilter"}


@pytest.fixture(scope="module")
def libbpf_prog_type_by_name():
    path = ctypes.util.find_library("bpf")
    if path is None:
        skip_or_fail("libbpf.so is not installed (apt-get install libbpf1)")
    function = ctypes.CDLL(path).libbpf_prog_type_by_name
    function.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                         ctypes.POINTER(ctypes.c_int)]

    def by_name(section):
        prog_type, attach_type = ctypes.c_int(), ctypes.c_int()
        ret = function(section.encode(), ctypes.byref(prog_type), ctypes.byref(attach_type))
        return ret, (prog_type.value, attach_type.value)
    return by_name


@pytest.mark.oracle
@pytest.mark.parametrize("name, target", [(row[0], row[3]) for row in SECTIONS],
                         ids=[row[0] for row in SECTIONS])
def test_section_names_mean_what_they_mean_to_libbpf(libbpf_prog_type_by_name, name, target):
    section = name + ("/some_target" if target else "")
    ret, theirs = libbpf_prog_type_by_name(section)
    if ret == -errno.ESRCH and name in NEWER_THAN_LIBBPF_1_1:
        return  # this libbpf predates the name; a newer one is compared
    assert ret == 0, f"libbpf does not know {section!r} ({ret})"
    prog_type, attach_type, _ = section_program_type(section)
    assert (int(prog_type), int(attach_type)) == theirs


# The section names libbpf 1.1's section_defs mark SEC_SLEEPABLE and SEC_XDP_FRAGS (libbpf.c):
# libbpf_prepare_prog_load() turns them into BPF_F_SLEEPABLE and BPF_F_XDP_HAS_FRAGS. The
# library has no call that returns them, so they are written down from its table.
LIBBPF_SLEEPABLE = {"uprobe.s", "uretprobe.s", "fentry.s", "fmod_ret.s", "fexit.s", "lsm.s",
                    "iter.s", "syscall"}
LIBBPF_XDP_FRAGS = {"xdp.frags", "xdp.frags/devmap", "xdp.frags/cpumap"}


@pytest.mark.parametrize("row", SECTIONS, ids=[row[0] for row in SECTIONS])
def test_section_flags_are_libbpfs(row):
    name, has_target = row[0], row[3]
    section = name + ("/some_target" if has_target else "")
    expected = (BPF_F_SLEEPABLE if name in LIBBPF_SLEEPABLE else 0) | \
        (BPF_F_XDP_HAS_FRAGS if name in LIBBPF_XDP_FRAGS else 0)
    assert section_prog_flags(section) == expected


def test_every_flagged_libbpf_name_is_in_the_table():
    assert LIBBPF_SLEEPABLE | LIBBPF_XDP_FRAGS <= {row[0] for row in SECTIONS}
    assert section_prog_flags("no_such_section") == 0
