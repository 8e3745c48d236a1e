/* runqlen: typed ksyms, kernel variables named by their BTF id (BPF_PSEUDO_BTF_ID): the
 * per-CPU `runqueues` read with bpf_this_cpu_ptr() and bpf_per_cpu_ptr(). The kernel finds
 * the variable's address in kallsyms, which lists variables only with CONFIG_KALLSYMS_ALL:
 * without it the load fails (libbpf's too) with "failed to find the address". */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "objects.h"

extern const struct rq runqueues __ksym;

unsigned int max_len = 0;		/* .bss: the longest run queue seen on this CPU */
unsigned int cpu0_len = 0;		/* .bss: CPU 0's, seen from any CPU */

SEC("perf_event")
int sample_runq(void *ctx)
{
	struct rq *rq = bpf_this_cpu_ptr(&runqueues);
	struct rq *first = bpf_per_cpu_ptr(&runqueues, 0);
	unsigned int len = rq->nr_running;

	if (len > max_len)
		max_len = len;
	if (first)
		cpu0_len = first->nr_running;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
