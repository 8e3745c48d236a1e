/* BPF iterators: programs the kernel runs once per object when user space reads the
 * iterator (a task, a map), printing with BPF_SEQ_PRINTF; iter.s is a sleepable one. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int targ_tgid = 0;	/* only this process's tasks (0: all) */

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	if (targ_tgid && task->tgid != targ_tgid)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "tgid pid comm\n");
	BPF_SEQ_PRINTF(seq, "%d %d %s\n", task->tgid, task->pid, task->comm);
	return 0;
}

SEC("iter/bpf_map")
int dump_bpf_map(struct bpf_iter__bpf_map *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_map *map = ctx->map;

	if (!map)
		return 0;
	BPF_SEQ_PRINTF(seq, "%u %s %u\n", map->id, map->name, map->max_entries);
	return 0;
}

SEC("iter.s/task")
int dump_task_sleepable(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	unsigned long long word = 0;

	if (!task || task->tgid != targ_tgid)
		return 0;
	/* a sleepable iterator may read user memory of the task it visits */
	bpf_copy_from_user_task(&word, sizeof(word), (void *)task->mm->arg_start, task, 0);
	BPF_SEQ_PRINTF(seq, "%d %llx\n", task->pid, word);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
