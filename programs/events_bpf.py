"""The exec event stream's eBPF programs, written with the pybpf DSL and CO-RE.

Where an exec is seen, and what is read there:

- ``enter_execve`` / ``enter_execveat`` (``syscalls/sys_enter_exec*``): the call starts. The
  caller's name, the file name and argument pointers as passed, and which system call it is
  are kept in ``inflight``, by thread id, for the outcome's event (only loaded to build
  events: counting alone needs no start).
- ``exec_success`` (``sched/sched_process_exec``): the exec succeeded; the task already runs
  the new program. Its new name, the file name the kernel opened, and the arguments the new
  program really got (``mm->arg_start .. arg_end``, what ``/proc/PID/cmdline`` shows) are read
  in the new image, where they are resident. This sees every successful exec, whichever
  system call made it (execve, execveat, the kernel's own user-mode helpers).
- ``exec_failure`` (``syscalls/sys_exit_exec*`` with a negative return): the exec failed; the
  caller still runs its program, so the file name and arguments it passed are still in its
  memory (the kernel has just copied them) and are read from there.

Filters (``--pid``, ``--ppid``, ``--uid``, ``--comm``, ``--cgroup``) are compiled into the
outcome programs as immediates, so an exec that does not match costs a few instructions and
builds nothing (``--failed-only`` and ``--success-only`` leave the other outcome's programs
out); the per-process counts
(``exec_count``, ``process_names``, the lost-count ``dropped_execs``) are kept at the outcome
too, after the filters, exactly as in the table mode. Each event is assembled in a per-CPU
``scratch`` area (larger than the 512-byte stack) and copied into the ``events`` ring
buffer with its real length; a copy that does not fit is counted in ``stats`` (per CPU) and
reported, never lost silently.

With ``--metrics`` (``Options.metrics``) the outcome programs also count, after the filters,
every exec by the process's name (``comm_execs``, keyed by the 16 bytes of the comm: the new
program's after a success, the caller's after a failure) and every failure by its errno
(``exec_errnos``, indexed by the errno). These counts are exact and only grow: they are kept
in the kernel, not taken from the event stream (which can drop), and never forgotten with the
processes that exited. A name the full ``comm_execs`` cannot hold is counted in ``stats``
(``names_full``). Without ``--metrics`` these maps and their instructions are left out.
"""

from dataclasses import dataclass
from typing import Optional

from pybpf.abi import (
    BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TASK_COMM_LEN, MapType,
    ProgType, UpdateFlags,
)
from pybpf.asm import DW, H, R0, R1, R2, R3, R4, R6, R7, R8, R9, R10, W, Builder, core
from pybpf.asm.functions import CALLBACK, function_btf
from pybpf.spec import CollectionSpec, MapSpec, ProgramSpec

from . import execve_bpf

# -- the record header (docs/events.md; programs/events.py decodes it) ---------------------
KTIME, CGROUP_ID, START_TIME, PARENT_START_TIME = 0, 8, 16, 24
PID, TID, PPID, UID, GID, NS_PID, RET = 32, 36, 40, 44, 48, 52, 56
SYSCALL, FLAGS, COMM, OLD_COMM = 60, 62, 64, 80
FILENAME_LEN, ARGV_LEN, ARGV_TOTAL = 96, 100, 104
DATA = 112  # the file name (with its NUL), then the argument bytes
HEADER_FORMAT = "<QQQQIIIIIIiHH16s16sIII4x"

SYSCALL_NONE, SYSCALL_EXECVE, SYSCALL_EXECVEAT = 0, 1, 2
ARGV_TRUNCATED, FILENAME_TRUNCATED, NO_START, ARGV_UNREADABLE, ARGV_TOTAL_UNKNOWN = (
    1, 2, 4, 8, 16)

FILENAME_MAX = 4096  # PATH_MAX, with the NUL
MAX_ARG_STRLEN = 131072  # the kernel's longest argument (32 pages)
DEFAULT_MAX_ARGS = execve_bpf.DEFAULT_MAX_ARGS
DEFAULT_MAX_ARGS_SIZE = execve_bpf.DEFAULT_MAX_ARGS_SIZE
DEFAULT_BUFFER_SIZE = execve_bpf.DEFAULT_BUFFER_SIZE
INFLIGHT_ENTRIES = 10240  # threads in the middle of an exec at once
READ_PERIOD = 0.1  # seconds: the reader looks at least this often (records wake it in bulk)

W_ARGV, WORK_SIZE = 0, 8  # the work area: the failed exec's argv pointer

# stats: per-CPU counters, by index
EVENTS_LOST, NO_START_SEEN, NAMES_FULL = 0, 1, 2
STATS = ("events_lost", "no_start", "names_full")

COMM_ENTRIES = 10240  # distinct process names comm_execs counts on its own
MAX_ERRNO = 4095  # the largest errno a system call returns (include/linux/err.h)

