/* opensnoop: openat events through a ring buffer, a knob in .rodata, a counter in a custom
 * .data.* section and a non-zero initialised .data variable. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "objects.h"

const volatile int targ_tgid = 0;		/* only this process (0: every process) */
const volatile bool targ_failed = false;	/* only failed opens */
int open_flags_mask = -1;			/* .data: a knob user space may change at run time */
unsigned long long opens SEC(".data.counters") = 0;	/* a custom data section */
unsigned long long failures SEC(".data.counters") = 0;

struct args {
	const char *fname;
	int flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, unsigned int);
	__type(value, struct args);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct trace_event_raw_sys_enter *ctx)
{
	unsigned long long id = bpf_get_current_pid_tgid();
	unsigned int tgid = id >> 32, tid = id;
	struct args args = {};

	if (targ_tgid && targ_tgid != tgid)
		return 0;
	args.fname = (const char *)ctx->args[1];
	args.flags = (int)ctx->args[2];
	bpf_map_update_elem(&start, &tid, &args, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	unsigned long long id = bpf_get_current_pid_tgid();
	unsigned int tid = id;
	struct open_event *event;
	struct args *args;
	int ret;

	args = bpf_map_lookup_elem(&start, &tid);
	if (!args)
		return 0;
	ret = ctx->ret;
	__sync_fetch_and_add(&opens, 1);
	if (ret < 0)
		__sync_fetch_and_add(&failures, 1);
	if (targ_failed && ret >= 0)
		goto cleanup;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event)
		goto cleanup;
	event->ts = bpf_ktime_get_ns();
	event->pid = id >> 32;
	event->flags = args->flags & open_flags_mask;
	event->ret = ret;
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	bpf_probe_read_user_str(event->fname, sizeof(event->fname), args->fname);
	bpf_ringbuf_submit(event, 0);
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
