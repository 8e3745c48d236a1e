"""Shared by the attach tests: the committed test objects, user-space programs built with gcc
for a test, and child processes that run a workload when told to."""

import os
import subprocess
import sys
from contextlib import contextmanager

from pybpf import syscalls
from pybpf.abi import MapType, ProgType
from pybpf.asm import DW, R0, R1, R2, R6, R10, Builder
from pybpf.collection import Collection
from pybpf.elf import load_spec
from pybpf.maps import Map
from pybpf.program import Program

from support import require_tool

OBJECTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attach")

# A program with a function to put uprobes on: pybpf_probe_me(i) returns 2 * i; main calls it
# for i = 0..N-1 and getpid() N times, N being its first argument, once its stdin closes.
PROBE_TARGET_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((noinline)) int pybpf_probe_me(int i)
{
	__asm__ volatile("" ::: "memory");
	return 2 * i;
}

int main(int argc, char **argv)
{
	int n = atoi(argv[1]);
	long sum = 0;
	char byte;

	while (read(0, &byte, 1) > 0)  /* wait until the test has attached its probes */
		;
	for (int i = 0; i < n; i++) {
		sum += pybpf_probe_me(i);
		sum += getpid();
	}
	printf("%ld\n", sum);
	return 0;
}
"""


def build_c(tmp_path, name, source, *flags):
    """Compile C ``source`` with gcc into ``tmp_path/name``; the executable's path."""
    gcc = require_tool("gcc")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    subprocess.run([gcc, "-O2", "-o", str(out), str(src), *flags], check=True)
    return str(out)


def load(name):
    """A Collection of the committed test object ``tests/attach/<name>.o``."""
    return Collection(load_spec(os.path.join(OBJECTS, f"{name}.o")))


class Waiting:
    """A child process started now that runs its workload only when :meth:`go` is called
    (it waits for its stdin to close), so that probes can be attached to it first."""

    def __init__(self, argv):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.pid = self.process.pid

    def go(self, timeout=60):
        """Let it run; its output."""
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, self.process.returncode
        return out


@contextmanager
def waiting(argv):
    child = Waiting(argv)
    try:
        yield child
    finally:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()


def python_child(code):
    """argv running ``code`` with this Python, after its stdin closes."""
    return [sys.executable, "-c", "import sys; sys.stdin.read()\n" + code]


# -- small DSL programs that count per process ---------------------------------------------

# Where a KPROBE program's context (struct pt_regs) keeps a function's return value.
RETURN_REGISTER = {"x86_64": 80, "aarch64": 0}  # pt_regs.ax; user_pt_regs.regs[0]


def pid_map():
    """A hash map from process id (u64) to a u64 the programs below add to."""
    return Map.create(MapType.HASH, 8, 8, 64, name="pids")


def _per_pid(prog_type, pids, add_value):
    """A program adding to pids[current tgid] when the tgid is in the map: 1, or (with
    ``add_value``) the u64 at that offset of its context."""
    b = Builder()
    b.mov(R6, R1)
    b.call("get_current_pid_tgid")
    b.rsh(R0, 32)
    b.stx(DW, R10, -8, R0)
    b.ld_map_fd(R1, "pids")
    b.mov(R2, R10)
    b.add(R2, -8)
    b.call("map_lookup_elem")
    b.jeq(R0, 0, "out")
    if add_value is None:
        b.mov(R1, 1)
    else:
        b.ldx(DW, R1, R6, add_value)
    b.atomic_add(DW, R0, 0, R1)
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    return Program.from_instructions(b.instructions, prog_type, maps={"pids": pids},
                                     name="per_pid")


def count_pids_program(prog_type, pids):
    """A program adding 1 to pids[current tgid] when the tgid is in the map."""
    return _per_pid(prog_type, pids, None)


def sum_returns_program(pids):
    """A KPROBE program (for a uretprobe) adding the probed function's return value to
    pids[current tgid] when the tgid is in the map."""
    return _per_pid(ProgType.KPROBE, pids, RETURN_REGISTER[os.uname().machine])


def watch(pids, pid):
    """Count process ``pid`` in ``pids`` (from 0)."""
    syscalls.map_update_elem(pids.fd, pid.to_bytes(8, "little"), bytes(8))


def counted(pids, pid):
    """What the programs added for process ``pid``."""
    return int.from_bytes(syscalls.map_lookup_elem(pids.fd, pid.to_bytes(8, "little"), 8),
                          "little")


# -- libbpf, the oracle ---------------------------------------------------------------------

# Loads an object with libbpf, sets target[0] to argv[3] (when the object has that map) and
# the 4-byte .rodata knobs given as NAME=VALUE after it, attaches every program it can with
# bpf_program__attach() (libbpf's auto-attach by section name), says "ready", and once its
# stdin closes prints the u64 values of the array map named argv[2], one per line.
LIBBPF_ATTACH_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

static int set_knob(struct bpf_object *obj, const char *name, __u32 value)
{
	struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *rodata = bpf_object__find_map_by_name(obj, ".rodata");
	int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	const struct btf_var_secinfo *var;
	size_t size;
	char *data;
	int i;

	if (!rodata || id < 0)
		return -1;
	data = (char *)bpf_map__initial_value(rodata, &size);
	var = btf_var_secinfos(btf__type_by_id(btf, id));
	for (i = 0; i < btf_vlen(btf__type_by_id(btf, id)); i++, var++) {
		const char *var_name = btf__name_by_offset(btf,
			btf__type_by_id(btf, var->type)->name_off);

		if (!strcmp(var_name, name) && var->size == 4) {
			memcpy(data + var->offset, &value, 4);
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	struct bpf_program *prog;
	__u32 key = 0, value;
	__u64 count;
	int fd, i;
	char byte;

	if (!obj)
		return 2;
	for (i = 4; i < argc; i++) {
		char *equals = strchr(argv[i], '=');

		*equals = 0;
		if (set_knob(obj, argv[i], strtoul(equals + 1, NULL, 0)))
			return 4;
	}
	if (bpf_object__load(obj))
		return 2;
	fd = bpf_object__find_map_fd_by_name(obj, "target");
	if (fd >= 0) {
		value = atoi(argv[3]);
		bpf_map_update_elem(fd, &key, &value, 0);
	}
	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__attach(prog))  /* as pybpf load: say so, attach the others */
			fprintf(stderr, "cannot attach %s\n", bpf_program__name(prog));
	}
	printf("ready\n");
	fflush(stdout);
	while (read(0, &byte, 1) > 0)
		;
	fd = bpf_object__find_map_fd_by_name(obj, argv[2]);
	for (key = 0; bpf_map_lookup_elem(fd, &key, &count) == 0; key++)
		printf("%llu\n", (unsigned long long)count);
	return 0;
}
"""


def libbpf_counts(tmp_path, obj, pid, workload, map_name="counts", knobs=()):
    """The u64 values of array ``map_name`` after libbpf attached ``obj`` (counting process
    ``pid`` in its target map, or with the ``.rodata`` knobs ``NAME=VALUE``) and
    ``workload()`` ran."""
    harness = build_c(tmp_path, "libbpf_attach", LIBBPF_ATTACH_C, "-lbpf")
    with subprocess.Popen([harness, os.path.join(OBJECTS, obj), map_name, str(pid), *knobs],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as run:
        assert run.stdout.readline() == "ready\n"
        workload()
        out, _ = run.communicate(timeout=60)
    assert run.returncode == 0, run.returncode
    return [int(line) for line in out.split()]
