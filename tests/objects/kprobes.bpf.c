/* kprobe, kretprobe and ksyscall programs: they load (as KPROBE programs) on any kernel;
 * attaching them needs CONFIG_KPROBES. BPF_KSYSCALL reads LINUX_HAS_SYSCALL_WRAPPER. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

unsigned long long unlinks = 0;
long long last_ret = 0;

SEC("kprobe/do_unlinkat")
int BPF_KPROBE(unlink_entry, int dfd, struct filename *name)
{
	__sync_fetch_and_add(&unlinks, 1);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int BPF_KRETPROBE(unlink_exit, long ret)
{
	last_ret = ret;
	return 0;
}

SEC("ksyscall/unlinkat")
int BPF_KSYSCALL(unlinkat_syscall, int dfd, const char *pathname, int flag)
{
	__sync_fetch_and_add(&unlinks, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
