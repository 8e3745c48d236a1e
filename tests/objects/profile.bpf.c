/* profile: a perf_event program sampling stacks on a CPU clock, into a STACK_TRACE map
 * (value_size from __uint(value_size): PERF_MAX_STACK_DEPTH frames) and a count per stack. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "objects.h"

const volatile bool kernel_stacks_only = false;
const volatile bool user_stacks_only = false;
const volatile int targ_tgid = -1;	/* only this process (-1: every process) */

unsigned long long samples = 0;		/* .bss */

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(unsigned int));
	__uint(value_size, PERF_MAX_STACK_DEPTH * sizeof(unsigned long long));
	__uint(max_entries, 1024);
} stackmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct stack_key);
	__type(value, unsigned long long);
} counts SEC(".maps");

SEC("perf_event")
int do_perf_event(struct bpf_perf_event_data *ctx)
{
	unsigned long long id = bpf_get_current_pid_tgid(), one = 1, *count;
	int tgid = id >> 32;
	struct stack_key key = {};

	if (targ_tgid != -1 && targ_tgid != tgid)
		return 0;
	__sync_fetch_and_add(&samples, 1);
	key.pid = tgid;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
	key.user_stack_id = kernel_stacks_only ? -1 :
		bpf_get_stackid(&ctx->regs, &stackmap, BPF_F_USER_STACK);
	key.kern_stack_id = user_stacks_only ? -1 : bpf_get_stackid(&ctx->regs, &stackmap, 0);
	count = bpf_map_lookup_elem(&counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
