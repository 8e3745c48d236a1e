/* What the CO-RE test programs record for each process that calls getppid(), by its tgid.
 * Plain C types only: the same layout in task.c (vmlinux.h) and local.c (no kernel headers). */
#ifndef PYBPF_CORE_RECORD_H
#define PYBPF_CORE_RECORD_H

struct core_record {
	unsigned long long arg_start;	/* task->mm->arg_start (through an anonymous struct) */
	unsigned long long arg_end;
	unsigned int tgid;		/* task->tgid */
	unsigned int parent_tgid;	/* task->real_parent->tgid */
	unsigned int flags;		/* task->flags */
	unsigned int reset_on_fork;	/* task->sched_reset_on_fork, a 1-bit bitfield */
	unsigned int comm_offset;	/* offsetof(struct task_struct, comm) */
	unsigned int comm_size;		/* sizeof(task->comm) */
	unsigned int task_size;		/* sizeof(struct task_struct) */
	unsigned int tgid_signed;	/* is task->tgid signed? */
	unsigned int flags_signed;	/* is task->flags signed? */
	unsigned int pidtype_tgid;	/* PIDTYPE_TGID */
	unsigned int pidtype_max_exists;	/* does PIDTYPE_MAX exist? */
	unsigned int missing_exists;	/* does a field the kernel lacks exist? */
	unsigned int missing_value;	/* that field, read only when it exists (else 7) */
	unsigned int type_exists;	/* does the struct exist? */
	unsigned int type_matches;	/* does the local struct match the kernel's? */
	unsigned int type_mismatch;	/* does a deliberately wrong struct match? */
	unsigned int type_id;		/* the kernel's BTF id of struct task_struct */
	unsigned int local_type_id;	/* the object's own BTF id of it */
	char comm2;			/* task->comm[2]: an array index in the access string */
	char comm_direct2;		/* the same through a direct (BTF pointer) load */
	unsigned short pad;
	unsigned int tgid_direct;	/* task->tgid through a direct load */
	unsigned int parent_tgid_direct;	/* task->real_parent->tgid, direct loads */
	unsigned int reset_on_fork_direct;	/* the bitfield through a direct load */
	unsigned int flags_direct;	/* task->flags through a direct load */
};

#endif
