/* vfsstat and friends: fentry/fexit on kernel functions, fmod_ret on an LSM hook, lsm and
 * sleepable lsm.s programs: BTF-typed programs that need the kernel's BTF id of their
 * target (attach_btf_id) to load. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

enum { S_READ, S_WRITE, S_OPEN, S_OPEN_RET, S_EXEC, S_MAXSTAT };

unsigned long long stats[S_MAXSTAT] = {};	/* .bss: calls per operation */
unsigned long long last_exec_word = 0;		/* .bss: read by the sleepable program */

SEC("fentry/vfs_read")
int BPF_PROG(vfs_read_entry)
{
	__sync_fetch_and_add(&stats[S_READ], 1);
	return 0;
}

SEC("fexit/vfs_write")
int BPF_PROG(vfs_write_exit, struct file *file, const char *buf, size_t count, loff_t *pos,
	     ssize_t ret)
{
	if (ret >= 0)
		__sync_fetch_and_add(&stats[S_WRITE], 1);
	return 0;
}

SEC("fmod_ret/security_file_open")
int BPF_PROG(file_open_ret, struct file *file)
{
	__sync_fetch_and_add(&stats[S_OPEN_RET], 1);
	return 0;	/* 0: let the kernel's own checks decide */
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file)
{
	__sync_fetch_and_add(&stats[S_OPEN], 1);
	return 0;
}

SEC("lsm.s/bprm_committed_creds")
int BPF_PROG(exec_committed, struct linux_binprm *bprm)
{
	unsigned long long word = 0;

	/* bpf_copy_from_user may fault and sleep: only sleepable programs may call it */
	if (!bpf_copy_from_user(&word, sizeof(word), (void *)bprm->p))
		last_exec_word = word;
	__sync_fetch_and_add(&stats[S_EXEC], 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