# inflight value: what the start of an exec leaves for its outcome
IF_FILENAME, IF_ARGV, IF_SYSCALL, IF_COMM, INFLIGHT_SIZE = 0, 8, 16, 24, 40

# stack slots (offsets from r10)
PID_SLOT = execve_bpf.PID_SLOT  # -4, u32: the process's id, the key of the count maps
TID_SLOT = -8  # u32: the thread's id, the inflight key
ONE_SLOT = execve_bpf.ONE_SLOT  # -16, u64 1: the first count of a new process
KEY = -16  # u32 map keys (the CPU, a stats index), once ONE_SLOT is no longer needed
COMM_SLOT = execve_bpf.COMM_SLOT  # -32: char comm[16]
TMP = -40  # u64: CO-RE reads, argument pointers
ROOM = -48  # u64: argv_step's room left for arguments
OLD_PID, DATALOC = -72, -68  # u32 each: sched_process_exec's old_pid and filename location
SAVED = -80  # u64: the ctx pointer (success) or the return value (failure)
CURSOR = -88  # u64: the user address of the next argument pointer
INFLIGHT_SLOT = -128  # 40 bytes: the inflight value being built or read

TYPES = core.Types("""
    struct task_struct {
        int tgid;
        unsigned long long start_time;
        struct task_struct *real_parent;
        struct task_struct *group_leader;
        struct mm_struct *mm;
        struct pid *thread_pid;
    };
    struct mm_struct { unsigned long arg_start; unsigned long arg_end; };
    struct upid { int nr; };
    struct pid { unsigned int level; struct upid numbers[1]; };
""")
TASK, UPID, PID_T = TYPES.struct("task_struct"), TYPES.struct("upid"), TYPES.struct("pid")


@dataclass
class Options:
    """What the programs are built for: filters (None: any), limits, and what they do."""

    pid: Optional[int] = None
    ppid: Optional[int] = None
    uid: Optional[int] = None
    comm: Optional[bytes] = None
    cgroup_id: Optional[int] = None
    failed_only: bool = False
    success_only: bool = False
    max_args: int = DEFAULT_MAX_ARGS
    max_args_size: int = DEFAULT_MAX_ARGS_SIZE
    buffer_size: int = DEFAULT_BUFFER_SIZE
    max_pids: int = execve_bpf.DEFAULT_MAX_PIDS
    emit: bool = True  # build events (else only count, after the filters)
    metrics: bool = False  # count execs by name and failures by errno (comm_execs...)

    @property
    def scratch_size(self):
        """The per-CPU scratch value: header, file name, arguments, and room to measure one
        argument that is not captured (the verifier checks a read at a variable offset
        against its largest offset plus its largest size: that room covers it too)."""
        return DATA + FILENAME_MAX + self.max_args_size + max(self.max_args_size,
                                                              MAX_ARG_STRLEN) + WORK_SIZE

    @property
    def junk(self):
        """Where an argument that is not captured is read, to measure it."""
        return DATA + FILENAME_MAX + self.max_args_size

    @property
    def work(self):
        """The scratch's last bytes: the argument walk's state, never sent (W_ARGV...)."""
        return self.scratch_size - WORK_SIZE


def map_specs(options, cpus):
    """The count maps of the table mode, and the event mode's own."""
    maps = execve_bpf.map_specs(options.max_pids)
    if options.emit:  # what the start of an exec leaves for its event
        maps["inflight"] = MapSpec("inflight", MapType.LRU_HASH, 4, INFLIGHT_SIZE,
                                   INFLIGHT_ENTRIES, key_type="<I")
    maps["stats"] = MapSpec("stats", MapType.PERCPU_ARRAY, 4, 8, len(STATS), key_type="<I",
                            value_type="<Q")
    if options.metrics:
        maps["comm_execs"] = MapSpec("comm_execs", MapType.HASH, TASK_COMM_LEN, 8,
                                     COMM_ENTRIES, value_type="<Q")
        maps["exec_errnos"] = MapSpec("exec_errnos", MapType.ARRAY, 4, 8, MAX_ERRNO + 1,
                                      key_type="<I", value_type="<Q")
    if options.emit:
        maps["scratch"] = MapSpec("scratch", MapType.ARRAY, 4, options.scratch_size, cpus,
                                  key_type="<I")
        maps["events"] = MapSpec("events", MapType.RINGBUF, 0, 0, options.buffer_size)
    return maps


# -- shared pieces -------------------------------------------------------------------------

def _unique(b, stem):
    """A label name no other place of the program uses (the instruction count makes it so)."""
    return f"_{stem}{len(b._insns)}"


def _lookup(b, map_name, key_slot):
    """``r0 = bpf_map_lookup_elem(&map_name, r10 + key_slot)``."""
    b.mov(R2, R10)
    b.add(R2, key_slot)
    b.ld_map_fd(R1, map_name)
    b.call("map_lookup_elem")


