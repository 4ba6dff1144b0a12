/* CO-RE against a deliberately wrong layout (tests/test_objects_core.py).
 *
 * `struct task_struct___mine` names a few members of the kernel's task_struct in another
 * order, with padding the kernel does not have: only relocation against the running
 * kernel's BTF reads the right pid, tgid and real_parent->tgid. On sys_enter_getppid of
 * `target_tgid` (.rodata) one `struct seen` goes to the ring buffer `events`.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct___mine {
	char pad[3];
	int tgid;
	long other_pad[5];
	struct task_struct___mine *real_parent;
	int pid;
	int not_in_this_kernel;
} __attribute__((preserve_access_index));

enum pid_type___mine { PIDTYPE_SID = 70, PIDTYPE_TGID = 90, PIDTYPE_NOT_THERE = 5 };

struct seen {
	__u32 pid;
	__u32 tgid;
	__u32 ppid;
	__u32 pid_size;
	__u32 has_pid;
	__u32 has_missing;
	__u32 sid_value;
	__u32 has_not_there;
	__u64 task_size;
	__u32 task_exists;
	__u32 pad;
};

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int report(void *ctx)
{
	struct task_struct___mine *t = (void *)bpf_get_current_task();
	struct seen *s;

	if (bpf_get_current_pid_tgid() >> 32 != target_tgid)
		return 0;
	s = bpf_ringbuf_reserve(&events, sizeof(*s), 0);
	if (!s)
		return 0;
	s->pid = BPF_CORE_READ(t, pid);
	s->tgid = BPF_CORE_READ(t, tgid);
	s->ppid = BPF_CORE_READ(t, real_parent, tgid);
	s->pid_size = bpf_core_field_size(t->pid);
	s->has_pid = bpf_core_field_exists(t->pid);
	s->has_missing = bpf_core_field_exists(t->not_in_this_kernel);
	if (bpf_core_field_exists(t->not_in_this_kernel)) /* poisoned, but dead code */
		s->pad = BPF_CORE_READ(t, not_in_this_kernel);
	s->sid_value = bpf_core_enum_value(enum pid_type___mine, PIDTYPE_SID);
	s->has_not_there = bpf_core_enum_value_exists(enum pid_type___mine, PIDTYPE_NOT_THERE);
	s->task_size = bpf_core_type_size(struct task_struct___mine);
	s->task_exists = bpf_core_type_exists(struct task_struct___mine);
	bpf_ringbuf_submit(s, 0);
	return 0;
}

#ifndef ORACLE /* bpftool loads whole objects: leave out what must fail */
SEC("tp/syscalls/sys_enter_getpid")
int reads_missing(void *ctx)
{
	struct task_struct___mine *t = (void *)bpf_get_current_task();

	return BPF_CORE_READ(t, not_in_this_kernel); /* poisoned and reached: refused */
}
#endif

char LICENSE[] SEC("license") = "GPL";
