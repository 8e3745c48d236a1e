"""Parity: the DSL programs and clang's build of bpf/program.c behave the same in the kernel."""

import subprocess
import sys
import time

import pytest
from construct import Int32ul

from programs import execve_bpf
from programs.compare import REFERENCE_C, compare
from pybpf import elf
from pybpf.attach import attach
from pybpf.collection import Collection
from support import require_tool, write_chain_script


@pytest.fixture(scope="module")
def reference_object(tmp_path_factory):
    clang = require_tool("clang")
    obj = tmp_path_factory.mktemp("parity") / "program.o"
    subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-c", str(REFERENCE_C), "-o", str(obj)],
                   check=True)
    return obj


def test_reference_c_defines_the_same_maps_and_programs(reference_object):
    c_spec = elf.load_spec(str(reference_object))
    dsl_spec = execve_bpf.collection_spec()
    assert set(c_spec.programs) == set(dsl_spec.programs)
    for name, program in dsl_spec.programs.items():
        assert c_spec.programs[name].section == program.section
        assert c_spec.programs[name].type == program.type
    for name, spec in dsl_spec.maps.items():
        c_map = c_spec.maps[name]
        assert (c_map.type, c_map.key_size, c_map.value_size, c_map.max_entries) == (
            spec.type, spec.key_size, spec.value_size, spec.max_entries)


def test_compare_c_lines_up_the_two_programs(reference_object):
    lines = compare(execve_bpf.collection_spec(), reference_object)
    summary = [x for x in lines if x.startswith("count_execve:") and "alike" in x][0]
    alike = int(summary.split()[1])
    assert alike >= 45, summary  # the DSL follows the C instruction for instruction
    assert any(" = " in x and "lock *(u64 *)(r0 + 0) += r1" in x for x in lines)


def _workload(tmp_path):
    """Real execs: a chain in one PID, a fork storm, failed execs, a thread that execs."""
    script = write_chain_script(tmp_path, final="/bin/true")
    pids = []
    chain = subprocess.Popen([str(script), "20"])
    chain.wait()
    pids.append(chain.pid)
    storm = subprocess.Popen(["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do /bin/true; done"])
    storm.wait()
    pids.append(storm.pid)
    failing = subprocess.Popen([sys.executable, "-c",
                                "import os\nfor _ in range(3):\n"
                                "    try: os.execv('/nonexistent', ['x'])\n"
                                "    except OSError: pass\n"])
    failing.wait()
    pids.append(failing.pid)
    threaded = subprocess.Popen([sys.executable, "-c",
                                 "import os, threading, time\n"
                                 "threading.Thread(target=lambda: os.execv('/bin/true', ['t']))"
                                 ".start()\ntime.sleep(5)\n"])
    threaded.wait()
    pids.append(threaded.pid)
    return pids


@pytest.mark.kernel
def test_dsl_and_c_count_and_name_the_same_execs(reference_object, tmp_path):
    designs = []
    try:
        for spec in (execve_bpf.collection_spec(), elf.load_spec(str(reference_object))):
            # compare raw bytes: no key/value types on either side
            spec.maps = {name: m.copy(key_type=Int32ul, value_type=None)
                         for name, m in spec.maps.items()}
            coll = Collection(spec)
            designs.append((coll, [attach(p, p.spec.section) for p in coll.programs.values()]))
        pids = _workload(tmp_path)
        time.sleep(0.1)
        seen = []
        for coll, _ in designs:
            counts = {k: int.from_bytes(v, "little")
                      for k, v in coll.maps["exec_count"].items()}
            names = dict(coll.maps["process_names"].items())
            seen.append({pid: (counts.get(pid), bytes(names.get(pid, b"")).rstrip(b"\0"))
                         for pid in pids})
        dsl, c = seen
        assert dsl == c
        assert dsl[pids[0]] == (22, b"true")  # Popen's exec, 20 re-execs, the final exec
        assert dsl[pids[2]][0] == 4  # python's own exec, then three failures
        assert dsl[pids[3]] == (2, b"true")  # the thread's exec counts for the process
    finally:
        for coll, links in designs:
            for link in links:
                link.close()
            coll.close()
