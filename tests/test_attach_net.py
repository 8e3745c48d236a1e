"""Programs attached to a target with BPF_LINK_CREATE or a socket option, against the kernel:
socket filters, cgroup programs in a cgroup v2 directory the test creates, and XDP and tcx
programs on a veth pair whose other end lives in a network namespace the test creates. Each
counts packets or sockets exactly (net.o's counts[]), and stops once detached."""

import os
import socket
import subprocess
import sys

import pytest

from pybpf.abi import AttachType
from pybpf.attach import attach, attach_cgroup, attach_socket, attach_tcx, attach_xdp
from pybpf.errors import AttachError, UsageError

from attach_support import load, waiting
from support import require_tool, skip_or_fail

pytestmark = pytest.mark.kernel

SOCKET, SOCKET_DROPPED, XDP, TCX, CGROUP_INGRESS, CGROUP_EGRESS, SOCK_CREATE = range(7)
CGROUP2 = "/sys/fs/cgroup/unified"  # this host's cgroup v2 hierarchy (hybrid mode)
PACKETS = 25


def counts(coll):
    return [coll.maps["counts"][i] for i in range(7)]


# -- socket filters -------------------------------------------------------------------------

def test_socket_filter_sees_every_packet_and_can_drop_them():
    with load("net") as coll, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        with attach_socket(coll.programs["socket_count"], rx) as link:
            assert link.id is None and "socket filter socket_count" in link.description
            for i in range(PACKETS):
                tx.sendto(b"x" * i, rx.getsockname())
            assert [len(rx.recv(100)) for _ in range(PACKETS)] == list(range(PACKETS))
        with attach_socket(coll.programs["socket_drop"], rx.fileno()):
            for _ in range(5):
                tx.sendto(b"dropped", rx.getsockname())
            rx.settimeout(0.2)
            with pytest.raises(socket.timeout):
                rx.recv(100)
        tx.sendto(b"after", rx.getsockname())  # both detached: it arrives, uncounted
        rx.settimeout(5)
        assert rx.recv(100) == b"after"
        assert counts(coll)[:2] == [PACKETS, 5]


def test_socket_filter_errors(tmp_path):
    with load("net") as coll:
        prog = coll.programs["socket_count"]
        with open(tmp_path / "f", "w") as not_a_socket:
            with pytest.raises(AttachError, match="it is not a socket"):
                attach_socket(prog, not_a_socket)
        with pytest.raises(UsageError, match="needs a socket"):
            attach_socket(prog, "eth0")
        with pytest.raises(AttachError, match="attaches to a socket: attach_socket"):
            attach(prog)
        with pytest.raises(AttachError, match="a socket needs a SOCKET_FILTER program"):
            attach_socket(coll.programs["xdp_count"], 0)


# -- cgroups --------------------------------------------------------------------------------

@pytest.fixture
def cgroup():
    """A new cgroup v2 directory, removed after the test (its processes have exited)."""
    if not os.path.isdir(CGROUP2):
        skip_or_fail(f"no cgroup v2 hierarchy at {CGROUP2}")
    path = os.path.join(CGROUP2, f"pybpf-test-{os.getpid()}")
    os.mkdir(path)
    yield path
    os.rmdir(path)


CGROUP_CHILD = """
import socket, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:  # join the cgroup
    procs.write("0")
sys.stdin.read()
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
spare = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
for i in range(int(sys.argv[2])):
    tx.sendto(b"x", rx.getsockname())
    rx.recv(10)
"""


def test_cgroup_programs_count_the_cgroups_sockets_and_packets(cgroup):
    with load("net") as coll, waiting([sys.executable, "-c", CGROUP_CHILD, cgroup,
                                       str(PACKETS)]) as child:
        links = [attach_cgroup(coll.programs[name], cgroup)
                 for name in ("cgroup_ingress", "cgroup_egress", "sock_create")]
        try:
            assert [link.description for link in links] == [
                f"cgroup_inet_ingress on cgroup {cgroup}",
                f"cgroup_inet_egress on cgroup {cgroup}",
                f"cgroup_inet_sock_create on cgroup {cgroup}"]
            assert all(link.id for link in links)
            child.go()
            # this process is outside the cgroup: its sockets are not counted
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        finally:
            for link in links:
                link.close()
        assert counts(coll)[CGROUP_INGRESS:] == [PACKETS, PACKETS, 3]


