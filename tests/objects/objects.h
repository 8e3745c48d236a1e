/* What the corpus objects share: their event records (plain C types, so that user space can
 * decode them from the object's BTF) and the few macros libbpf 1.1's headers lack. */
#ifndef PYBPF_OBJECTS_H
#define PYBPF_OBJECTS_H

#define TASK_COMM_LEN 16
#define MAX_SLOTS 26		/* log2 histogram buckets, as libbpf-tools' bits.bpf.h */
#define PERF_MAX_STACK_DEPTH 127
#define INVALID_UID ((unsigned int)-1)

/* libbpf >= 1.2's bpf_ksym_exists(): true when a __weak ksym or kfunc was found */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({ \
	_Static_assert(!__builtin_constant_p(!!sym), #sym " should be marked as __weak"); \
	!!sym; \
})
#endif

struct exec_event {		/* execsnoop: one execve, sent through a perf buffer */
	int pid;
	int ppid;
	unsigned int uid;
	int retval;
	char comm[TASK_COMM_LEN];
};

struct open_event {		/* opensnoop: one openat, sent through a ring buffer */
	unsigned long long ts;
	int pid;
	int flags;
	int ret;
	char comm[TASK_COMM_LEN];
	char fname[64];
};

struct line_event {		/* bashreadline: one line read, through a perf buffer */
	int pid;
	char comm[TASK_COMM_LEN];
	char line[80];
};

struct stack_key {		/* profile: one sampled stack */
	unsigned int pid;
	int user_stack_id;
	int kern_stack_id;
	char comm[TASK_COMM_LEN];
};

/* log2 of v, rounded down (libbpf-tools' bits.bpf.h log2l) */
static inline unsigned long long log2l(unsigned long long v)
{
	unsigned long long r = 0;

	while (v > 1 && r < MAX_SLOTS - 1) {
		v >>= 1;
		r++;
	}
	return r;
}

#endif
