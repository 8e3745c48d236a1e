// SPDX-License-Identifier: GPL-2.0
/* A tp_btf program and a task iterator, whose hooks are named at load time (attach_btf_id);
 * and a kprobe and ksyscall, which a kernel without CONFIG_KPROBES loads but cannot
 * attach. Only the process whose id is in target[0] is counted or listed (the iterator
 * lists every task it is given when target[0] is 0). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "counts.h"
#include "target.h"

#define NR_getppid 110  /* x86_64 */

enum { TP_BTF, KPROBE, KSYSCALL };

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	if (is_target() && id == NR_getppid)
		count(TP_BTF, 1);
	return 0;
}

SEC("iter/task")
int list_threads(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (task && (!setting(0) || task->tgid == setting(0)))
		BPF_SEQ_PRINTF(seq, "%d %s\n", task->pid, task->comm);
	return 0;
}

SEC("kprobe/do_nanosleep")
int BPF_KPROBE(nanosleep_kprobe)
{
	count(KPROBE, 1);
	return 0;
}

SEC("ksyscall/getppid")
int BPF_KSYSCALL(getppid_ksyscall)
{
	count(KSYSCALL, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
