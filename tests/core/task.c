/* CO-RE against this kernel's own vmlinux.h (bpftool btf dump ... format c): every kind of
 * relocation libbpf knows, through BPF_CORE_READ (probe reads: relocated ALU immediates) and
 * through a BTF pointer (direct loads: relocated load offsets). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "record.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct core_record);
} records SEC(".maps");

/* A struct the kernel does not have, for the existence checks. */
struct pybpf_absent {
	int nothing;
} __attribute__((preserve_access_index));

SEC("tracepoint/syscalls/sys_enter_getppid")
int record_task(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *btf_task = (void *)bpf_get_current_task_btf();
	struct core_record r = {};
	__u32 tgid;

	tgid = BPF_CORE_READ(task, tgid);
	r.tgid = tgid;
	r.parent_tgid = BPF_CORE_READ(task, real_parent, tgid);
	r.arg_start = BPF_CORE_READ(task, mm, arg_start);
	r.arg_end = BPF_CORE_READ(task, mm, arg_end);
	r.flags = BPF_CORE_READ(task, flags);
	r.reset_on_fork = BPF_CORE_READ_BITFIELD_PROBED(task, sched_reset_on_fork);
	r.comm2 = BPF_CORE_READ(task, comm[2]);
	r.comm_offset = bpf_core_field_offset(struct task_struct, comm);
	r.comm_size = bpf_core_field_size(task->comm);
	r.task_size = bpf_core_type_size(struct task_struct);
	r.tgid_signed = __builtin_preserve_field_info(task->tgid, BPF_FIELD_SIGNED);
	r.flags_signed = __builtin_preserve_field_info(task->flags, BPF_FIELD_SIGNED);
	r.pidtype_tgid = bpf_core_enum_value(enum pid_type, PIDTYPE_TGID);
	r.pidtype_max_exists = bpf_core_enum_value_exists(enum pid_type, PIDTYPE_MAX);
	r.missing_exists = bpf_core_type_exists(struct pybpf_absent);
	r.type_exists = bpf_core_type_exists(struct task_struct);
	r.type_matches = bpf_core_type_matches(struct list_head);
	r.type_id = bpf_core_type_id_kernel(struct task_struct);
	r.local_type_id = bpf_core_type_id_local(struct task_struct);

	r.tgid_direct = btf_task->tgid;
	r.parent_tgid_direct = btf_task->real_parent->tgid;
	r.flags_direct = btf_task->flags;
	r.comm_direct2 = btf_task->comm[2];
	r.reset_on_fork_direct = BPF_CORE_READ_BITFIELD(btf_task, sched_reset_on_fork);

	bpf_map_update_elem(&records, &tgid, &r, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
