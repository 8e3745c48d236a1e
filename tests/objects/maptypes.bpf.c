/* Map definitions as libbpf reads them: maps of maps with `.values` initialisers, a program
 * array filled the same way (tail calls), map_extra (bloom filter hashes), numa_node,
 * map_flags, and the map types the kernel creates without BTF key/value types. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, unsigned int);
	__array(values, struct inner_map);
} outer_array SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, unsigned int);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 16);
		__type(key, unsigned int);
		__type(value, unsigned int);
	});
} outer_hash SEC(".maps");

int tail_a(void *ctx);
int tail_b(void *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, unsigned int);
	__array(values, int (void *));
} jump_table SEC(".maps") = {
	.values = { [0] = (void *)&tail_a, [2] = (void *)&tail_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__type(value, unsigned int);
	__uint(map_extra, 3);			/* three hash functions */
} seen_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(numa_node, 0);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} lazy_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 128);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 16);
	__type(value, unsigned int);		/* queues refuse BTF: created without it */
} pid_queue SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16);
	__type(key, unsigned int);
	__type(value, unsigned long long[127]);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, unsigned int);
	__type(value, unsigned int);
} cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, unsigned long long);
} task_calls SEC(".maps");

unsigned long long tail_calls[3] = {};	/* .bss: which tail was called */

SEC("tp/syscalls/sys_enter_getpid")
int use_maps(void *ctx)
{
	unsigned int pid = bpf_get_current_pid_tgid() >> 32, key = 2, slot = 1;
	unsigned long long one = 1, *value;
	void *inner;

	inner = bpf_map_lookup_elem(&outer_array, &key);
	if (inner) {
		value = bpf_map_lookup_elem(inner, &slot);
		if (value)
			__sync_fetch_and_add(value, 1);
	}
	bpf_map_push_elem(&seen_pids, &pid, 0);
	bpf_map_update_elem(&lazy_hash, &pid, &one, BPF_ANY);
	bpf_map_update_elem(&lru, &pid, &one, BPF_ANY);
	bpf_map_push_elem(&pid_queue, &pid, BPF_EXIST);
	bpf_get_stackid(ctx, &stacks, 0);
	bpf_tail_call(ctx, &jump_table, pid & 1 ? 2 : 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int tail_a(void *ctx)
{
	__sync_fetch_and_add(&tail_calls[0], 1);
	return 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int tail_b(void *ctx)
{
	__sync_fetch_and_add(&tail_calls[2], 1);
	return 0;
}

SEC("tp_btf/task_newtask")
int count_task(unsigned long long *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	unsigned long long *calls;

	calls = bpf_task_storage_get(&task_calls, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (calls)
		__sync_fetch_and_add(calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
