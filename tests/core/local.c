/* CO-RE with hand-written local types whose layouts are deliberately wrong (no kernel
 * headers): fields reordered, padding, a wrong bitfield position, a narrower field, flavours
 * (___pybpf), a field and an enumerator the kernel lacks, enum values that differ. Relocated
 * against the running kernel, every value read is the true one. */
#include "types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "record.h"

struct mm_struct___pybpf {
	unsigned long arg_end;		/* reordered: the kernel has arg_start first */
	char pad[3];
	unsigned long arg_start;
} __attribute__((preserve_access_index));

struct task_struct___pybpf {
	char pad[5];
	unsigned int sched_reset_on_fork: 1;	/* wrong place for a bitfield */
	int tgid;
	unsigned short flags;		/* the kernel's is an unsigned int: the load widens */
	struct mm_struct___pybpf *mm;
	struct task_struct___pybpf *real_parent;
	long pybpf_missing;		/* no such field in the kernel */
	char comm[4];			/* the kernel's is longer */
} __attribute__((preserve_access_index));

enum pid_type___pybpf {
	PIDTYPE_MAX___pybpf = 10,	/* kernel: 4 */
	PIDTYPE_TGID___pybpf = 20,	/* kernel: 1 */
	PIDTYPE_NONE___pybpf = 30,	/* not in the kernel */
};

struct list_head___pybpf {		/* matches the kernel's struct list_head */
	struct list_head___pybpf *next, *prev;
};

struct list_head___wrong {		/* does not: next is a pointer there */
	long next;
};

struct {
	__uint(type, 1);	/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct core_record);
} records SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int record_local(void *ctx)
{
	struct task_struct___pybpf *task = (void *)bpf_get_current_task();
	struct task_struct___pybpf *btf_task = (void *)bpf_get_current_task_btf();
	struct core_record r = {};
	__u32 tgid;

	tgid = BPF_CORE_READ(task, tgid);
	r.tgid = tgid;
	r.parent_tgid = BPF_CORE_READ(task, real_parent, tgid);
	r.arg_start = BPF_CORE_READ(task, mm, arg_start);
	r.arg_end = BPF_CORE_READ(task, mm, arg_end);
	r.reset_on_fork = BPF_CORE_READ_BITFIELD_PROBED(task, sched_reset_on_fork);
	r.comm2 = BPF_CORE_READ(task, comm[2]);
	r.comm_offset = bpf_core_field_offset(task->comm);
	r.comm_size = bpf_core_field_size(task->comm);
	r.task_size = bpf_core_type_size(struct task_struct___pybpf);
	r.tgid_signed = __builtin_preserve_field_info(task->tgid, BPF_FIELD_SIGNED);
	r.flags_signed = __builtin_preserve_field_info(task->flags, BPF_FIELD_SIGNED);
	r.pidtype_tgid = bpf_core_enum_value(enum pid_type___pybpf, PIDTYPE_TGID___pybpf);
	r.pidtype_max_exists = bpf_core_enum_value_exists(enum pid_type___pybpf,
							  PIDTYPE_NONE___pybpf);
	r.missing_exists = bpf_core_field_exists(task->pybpf_missing);
	r.missing_value = 7;
	if (bpf_core_field_exists(task->pybpf_missing))
		r.missing_value = BPF_CORE_READ(task, pybpf_missing);
	r.type_exists = bpf_core_type_exists(struct task_struct___pybpf);
	r.type_matches = bpf_core_type_matches(struct list_head___pybpf);
	r.type_mismatch = bpf_core_type_matches(struct list_head___wrong);
	r.type_id = bpf_core_type_id_kernel(struct task_struct___pybpf);
	r.local_type_id = bpf_core_type_id_local(struct task_struct___pybpf);

	r.tgid_direct = btf_task->tgid;
	r.parent_tgid_direct = btf_task->real_parent->tgid;
	r.flags_direct = btf_task->flags;
	r.comm_direct2 = btf_task->comm[2];
	r.reset_on_fork_direct = BPF_CORE_READ_BITFIELD(btf_task, sched_reset_on_fork);

	bpf_map_update_elem(&records, &tgid, &r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
