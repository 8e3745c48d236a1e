/* Legacy "maps" section (struct bpf_map_def) and two socket filters in one section. */
#include "bpf_defs.h"

struct bpf_map_def SEC("maps") packets = {
	.type = MAP_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 4,
};

struct bpf_map_def SEC("maps") lengths = {
	.type = MAP_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 64,
};

SEC("socket")
int count_packets(struct __sk_buff *skb)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&packets, &key);

	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

SEC("socket")
int record_length(struct __sk_buff *skb)
{
	__u32 len = skb->len;
	__u32 one = 1;

	bpf_map_update_elem(&lengths, &len, &one, BPF_ANY);
	return skb->len;
}

char _license[] SEC("license") = "GPL";
__u32 _version SEC("version") = 0x060c00;
