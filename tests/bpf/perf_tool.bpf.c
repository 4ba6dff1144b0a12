/* A perf array tool in the style of BCC's examples, for `ebpfwire run`
 * (tests/test_run_live.py): every getppid() of a task named `target_comm` (.rodata) sends
 * a `struct call` through the perf array `calls`, and counts its sequence number in two
 * histograms: `seq_hist` (libbpf-tools style, a `slots[]` array, slot = log2(seq)) and
 * `seq_log2` (BCC style, key = bpf_log2l(seq) = log2(seq) + 1).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_SLOTS 16

struct call {
	__u64 ts;
	__u32 pid;
	__u32 seq;
	char comm[16];
};

#ifdef ANCHOR
struct call *unused __attribute__((unused));
#endif

struct hist {
	__u32 slots[MAX_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct hist);
} seq_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} seq_log2 SEC(".maps");

const volatile char target_comm[16] = {};
__u32 seen = 0;

static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	return r | (v >> 1);
}

SEC("tp/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	struct call c = {};
	struct hist zero = {}, *h;
	__u32 key = 0, slot;
	__u64 bucket, one = 1, *n;
	int i;

	bpf_get_current_comm(&c.comm, sizeof(c.comm));
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (c.comm[i] != target_comm[i])
			return 0;
		if (!c.comm[i])
			break;
	}
	c.ts = bpf_ktime_get_ns();
	c.pid = bpf_get_current_pid_tgid() >> 32;
	c.seq = ++seen; /* not atomic (clang 14's BPF v1 has no fetch-add): one task at a time */
	bpf_perf_event_output(ctx, &calls, BPF_F_CURRENT_CPU, &c, sizeof(c));

	h = bpf_map_lookup_elem(&seq_hist, &key);
	if (!h) {
		bpf_map_update_elem(&seq_hist, &key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&seq_hist, &key);
		if (!h)
			return 0;
	}
	slot = log2_u32(c.seq);
	if (slot < MAX_SLOTS)
		__sync_fetch_and_add(&h->slots[slot], 1);

	bucket = log2_u32(c.seq) + 1;
	n = bpf_map_lookup_elem(&seq_log2, &bucket);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&seq_log2, &bucket, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
