/* Probes on a user program's function (the attach API names the binary and the symbol):
 * calls counted at entry and return, and a sleepable uprobe.s that may fault user memory. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile int targ_tgid = 0;	/* only this process (0: every process) */

struct probe_seen {
	unsigned long long calls;
	unsigned long long returns;
	long long last_arg;
	long long last_ret;
	char first_bytes[8];		/* what uprobe.s read at its first argument */
};

struct probe_seen seen = {};

static bool traced(void)
{
	return !targ_tgid || targ_tgid == (int)(bpf_get_current_pid_tgid() >> 32);
}

SEC("uprobe")
int BPF_KPROBE(probe_entry, long arg)
{
	if (!traced())
		return 0;
	__sync_fetch_and_add(&seen.calls, 1);
	seen.last_arg = arg;
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(probe_return, long ret)
{
	if (!traced())
		return 0;
	__sync_fetch_and_add(&seen.returns, 1);
	seen.last_ret = ret;
	return 0;
}

SEC("uprobe.s")
int BPF_KPROBE(probe_sleepable, const char *text)
{
	if (traced())
		bpf_copy_from_user(&seen.first_bytes, sizeof(seen.first_bytes), text);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
