/* One tiny program per kind of section name, to check the section-name table. */
#include "bpf_defs.h"

struct {
	__uint(type, MAP_LRU_HASH);
	__uint(max_entries, 16);
	__uint(map_flags, 0);
	__uint(pinning, PIN_BY_NAME);
	__type(key, __u64);
	__type(value, __u32);
} seen SEC(".maps");

SEC("kprobe/do_unlinkat")
int on_unlink(void *ctx) { return 0; }

SEC("kretprobe/do_unlinkat")
int on_unlink_ret(void *ctx) { return 0; }

SEC("raw_tp/sched_switch")
int on_switch(void *ctx) { return 0; }

SEC("tp/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 one = 1;

	bpf_map_update_elem(&seen, &id, &one, BPF_ANY);
	return 0;
}

SEC("perf_event")
int on_sample(void *ctx) { return 0; }

SEC("cgroup_skb/ingress")
int cg_ingress(struct __sk_buff *skb) { return 1; }

SEC("fentry/do_unlinkat")
int on_unlink_entry(void *ctx) { return 0; }

char LICENSE[] SEC("license") = "GPL";