def _update(b, map_name, key_slot, value_slot, flags):
    """``r0 = bpf_map_update_elem(&map_name, r10 + key_slot, r10 + value_slot, flags)``."""
    b.mov(R2, R10)
    b.add(R2, key_slot)
    b.mov(R3, R10)
    b.add(R3, value_slot)
    b.ld_map_fd(R1, map_name)
    b.mov(R4, flags)
    b.call("map_update_elem")


def _count_stat(b, index):
    """``stats[index] += 1`` (this CPU's slot); clobbers r0-r5."""
    b.comment(f"__u32 key = {STATS[index].upper()}; __u64 *n = bpf_map_lookup_elem(&stats, &key);")
    b.st(W, R10, KEY, index)
    _lookup(b, "stats", KEY)
    b.comment("if (n) *n += 1;")
    label = _unique(b, "stat")
    b.jeq(R0, 0, label)
    b.ldx(DW, R1, R0, 0)
    b.add(R1, 1)
    b.stx(DW, R0, 0, R1)
    b.label(label)


def _ids(b):
    """r8 = the process id (tgid), stored at PID_SLOT; the thread id at TID_SLOT."""
    b.comment("__u64 id = bpf_get_current_pid_tgid(); __u32 pid = id >> 32, tid = id;")
    b.call("get_current_pid_tgid")
    b.stx(W, R10, TID_SLOT, R0)
    b.mov(R8, R0)
    b.rsh(R8, 32)
    b.stx(W, R10, PID_SLOT, R8)


def _filters(b, options):
    """Jump to ``out`` unless this exec matches every filter (r8 = tgid; clobbers r0-r5)."""
    if options.pid is not None:
        b.comment(f"if (pid != {options.pid}) return 0;  /* --pid */")
        b.jne(R8, options.pid, "out")
    if options.uid is not None:
        b.comment(f"if ((__u32)bpf_get_current_uid_gid() != {options.uid}) return 0;  /* --uid */")
        b.call("get_current_uid_gid")
        b.jne32(R0, options.uid, "out")
    if options.cgroup_id is not None:
        b.comment(f"if (bpf_get_current_cgroup_id() != {options.cgroup_id}) return 0;  "
                  f"/* --cgroup */")
        b.call("get_current_cgroup_id")
        b.lddw(R1, options.cgroup_id)
        b.jne(R0, R1, "out")
    if options.ppid is not None:
        b.call("get_current_task")
        b.core_read(R0, R0, TASK, "real_parent->tgid", stack=TMP)
        b.comment(f"if (ppid != {options.ppid}) return 0;  /* --ppid */")
        b.jne32(R0, options.ppid, "out")
    if options.comm is not None:
        name = options.comm[:TASK_COMM_LEN - 1].ljust(TASK_COMM_LEN, b"\0")
        b.comment(f"bpf_get_current_comm(comm, 16); if (memcmp(comm, {name!r}, 16)) return 0;")
        b.mov(R1, R10)
        b.add(R1, COMM_SLOT)
        b.mov(R2, TASK_COMM_LEN)
        b.call("get_current_comm")
        for half in (0, 8):
            b.ldx(DW, R1, R10, COMM_SLOT + half)
            b.lddw(R2, int.from_bytes(name[half:half + 8], "little"))
            b.jne(R1, R2, "out")


def _count(b, success):
    """One more exec for process r8 in ``exec_count`` (a new entry's name from the current
    comm), and after a success the new name in ``process_names``: the table's counts."""
    b.comment("__u64 *count = bpf_map_lookup_elem(&exec_count, &pid);")
    _lookup(b, "exec_count", PID_SLOT)
    done, new = _unique(b, "counted"), _unique(b, "new")
    b.jeq(R0, 0, new)
    b.comment("__sync_fetch_and_add(count, 1);")
    b.mov(R1, 1)
    b.atomic_add(DW, R0, 0, R1)
    b.ja(done)
    b.label(new)
    b.comment("__u64 one = 1; if (bpf_map_update_elem(&exec_count, &pid, &one, BPF_ANY)) "
              "dropped_execs += 1;")
    b.st(DW, R10, ONE_SLOT, 1)
    _update(b, "exec_count", PID_SLOT, ONE_SLOT, UpdateFlags.ANY)
    b.jeq(R0, 0, done)
    b.st(W, R10, KEY, 0)
    _lookup(b, "dropped_execs", KEY)
    b.jeq(R0, 0, "out")
    b.ldx(DW, R1, R0, 0)
    b.add(R1, 1)
    b.stx(DW, R0, 0, R1)
    b.ja("out")  # a process the maps cannot hold gets no name entry (and no event)
    b.label(done)
    b.comment("bpf_get_current_comm(comm, 16); bpf_map_update_elem(&process_names, &pid, comm, "
              + ("BPF_ANY);" if success else "BPF_NOEXIST);  /* a failure keeps the name */"))
    b.mov(R1, R10)
    b.add(R1, COMM_SLOT)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    _update(b, "process_names", PID_SLOT, COMM_SLOT,
            UpdateFlags.ANY if success else UpdateFlags.NOEXIST)


