"""libbpf's section names (pybpf.sections) against libbpf itself: for every name in pybpf's
table, ``libbpf_prog_type_by_name()`` of the installed libbpf.so (called through ctypes, a
test oracle only) gives the same program type and expected attach type."""

import ctypes
import ctypes.util
import errno

import pytest

from pybpf.sections import SECTIONS, section_program_type
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
@pytest.mark.parametrize("name, target", [(name, target) for name, _, _, target in SECTIONS],
                         ids=[name for name, _, _, _ in SECTIONS])
def test_section_names_mean_what_they_mean_to_libbpf(libbpf_prog_type_by_name, name, target):
    section = name + ("/some_target" if target else "")
    ret, theirs = libbpf_prog_type_by_name(section)
    if ret == -errno.ESRCH and name in NEWER_THAN_LIBBPF_1_1:
        return  # this libbpf predates the name; a newer one is compared
    assert ret == 0, f"libbpf does not know {section!r} ({ret})"
    prog_type, attach_type, _ = section_program_type(section)
    assert (int(prog_type), int(attach_type)) == theirs
