"""The execve tracker's eBPF programs and maps, written with the pybpf DSL.

Each group of instructions carries, as its comment, the line of ``bpf/program.c`` it
implements; the comments show in ``python -m programs.execve --dump`` and in verifier errors.

Three programs share three maps:

- ``count_execve`` runs at ``syscalls/sys_enter_execve`` for every execve() call, successful or
  not, and counts it for the calling process (its thread-group id, the PID users see);
  ``count_execveat`` is the same program at ``syscalls/sys_enter_execveat`` (``fexecve()``,
  systemd and others execute programs with execveat()).
- ``name_process`` runs at ``sched/sched_process_exec`` after an exec succeeded, when the
  task's comm is already the new program's name, and writes that name straight into the
  ``process_names`` map value: no map update on this hot path.
"""

from pybpf.abi import TASK_COMM_LEN, MapType, ProgType, UpdateFlags
from pybpf.asm import DW, R0, R1, R2, R3, R4, R6, R10, W, Builder
from pybpf.spec import CollectionSpec, MapSpec, ProgramSpec

DEFAULT_MAX_PIDS = 10240
# The event mode's defaults (programs/events_bpf.py; here so that the command line knows them
# without building the event programs): arguments and their bytes captured per exec, and the
# ring buffer's size.
DEFAULT_MAX_ARGS, DEFAULT_MAX_ARGS_SIZE, DEFAULT_BUFFER_SIZE = 1024, 128 << 10, 16 << 20
EEXIST = 17

# Stack slots (offsets from the frame pointer r10) used by both programs.
PID_SLOT = -4  # u32 pid, the key of every map
ONE_SLOT = -16  # u64 one, the first count of a new process
COMM_SLOT = -32  # char comm[16]; also u32 zero, the key of dropped_execs


U32, U64 = "<I", "<Q"  # struct formats of the maps' keys and counts


def map_specs(max_pids=DEFAULT_MAX_PIDS):
    """The tracker's maps: counts and names by PID, and a per-CPU count of what was lost.

    Keys and counts are ints (struct formats); names stay raw ``bytes`` (the comm, NUL-padded),
    which the output escapes for the terminal.
    """
    return {
        "exec_count": MapSpec(
            "exec_count", MapType.HASH, 4, 8, max_pids, key_type=U32, value_type=U64
        ),
        "process_names": MapSpec(
            "process_names", MapType.HASH, 4, TASK_COMM_LEN, max_pids, key_type=U32
        ),
        "dropped_execs": MapSpec(
            "dropped_execs", MapType.PERCPU_ARRAY, 4, 8, 1, key_type=U32, value_type=U64
        ),
    }


def _pid_key(b):
    """``__u32 pid = bpf_get_current_pid_tgid() >> 32;`` stored on the stack as a map key."""
    b.comment("__u32 pid = bpf_get_current_pid_tgid() >> 32;")
    b.call("get_current_pid_tgid")
    b.rsh(R0, 32)
    b.stx(W, R10, PID_SLOT, R0)


def _lookup(b, map_name, key_slot):
    """``r0 = bpf_map_lookup_elem(&map_name, r10 + key_slot)``."""
    b.mov(R2, R10)
    b.add(R2, key_slot)
    b.ld_map_fd(R1, map_name)
    b.call("map_lookup_elem")


def count_execve():
    """The sys_enter_execve(at) program: one more exec for the calling process."""
    b = Builder()
    _pid_key(b)
    b.comment("__u64 *count = bpf_map_lookup_elem(&exec_count, &pid);")
    _lookup(b, "exec_count", PID_SLOT)
    b.comment("if (count) {")
    b.jeq(R0, 0, "new_process")
    b.comment("__sync_fetch_and_add(count, 1);")
    b.label("add_one")
    b.mov(R1, 1)
    b.atomic_add(DW, R0, 0, R1)
    b.comment("return 0;")
    b.label("out")
    b.mov(R0, 0)
    b.exit()

    b.comment("__u64 one = 1;")
    b.label("new_process")
    b.st(DW, R10, ONE_SLOT, 1)
    b.comment("long err = bpf_map_update_elem(&exec_count, &pid, &one, BPF_NOEXIST);")
    b.mov(R2, R10)
    b.add(R2, PID_SLOT)
    b.mov(R3, R10)
    b.add(R3, ONE_SLOT)
    b.ld_map_fd(R1, "exec_count")
    b.mov(R4, UpdateFlags.NOEXIST)
    b.call("map_update_elem")
    b.comment("if (err == 0) record the name below")
    b.jeq(R0, 0, "record_name")
    b.comment("if (err == -EEXIST) {")
    b.jne(R0, -EEXIST, "map_full")
    b.comment("count = bpf_map_lookup_elem(&exec_count, &pid);")
    _lookup(b, "exec_count", PID_SLOT)
    b.comment("if (count) __sync_fetch_and_add(count, 1); return 0;")
    b.jeq(R0, 0, "out")
    b.ja("add_one")

    b.comment("char comm[TASK_COMM_LEN]; bpf_get_current_comm(comm, sizeof(comm));")
    b.label("record_name")
    b.mov(R6, R10)
    b.add(R6, COMM_SLOT)
    b.mov(R1, R6)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    b.comment("bpf_map_update_elem(&process_names, &pid, comm, BPF_ANY);")
    b.mov(R2, R10)
    b.add(R2, PID_SLOT)
    b.ld_map_fd(R1, "process_names")
    b.mov(R3, R6)
    b.mov(R4, UpdateFlags.ANY)
    b.call("map_update_elem")
    b.ja("out")
    b.comment("__u32 zero = 0;")
    b.label("map_full")
    b.st(W, R10, COMM_SLOT, 0)
    b.comment("__u64 *dropped = bpf_map_lookup_elem(&dropped_execs, &zero);")
    _lookup(b, "dropped_execs", COMM_SLOT)
    b.comment("if (dropped) *dropped += 1;")
    b.jeq(R0, 0, "out")
    b.ldx(DW, R1, R0, 0)
    b.add(R1, 1)
    b.stx(DW, R0, 0, R1)
    b.ja("out")

    return b.instructions


def name_process():
    """The sched_process_exec program: write the new comm into the process's name entry."""
    b = Builder()
    _pid_key(b)
    b.comment("char *name = bpf_map_lookup_elem(&process_names, &pid);")
    _lookup(b, "process_names", PID_SLOT)
    b.comment("if (name) bpf_get_current_comm(name, TASK_COMM_LEN);")
    b.jeq(R0, 0, "out")
    b.mov(R1, R0)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    b.comment("return 0;")
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    return b.instructions


def collection_spec(max_pids=DEFAULT_MAX_PIDS):
    """The tracker as one :class:`~pybpf.spec.CollectionSpec`: its maps and both programs."""
    programs = {
        "count_execve": ProgramSpec(
            "count_execve", ProgType.TRACEPOINT, count_execve(),
            section="tracepoint/syscalls/sys_enter_execve",
        ),
        "count_execveat": ProgramSpec(
            "count_execveat", ProgType.TRACEPOINT, count_execve(),
            section="tracepoint/syscalls/sys_enter_execveat",
        ),
        "name_process": ProgramSpec(
            "name_process", ProgType.TRACEPOINT, name_process(),
            section="tracepoint/sched/sched_process_exec",
        ),
    }
    return CollectionSpec(maps=map_specs(max_pids), programs=programs)
