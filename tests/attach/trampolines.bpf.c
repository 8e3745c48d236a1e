// SPDX-License-Identifier: GPL-2.0
/* BPF trampoline programs, whose hook is a kernel function named at load time
 * (attach_btf_id): fentry, fexit, fmod_ret and lsm. Only the process whose id is in
 * target[0] is counted; target[1] != 0 makes getsid() fail with EPERM for it (fmod_ret,
 * lsm). Some kernels refuse to load trampolines at all (a security policy). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "counts.h"
#include "target.h"

#define EPERM 1

enum { FENTRY, FEXIT, FEXIT_RET, FMOD_RET, LSM };

SEC("fentry/do_nanosleep")
int BPF_PROG(nanosleep_entry, struct hrtimer_sleeper *sleeper, enum hrtimer_mode mode)
{
	if (is_target())
		count(FENTRY, 1);
	return 0;
}

SEC("fexit/do_nanosleep")
int BPF_PROG(nanosleep_exit, struct hrtimer_sleeper *sleeper, enum hrtimer_mode mode, int ret)
{
	if (is_target()) {
		count(FEXIT, 1);
		count(FEXIT_RET, ret == 0);
	}
	return 0;
}

SEC("fmod_ret/security_task_getsid")
int BPF_PROG(getsid_fmod_ret, struct task_struct *p)
{
	if (!is_target())
		return 0;
	count(FMOD_RET, 1);
	return setting(1) ? -EPERM : 0;  /* non-zero: security_task_getsid is skipped */
}

SEC("lsm/task_getsid")
int BPF_PROG(getsid_lsm, struct task_struct *p, int ret)
{
	if (!is_target())
		return ret;
	count(LSM, 1);
	return setting(1) ? -EPERM : ret;
}

char LICENSE[] SEC("license") = "GPL";
