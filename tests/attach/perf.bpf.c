// SPDX-License-Identifier: GPL-2.0
/* A perf_event program: counts the samples of the perf events it is attached to, per CPU. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} samples SEC(".maps");

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&samples, &zero);

	if (value)
		*value += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
