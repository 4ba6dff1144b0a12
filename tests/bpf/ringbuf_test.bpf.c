/* Test object for the ring buffer reader and the map wrappers.
 *
 * On sys_enter_getppid of the process whose tgid is in `config`, one record goes to
 * the ring `ring`: struct rec (seq, payload length) then `len` payload bytes, where
 * seq counts the calls from 0, len = seq % 61 and payload[i] = (seq + i) & 0xff.
 * Mode 0 submits with bpf_ringbuf_output (variable length: records of 8..68 bytes);
 * mode 1 reserves a fixed 16-byte record (len 8) and discards it when seq is odd.
 * A failed output or reservation adds 1 to `drops` (PERCPU_ARRAY, key 0) and to
 * `drops_by_cpu` (ARRAY indexed by CPU). The other maps only serve the map tests.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_PAYLOAD 60
#define FIXED_PAYLOAD 8

struct config {
	__u32 tgid;
	__u32 mode;
};

struct rec {
	__u32 seq;
	__u32 len;
	__u8 payload[MAX_PAYLOAD];
};

struct fixed_rec {
	__u32 seq;
	__u32 len;
	__u8 payload[FIXED_PAYLOAD];
};

/* a value with nested struct, array, signed and enum members, for BTF typing */
enum colour { RED = 1, GREEN = 2 };

struct point {
	__s32 x;
	__s32 y;
};

struct typed_value {
	__u64 count;
	struct point where;
	__u16 samples[3];
	__s8 delta;
	enum colour colour;
	char tag[4];
};

/* bitfields, an anonymous union, _Bool and float: the BTF codec's other shapes */
struct shapes {
	__u32 low : 3, high : 5;
	_Bool flag;
	union {
		__u32 word;
		__u8 bytes[4];
	};
	float ratio;
	__s64 big;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} drops_by_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct point);
	__type(value, struct typed_value);
} typed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct shapes);
} shaped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} percpu_hash SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	__u64 *n = bpf_map_lookup_elem(&drops, &zero);

	if (n)
		*n += 1;
	n = bpf_map_lookup_elem(&drops_by_cpu, &cpu);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int getppid__enter(void *ctx)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u64 *counter;
	__u32 n;

	if (!cfg || cfg->tgid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	counter = bpf_map_lookup_elem(&seq, &zero);
	if (!counter)
		return 0;
	n = *counter;
	*counter = n + 1;

	if (cfg->mode == 1) {
		struct fixed_rec *r = bpf_ringbuf_reserve(&ring, sizeof(*r), 0);

		if (!r) {
			count_drop();
			return 0;
		}
		r->seq = n;
		r->len = FIXED_PAYLOAD;
#pragma unroll
		for (int i = 0; i < FIXED_PAYLOAD; i++)
			r->payload[i] = n + i;
		if (n & 1)
			bpf_ringbuf_discard(r, 0);
		else
			bpf_ringbuf_submit(r, 0);
		return 0;
	}

	struct rec r;
	__u64 len = n % (MAX_PAYLOAD + 1);

	r.seq = n;
	r.len = len;
#pragma unroll
	for (int i = 0; i < MAX_PAYLOAD; i++)
		r.payload[i] = n + i;
	barrier_var(len); /* hide what clang knows so that the bound check stays */
	if (len > MAX_PAYLOAD) /* for the verifier: the size is bounded */
		return 0;
	if (bpf_ringbuf_output(&ring, &r, 8 + len, 0))
		count_drop();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
