/* Global data: .data, .rodata (constants), .bss (zeroed) and a string in .rodata.str1.1. */
#include "bpf_defs.h"

volatile __u32 hits = 7;              /* .data */
volatile __u64 scratch[2] = {1, 2};   /* .data */
const volatile __u32 answer = 42;     /* .rodata */
volatile __u64 zeroed;                /* .bss */
static volatile __u32 calls;          /* .bss, static: reached through the section symbol */

SEC("xdp")
int use_globals(struct xdp_md *ctx)
{
	char msg[] = "hits %d\n";

	hits += 1;
	zeroed += hits;
	calls += 1;
	scratch[1] = answer;
	bpf_trace_printk("use_globals called %d times\n", 29, calls);
	bpf_trace_printk(msg, sizeof(msg), hits);
	return answer == 42 ? 2 : 1;
}

char LICENSE[] SEC("license") = "GPL";