def _count_metrics(b, failed):
    """The metrics' counts of this exec: ``comm_execs[comm] += 1`` (a name the full map cannot
    hold counts in stats[NAMES_FULL]) and, after a failure, ``exec_errnos[-ret] += 1``."""
    b.comment("bpf_get_current_comm(comm, 16); __u64 *n = bpf_map_lookup_elem(&comm_execs, comm);")
    b.mov(R1, R10)
    b.add(R1, COMM_SLOT)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    _lookup(b, "comm_execs", COMM_SLOT)
    add, full, named = _unique(b, "add"), _unique(b, "full"), _unique(b, "named")
    b.jne(R0, 0, add)
    b.comment("__u64 one = 1; long err = bpf_map_update_elem(&comm_execs, comm, &one, "
              "BPF_NOEXIST);")
    b.st(DW, R10, ONE_SLOT, 1)
    _update(b, "comm_execs", COMM_SLOT, ONE_SLOT, UpdateFlags.NOEXIST)
    b.jeq(R0, 0, named)
    b.comment("if (err == -EEXIST) { n = bpf_map_lookup_elem(&comm_execs, comm); "
              "if (n) goto add; }  /* another CPU added it */")
    b.jne(R0, -execve_bpf.EEXIST, full)
    _lookup(b, "comm_execs", COMM_SLOT)
    b.jne(R0, 0, add)
    b.label(full)
    _count_stat(b, NAMES_FULL)
    b.ja(named)
    b.label(add)
    b.comment("__sync_fetch_and_add(n, 1);")
    b.mov(R1, 1)
    b.atomic_add(DW, R0, 0, R1)
    b.label(named)
    if failed:
        counted = _unique(b, "errno")
        b.comment(f"__u32 e = -ret; if (e <= {MAX_ERRNO}) {{ n = bpf_map_lookup_elem("
                  f"&exec_errnos, &e); if (n) __sync_fetch_and_add(n, 1); }}")
        b.ldx(DW, R1, R10, SAVED)
        b.neg(R1)
        b.jgt(R1, MAX_ERRNO, counted)
        b.stx(W, R10, KEY, R1)
        _lookup(b, "exec_errnos", KEY)
        b.jeq(R0, 0, counted)
        b.mov(R1, 1)
        b.atomic_add(DW, R0, 0, R1)
        b.label(counted)


def _header(b, ret_source):
    """r6 = this CPU's scratch event with the header filled in (but for the file name and
    arguments); r9 = the current task. ``ret_source`` puts the return value in r1."""
    b.comment("__u32 cpu = bpf_get_smp_processor_id(); struct event *e = "
              "bpf_map_lookup_elem(&scratch, &cpu);")
    b.call("get_smp_processor_id")
    b.stx(W, R10, KEY, R0)
    _lookup(b, "scratch", KEY)
    b.jeq(R0, 0, "out")
    b.mov(R6, R0)
    b.comment("e->ktime = bpf_ktime_get_boot_ns(); e->cgroup_id = bpf_get_current_cgroup_id();")
    b.call("ktime_get_boot_ns")
    b.stx(DW, R6, KTIME, R0)
    b.call("get_current_cgroup_id")
    b.stx(DW, R6, CGROUP_ID, R0)
    b.comment("e->pid = pid; e->ret = ret;")
    b.stx(W, R6, PID, R8)
    ret_source(b)
    b.stx(W, R6, RET, R1)
    b.comment("__u64 ids = bpf_get_current_uid_gid(); e->uid = ids; e->gid = ids >> 32;")
    b.call("get_current_uid_gid")
    b.stx(W, R6, UID, R0)
    b.rsh(R0, 32)
    b.stx(W, R6, GID, R0)
    b.comment("bpf_get_current_comm(e->comm, 16);")
    b.mov(R1, R6)
    b.add(R1, COMM)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    b.call("get_current_task")
    b.mov(R9, R0)
    b.core_read(R0, R9, TASK, "real_parent->tgid", stack=TMP)
    b.stx(W, R6, PPID, R0)
    b.core_read(R0, R9, TASK, "group_leader->start_time", stack=TMP)
    b.stx(DW, R6, START_TIME, R0)
    b.core_read(R0, R9, TASK, "real_parent->group_leader->start_time", stack=TMP)
    b.stx(DW, R6, PARENT_START_TIME, R0)
    _ns_pid(b)
    b.comment("e->flags = 0; e->filename_len = e->argv_len = e->argv_total = 0;")
    b.st(H, R6, FLAGS, 0)
    b.st(W, R6, FILENAME_LEN, 0)
    b.st(W, R6, ARGV_LEN, 0)
    b.st(W, R6, ARGV_TOTAL, 0)


