// SPDX-License-Identifier: GPL-2.0
/* A typical libbpf tracepoint tool (exec and exit of processes, in the manner of
 * libbpf-tools' execsnoop and exitsnoop), written here and compiled against the vmlinux.h
 * of Linux 6.1 (linux-6.1/vmlinux.h.xz, from Debian's kernel), not of the kernel it runs
 * on: every kernel struct it reads is laid out differently there, so its values are right
 * only when the loader relocates each access (CO-RE) against the running kernel's BTF.
 * tests/test_objects_other_kernel.py loads it through ebpfwire.kernel.objects.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16
#define NAME_LEN 64

/* settings, set before load (libbpf skeleton style) */
const volatile pid_t target_ppid = 0;
const volatile bool failed_only = false;

enum kind { EXEC = 1, EXIT = 2 };

struct event {
	u64 start_boottime;	/* task->start_boottime: ns since boot, as /proc/PID/stat counts */
	u32 kind;
	pid_t pid;
	pid_t ppid;
	u32 uid;		/* task->real_cred->uid */
	u32 mnt_ns;		/* task->nsproxy->mnt_ns->ns.inum */
	int exit_code;		/* EXIT: the status as wait(2) gives it */
	char comm[TASK_COMM_LEN];
	char filename[NAME_LEN];	/* EXEC: from the tracepoint's record */
};

struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

static __always_inline struct event *start(u32 kind, struct task_struct *task)
{
	pid_t ppid = BPF_CORE_READ(task, real_parent, tgid);
	struct event *e;

	if (target_ppid && ppid != target_ppid)
		return NULL;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return NULL;
	e->kind = kind;
	e->pid = BPF_CORE_READ(task, tgid);
	e->ppid = ppid;
	e->start_boottime = BPF_CORE_READ(task, start_boottime);
	e->uid = BPF_CORE_READ(task, real_cred, uid.val);
	e->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	e->exit_code = 0;
	e->filename[0] = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	return e;
}

SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned int off = ctx->__data_loc_filename & 0xFFFF;
	struct event *e;

	if (failed_only)
		return 0;
	e = start(EXEC, task);
	if (!e)
		return 0;
	bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), (void *)ctx + off);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u64 id = bpf_get_current_pid_tgid();
	int exit_code;
	struct event *e;

	if ((u32)id != id >> 32)	/* a thread, not the process */
		return 0;
	exit_code = BPF_CORE_READ(task, exit_code);
	if (failed_only && exit_code == 0)
		return 0;
	e = start(EXIT, task);
	if (!e)
		return 0;
	e->exit_code = exit_code;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
