/* The seeds' style of tool for `ebpfwire run` (docs/objects.md): a log2 histogram of
 * syscall latency in microseconds, per syscall number, for the tasks named `target_comm`
 * (.rodata). No events: everything is in the `latency` map, printed when `run` ends.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_SLOTS 24

struct hist {
	__u32 slots[MAX_SLOTS];
};

struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct sys_exit_args {
	__u64 common;
	long id;
	long ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, struct hist);
} latency SEC(".maps");

const volatile char target_comm[16] = {};

static __always_inline int wanted(void)
{
	char comm[16];
	int i;

	bpf_get_current_comm(&comm, sizeof(comm));
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (comm[i] != target_comm[i])
			return 0;
		if (!comm[i])
			break;
	}
	return 1;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

#pragma unroll
	for (int i = 32; i > 0; i >>= 1) {
		if (v >> i) {
			v >>= i;
			r += i;
		}
	}
	return r;
}

SEC("tp/raw_syscalls/sys_enter")
int on_enter(struct sys_enter_args *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	__u64 ts;

	if (!wanted())
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);
	return 0;
}

SEC("tp/raw_syscalls/sys_exit")
int on_exit(struct sys_exit_args *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid(), nr = ctx->id, slot;
	struct hist zero = {}, *h;
	__u64 *ts;

	ts = bpf_map_lookup_elem(&start, &tid);
	if (!ts)
		return 0;
	slot = log2_u64((bpf_ktime_get_ns() - *ts) / 1000);
	bpf_map_delete_elem(&start, &tid);
	h = bpf_map_lookup_elem(&latency, &nr);
	if (!h) {
		bpf_map_update_elem(&latency, &nr, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&latency, &nr);
		if (!h)
			return 0;
	}
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
