/* A bloom filter: a BTF-defined map whose map_extra (the number of hash functions) matters. */
#include "bpf_defs.h"

struct {
	__uint(type, MAP_BLOOM_FILTER);
	__uint(max_entries, 64);
	__uint(map_extra, 3);
	__type(value, __u32);
} lengths_seen SEC(".maps");

SEC("socket")
int remember_length(struct __sk_buff *skb)
{
	__u32 len = skb->len;

	bpf_map_push_elem(&lengths_seen, &len, BPF_ANY);
	return bpf_map_peek_elem(&lengths_seen, &len) == 0;  /* 1: "maybe seen" */
}

char LICENSE[] SEC("license") = "GPL";
