/* The counters every attach test object keeps: one u64 per program, by index, in an array
 * map the tests read. */
#ifndef PYBPF_TEST_COUNTS_H
#define PYBPF_TEST_COUNTS_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline void count(__u32 index, __u64 amount)
{
	__u64 *value = bpf_map_lookup_elem(&counts, &index);

	if (value)
		__sync_fetch_and_add(value, amount);
}

#endif
