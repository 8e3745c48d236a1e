/* A libbpf-style tracker: BTF-defined hash and per-CPU array maps, two tracepoints. */
#include "bpf_defs.h"

#define COMM_LEN 16

struct exec_key {
	__u32 pid;
	char comm[COMM_LEN];
};

struct exec_stats {
	__u64 count;
	__u64 last_ns;
};

struct {
	__uint(type, MAP_HASH);
	__uint(max_entries, 1024);
	__type(key, struct exec_key);
	__type(value, struct exec_stats);
} exec_count SEC(".maps");

struct {
	__uint(type, MAP_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} event_total SEC(".maps");

static __noinline void count_event(__u32 slot)
{
	__u64 *total = bpf_map_lookup_elem(&event_total, &slot);

	if (total)
		*total += 1;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int sys_enter_execve(void *ctx)
{
	struct exec_key key = {};
	struct exec_stats fresh = {1, 0};
	struct exec_stats *stats;

	key.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	stats = bpf_map_lookup_elem(&exec_count, &key);
	if (stats) {
		stats->count += 1;
		stats->last_ns = bpf_ktime_get_ns();
	} else {
		fresh.last_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&exec_count, &key, &fresh, BPF_ANY);
	}
	count_event(0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(void *ctx)
{
	count_event(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
