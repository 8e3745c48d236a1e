// SPDX-License-Identifier: GPL-2.0
/* Events for `pybpf load`: on each getppid() of process targ_pid (a const volatile knob),
 * a struct pybpf_event through the ring buffer `ring`, a struct tick through the perf buffer
 * `perf`, and a count in the log2 histogram `hist` (slot log2(seq)). struct decoy has the
 * size of struct pybpf_event, so that which of the two `ring` carries must be chosen. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define NR_SLOTS 32

struct pybpf_event {
	__u32 pid;
	__u32 seq;
	char comm[16];
};

struct tick {
	__u32 pid;
	__u32 cpu;
	__u64 seq;
};

struct decoy {
	__u64 a, b, c;
};

/* Types the programs only use locally are not in BTF; these keep them there (as cilium's
 * bpf2go asks). */
const struct pybpf_event *unused_event __attribute__((unused));
const struct tick *unused_tick __attribute__((unused));
const struct decoy *unused_decoy __attribute__((unused));

const volatile __u32 targ_pid = 0;
__u32 seq = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} hist SEC(".maps");

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r = 0;

	for (int i = 0; i < 31 && v > 1; i++) {
		v >>= 1;
		r++;
	}
	return r;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	struct tick tick = {};
	struct pybpf_event *event;
	__u32 pid = bpf_get_current_pid_tgid() >> 32, n, slot;
	__u64 *count;

	if (pid != targ_pid)
		return 0;
	n = ++seq;  /* one thread calls getppid(): no race */
	event = bpf_ringbuf_reserve(&ring, sizeof(*event), 0);
	if (event) {
		event->pid = pid;
		event->seq = n;
		bpf_get_current_comm(event->comm, sizeof(event->comm));
		bpf_ringbuf_submit(event, 0);
	}
	tick.pid = pid;
	tick.cpu = bpf_get_smp_processor_id();
	tick.seq = n;
	bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &tick, sizeof(tick));
	slot = log2_u32(n);
	count = bpf_map_lookup_elem(&hist, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
