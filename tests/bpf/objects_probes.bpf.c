/* Probes, samplers and iterators (tests/test_objects_attach.py).
 *
 * kprobe/kretprobe/ksyscall/kretsyscall count calls (this kernel has no kprobes: they
 * load, their attach says why not). The bare uprobe/uretprobe pair is attached by the
 * test to `add_them` of a C program it builds and keeps the arguments and the return
 * value seen in `target_tgid`; the libc pair attaches by its section to getppid. The
 * perf_event sampler counts the samples taken while `target_tgid` ran; the iterators
 * print every task, every map, and the first word of each element of the map they are
 * given.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <linux/bpf_perf_event.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 target_tgid = 0;
__u64 kprobe_calls = 0;
__u64 kretprobe_calls = 0;
__u64 ksyscall_calls = 0;
__u64 add_calls = 0;
__u64 add_any = 0; /* whoever called: what the uprobe's pid filter lets through */
__s64 add_a = 0;
__s64 add_b = 0;
__s64 add_ret = 0;
__u64 add_ret_calls = 0;
__u64 getppid_calls = 0;
__s64 getppid_ret = 0;
__u64 samples = 0;
__u64 samples_mine = 0;

static __always_inline int mine(void)
{
	return bpf_get_current_pid_tgid() >> 32 == target_tgid;
}

SEC("kprobe/do_nanosleep")
int on_nanosleep(struct pt_regs *ctx)
{
	if (mine())
		__sync_fetch_and_add(&kprobe_calls, 1);
	return 0;
}

SEC("kretprobe/do_nanosleep")
int on_nanosleep_ret(struct pt_regs *ctx)
{
	if (mine())
		__sync_fetch_and_add(&kretprobe_calls, 1);
	return 0;
}

SEC("ksyscall/getppid")
int on_getppid_syscall(struct pt_regs *ctx)
{
	if (mine())
		__sync_fetch_and_add(&ksyscall_calls, 1);
	return 0;
}

SEC("kretsyscall/getppid")
int on_getppid_syscall_ret(struct pt_regs *ctx)
{
	if (mine())
		__sync_fetch_and_add(&ksyscall_calls, 100);
	return 0;
}

SEC("uprobe")
int on_add(struct pt_regs *ctx)
{
	__sync_fetch_and_add(&add_any, 1);
	if (mine()) {
		add_a = (int)PT_REGS_PARM1(ctx);
		add_b = (int)PT_REGS_PARM2(ctx);
		__sync_fetch_and_add(&add_calls, 1);
	}
	return 0;
}

SEC("uretprobe")
int on_add_ret(struct pt_regs *ctx)
{
	if (mine()) {
		add_ret = (int)PT_REGS_RC(ctx);
		__sync_fetch_and_add(&add_ret_calls, 1);
	}
	return 0;
}

SEC("uprobe/libc.so.6:getppid")
int on_libc_getppid(struct pt_regs *ctx)
{
	if (mine())
		__sync_fetch_and_add(&getppid_calls, 1);
	return 0;
}

SEC("uretprobe/libc.so.6:getppid")
int on_libc_getppid_ret(struct pt_regs *ctx)
{
	if (mine())
		getppid_ret = (int)PT_REGS_RC(ctx);
	return 0;
}

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	__sync_fetch_and_add(&samples, 1);
	if (mine())
		__sync_fetch_and_add(&samples_mine, 1);
	return 0;
}

/* the iterators' context, relocated against the kernel's (CO-RE) */
struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

struct bpf_map {
	__u32 id;
	__u32 max_entries;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
} __attribute__((preserve_access_index));

struct bpf_iter__bpf_map_elem {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	void *key;
	void *value;
} __attribute__((preserve_access_index));

SEC("iter/task")
int list_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %d\n", task->tgid, task->pid);
	return 0;
}

SEC("iter/bpf_map")
int list_maps(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;

	if (map)
		BPF_SEQ_PRINTF(ctx->meta->seq, "map %u %u\n", map->id, map->max_entries);
	return 0;
}

#ifndef ORACLE /* bpftool loads whole objects: leave out what this kernel refuses (EPERM) */
SEC("iter/bpf_map_elem")
int list_elements(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (key && value)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%u %llu\n", *key, *value);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
