/* A tool in the style of libbpf-bootstrap's `bootstrap`, written here for `ebpfwire run`
 * (tests/test_run_live.py, docs/objects.md): exec and exit events into a ring buffer,
 * exit events only for processes that lived `min_duration_ns` (a .rodata setting; when
 * set, exec events are left out).
 *
 * `struct event` reaches the ring buffer through bpf_ringbuf_reserve only, so clang keeps
 * it out of .BTF: `run` finds it in the DWARF, or in BTF when built with -DANCHOR, the
 * one-line anchor. No vmlinux.h: the few task_struct members are read with CO-RE.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define TASK_COMM_LEN 16
#define MAX_FILENAME_LEN 127

struct event {
	int pid;
	int ppid;
	unsigned exit_code;
	unsigned long long duration_ns;
	char comm[TASK_COMM_LEN];
	char filename[MAX_FILENAME_LEN];
	_Bool exit_event;
};

#ifdef ANCHOR
struct event *unused __attribute__((unused));
#endif

struct task_struct {
	int exit_code;
	struct task_struct *real_parent;
	int tgid;
} __attribute__((preserve_access_index));

/* the tracepoint's record (events/sched/sched_process_exec/format) */
struct exec_args {
	__u64 common;
	__u32 data_loc_filename;
	int pid;
	int old_pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, int);
	__type(value, __u64);
} exec_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rb SEC(".maps");

const volatile unsigned long long min_duration_ns = 0;

SEC("tp/sched/sched_process_exec")
int handle_exec(struct exec_args *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	int pid = bpf_get_current_pid_tgid() >> 32;
	__u64 ts = bpf_ktime_get_ns();
	struct event *e;

	bpf_map_update_elem(&exec_start, &pid, &ts, BPF_ANY);
	if (min_duration_ns)
		return 0;
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (!e)
		return 0;
	e->exit_event = 0;
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->exit_code = 0;
	e->duration_ns = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_probe_read_str(&e->filename, sizeof(e->filename),
			   (void *)ctx + (ctx->data_loc_filename & 0xFFFF));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	int pid = id >> 32;
	__u64 *start_ts, duration_ns = 0;
	struct event *e;

	if (pid != (__u32)id)
		return 0; /* a thread, not the process */
	start_ts = bpf_map_lookup_elem(&exec_start, &pid);
	if (start_ts)
		duration_ns = bpf_ktime_get_ns() - *start_ts;
	else if (min_duration_ns)
		return 0;
	bpf_map_delete_elem(&exec_start, &pid);
	if (min_duration_ns && duration_ns < min_duration_ns)
		return 0;
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (!e)
		return 0;
	e->exit_event = 1;
	e->duration_ns = duration_ns;
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->exit_code = (BPF_CORE_READ(task, exit_code) >> 8) & 0xff;
	e->filename[0] = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