def _ns_pid(b):
    """e->ns_pid = the process's id in its own PID namespace:
    ``task->thread_pid->numbers[task->thread_pid->level].nr``."""
    b.core_read(R7, R9, TASK, "thread_pid", stack=TMP)
    b.core_read(R1, R7, PID_T, "level", stack=TMP)
    b.comment("struct upid *up = &pid->numbers[pid->level];")
    b.and_(R1, 0xFF)  # at most 32 nested PID namespaces
    b.mul(R1, UPID.sizeof())
    b.add(R1, PID_T.offsetof("numbers"))
    b.add(R7, R1)
    b.core_read(R0, R7, UPID, "nr", stack=TMP)
    b.stx(W, R6, NS_PID, R0)


def _from_inflight(b, tid_source):
    """The start's record (by thread id): the system call and the caller's name into the
    event, the file name and argument pointers to ``INFLIGHT_SLOT``; the entry is deleted.
    Without one, the event is flagged NO_START. r0 = 1 if there was one, else 0."""
    tid_source(b)
    b.stx(W, R10, TID_SLOT, R1)
    b.comment("e->tid = tid;")
    b.stx(W, R6, TID, R1)
    b.comment("struct inflight *start = bpf_map_lookup_elem(&inflight, &tid);")
    _lookup(b, "inflight", TID_SLOT)
    found, after = _unique(b, "found"), _unique(b, "started")
    b.jne(R0, 0, found)
    b.comment("if (!start) { e->flags |= NO_START; e->syscall = 0; }")
    b.st(H, R6, FLAGS, NO_START)
    b.st(H, R6, SYSCALL, SYSCALL_NONE)
    b.st(DW, R10, INFLIGHT_SLOT + IF_FILENAME, 0)
    b.st(DW, R10, INFLIGHT_SLOT + IF_ARGV, 0)
    _count_stat(b, NO_START_SEEN)
    b.mov(R0, 0)
    b.ja(after)
    b.label(found)
    b.comment("e->syscall = start->syscall; memcpy(e->old_comm, start->comm, 16);")
    for offset in (IF_FILENAME, IF_ARGV):
        b.ldx(DW, R1, R0, offset)
        b.stx(DW, R10, INFLIGHT_SLOT + offset, R1)
    b.ldx(W, R1, R0, IF_SYSCALL)
    b.stx(H, R6, SYSCALL, R1)
    for half in (0, 8):
        b.ldx(DW, R1, R0, IF_COMM + half)
        b.stx(DW, R6, OLD_COMM + half, R1)
    b.comment("bpf_map_delete_elem(&inflight, &tid);")
    b.mov(R2, R10)
    b.add(R2, TID_SLOT)
    b.ld_map_fd(R1, "inflight")
    b.call("map_delete_elem")
    b.mov(R0, 1)
    b.label(after)


def _filename_length(b):
    """r7 = the length the file name read returned (in r0), in 0..FILENAME_MAX, stored;
    FILENAME_TRUNCATED when it filled the buffer."""
    b.comment("if (n < 0) n = 0; e->filename_len = n;")
    b.mov(R7, R0)
    read, fits = _unique(b, "read"), _unique(b, "fits")
    b.jsge(R7, 0, read)
    b.mov(R7, 0)
    b.label(read)
    b.jle(R7, FILENAME_MAX - 1, fits)
    b.mov(R7, FILENAME_MAX)
    _flag(b, FILENAME_TRUNCATED)
    b.label(fits)
    b.stx(W, R6, FILENAME_LEN, R7)


def _submit(b, options):
    """Copy the event into the ring buffer with its real length; a record that does not fit
    is counted as lost (stats[EVENTS_LOST]).

    The reader is not woken for every record (a wake-up costs the reader far more than the
    record): only once :data:`WAKEUP_BYTES` are waiting; it also looks every
    :data:`READ_PERIOD` seconds, so that a quiet stream's records are printed by then.
    """
    b.comment("__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? "
              "BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;")
    wake, output = _unique(b, "wake"), _unique(b, "output")
    b.ld_map_fd(R1, "events")
    b.mov(R2, BPF_RB_AVAIL_DATA)
    b.call("ringbuf_query")
    b.mov(R4, BPF_RB_NO_WAKEUP)
    b.jge(R0, wakeup_bytes(options), wake)
    b.ja(output)
    b.label(wake)
    b.mov(R4, BPF_RB_FORCE_WAKEUP)
    b.label(output)
    b.comment("if (bpf_ringbuf_output(&events, e, DATA + e->filename_len + e->argv_len, flags))"
              " stats[EVENTS_LOST] += 1;")
    bounded = _unique(b, "bounded")
    b.ldx(W, R3, R6, ARGV_LEN)
    b.jle(R3, options.max_args_size, bounded)  # (the verifier wants a bounded size)
    b.mov(R3, 0)
    b.label(bounded)
    b.add(R3, R7)
    b.add(R3, DATA)
    b.mov(R2, R6)
    b.ld_map_fd(R1, "events")
    b.call("ringbuf_output")
    b.jeq(R0, 0, "out")
    _count_stat(b, EVENTS_LOST)
    b.ja("out")


