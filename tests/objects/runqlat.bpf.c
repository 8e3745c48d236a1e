/* runqlat: scheduler run-queue latency as a log2 histogram, from BTF tracepoints (tp_btf)
 * and a raw tracepoint, with .kconfig's LINUX_KERNEL_VERSION. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "objects.h"

#define TASK_RUNNING 0

const volatile bool targ_ms = false;	/* milliseconds instead of microseconds */
const volatile int targ_tgid = 0;	/* only this process (0: every process) */

extern int LINUX_KERNEL_VERSION __kconfig;

unsigned long long switches = 0;	/* .bss: context switches seen by the raw tracepoint */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);	/* a log2 histogram: slot -> count */
	__uint(max_entries, MAX_SLOTS);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} hist SEC(".maps");

static int trace_enqueue(unsigned int tgid, unsigned int pid)
{
	unsigned long long ts;

	if (!pid || (targ_tgid && targ_tgid != tgid))
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &pid, &ts, BPF_ANY);
	return 0;
}

static unsigned int task_state(struct task_struct *task)
{
	if (LINUX_KERNEL_VERSION >= KERNEL_VERSION(5, 14, 0))
		return BPF_CORE_READ(task, __state);
	return 1;	/* older kernels called it state: not built here */
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	return trace_enqueue(p->tgid, p->pid);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	return trace_enqueue(p->tgid, p->pid);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	unsigned long long *tsp, delta, slot;
	unsigned int pid = next->pid;

	if (task_state(prev) == TASK_RUNNING)
		trace_enqueue(prev->tgid, prev->pid);
	tsp = bpf_map_lookup_elem(&start, &pid);
	if (!tsp)
		return 0;
	delta = bpf_ktime_get_ns() - *tsp;
	delta /= targ_ms ? 1000000U : 1000U;
	slot = log2l(delta);
	{
		unsigned int key = slot;
		unsigned long long *count = bpf_map_lookup_elem(&hist, &key);

		if (count)
			__sync_fetch_and_add(count, 1);
	}
	bpf_map_delete_elem(&start, &pid);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw)
{
	__sync_fetch_and_add(&switches, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
