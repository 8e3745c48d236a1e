// SPDX-License-Identifier: GPL-2.0
/*
 * Reference C for the execve tracker's eBPF programs: programs/execve_bpf.py builds the same
 * programs instruction for instruction with the pybpf DSL. Keep the two in step.
 *
 * Built the way a libbpf user would:   clang -O2 -g -target bpf -c program.c -o program.o
 * and loaded with pybpf's own ELF loader: python -m pybpf load program.o
 *
 * No kernel headers are needed: the few types and helper prototypes used are declared here.
 */

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define EEXIST 17
#define TASK_COMM_LEN 16
#define MAX_PIDS 10240 /* the tracker's --max-pids default; it sets max_entries at load */

/* Helper functions are called by number: see the kernel's include/uapi/linux/bpf.h. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, __u32 size_of_buf) = (void *)16;

/* PID (the thread-group id users see) -> number of execve calls it made. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PIDS);
	__type(key, __u32);
	__type(value, __u64);
} exec_count SEC(".maps");

/* PID -> the name of the program it runs now (comm, TASK_COMM_LEN bytes). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PIDS);
	__type(key, __u32);
	__type(value, char[TASK_COMM_LEN]);
} process_names SEC(".maps");

/* Executions that could not be recorded because exec_count was full, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped_execs SEC(".maps");

/* Every exec call, successful or not: count it for the calling process. */
static __attribute__((always_inline)) int count_exec(void)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 *count = bpf_map_lookup_elem(&exec_count, &pid);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	/* First exec seen for this process: create its counter... */
	__u64 one = 1;
	long err = bpf_map_update_elem(&exec_count, &pid, &one, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* another thread of the process created it on another CPU meanwhile */
		count = bpf_map_lookup_elem(&exec_count, &pid);
		if (count)
			__sync_fetch_and_add(count, 1);
		return 0;
	}
	if (err) {
		/* the map is full (-E2BIG): say so instead of losing the exec silently */
		__u32 zero = 0;
		__u64 *dropped = bpf_map_lookup_elem(&dropped_execs, &zero);
		if (dropped)
			*dropped += 1;
		return 0;
	}
	/* ...and its name: the caller's own, kept if every exec fails. */
	char comm[TASK_COMM_LEN];
	bpf_get_current_comm(comm, sizeof(comm));
	bpf_map_update_elem(&process_names, &pid, comm, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int count_execve(void *ctx)
{
	return count_exec();
}

/* execveat() (fexecve(), systemd...) executes programs too */
SEC("tracepoint/syscalls/sys_enter_execveat")
int count_execveat(void *ctx)
{
	return count_exec();
}

/* A successful exec: the process now runs a new program, so record its new name. */
SEC("tracepoint/sched/sched_process_exec")
int name_process(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	char *name = bpf_map_lookup_elem(&process_names, &pid);
	if (name)
		bpf_get_current_comm(name, TASK_COMM_LEN); /* straight into the map value */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
