/* execsnoop, as libbpf-tools writes it: execve events through a perf buffer, filtered by
 * `const volatile` knobs in .rodata that user space sets before load. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "objects.h"

const volatile unsigned int targ_uid = INVALID_UID;	/* only this user (-1: everyone) */
const volatile bool ignore_failed = true;		/* drop execs that fail */
const volatile char targ_comm[TASK_COMM_LEN] = {};	/* only this command ("": any) */

unsigned long long exec_count = 0;			/* .bss: execs seen */
unsigned long long dropped = 0;				/* .bss: execs filtered out */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, int);
	__type(value, struct exec_event);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);	/* no max_entries: one per CPU */
	__uint(key_size, sizeof(int));
	__uint(value_size, sizeof(int));
} events SEC(".maps");

static __always_inline bool comm_allowed(const char *comm)
{
	int i;

	if (!targ_comm[0])
		return true;
	for (i = 0; i < TASK_COMM_LEN && targ_comm[i]; i++)
		if (comm[i] != targ_comm[i])
			return false;
	return true;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int execve_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_event event = {};
	unsigned int uid = (unsigned int)bpf_get_current_uid_gid();
	int pid = bpf_get_current_pid_tgid() >> 32;

	__sync_fetch_and_add(&exec_count, 1);
	if (targ_uid != INVALID_UID && targ_uid != uid) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	event.pid = pid;
	event.ppid = BPF_CORE_READ(task, real_parent, tgid);
	event.uid = uid;
	bpf_map_update_elem(&execs, &pid, &event, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int execve_exit(struct trace_event_raw_sys_exit *ctx)
{
	int pid = bpf_get_current_pid_tgid() >> 32;
	struct exec_event *event;

	event = bpf_map_lookup_elem(&execs, &pid);
	if (!event)
		return 0;
	event->retval = ctx->ret;
	if (ignore_failed && ctx->ret < 0)
		goto cleanup;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	if (!comm_allowed(event->comm))
		goto cleanup;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, event, sizeof(*event));
cleanup:
	bpf_map_delete_elem(&execs, &pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
