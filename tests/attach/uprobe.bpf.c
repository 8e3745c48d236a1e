// SPDX-License-Identifier: GPL-2.0
/* uprobe and uretprobe on libc's getpid(), attached by section name as libbpf does: the
 * library is found by name (libc.so.6), the function by its symbol. Only the process whose
 * id is in target[0] is counted. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "counts.h"
#include "target.h"

enum { GETPID_CALLS, GETPID_RETURNS, GETPID_RETURNED };

SEC("uprobe/libc.so.6:getpid")
int BPF_KPROBE(getpid_entry)
{
	if (is_target())
		count(GETPID_CALLS, 1);
	return 0;
}

SEC("uretprobe/libc.so.6:getpid")
int BPF_KRETPROBE(getpid_exit, int ret)
{
	if (is_target()) {
		count(GETPID_RETURNS, 1);
		count(GETPID_RETURNED, ret);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