def test_cgroup_errors(cgroup, tmp_path):
    with load("net") as coll:
        prog = coll.programs["cgroup_egress"]
        with pytest.raises(AttachError, match="is on tmpfs: cgroup programs attach to a "
                                              "cgroup v2 directory"):
            attach_cgroup(prog, "/sys/fs/cgroup")
        with pytest.raises(AttachError, match="does not exist"):
            attach_cgroup(prog, str(tmp_path / "nothing"))
        with pytest.raises(AttachError, match="needs a direction"):
            attach_cgroup(prog, cgroup, attach_type=AttachType.CGROUP_INET_SOCK_CREATE)
        with pytest.raises(AttachError, match="attaches to a cgroup v2 directory"):
            attach(prog)


# -- network interfaces: XDP and tcx on a veth pair ----------------------------------------

@pytest.fixture
def veth():
    """(host interface, namespace): a veth pair, 10.77.0.1 here and 10.77.0.2 in a new
    network namespace; deleted after the test."""
    ip = require_tool("ip")
    tag = os.getpid() % 100000
    namespace, here, there = f"pybpf{tag}", f"pbh{tag}", f"pbn{tag}"

    def run(*argv):
        subprocess.run([ip, *argv], check=True, capture_output=True)

    run("netns", "add", namespace)
    try:
        run("link", "add", here, "type", "veth", "peer", "name", there, "netns", namespace)
        run("addr", "add", "10.77.0.1/24", "dev", here)
        run("link", "set", here, "up")
        run("-n", namespace, "addr", "add", "10.77.0.2/24", "dev", there)
        run("-n", namespace, "link", "set", there, "up")
        yield here, namespace
    finally:
        subprocess.run([ip, "link", "del", here], capture_output=True)
        subprocess.run([ip, "netns", "del", namespace], capture_output=True)


def send_from(namespace, count, port=4242):
    """Send ``count`` UDP datagrams from inside ``namespace`` to 10.77.0.1:``port``."""
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for i in range({count}): s.sendto(b'x', ('10.77.0.1', {port}))")
    subprocess.run([require_tool("ip"), "netns", "exec", namespace, sys.executable, "-c", code],
                   check=True)


@pytest.mark.parametrize("mode", [None, "skb"])
def test_xdp_counts_the_packets_an_interface_receives(veth, mode):
    here, namespace = veth
    with load("net") as coll:
        with attach_xdp(coll.programs["xdp_count"], here, mode=mode) as link:
            assert link.description == f"xdp on {here}" and link.id
            send_from(namespace, PACKETS)
            send_from(namespace, 3, port=4243)  # another port: not counted
        send_from(namespace, 4)  # detached
        assert counts(coll)[XDP] == PACKETS


def test_tcx_ingress_counts_the_same_packets(veth):
    here, namespace = veth
    with load("net") as coll:
        with attach_tcx(coll.programs["tcx_count"], socket.if_nametoindex(here)) as link:
            assert link.description == f"tcx_ingress on {here}"
            send_from(namespace, PACKETS)
        send_from(namespace, 4)
        assert counts(coll)[TCX] == PACKETS


def test_interface_errors(veth):
    with load("net") as coll:
        with pytest.raises(AttachError, match="no network interface 'pybpf-none' in this "
                                              "network namespace \\(there are: lo"):
            attach_xdp(coll.programs["xdp_count"], "pybpf-none")
        with pytest.raises(UsageError, match="XDP mode must be"):
            attach_xdp(coll.programs["xdp_count"], veth[0], mode="turbo")
        with pytest.raises(AttachError, match="attaches to a network interface"):
            attach(coll.programs["xdp_count"])
        with pytest.raises(AttachError, match="XDP needs a XDP program"):
            attach_xdp(coll.programs["tcx_count"], veth[0])