def wakeup_bytes(options):
    """How much waits in the ring before the reader is woken: an eighth of the ring, at most
    64 KiB (a few hundred records)."""
    return min(options.buffer_size // 8, 64 << 10)


# -- the programs --------------------------------------------------------------------------

ENTER_ARGS = {  # system call: (its number here, offsets of filename and argv in the ctx)
    SYSCALL_EXECVE: ("execve", 16, 24),
    SYSCALL_EXECVEAT: ("execveat", 24, 32),
}


def enter(syscall):
    """sys_enter_execve(at): keep the caller's name, the file name and argument pointers and
    the system call for the outcome, by thread id."""
    name, filename_at, argv_at = ENTER_ARGS[syscall]
    b = Builder()
    b.comment("struct inflight start = {.filename = ctx->filename, .argv = ctx->argv, "
              f".syscall = {name.upper()}}};")
    b.ldx(DW, R2, R1, filename_at)
    b.stx(DW, R10, INFLIGHT_SLOT + IF_FILENAME, R2)
    b.ldx(DW, R2, R1, argv_at)
    b.stx(DW, R10, INFLIGHT_SLOT + IF_ARGV, R2)
    b.st(DW, R10, INFLIGHT_SLOT + IF_SYSCALL, syscall)
    b.comment("bpf_get_current_comm(start.comm, 16);")
    b.mov(R1, R10)
    b.add(R1, INFLIGHT_SLOT + IF_COMM)
    b.mov(R2, TASK_COMM_LEN)
    b.call("get_current_comm")
    b.comment("__u32 tid = bpf_get_current_pid_tgid(); "
              "bpf_map_update_elem(&inflight, &tid, &start, BPF_ANY);")
    b.call("get_current_pid_tgid")
    b.stx(W, R10, TID_SLOT, R0)
    _update(b, "inflight", TID_SLOT, INFLIGHT_SLOT, UpdateFlags.ANY)
    b.mov(R0, 0)
    b.exit()
    return b.instructions


def success(options):
    """sched_process_exec: count the exec, and build its event from the new image."""
    b = Builder()
    b.comment("pid_t old_pid = ctx->old_pid; __u32 loc = ctx->__data_loc_filename;")
    b.ldx(W, R2, R1, 16)
    b.stx(W, R10, OLD_PID, R2)
    b.ldx(W, R2, R1, 8)
    b.stx(W, R10, DATALOC, R2)
    b.stx(DW, R10, SAVED, R1)
    _ids(b)
    _filters(b, options)
    if options.metrics:
        _count_metrics(b, failed=False)
    _count(b, success=True)
    if options.emit:
        _header(b, lambda b: b.mov(R1, 0))
        _from_inflight(b, lambda b: b.ldx(W, R1, R10, OLD_PID))
        b.comment("n = bpf_probe_read_kernel_str(e->data, FILENAME_MAX, (void *)ctx + "
                  "(loc & 0xffff));")
        b.ldx(DW, R3, R10, SAVED)
        b.ldx(W, R2, R10, DATALOC)
        b.and_(R2, 0xFFFF)
        b.add(R3, R2)
        b.mov(R1, R6)
        b.add(R1, DATA)
        b.mov(R2, FILENAME_MAX)
        b.call("probe_read_kernel_str")
        _filename_length(b)
        _new_image_argv(b, options)
        _submit(b, options)
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    return b.instructions


def _new_image_argv(b, options):
    """The arguments the new program got: ``mm->arg_start .. arg_end``, at most
    max_args_size bytes of them; ``argv_total`` is the true size."""
    b.core_read(R0, R9, TASK, "mm->arg_start", stack=TMP)
    b.stx(DW, R10, CURSOR, R0)
    b.core_read(R0, R9, TASK, "mm->arg_end", stack=TMP)
    b.comment("long total = arg_end - arg_start; if (total < 0) total = 0;")
    b.ldx(DW, R1, R10, CURSOR)
    b.sub(R0, R1)
    positive, fits = _unique(b, "positive"), _unique(b, "fits")
    b.jsge(R0, 0, positive)
    b.mov(R0, 0)
    b.label(positive)
    b.stx(W, R6, ARGV_TOTAL, R0)
    b.comment(f"__u32 len = total; if (len > {options.max_args_size}) "
              "{ len = max; e->flags |= ARGV_TRUNCATED; }")
    b.jle(R0, options.max_args_size, fits)
    b.mov(R0, options.max_args_size)
    _flag(b, ARGV_TRUNCATED)
    b.label(fits)
    b.stx(W, R6, ARGV_LEN, R0)
    b.comment("if (bpf_probe_read_user(e->data + n, len, arg_start)) { e->argv_len = 0; "
              "e->flags |= ARGV_UNREADABLE; }")
    b.mov(R2, R0)
    b.mov(R1, R6)
    b.add(R1, DATA)
    b.add(R1, R7)
    b.ldx(DW, R3, R10, CURSOR)
    b.call("probe_read_user")
    read = _unique(b, "read")
    b.jeq(R0, 0, read)
    b.st(W, R6, ARGV_LEN, 0)
    _flag(b, ARGV_UNREADABLE)
    b.label(read)


def _flag(b, bit):
    """e->flags |= bit; (clobbers r1)"""
    b.ldx(H, R1, R6, FLAGS)
    b.or_(R1, bit)
    b.stx(H, R6, FLAGS, R1)


def failure(options, syscall):
    """sys_exit_execve(at) with a negative return: count the failed exec, and build its event
    from what the caller passed (still in its memory: the kernel has just copied it)."""
    b = Builder()
    b.comment("long ret = ctx->ret; if (ret >= 0) return 0;  /* successes: sched_process_exec */")
    b.ldx(DW, R2, R1, 16)
    b.jsge(R2, 0, "out")
    b.stx(DW, R10, SAVED, R2)
    _ids(b)
    _filters(b, options)
    if options.metrics:
        _count_metrics(b, failed=True)
    _count(b, success=False)
    if options.emit:
        _header(b, lambda b: b.ldx(DW, R1, R10, SAVED))
        _from_inflight(b, lambda b: b.ldx(W, R1, R10, TID_SLOT))
        b.comment("if (!start) { e->syscall = <this exit's>; }  /* and no name or arguments */")
        started = _unique(b, "started")
        b.jne(R0, 0, started)
        b.st(H, R6, SYSCALL, syscall)
        b.label(started)
        b.comment("n = bpf_probe_read_user_str(e->data, FILENAME_MAX, start.filename);")
        b.mov(R0, 0)
        b.ldx(DW, R3, R10, INFLIGHT_SLOT + IF_FILENAME)
        none = _unique(b, "nofile")
        b.jeq(R3, 0, none)
        b.mov(R1, R6)
        b.add(R1, DATA)
        b.mov(R2, FILENAME_MAX)
        b.call("probe_read_user_str")
        b.label(none)
        _filename_length(b)
        _passed_argv(b, options)
        _submit(b, options)
    b.label("out")
    b.mov(R0, 0)
    b.exit()
    if options.emit:
        _argv_step(b, options)
    return b.instructions


ARGV_BUDGET = 1 << 16  # arguments a failed exec's walk looks at, at most


def _passed_argv(b, options):
    """The arguments the caller passed, walked by ``bpf_loop`` (one :func:`_argv_step` per
    argument pointer): copied one after the other while max_args and max_args_size allow,
    measured after that, so that ``argv_total`` is the true size. More than
    :data:`ARGV_BUDGET` arguments leave it unknown (ARGV_TOTAL_UNKNOWN)."""
    walked = _unique(b, "walked")
    b.comment("e->argv = start.argv; if (e->argv) bpf_loop(ARGV_BUDGET, argv_step, NULL, 0);")
    b.ldx(DW, R1, R10, INFLIGHT_SLOT + IF_ARGV)
    b.mov(R2, R6)  # the work area is past the 16-bit offset of a store
    b.add(R2, options.work)
    b.stx(DW, R2, W_ARGV, R1)
    b.jeq(R1, 0, walked)
    b.mov(R1, ARGV_BUDGET)
    b.ld_func(R2, "argv_step")
    b.mov(R3, 0)
    b.mov(R4, 0)
    b.call("loop")
    b.comment("if (all ARGV_BUDGET steps ran and argv[ARGV_BUDGET]) the total is unknown;")
    b.jne(R0, ARGV_BUDGET, walked)
    b.mov(R3, R6)
    b.add(R3, options.work)
    b.ldx(DW, R3, R3, W_ARGV)
    b.add(R3, ARGV_BUDGET * 8)
    b.mov(R1, R10)
    b.add(R1, TMP)
    b.mov(R2, 8)
    b.call("probe_read_user")
    b.jne(R0, 0, walked)
    b.ldx(DW, R1, R10, TMP)
    b.jeq(R1, 0, walked)
    _flag(b, ARGV_TRUNCATED | ARGV_TOTAL_UNKNOWN)
    b.label(walked)


def _argv_step(b, options):
    """``static long argv_step(__u64 i, void *ctx)``: argument ``i`` of a failed exec. The
    event is this CPU's scratch (looked up again: a callback has its own frame); its
    ``argv_len`` is where the next argument goes, ``argv_total`` the size so far. Returns 1
    to stop (the end of argv, or memory that cannot be read), 0 to go on."""
    room, stop, measure, cut = (_unique(b, n) for n in ("room", "stop", "measure", "cut"))
    b.label("argv_step")
    b.comment("static long argv_step(__u64 i, void *ctx) { struct event *e = scratch[cpu];")
    b.mov(R7, R1)
    b.call("get_smp_processor_id")
    b.stx(W, R10, KEY, R0)
    _lookup(b, "scratch", KEY)
    b.jeq(R0, 0, stop)
    b.mov(R6, R0)
    b.comment("const char *arg; if (bpf_probe_read_user(&arg, 8, e->argv + i)) stop;")
    b.mov(R3, R7)
    b.lsh(R3, 3)
    b.mov(R1, R6)
    b.add(R1, options.work)
    b.ldx(DW, R1, R1, W_ARGV)
    b.add(R3, R1)
    b.mov(R1, R10)
    b.add(R1, TMP)
    b.mov(R2, 8)
    b.call("probe_read_user")
    b.jne(R0, 0, "argv_unreadable")
    b.comment("if (!arg) return 1;  /* the end of argv */")
    b.ldx(DW, R3, R10, TMP)
    b.jeq(R3, 0, stop)
    b.comment(f"if (i >= {options.max_args} || off >= {options.max_args_size}) measure it;")
    b.jge(R7, options.max_args, measure)
    b.ldx(W, R8, R6, ARGV_LEN)
    b.jge(R8, options.max_args_size, measure)
    b.ldx(W, R9, R6, FILENAME_LEN)
    b.jgt(R9, FILENAME_MAX, stop)
    b.comment("long m = bpf_probe_read_user_str(e->data + n + off, room = max - off, arg);")
    b.mov(R2, options.max_args_size)
    b.sub(R2, R8)
    b.stx(DW, R10, ROOM, R2)
    b.mov(R1, R6)
    b.add(R1, DATA)
    b.add(R1, R9)
    b.add(R1, R8)
    b.call("probe_read_user_str")
    b.jsle(R0, 0, "argv_unreadable")
    b.comment("e->argv_len = off + m;")
    b.add(R8, R0)
    b.stx(W, R6, ARGV_LEN, R8)
    b.ldx(DW, R1, R10, ROOM)
    b.jeq(R0, R1, cut)
    b.comment("e->argv_total += m; return 0;")
    b.ldx(W, R1, R6, ARGV_TOTAL)
    b.add(R1, R0)
    b.stx(W, R6, ARGV_TOTAL, R1)
    b.mov(R0, 0)
    b.exit()
    b.label(cut)
    b.comment("the copy filled the room: the argument may go on; measure all of it")
    b.ldx(DW, R3, R10, TMP)
    b.label(measure)
    b.comment(f"e->flags |= ARGV_TRUNCATED; e->argv_total += bpf_probe_read_user_str(junk, "
              f"{MAX_ARG_STRLEN}, arg);")
    _flag(b, ARGV_TRUNCATED)
    b.mov(R1, R6)
    b.add(R1, options.junk)
    b.mov(R2, MAX_ARG_STRLEN)
    b.call("probe_read_user_str")
    b.jsle(R0, 0, "argv_unreadable")
    b.ldx(W, R1, R6, ARGV_TOTAL)
    b.add(R1, R0)
    b.stx(W, R6, ARGV_TOTAL, R1)
    b.mov(R0, 0)
    b.exit()
    b.label("argv_unreadable")
    _flag(b, ARGV_UNREADABLE)
    b.label(stop)
    b.mov(R0, 1)
    b.exit()


def collection_spec(options, cpus):
    """The event mode's maps and programs, for ``options``; ``cpus`` is the number of
    possible CPUs (one scratch area each)."""
    programs = {
        "enter_execve": ProgramSpec("enter_execve", ProgType.TRACEPOINT,
                                    enter(SYSCALL_EXECVE),
                                    section="tracepoint/syscalls/sys_enter_execve"),
        "enter_execveat": ProgramSpec("enter_execveat", ProgType.TRACEPOINT,
                                      enter(SYSCALL_EXECVEAT),
                                      section="tracepoint/syscalls/sys_enter_execveat"),
        "exec_success": ProgramSpec("exec_success", ProgType.TRACEPOINT, success(options),
                                    section="tracepoint/sched/sched_process_exec"),
        "exec_failure": ProgramSpec("exec_failure", ProgType.TRACEPOINT,
                                    failure(options, SYSCALL_EXECVE),
                                    section="tracepoint/syscalls/sys_exit_execve"),
        "execat_failure": ProgramSpec("execat_failure", ProgType.TRACEPOINT,
                                      failure(options, SYSCALL_EXECVEAT),
                                      section="tracepoint/syscalls/sys_exit_execveat"),
    }
    if not options.emit:  # the starts are kept only for the events
        del programs["enter_execve"], programs["enter_execveat"]
    if options.failed_only:  # successes are neither counted nor shown
        del programs["exec_success"]
    if options.success_only:
        del programs["exec_failure"], programs["execat_failure"]
    btf = None
    if options.emit and not options.success_only:  # the argument walk's callback needs BTF
        btf, infos = function_btf({
            name: (programs[name].insns, [("argv_step", CALLBACK)])
            for name in ("exec_failure", "execat_failure")})
        for name, info in infos.items():
            programs[name].func_info = info
    return CollectionSpec(maps=map_specs(options, cpus), programs=programs, btf=btf)
