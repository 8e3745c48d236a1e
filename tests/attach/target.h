/* The process the attach test objects watch, set by the tests: target[0] is its id;
 * target[1] is a switch some programs read (non-zero: deny). */
#ifndef PYBPF_TEST_TARGET_H
#define PYBPF_TEST_TARGET_H

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

static __always_inline __u32 setting(__u32 index)
{
	__u32 *value = bpf_map_lookup_elem(&target, &index);

	return value ? *value : 0;
}

static __always_inline int is_target(void)
{
	return setting(0) == bpf_get_current_pid_tgid() >> 32;
}

#endif
