/* biolatency: block I/O latency from BTF tracepoints, and every kind of .kconfig extern
 * libbpf fills in: LINUX_KERNEL_VERSION, an int, a bool, a tristate, a char array, __weak
 * ones the kernel's config does not set or does not have, and a virtual LINUX_ one. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "objects.h"

extern int LINUX_KERNEL_VERSION __kconfig;
extern unsigned int CONFIG_HZ __kconfig;			/* CONFIG_HZ=250: an int */
extern bool CONFIG_BPF_SYSCALL __kconfig;			/* =y: a bool */
extern bool CONFIG_KPROBES __kconfig __weak;			/* "is not set": false */
extern enum libbpf_tristate CONFIG_BLK_DEV __kconfig __weak;	/* =y: TRI_YES */
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig;		/* ="(none)": a string */
extern unsigned long long CONFIG_PYBPF_ABSENT __kconfig __weak;	/* absent: 0 */
extern bool LINUX_HAS_BPF_COOKIE __kconfig __weak;		/* virtual: bpf cookies */

const volatile bool targ_ms = false;

struct kconfig_seen {				/* what the program saw, for user space */
	unsigned int kernel_version;
	unsigned int hz;
	unsigned long long absent;
	int blk_dev;
	char hostname[16];
	unsigned char bpf_syscall;
	unsigned char kprobes;
	unsigned char cookie;
	unsigned char calls;
};

struct kconfig_seen seen = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct request *);
	__type(value, unsigned long long);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} hist SEC(".maps");

SEC("tp_btf/block_rq_issue")
int BPF_PROG(block_rq_issue, struct request *rq)
{
	unsigned long long ts = bpf_ktime_get_ns();

	bpf_map_update_elem(&start, &rq, &ts, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(block_rq_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	unsigned long long *tsp, delta, *count;
	unsigned int slot;

	tsp = bpf_map_lookup_elem(&start, &rq);
	if (!tsp)
		return 0;
	delta = (bpf_ktime_get_ns() - *tsp) / (targ_ms ? 1000000U : 1000U);
	slot = log2l(delta);
	count = bpf_map_lookup_elem(&hist, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	bpf_map_delete_elem(&start, &rq);
	return 0;
}

SEC("tp/syscalls/sys_enter_getpgid")
int record_kconfig(void *ctx)
{
	seen.kernel_version = LINUX_KERNEL_VERSION;
	seen.hz = CONFIG_HZ;
	seen.bpf_syscall = CONFIG_BPF_SYSCALL;
	seen.kprobes = CONFIG_KPROBES;
	seen.blk_dev = CONFIG_BLK_DEV;
	seen.absent = CONFIG_PYBPF_ABSENT;
	seen.cookie = LINUX_HAS_BPF_COOKIE;
	__builtin_memcpy(seen.hostname, CONFIG_DEFAULT_HOSTNAME, sizeof(seen.hostname));
	seen.calls++;
	if (CONFIG_KPROBES)		/* false here: the verifier drops this branch */
		bpf_printk("kprobes");
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
