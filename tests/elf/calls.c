/* bpf-to-bpf calls into .text: a static and a global function, a callback, two callers. */
#include "bpf_defs.h"

static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx,
			__u64 flags) = (void *)181;

static __noinline __u32 square(__u32 x)
{
	return x * x;
}

__noinline int add_square(__u32 a, __u32 b)
{
	return a + square(b);
}

static int add_one(__u32 index, void *ctx)
{
	*(__u32 *)ctx += 1;
	return 0;
}

SEC("xdp")
int xdp_calls(struct xdp_md *ctx)
{
	__u32 counter = 0;

	bpf_loop(3, add_one, &counter, 0);
	return add_square(counter, 2) == 7 ? 2 : 1;
}

SEC("tc")
int tc_calls(struct __sk_buff *skb)
{
	return square(3);
}

char LICENSE[] SEC("license") = "GPL";
