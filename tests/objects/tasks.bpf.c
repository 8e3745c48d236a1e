/* Kernel symbols: kfunc calls (bpf_task_acquire/release, bpf_task_from_pid, RCU read
 * sections), a typeless ksym (an address from /proc/kallsyms), and __weak ones that do not
 * exist, typed and typeless, guarded by bpf_ksym_exists(). Typed ksyms that exist: runqlen. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "objects.h"

#define NR_getppid 110

extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern void bpf_pybpf_absent_kfunc(void) __ksym __weak;	/* no such kfunc */

extern const int pybpf_absent_var __ksym __weak;		/* typed, absent */
extern const void do_unlinkat __ksym;				/* typeless: kallsyms */
extern const void pybpf_absent_symbol __ksym __weak;		/* typeless, absent */

const volatile int targ_pid = 0;	/* whose parent to look up (0: the caller's) */

struct task_seen {
	unsigned long long unlinkat_addr;	/* &do_unlinkat */
	unsigned long long absent_addr;		/* &pybpf_absent_symbol: 0 */
	int parent_tgid;			/* the looked-up task's parent */
	int new_tasks;				/* tasks created (task_newtask) */
	int last_new_tgid;
	int absent_kfunc_exists;		/* bpf_ksym_exists(): 0 */
	int absent_var_exists;			/* 0 */
};

struct task_seen seen = {};

SEC("tp_btf/task_newtask")
int BPF_PROG(task_newtask, struct task_struct *task, unsigned long long clone_flags)
{
	struct task_struct *acquired = bpf_task_acquire(task);

	if (!acquired)
		return 0;
	__sync_fetch_and_add(&seen.new_tasks, 1);
	seen.last_new_tgid = acquired->tgid;
	bpf_task_release(acquired);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(lookup_parent, struct pt_regs *regs, long id)
{
	struct task_struct *task;
	int pid = targ_pid ? targ_pid : (int)(bpf_get_current_pid_tgid() >> 32);

	if (id != NR_getppid)
		return 0;
	task = bpf_task_from_pid(pid);
	if (task) {
		bpf_rcu_read_lock();
		seen.parent_tgid = task->real_parent->tgid;
		bpf_rcu_read_unlock();
		bpf_task_release(task);
	}
	seen.unlinkat_addr = (unsigned long long)&do_unlinkat;
	seen.absent_addr = (unsigned long long)&pybpf_absent_symbol;
	seen.absent_kfunc_exists = bpf_ksym_exists(bpf_pybpf_absent_kfunc);
	seen.absent_var_exists = bpf_ksym_exists(&pybpf_absent_var);
	if (bpf_ksym_exists(bpf_pybpf_absent_kfunc))
		bpf_pybpf_absent_kfunc();	/* dead code: the verifier drops it */
	if (bpf_ksym_exists(&pybpf_absent_var))
		seen.absent_var_exists = pybpf_absent_var;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
