/* CO-RE relocations in a function two programs call (a bpf-to-bpf call into .text): each
 * program gets its own relocated copy, as libbpf gives it. Local types deliberately wrong. */
#include "types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct___sub {
	long unused[3];
	struct task_struct___sub *real_parent;
	int tgid;
} __attribute__((preserve_access_index));

struct {
	__uint(type, 1);	/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} parents SEC(".maps");

static __attribute__((noinline)) int record_parent(void)
{
	struct task_struct___sub *task = (void *)bpf_get_current_task();
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 parent = BPF_CORE_READ(task, real_parent, tgid);

	bpf_map_update_elem(&parents, &tgid, &parent, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	return record_parent();
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int on_getpgid(void *ctx)
{
	return record_parent();
}

char LICENSE[] SEC("license") = "GPL";
